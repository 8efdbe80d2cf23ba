"""The local control socket and the commands that use it: ``status`` (and ``--watch``), ``stop``,
``reload``, ``disconnect`` (issue 11).

Real Managers (``netmgr start`` subprocesses), real msl-network 1.0 Services and Clients, the
real kernel's permission check (a forked child that drops to ``nobody``), and ``status --watch``
under a real pseudo-terminal, where Ctrl-C is the byte ``\\x03`` the terminal turns into SIGINT.
Every wait is on a readiness line, a process exit or a bounded poll, never a bare sleep.
"""
import json
import os
import pty
import re
import select
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest
from msl.network import connect

from msl_services import Echo

WAIT = 30
TEST_DEADLINE = 180
pytestmark = pytest.mark.usefixtures("watchdog", "clean_env")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")




def run(*args, home, input="", timeout=60, env=None):
    return subprocess.run([sys.executable, "-m", "netmgr.launcher", *map(str, args)], input=input,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, NETMGR_HOME=str(home), **(env or {})))


def wait_until(condition, what):
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class EchoService:
    """A msl-network 1.0 Echo Service in a thread; stopped by ``netmgr disconnect``."""

    def __init__(self, port, home, **kwargs):
        self.home = home
        self.thread = threading.Thread(target=Echo().start, daemon=True, kwargs=dict(
            host="127.0.0.1", port=port, timeout=WAIT, **kwargs))
        self.thread.start()

    def stop(self):
        peers = json.loads(netmgr_status(self.home))["peers"]
        name = next(p["name"] for p in peers if p["name"].startswith("Echo["))
        assert run("disconnect", name, home=self.home).returncode == 0
        self.thread.join(WAIT)
        assert not self.thread.is_alive()


# ----------------------------------------------------------------------- the socket and status

def test_fresh_install_status_through_the_socket_with_no_password(netmgr_factory, netmgr_home):
    """No user exists: status, run by the Manager's owner, needs nothing; 0600; gone at stop."""
    mgr = netmgr_factory(tls=True)
    sock = netmgr_home / "netmgr.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    service = EchoService(mgr.port, netmgr_home, cert_file=str(next((netmgr_home / "certs").glob("*.crt"))))
    try:
        wait_until(lambda: "Echo" in run("status", home=netmgr_home).stdout, "the Echo service")
        proc = run("status", "--json", home=netmgr_home, input=None)  # a prompt would hang
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        assert list(data["services"]) == ["Echo"] and data["clients"] == []
        assert [p["type"] for p in data["peers"]] == ["service"]  # the status connection is left out
        assert data["totals"]["services"] == 1 and data["totals"]["peers"] == 1
        assert any(r["ip_address"] == "local" and r["domain"] == f"uid={os.getuid()}"
                   for r in data["recent"]), data["recent"]  # the audit: who used the socket
    finally:
        service.stop()
    assert mgr.stop() == 0
    assert not sock.exists()


