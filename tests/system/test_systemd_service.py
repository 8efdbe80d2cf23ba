"""netmgr as a hardened system service, under a real systemd, end to end.

A Debian bookworm container (``nspawn.py``) gets a wheelhouse of this checkout read-only at
/wheels. Inside it, as an administrator would: netmgr's wheel pip-installed into a venv in
/root, whose ``netmgr install-service --find-links /wheels`` (offline: the container has no
index) makes the service's own venv /opt/netmgr from that wheel, then ``systemctl start``.
From the host, msl-network 1.0 Clients and a 1.0 Service connect with TLS trust on first use.
Then: a certificate rotated with ``systemctl reload`` (the Service stays connected, new clients
see the new fingerprint), ``kill -9`` and Restart=, a user added by root and ``auth = login``,
``logrotate -f`` (the Manager writes to the new log file), ``netmgr status`` by root over the
control socket (no password), socket activation with a connection waiting in the backlog while
netmgr restarts, the journal's EVENT fields, and a clean stop. The container is powered off in
every case.

Runs as root where systemd-nspawn and debootstrap are installed; skipped otherwise, saying why.
"""
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

import nspawn

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(nspawn.why_not() is not None,
                                 reason=f"end-to-end under systemd: {nspawn.why_not()}")]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = "/opt/netmgr"
NETMGR = f"{VENV}/bin/netmgr"
# where the administrator pip-installed the wheel first: a venv the service could not see
ADMIN_VENV = "/root/netmgr"
LOG = "/var/log/netmgr/manager.log"
CONFIG = "/etc/netmgr/netmgr.conf"
STATE = "/var/lib/netmgr"
WAIT = 60

# A msl-network 1.0 client: trust on first use (auto_save), optionally log in, optionally
# wait for a Service and call it; prints what it saw and the certificate it trusts.
CLIENT = r"""
import hashlib, json, os, ssl, sys, time
from msl.network import connect
port, user, password, service = int(sys.argv[1]), *(a or None for a in sys.argv[2:5])
cxn = connect(host="localhost", port=port, auto_save=True, timeout=30,
              username=user, password=password)
out = {"manager": cxn.identities(timeout=30)["hostname"]}
if service:
    deadline = time.monotonic() + 30
    while service not in cxn.identities(timeout=30)["services"]:
        assert time.monotonic() < deadline, f"{service} never registered"
        time.sleep(0.2)
    out["echo"] = cxn.link(service).echo(1, x=2)
cxn.disconnect()
with open(os.path.join(os.environ["MSL_NETWORK_HOME"], "certs", "localhost.crt")) as f:
    out["fingerprint"] = hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()
print(json.dumps(out))
"""

SERVICE = r"""
import sys
from msl.network import Service

class Echo(Service):
    def echo(self, *args, **kwargs):
        return args, kwargs

Echo().start(host="localhost", port=int(sys.argv[1]), auto_save=True, timeout=30)
"""


class Steps:
    """Prints each step with its duration (``pytest -s`` shows them)."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.rows = []

    def __call__(self, text):
        now = time.monotonic()
        if self.rows:
            self.rows[-1][1] = now - self.rows[-1][1]
            print(f"    {self.rows[-1][1]:6.1f} s")
        self.rows.append([text, now])
        print(f"[e2e {now - self.t0:6.1f} s] {text}", flush=True)

    def done(self):
        self("done")


def free_port():
    """A port free on the host, whose network namespace the container shares."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def build_wheelhouse(tmp):
    """Wheels of this checkout and its dependencies (a copy of the tree: no build/ left here)."""
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "bench"))
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", str(src), "-w", str(wheels)],
                   check=True, timeout=600, capture_output=True)
    return wheels


def client(port, home, user="", password="", service="", check=True):
    env = dict(os.environ, MSL_NETWORK_HOME=str(home))
    done = subprocess.run([sys.executable, "-c", CLIENT, str(port), user, password, service],
                          env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])
    return done


