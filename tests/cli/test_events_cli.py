"""``netmgr events``: the Manager's event stream followed from the command line (issue 13).

Real Managers (``netmgr start`` subprocesses), ``netmgr events`` as a subprocess through the
control socket (and over TCP with an administrator's login), real msl-network 1.0 Services in
child processes that are SIGKILLed, and Ctrl-C under a real pseudo-terminal. The command says
on stderr when it follows the stream: the tests wait for that line, never for a fixed time.
"""
import json
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

from lib_support import echo_service_process
from netmgr.cli.events import format_event

WAIT = 30
TEST_DEADLINE = 240
pytestmark = pytest.mark.usefixtures("watchdog", "clean_env")


class Events:
    """``netmgr events ARGS`` in a subprocess; its stdout and stderr lines collected as they come."""

    def __init__(self, *args, home):
        self.proc = subprocess.Popen([sys.executable, "-m", "netmgr.launcher", "events", *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, NETMGR_HOME=str(home)))
        self.out, self.err = [], []
        self.cond = threading.Condition()
        self.readers = [threading.Thread(target=self._read, args=(f, lines), daemon=True)
                        for f, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self.readers:
            reader.start()
        self.taken = 0

    def _read(self, f, lines):
        for line in f:
            with self.cond:
                lines.append(line)
                self.cond.notify_all()
        with self.cond:
            lines.append(None)  # the end
            self.cond.notify_all()

    def stderr_line(self, text):
        """Wait for a stderr line that contains `text`."""
        def seen():
            return any(line and text in line for line in self.err)

        with self.cond:
            assert self.cond.wait_for(lambda: seen() or None in self.err, WAIT), f"no {text!r}: {self.err}"
            assert seen(), (self.err, self.out)

    def next_event(self):
        """The next line of stdout, as JSON."""
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.out) > self.taken, WAIT), f"no event: {self.err}"
            line = self.out[self.taken]
            self.taken += 1
        assert line is not None, f"the command ended: {''.join(filter(None, self.err))}"
        return json.loads(line)

    def event(self, kind, event):
        """The next event of `kind`/`event`; the ones before it are returned too."""
        skipped = []
        while True:
            ev = self.next_event()
            if (ev["type"], ev["event"]) == (kind, event):
                return ev, skipped
            skipped.append(ev)

    def interrupt(self):
        """Ctrl-C: the exit status."""
        self.proc.send_signal(signal.SIGINT)
        return self.wait()

    def wait(self):
        code = self.proc.wait(WAIT)
        for reader in self.readers:
            reader.join(WAIT)
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def follow(netmgr_home):
    started = []

    def start(*args):
        events = Events(*args, home=netmgr_home)
        started.append(events)
        return events

    yield start
    for events in started:
        events.kill()


@pytest.fixture
def msl_echo():
    """Start msl-network 1.0's Echo Service in a child process (killed at teardown)."""
    procs = []

    def start(port):
        proc = echo_service_process("msl", port)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------------ --json

def test_json_follows_a_msl_network_service_that_connects_and_is_killed(netmgr, follow, msl_echo):
    events = follow("--json")
    events.stderr_line("following the Manager at")
    service = msl_echo(netmgr.port)
    registered, before = events.event("service", "registered")
    assert registered["name"] == "Echo" and registered["network_name"].startswith("Echo[")
    assert registered["attributes"]["echo"] and registered["language"].startswith("Python")
    assert [(e["type"], e["event"]) for e in before] == [("peer", "connected")]
    assert before[0]["kind"] == "service" and before[0]["name"] == registered["network_name"]
    service.kill()
    gone, between = events.event("service", "gone")
    assert gone["name"] == "Echo" and gone["reason"]
    assert all(e["type"] == "peer" for e in between)
    assert events.interrupt() == 130
    assert not any(line and "Traceback" in line for line in events.err)
    shown = [json.loads(line) for line in events.out if line]
    assert "heartbeat" not in {e["type"] for e in shown}  # left out unless asked for by name
    assert all(line is None or line.isascii() for line in events.out)


def test_the_type_filter(netmgr, follow, msl_echo):
    events = follow("--json", "--type", "service")
    events.stderr_line("following the Manager at")
    service = msl_echo(netmgr.port)
    registered, before = events.event("service", "registered")
    assert before == []  # the Service's peer event is not shown
    service.kill()
    gone = events.next_event()  # the next line: the peer's disconnection is not shown either
    assert (gone["type"], gone["event"], gone["name"]) == ("service", "gone", "Echo")
    assert events.interrupt() == 130

    both = follow("--json", "-t", "heartbeat,health", "-t", "heartbeat")
    both.stderr_line("following the Manager at")
    tick, before = both.event("heartbeat", "tick")
    assert "totals" in tick and all(e["type"] == "health" for e in before)
    assert both.interrupt() == 130


def test_an_unknown_type_is_one_line_and_status_1(netmgr, follow):
    events = follow("--type", "bogus")
    assert events.wait() == 1
    assert events.err == ["ValueError: unknown event type 'bogus'; the types are: peer, service, link, lock, "
                          "request_failed, auth, admin, heartbeat, health, cluster\n", None]


# --------------------------------------------------------------------- the Manager goes away

def test_it_keeps_following_across_a_manager_restart(netmgr_factory, follow, msl_echo):
    mgr = netmgr_factory()
    port = mgr.port
    events = follow("--json", "-t", "service")
    events.stderr_line("following the Manager at")
    mgr.stop(signal.SIGKILL)
    events.stderr_line("lost the Manager at")
    netmgr_factory(port=port)
    events.stderr_line("again; events meanwhile were missed")
    msl_echo(port)
    registered, _ = events.event("service", "registered")
    assert registered["name"] == "Echo"
    assert events.interrupt() == 130


