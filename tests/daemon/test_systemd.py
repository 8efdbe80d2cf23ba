"""systemd integration: ``netmgr/systemd.py``, the journal handler of ``netmgr/log.py``,
``netmgr/install.py`` and the unit files in ``systemd/``.

Notifications are read from a real ``AF_UNIX`` datagram socket standing in for systemd's;
inherited listeners are real file descriptors handed to real child processes (fd 3, with
``LISTEN_PID`` set by the child itself before it execs, as systemd does); signals are real.
The end-to-end test under a booted systemd is ``tests/system/test_service.py``.
"""
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time

import pytest

from conftest import ManagerProcess, netmgr_argv
from netmgr.cli import install
from netmgr.daemon import log
from netmgr.daemon import systemd
from rawpeer import RawPeer

WAIT = 15  # seconds: bound for any single condition
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A child that puts the descriptor named by argv[1] at fd 3, says LISTEN_PID is itself and execs
# the rest of argv: what systemd does between fork and exec.
ACTIVATE = ("import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); fd != 3 and os.close(fd); "
            "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); "
            "os.execv(sys.executable, [sys.executable] + sys.argv[2:])")


class NotifySocket:
    """A stand-in for systemd's notification socket: collects datagrams."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(WAIT)
        self.seen = []

    def next(self, timeout=WAIT):
        self.sock.settimeout(timeout)
        message = self.sock.recv(65536).decode()
        self.seen.append(message)
        return message

    def wait_for(self, field, timeout=WAIT):
        """The next message with `field` (``"READY=1"``); skips STATUS and WATCHDOG pings."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {field} within {timeout} s; got {self.seen}")
            try:
                message = self.next(left)
            except socket.timeout:
                continue
            if field in message.split("\n"):
                return message

    def close(self):
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify")
    sock = NotifySocket(path)
    yield path, sock
    sock.close()


# ------------------------------------------------------------------------------ sd_notify

def test_ready_with_status(notify_socket):
    path, sock = notify_socket
    assert systemd.ready("3 peer(s)", environ={"NOTIFY_SOCKET": path})
    assert sock.next() == "READY=1\nSTATUS=3 peer(s)"


@pytest.mark.parametrize("call, expected", [
    (lambda env: systemd.status("busy", environ=env), "STATUS=busy"),
    (lambda env: systemd.stopping(environ=env), "STOPPING=1"),
    (lambda env: systemd.watchdog(environ=env), "WATCHDOG=1"),
    (lambda env: systemd.ready(environ=env), "READY=1"),
])
def test_single_field_messages(notify_socket, call, expected):
    path, sock = notify_socket
    assert call({"NOTIFY_SOCKET": path})
    assert sock.next() == expected


def test_reloading_carries_the_monotonic_time(notify_socket):
    path, sock = notify_socket
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert systemd.reloading(environ={"NOTIFY_SOCKET": path})
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = sock.next().split("\n")
    assert first == "RELOADING=1"
    name, _, usec = second.partition("=")
    assert name == "MONOTONIC_USEC" and before <= int(usec) <= after