def served_fingerprint(port):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("localhost", port), timeout=WAIT) as raw:
        with context.wrap_socket(raw) as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def first_line(port):
    """Connect with TLS (no verification) and read the Manager's first request."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("localhost", port), timeout=WAIT) as raw:
        with context.wrap_socket(raw) as tls:
            tls.settimeout(WAIT)
            data = b""
            while b"\n" not in data:
                chunk = tls.recv(4096)
                assert chunk, "closed before the first request"
                data += chunk
    return json.loads(data.split(b"\n")[0])


def http_get(path, auth=None):
    """The body of a GET of the HTTP endpoint the shipped config turns on."""
    request = urllib.request.Request(f"http://127.0.0.1:1876{path}")
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        return response.read()


def set_config(box, **settings):
    """Edit /etc/netmgr/netmgr.conf in place (``key = value`` lines, as an administrator)."""
    script = ("import sys; from netmgr.cli.install import render_config; p = sys.argv[1]; "
              "t = open(p).read(); open(p, 'w').write(render_config(t, dict("
              "a.split('=', 1) for a in sys.argv[2:])))")
    box.run(f"{VENV}/bin/python", "-c", script, CONFIG, *(f"{k}={v}" for k, v in settings.items()))


def _install(box):
    """The wheel into a venv in /root, and its ``netmgr install-service``, twice."""
    admin = f"{ADMIN_VENV}/bin/netmgr"
    box.sh(f"python3 -m venv {ADMIN_VENV} && {ADMIN_VENV}/bin/pip install --quiet --no-index "
           "--find-links /wheels /wheels/netmgr-*.whl")
    refused = box.run(admin, "install-service", "--executable", admin, check=False)
    assert refused.returncode != 0 and refused.stderr.startswith(
        f"refusing ExecStart={admin}: ProtectHome=yes hides /root from the service"), refused
    print(box.run(admin, "install-service", "--find-links", "/wheels", timeout=600).stdout)
    unit = box.run("cat", "/etc/systemd/system/netmgr.service").stdout
    assert f"ExecStart={NETMGR} start --config {CONFIG}\n" in unit
    assert box.run("readlink", "/usr/local/bin/netmgr").stdout.strip() == NETMGR
    assert box.run("test", "-s", "/usr/share/bash-completion/completions/netmgr", "-a", "-s",
                   "/usr/share/zsh/vendor-completions/_netmgr", "-a", "-s",
                   "/etc/logrotate.d/netmgr", check=False).returncode == 0
    assert box.run("readlink", "/usr/local/share/man/man1/netmgr.1").stdout.strip() == \
        f"{VENV}/share/man/man1/netmgr.1"
    again = box.run(admin, "install-service", "--find-links", "/wheels").stdout
    verbs = {line.split()[0] for line in again.splitlines()}
    assert not verbs & {"write", "link"} and f"unchanged {VENV} " in again, again


def journal_events(box):
    out = box.run("journalctl", "-u", "netmgr", "-o", "json", "--no-pager").stdout
    return [entry for entry in map(json.loads, out.splitlines()) if "EVENT" in entry]


def test_netmgr_under_systemd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    step = Steps()
    step("root file system")
    rootfs = nspawn.ensure_rootfs(print)
    step("wheelhouse of this checkout")
    wheels = build_wheelhouse(tmp)
    port = free_port()
    step(f"boot the container (netmgr will listen on port {port})")
    box = nspawn.Container(rootfs, f"netmgr-e2e-{os.getpid()}", binds=[(wheels, "/wheels")],
                           console_log=tmp / "console.log")
    try:
        print("    system state:", box.boot())
        _scenario(box, port, tmp, step)
    except BaseException:
        if box.pid:
            print(box.run("journalctl", "-u", "netmgr", "--no-pager", "-n", "80",
                          check=False).stdout)
        raise
    finally:
        step("poweroff")
        box.poweroff()
        step.done()


def _scenario(box, port, tmp, step):
    step("netmgr install-service: the venv /opt/netmgr from the wheel, the service")
    _install(box)
    assert box.run("id", "-u", "netmgr").stdout.strip().isdigit()
    set_config(box, port=port)
    assert box.run("systemd-analyze", "verify", "/etc/systemd/system/netmgr.service",
                   "/etc/systemd/system/netmgr.socket").stderr == ""
    security = box.run("systemd-analyze", "security", "--no-pager", "netmgr.service").stdout
    line = re.search(r"Overall exposure level for netmgr\.service: (\d+\.\d+).*", security)
    print("    " + line.group(0))
    assert float(line.group(1)) <= 2.0

    step("systemctl start netmgr (Type=notify: returns after READY=1)")
    box.run("systemctl", "start", "netmgr", timeout=WAIT)
    assert box.run("systemctl", "is-active", "netmgr").stdout.strip() == "active"
    assert "port" in box.unit("netmgr", "StatusText")
    main_pid = box.unit("netmgr", "MainPID")
    print(f"    MainPID={main_pid} Status={box.unit('netmgr', 'StatusText')!r}")

    step("the shipped config's HTTP endpoint, 127.0.0.1:1876 (the container shares our network)")
    assert json.loads(http_get("/healthz"))["status"] == "ok"
    assert b"\nnetmgr_connections{kind=" in http_get("/metrics")

    step("a 1.0 Service and a 1.0 Client from the host, TLS trust on first use")
    service = subprocess.Popen([sys.executable, "-c", SERVICE, str(port)],
                               env=dict(os.environ, MSL_NETWORK_HOME=str(tmp / "service-home")),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = client(port, tmp / "client-1", service="Echo")
        assert first["echo"] == [[1], {"x": 2}]
        assert first["fingerprint"] == served_fingerprint(port)

        step("new certificate + systemctl reload: the Service stays, new clients see it")
        box.run(NETMGR, "keygen", "--force")  # the old key and certificate are kept as .bak
        box.run(NETMGR, "certgen", "--force")
        box.run("systemctl", "reload", "netmgr", timeout=WAIT)
        # on systemd 252 `reload` returns once SIGHUP is sent; the Manager's READY=1 follows
        box.wait_for("the new certificate", lambda: served_fingerprint(port) != first["fingerprint"])
        assert box.unit("netmgr", "MainPID") == main_pid
        second = client(port, tmp / "client-2", service="Echo")
        assert second["echo"] == [[1], {"x": 2}] and service.poll() is None
        assert second["fingerprint"] != first["fingerprint"]
        stale = client(port, tmp / "client-1", check=False)  # still trusts the old certificate
        assert stale.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in stale.stderr
        print(f"    fingerprint {first['fingerprint'][:16]}… -> {second['fingerprint'][:16]}…")
        assert box.run("find", STATE, "!", "-user", "netmgr").stdout == ""

        step("kill -9 the main process: Restart=on-failure")
        box.run("kill", "-9", main_pid)
        box.wait_for("a new main process", lambda: box.unit("netmgr", "MainPID") not in
                     ("0", main_pid) and box.unit("netmgr", "ActiveState") == "active")
        print(f"    MainPID {main_pid} -> {box.unit('netmgr', 'MainPID')}, "
              f"NRestarts={box.unit('netmgr', 'NRestarts')}")
        assert int(box.unit("netmgr", "NRestarts")) >= 1
        service.wait(WAIT)  # a 1.0 Service ends when its Manager goes away
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()

    step("netmgr user add (root) + auth = login + restart: the user logs in")
    box.run(NETMGR, "user", "add", "alice", "--password", "alice pw")
    assert box.run("find", STATE, "!", "-user", "netmgr").stdout == ""  # still the service's
    set_config(box, auth="login")
    box.run("systemctl", "restart", "netmgr", timeout=WAIT)
    assert client(port, tmp / "client-2", user="alice", password="alice pw")["manager"]
    refused = client(port, tmp / "client-2", user="alice", password="wrong", check=False)
    assert refused.returncode != 0
    # with auth = login even loopback readers of the HTTP endpoint must log in; alice is no admin
    with pytest.raises(urllib.error.HTTPError) as denied:
        http_get("/api/status", auth=("alice", "alice pw"))
    assert denied.value.code == 403

    step("logrotate -f: the log file is rotated, the Manager writes to the new one")
    box.run("logrotate", "-f", "/etc/logrotate.d/netmgr", timeout=WAIT)
    assert box.run("test", "-s", f"{LOG}.1", check=False).returncode == 0, "nothing rotated"
    assert box.run("stat", "-c", "%U:%G %a", LOG).stdout.split() == ["netmgr:netmgr", "640"]
    assert client(port, tmp / "client-2", user="alice", password="alice pw")["manager"]
    # postrotate's `systemctl reload` (SIGHUP) makes the Manager open manager.log again
    box.wait_for("the Manager to write to the new manager.log (it reopens it on SIGHUP)",
                 lambda: box.run("test", "-s", LOG, check=False).returncode == 0, timeout=15)

    step("netmgr status (root, the control socket /run/netmgr/netmgr.sock: no password)")
    assert box.run("stat", "-c", "%U:%G %a", "/run/netmgr", "/run/netmgr/netmgr.sock"
                   ).stdout.split() == ["netmgr:netmgr", "750", "netmgr:netmgr", "660"]
    status = box.run("netmgr", "status", check=False)  # /usr/local/bin/netmgr, on root's PATH
    assert status.returncode == 0 and "Manager:" in status.stdout, status.stdout + status.stderr

    step("socket activation: a connection waits in the backlog while netmgr restarts")
    box.sh(f"mkdir -p /etc/systemd/system/netmgr.socket.d && printf '[Socket]\\nListenStream=\\n"
           f"ListenStream={port}\\n' > /etc/systemd/system/netmgr.socket.d/port.conf")
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "stop", "netmgr", timeout=WAIT)
    box.run("systemctl", "start", "netmgr.socket")
    assert box.run("systemctl", "is-active", "netmgr", check=False).stdout.strip() == "inactive"
    assert first_line(port)["attribute"] == "username"  # the connection started netmgr
    assert box.unit("netmgr", "ActiveState") == "active"
    pid = box.unit("netmgr", "MainPID")
    box.run("kill", "-9", pid)
    greeting = first_line(port)  # accepted by systemd's socket while no netmgr runs
    assert greeting["attribute"] == "username" and box.unit("netmgr", "MainPID") != pid

    step("journalctl -u netmgr -o json: EVENT and per-key fields")
    events = journal_events(box)
    names = {entry["EVENT"] for entry in events}
    assert {"created_certificate", "reloading", "reloaded", "stopping"} <= names, names
    created = next(e for e in events if e["EVENT"] == "created_certificate")
    assert created["CERT"] == f"{STATE}/certs/localhost.crt"
    assert created["SYSLOG_IDENTIFIER"] == "netmgr" and created["PRIORITY"] == "6"
    assert any("PEERS" in e for e in events if e["EVENT"] == "stopping")
    print("    " + json.dumps({k: created[k] for k in ("EVENT", "CERT", "KEY", "PRIORITY",
                                                       "SYSLOG_IDENTIFIER", "MESSAGE")}))

    step("systemctl stop: a clean exit")
    box.run("systemctl", "stop", "netmgr.socket", "netmgr", timeout=WAIT)
    state = {p: box.unit("netmgr", p) for p in ("ActiveState", "Result", "ExecMainStatus")}
    print(f"    {state}")
    assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