def test_without_reconnect_the_manager_going_away_is_status_1(netmgr, netmgr_home, follow):
    events = follow("--no-reconnect")
    events.stderr_line("following the Manager at")
    netmgr.stop(signal.SIGKILL)
    assert events.wait() == 1
    assert events.err[-2:] == [f"the Manager at {netmgr_home}/netmgr.sock closed the connection\n", None]


def test_over_tcp_with_an_administrators_login(netmgr_factory, netmgr_home, follow, tmp_path):
    """``--password`` takes several words, as status's does; the login's own auth event shows."""
    pw = tmp_path / "pw"
    pw.write_text("two words\n")
    add = subprocess.run([sys.executable, "-m", "netmgr.launcher", "user", "add", "admin", "--password-file",
                          str(pw), "--admin", "--bcrypt-rounds", "4"], capture_output=True, text=True,
                         env=dict(os.environ, NETMGR_HOME=str(netmgr_home)), timeout=WAIT)
    assert add.returncode == 0, add.stderr
    mgr = netmgr_factory("--auth-login")
    events = follow("--json", "-t", "auth,admin", "-H", "127.0.0.1", "-p", mgr.port, "--disable-tls",
                    "-u", "admin", "--password", "two", "words")
    events.stderr_line(f"following the Manager at 127.0.0.1:{mgr.port}")
    status = subprocess.run([sys.executable, "-m", "netmgr.launcher", "status", "-H", "127.0.0.1", "-p",
                             str(mgr.port), "--disable-tls", "-u", "admin", "--password-file", str(pw)],
                            capture_output=True, text=True, timeout=WAIT,
                            env=dict(os.environ, NETMGR_HOME=str(netmgr_home)))
    assert status.returncode == 0, status.stderr
    ok, _ = events.event("auth", "ok")
    assert ok["user"] == "admin" and ok["mode"] == "login" and "password" not in json.dumps(ok).lower()
    assert events.interrupt() == 130


# ------------------------------------------------------------------------------ a terminal

def test_under_a_terminal_one_line_per_event_and_ctrl_c_is_130(netmgr, netmgr_home, msl_echo):
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(NETMGR_HOME=str(netmgr_home))
        os.execv(sys.executable, [sys.executable, "-m", "netmgr.launcher", "events", "-t", "service"])
    screen = Screen(fd)
    try:
        screen.wait_for("following the Manager at")
        service = msl_echo(netmgr.port)
        screen.wait_for("service registered  Echo  ")
        service.kill()
        screen.wait_for("service gone  Echo  ")
        os.write(fd, b"\x03")  # Ctrl-C: the terminal sends SIGINT to the foreground group
        _, status = os.waitpid(pid, 0)
        pid = None
        assert os.waitstatus_to_exitcode(status) == 130
        assert "Traceback" not in screen.text()
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


class Screen:
    """What a pseudo-terminal's program wrote, read as it arrives."""

    def __init__(self, fd):
        self.fd = fd
        self.data = ""

    def wait_for(self, text):
        deadline = time.monotonic() + WAIT
        while text not in self.data:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never appeared; the screen:\n{self.data[-2000:]}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    self.data += os.read(self.fd, 65536).decode(errors="replace")
                except OSError:  # the program ended
                    break
        assert text in self.data, self.data

    def text(self):
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return self.data
            if not chunk:
                return self.data
            self.data += chunk.decode(errors="replace")


# --------------------------------------------------------------------------- the human line

def test_the_human_line_escapes_what_peers_named_and_clips_nothing():
    t = time.mktime((2025, 1, 2, 12, 0, 1, 0, 0, -1)) + 0.25
    line = format_event({"type": "peer", "event": "disconnected", "seq": 7, "time": t,
                         "name": "Evil\x1bc[host:1]", "kind": "client", "address": "host:1",
                         "reason": "closed by peer\x07"})
    assert line == ("2025-01-02 12:00:01.250  peer disconnected  Evil\\x1bc[host:1]  kind=client "
                    "address=host:1 reason=\"closed by peer\\x07\"")
    assert "\x1b" not in line and "\x07" not in line

    service = format_event({"type": "service", "event": "registered", "seq": 8, "time": t, "name": "Echo",
                            "network_name": "Echo[h:2]", "address": "h:2",
                            "attributes": {"echo": "(*args)", "ping": "()"}, "max_clients": -1,
                            "language": "Python 3.11", "os": "Linux", "future_key": [1, 2]})
    assert service.endswith("  service registered  Echo  network_name=Echo[h:2] address=h:2 "
                            "attributes=echo,ping max_clients=-1 language=\"Python 3.11\" os=Linux "
                            "future_key=[1,2]")

    tick = format_event({"type": "heartbeat", "event": "tick", "seq": 9, "time": t, "interval": 2.0,
                         "loop_lag": 0.0004, "totals": {"peers": 3, "services": 1},
                         "services": {"Echo": {"requests": 5, "rate": 2.5, "p50": None}}})
    assert tick.endswith("  heartbeat tick  interval=2 loop_lag=0.0004 totals={peers=3 services=1} "
                         "services={Echo={requests=5 rate=2.5 p50=null}}")

    lock = format_event({"type": "lock", "event": "acquired", "seq": 10, "time": t, "service": "Echo",
                         "client": "C[h:3]", "shared": False})
    assert lock.endswith("  lock acquired  Echo  client=C[h:3] shared=false")