def test_a_user_without_access_is_told_what_to_do(netmgr, netmgr_home):
    """The kernel's permission check, in a forked child that drops to ``nobody``."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec, so the interpreter under /root stays usable
        code = 99
        try:
            import importlib

            from netmgr.cli import app
            for name in ("netmgr.cli.status", "netmgr.client"):  # before /root is out of reach
                importlib.import_module(name)

            sys.stderr = open(write, "w", buffering=1)  # noqa: SIM115 -- the child's whole life
            os.environ["NETMGR_CONFIG"] = os.devnull  # the test's file is out of nobody's reach
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.environ["NETMGR_HOME"] = str(netmgr_home)
            code = app.cli.main(["status"], prog_name="netmgr", standalone_mode=False)
        except BaseException:  # noqa: BLE001 -- shown by the parent's assertion
            import traceback

            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code if isinstance(code, int) else 98)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read) as f:
        stderr = f.read()
    assert os.waitstatus_to_exitcode(status) == 1, stderr
    assert stderr == (f"cannot use the control socket {netmgr_home}/netmgr.sock: permission denied; "
                      "run the command as root (sudo) or as a member of the socket's group, or log "
                      "in over TCP with -H HOST -u USER\n")


def test_a_locked_out_host_still_has_the_socket_and_no_admin_gets_a_hint(netmgr_factory, netmgr_home):
    """Five wrong passwords lock 127.0.0.1 out of TCP logins; the socket does not care. With
    no administrator in the database, a refused TCP login says how to make one."""
    mgr = netmgr_factory("--max-auth-failures", "2", "--auth-lockout", "300")
    tcp = ["status", "-H", "127.0.0.1", "-p", mgr.port, "--disable-tls", "-u", "nobody",
           "--password", "wrong"]
    first = run(*tcp, home=netmgr_home)
    assert (first.returncode, first.stderr) == (1, "ValueError: Unregistered user; an administrator's login "
                                                   "is needed over TCP: `sudo netmgr user add NAME --admin` "
                                                   "makes one; on the Manager's host, `netmgr status` uses "
                                                   "the control socket and needs none\n")
    for _ in range(3):
        run(*tcp, home=netmgr_home)
    locked = run(*tcp, home=netmgr_home)
    assert locked.returncode == 1 and "Too many failed attempts, try again in" in locked.stderr, locked.stderr
    proc = run("status", home=netmgr_home)
    assert proc.returncode == 0 and proc.stdout.startswith("Manager: Manager["), proc.stderr


def test_status_password_takes_several_words(netmgr_factory, netmgr_home, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("two words\n")
    assert run("user", "add", "admin", "--password-file", pw, "--admin", "--bcrypt-rounds", "4",
                  home=netmgr_home).returncode == 0
    mgr = netmgr_factory("--auth-login")
    proc = run("status", "-H", "127.0.0.1", "-p", mgr.port, "--disable-tls", "-u", "admin",
                  "--password", "two", "words", home=netmgr_home)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Manager: Manager[")


# ------------------------------------------------------------------ stop, reload, disconnect

def test_disconnect_reload_and_stop_through_the_socket(netmgr, netmgr_home):
    client = connect(name="Victim", host="127.0.0.1", port=netmgr.port, disable_tls=True, timeout=WAIT)
    try:
        name = str(client)
        assert name in json.loads(netmgr_status(netmgr_home))["clients"]
        proc = run("disconnect", name, home=netmgr_home)
        assert (proc.returncode, proc.stdout) == (0, f"Disconnected {name}\n"), proc.stderr
        wait_until(lambda: name not in json.loads(netmgr_status(netmgr_home))["clients"], "the drop")
        missing = run("disconnect", "Nobody[h:1]", home=netmgr_home)
        assert (missing.returncode, missing.stderr) == (1, "ValueError: no peer named 'Nobody[h:1]' is connected\n")
    finally:
        client.disconnect()
    proc = run("reload", home=netmgr_home)
    assert proc.returncode == 0 and proc.stdout == f"Reloaded the Manager at {netmgr_home}/netmgr.sock\n"
    wait_until(lambda: "reloaded" in netmgr.output, "the reload in the log")
    proc = run("stop", home=netmgr_home)
    assert proc.returncode == 0, proc.stderr
    assert netmgr.proc.wait(WAIT) == 0
    assert not (netmgr_home / "netmgr.sock").exists()
    gone = run("status", home=netmgr_home)  # no socket file now: TCP on the default port
    assert gone.returncode == 1


def test_connections_come_from_the_running_manager(netmgr, netmgr_home):
    """Through the socket the Manager writes its buffered rows first: a row seen at once."""
    client = connect(name="Fresh", host="127.0.0.1", port=netmgr.port, disable_tls=True, timeout=WAIT)
    try:
        proc = run("connections", "--json", home=netmgr_home)
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        assert data["database"] == f"the running Manager ({netmgr_home}/netmgr.sock)"
        assert [r["message"] for r in data["connections"] if r["port"] == client.port] == \
            ["new connection request", "connected as a client"]
        from_file = json.loads(run("connections", "--json", "-d", netmgr_home / "manager.sqlite3",
                                   home=netmgr_home).stdout)
        assert from_file["database"] == str(netmgr_home / "manager.sqlite3")
    finally:
        client.disconnect()


def netmgr_status(home):
    proc = run("status", "--json", home=home)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_stale_socket_is_replaced_and_a_live_one_kept(netmgr_factory, netmgr_home):
    first = netmgr_factory()
    first.stop(sig=signal.SIGKILL)  # leaves its socket file behind
    assert (netmgr_home / "netmgr.sock").exists()
    second = netmgr_factory()
    assert run("status", home=netmgr_home).stdout.startswith("Manager: Manager[")
    third = netmgr_factory()  # same HOME: the running Manager keeps the socket
    assert "control_socket_unavailable" in third.output and "another Manager is listening" in third.output
    data = json.loads(netmgr_status(netmgr_home))
    assert data["manager"].endswith(f":{second.port}]")


def test_the_socket_can_move_or_be_turned_off(netmgr_factory, netmgr_home, tmp_path):
    elsewhere = tmp_path / "admin.sock"
    mgr = netmgr_factory("--control-socket", elsewhere)
    assert not (netmgr_home / "netmgr.sock").exists()
    proc = run("status", "--socket", elsewhere, home=netmgr_home)
    assert proc.returncode == 0 and proc.stdout.startswith("Manager: Manager["), proc.stderr
    mgr.stop()
    assert not elsewhere.exists()
    netmgr_factory("--control-socket", "none")
    assert not (netmgr_home / "netmgr.sock").exists() and not elsewhere.exists()


def test_services_may_not_use_the_socket(netmgr, netmgr_home):
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(WAIT)
        sock.connect(str(netmgr_home / "netmgr.sock"))
        f = sock.makefile("rwb")
        assert json.loads(f.readline())["attribute"] == "identity"
        f.write(b'{"result": {"type": "service", "name": "Sneaky", "attributes": {}}, '
                b'"error": false, "requester": "x", "uid": ""}\n')
        f.flush()
        reply = json.loads(f.readline())
        assert reply["error"] is True
        assert "the control socket serves administrators' Clients" in reply["message"]


# ------------------------------------------------------------------------ plaintext and TLS mix

def test_a_plaintext_status_of_a_tls_manager_is_told_at_once(netmgr_factory, netmgr_home):
    """The Manager speaks first, after TLS: netmgr's library checks a silent plaintext
    connection with a TLS probe instead of waiting out its timeout (1.0 waits, then guesses)."""
    mgr = netmgr_factory(tls=True)
    proc = run("status", "-H", "127.0.0.1", "-p", mgr.port, "--disable-tls", "--timeout", "60", "-u", "a",
               "--password", "b", home=netmgr_home)
    assert (proc.returncode, proc.stderr) == (1, f"The Manager at 127.0.0.1:{mgr.port} speaks TLS and this "
                                                 f"connection is plaintext; leave out --disable-tls\n")


def test_a_tls_status_of_a_plaintext_manager_is_told(netmgr, netmgr_home):
    cert = next((netmgr_home / "certs").glob("*.crt"), None) or netmgr_home / "x.crt"
    run("certgen", cert, "-k", netmgr_home / "x.key", home=netmgr_home)
    proc = run("status", "-H", "127.0.0.1", "-p", netmgr.port, "-c", cert, "-u", "a", "--password", "b",
               home=netmgr_home)
    assert proc.returncode == 1 and proc.stderr.endswith("the Manager does not use TLS: pass --disable-tls\n")


# ------------------------------------------------------------------------------ status --watch

def test_watch_under_a_terminal_follows_services_and_exits_130_on_ctrl_c(netmgr, netmgr_home):
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(NETMGR_HOME=str(netmgr_home), COLUMNS="80", LINES="40")
        os.execv(sys.executable, [sys.executable, "-m", "netmgr.launcher", "status", "--watch",
                                  "-n", "0.2"])
    screen = Screen(fd)
    try:
        screen.wait_for("Services (0)")
        service = EchoService(netmgr.port, netmgr_home, disable_tls=True)
        screen.wait_for("Services (1)")
        screen.wait_for("Echo")
        service.stop()
        screen.wait_for("Services (0)")
        os.write(fd, b"\x03")  # Ctrl-C: the terminal sends SIGINT to the foreground group
        _, status = os.waitpid(pid, 0)
        pid = None
        assert os.waitstatus_to_exitcode(status) == 130
        text = screen.text()
        assert "Traceback" not in text
        assert "\x1b[?1049h" in text and text.rstrip().endswith("\x1b[?1049l")  # the screen restored
        assert all(len(line) <= 80 for line in ANSI.sub("\n", text).replace("\r", "").split("\n"))
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


def test_watch_into_a_pipe_prints_plain_frames(netmgr, netmgr_home):
    proc = subprocess.Popen([sys.executable, "-m", "netmgr.launcher", "status", "--watch", "-n", "0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, NETMGR_HOME=str(netmgr_home)))
    frames = 0
    lines = []
    for line in proc.stdout:
        lines.append(line)
        frames += line.startswith("Manager[")
        if frames == 3:
            break
    proc.send_signal(signal.SIGINT)
    assert proc.wait(WAIT) == 130
    assert "\x1b" not in "".join(lines)
    assert "Traceback" not in proc.stderr.read()


class Screen:
    """What a pseudo-terminal's program wrote, read as it arrives."""

    def __init__(self, fd):
        self.fd = fd
        self.data = ""
        self.mark = 0

    def wait_for(self, text):
        deadline = time.monotonic() + WAIT
        while text not in self.data[self.mark:]:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never appeared; the screen:\n{ANSI.sub('', self.data[-2000:])}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    self.data += os.read(self.fd, 65536).decode(errors="replace")
                except OSError:  # the program ended
                    break
        self.mark = self.data.index(text, self.mark) + len(text)

    def text(self):
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return self.data
            if not chunk:
                return self.data
            self.data += chunk.decode(errors="replace")


def test_the_watch_view_fits_80_columns_without_cutting_the_totals():
    from netmgr.cli.actions import table
    from netmgr.cli.status import format_watch

    status = {"manager": "Manager[lab-server-01:1875]", "peers": [{}] * 120, "clients": ["C[h:1]"] * 100,
              "services": {"Multimeter": {"address": "lab-pc-17:50123", "max_clients": -1, "in_flight": 3,
                                         "links": ["Script[h:5]"], "locks": []}},
              "totals": {"uptime": 9 * 86400 + 3700, "in_flight": 3, "queued_bytes": 123456789,
                         "connections": 123456, "dropped": 789},
              "recent": [{"datetime": "2026-11-25T12:00:01", "ip_address": "192.168.100.200",
                          "port": 50123, "message": "connected as a service"}]}
    lines = format_watch(status, table, 80, source="/run/netmgr/netmgr.sock").split("\n")
    assert all(len(line) <= 80 for line in lines)
    assert lines[1] == "Peers 120  Clients 100  Services 1  In flight 3  Queued 117.7 MiB"
    assert lines[2] == "Since the start: 123456 connections, 789 dropped by the Manager"
    row = lines[lines.index("Services (1)") + 3]
    assert row.split() == ["Multimeter", "lab-pc-17:50123", "∞", "3", "Script", "-"]