def test_abstract_socket():
    name = f"netmgr-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(WAIT)
        assert systemd.notify("READY=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1"


def test_no_op_outside_systemd(tmp_path):
    assert systemd.notify("READY=1", environ={}) is False
    assert systemd.ready(environ={}) is False
    assert systemd.notify(environ={"NOTIFY_SOCKET": str(tmp_path / "n")}) is False  # no fields
    # a socket that went away is not an error for the Manager
    assert systemd.ready(environ={"NOTIFY_SOCKET": str(tmp_path / "missing")}) is False


def test_watchdog_interval():
    me = str(os.getpid())
    assert systemd.watchdog_interval({}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": me}) == 15.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None


# ------------------------------------------------------------------------------ LISTEN_FDS

def test_listen_fds_needs_our_pid():
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1"}
    assert systemd.listen_fds(environ=env) == []
    assert env == {"LISTEN_PID": "1", "LISTEN_FDS": "1"}  # not ours: left alone
    assert systemd.listen_fds(environ={"LISTEN_PID": "x", "LISTEN_FDS": "1"}) == []
    assert systemd.listen_fds(environ={}) == []


CHILD = """
import json, os
from netmgr.daemon import systemd
socks = systemd.listen_fds()
sock = socks[0]
report = {"count": len(socks), "fileno": sock.fileno(), "address": list(sock.getsockname()),
          "inheritable": os.get_inheritable(sock.fileno()),
          "env": [k for k in ("LISTEN_PID", "LISTEN_FDS") if k in os.environ]}
print(json.dumps(report), flush=True)
conn, _ = sock.accept()
conn.sendall(b"adopted\\n")
conn.close()
"""


def _listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def test_child_adopts_the_listener_at_fd_3():
    with _listener() as sock:
        child = subprocess.Popen([sys.executable, "-c", ACTIVATE, str(sock.fileno()), "-c", CHILD],
                                 pass_fds=(sock.fileno(),), stdout=subprocess.PIPE, text=True,
                                 cwd=REPO)
        port = sock.getsockname()[1]
    try:
        report = json.loads(child.stdout.readline())
        assert report == {"count": 1, "fileno": 3, "address": ["127.0.0.1", port],
                          "inheritable": False, "env": []}
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as peer:
            assert peer.recv(64) == b"adopted\n"
        assert child.wait(WAIT) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_netmgr_start_adopts_an_inherited_listener(netmgr_home, monkeypatch):
    """The port of the command line is ignored: systemd's socket (netmgr.socket) wins."""
    with _listener() as sock:
        argv = [sys.executable, "-c", ACTIVATE, str(sock.fileno()), "-m", "netmgr.launcher",
                "start", "--disable-tls", "-H", "127.0.0.1", "-p", "1"]
        env = dict(os.environ, NETMGR_HOME=str(netmgr_home))
        with monkeypatch.context() as patch:  # ManagerProcess's child also inherits the socket
            patch.setattr(subprocess, "Popen",
                          functools.partial(subprocess.Popen, pass_fds=(sock.fileno(),)))
            mgr = ManagerProcess(argv, env=env)
        port = sock.getsockname()[1]
    try:
        assert mgr.port == port
        with RawPeer(port) as peer:
            assert peer.read()["attribute"] == "identity"
    finally:
        assert mgr.stop() == 0


# ------------------------------------------------------------------------------ real signals

def test_sighup_reloads_and_keeps_peers_sigterm_stops(netmgr_home, notify_socket):
    path, notify = notify_socket
    env = dict(os.environ, NETMGR_HOME=str(netmgr_home), NOTIFY_SOCKET=path,
               WATCHDOG_USEC="400000")
    mgr = ManagerProcess(netmgr_argv("--disable-tls", "-H", "127.0.0.1", "-p", "0"), env=env)
    try:
        assert notify.wait_for("READY=1").startswith("READY=1\nSTATUS=")
        notify.wait_for("WATCHDOG=1")  # pinged every WATCHDOG_USEC/2 from the hub
        service = RawPeer(mgr.port).handshake_service("Echo")
        client = RawPeer(mgr.port).handshake_client()
        assert client.call("Manager", "link", "Echo")["error"] is False

        mgr.proc.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING=1")
        assert re.search(r"^MONOTONIC_USEC=\d+$", reloading, re.MULTILINE)
        assert notify.wait_for("READY=1")

        uid = client.request("Echo", "echo", 1)  # both peers lived through the reload
        service.serve_one()
        assert client.read()["uid"] == uid

        mgr.proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert mgr.proc.wait(WAIT) == 0
        assert service.closed_by_peer() and client.closed_by_peer()
    finally:
        mgr.stop()


def _fingerprint(port):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        with context.wrap_socket(raw) as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def test_sighup_loads_a_new_certificate(netmgr_home, notify_socket):
    path, notify = notify_socket
    env = dict(os.environ, NETMGR_HOME=str(netmgr_home), NOTIFY_SOCKET=path)
    mgr = ManagerProcess(netmgr_argv("-H", "127.0.0.1", "-p", "0"), env=env)
    try:
        notify.wait_for("READY=1")
        before = _fingerprint(mgr.port)
        for folder in ("certs", "keys"):  # the next load makes a new key and certificate
            shutil.rmtree(netmgr_home / folder)
        mgr.proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1")
        assert _fingerprint(mgr.port) != before
        assert list((netmgr_home / "certs").glob("*.crt"))  # made again by the reload
    finally:
        assert mgr.stop() == 0


# ------------------------------------------------------------------------------ the journal

def _parse_native(payload):
    """Fields of a native-protocol entry (both the ``K=v`` and the binary form)."""
    fields, i = {}, 0
    while i < len(payload):
        end = payload.index(b"\n", i)
        line = payload[i:end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            i = end + 1
        else:
            name = line
            (size,) = struct.unpack("<Q", payload[end + 1:end + 9])
            value = payload[end + 9:end + 9 + size]
            assert payload[end + 9 + size:end + 10 + size] == b"\n"
            i = end + 10 + size
        fields[name.decode()] = value.decode()
    return fields


@pytest.fixture
def journal(tmp_path, monkeypatch):
    path = str(tmp_path / "journal")
    sock = NotifySocket(path)
    monkeypatch.setattr(log, "JOURNAL_SOCKET", path)
    yield sock
    sock.close()
    logging_root = __import__("logging").getLogger(log.LOGGER_NAME)
    for handler in logging_root.handlers:
        handler.close()
    logging_root.handlers.clear()


def _receive(sock):
    sock.sock.settimeout(WAIT)
    return sock.sock.recvmsg(1 << 20, socket.CMSG_SPACE(4))


def test_events_become_journal_fields(journal, tmp_path):
    log.configure("DEBUG", log_file=str(tmp_path / "m.log"), journal=True)
    log.get_logger().warning("service_registered", service="Echo", peer="Pi:5000",
                             **{"max-clients": 2, "message": "hi"})
    data, _, _, _ = _receive(journal)
    fields = _parse_native(data)
    assert fields == {"MESSAGE": "service_registered service=Echo peer=Pi:5000 max-clients=2 "
                                 "message=hi",
                      "PRIORITY": "4", "SYSLOG_IDENTIFIER": "netmgr",
                      "EVENT": "service_registered", "SERVICE": "Echo", "PEER": "Pi:5000",
                      "MAX_CLIENTS": "2", "NETMGR_MESSAGE": "hi"}
    # the log file keeps the text format
    assert re.search(r"\[WARNING\] service_registered service=Echo",
                     (tmp_path / "m.log").read_text())


def test_values_with_newlines_use_the_binary_form(journal):
    log.configure("INFO", journal=True)
    log.get_logger().error("reload_failed", error="line one\nline two")
    data, _, _, _ = _receive(journal)
    assert b"\nERROR\n" + struct.pack("<Q", 17) + b"line one\nline two\n" in b"\n" + data
    fields = _parse_native(data)
    assert fields["ERROR"] == "line one\nline two" and fields["PRIORITY"] == "3"


def test_large_entries_go_as_a_sealed_memfd(journal):
    log.configure("INFO", journal=True)
    log.get_logger().info("big", blob="x" * (4 << 20))
    data, ancillary, _, _ = _receive(journal)
    assert data == b""
    (level, kind, fd_bytes), = ancillary
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    fd = struct.unpack("i", fd_bytes[:4])[0]
    with os.fdopen(fd, "rb") as f:
        f.seek(0)  # the sender's file offset came along with the descriptor
        fields = _parse_native(f.read())
    assert fields["EVENT"] == "big" and len(fields["BLOB"]) == 4 << 20


def test_no_journal_socket_falls_back_to_json_lines(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(log, "JOURNAL_SOCKET", str(tmp_path / "no-journal"))
    log.configure("INFO", journal=True)
    log.get_logger().info("peer_connected", peer="x:1")
    line = json.loads(capsys.readouterr().out)
    assert line["event"] == "peer_connected" and line["peer"] == "x:1"


def test_journal_stream_detection(tmp_path):
    with open(tmp_path / "out", "w") as out:
        st = os.fstat(out.fileno())
        assert log.journal_stream_is_stdout({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, out)
        assert not log.journal_stream_is_stdout({"JOURNAL_STREAM": f"{st.st_dev}:1"}, out)
        assert not log.journal_stream_is_stdout({}, out)
        assert not log.journal_stream_is_stdout({"JOURNAL_STREAM": "junk"}, out)


# ------------------------------------------------------------------------------ the unit

@pytest.fixture(scope="module")
def rendered_units(tmp_path_factory):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (Debian/Ubuntu: apt-get install systemd)")
    prefix = tmp_path_factory.mktemp("units")
    install.install_service(prefix=str(prefix), run_commands=False,
                            executable=shutil.which("true"))  # a program that exists here
    return prefix / "etc/systemd/system"


def test_units_verify_clean(rendered_units):
    result = subprocess.run(["systemd-analyze", "verify", str(rendered_units / "netmgr.service"),
                             str(rendered_units / "netmgr.socket")],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_security_exposure_at_most_2(rendered_units):
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                             str(rendered_units / "netmgr.service")],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for netmgr\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout
