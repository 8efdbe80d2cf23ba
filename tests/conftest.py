"""Fixtures that start real Managers as subprocesses and wait for their readiness line.

``netmgr_factory`` starts ``netmgr start`` on ``127.0.0.1:0``; ``msl_factory`` starts the
msl-network 1.0 Manager from PyPI (for tests that show a 1.0 flaw next to netmgr's fix).
Readiness is the start-up line ``Network Manager running on <host>:<port>``, never a sleep.
"""
import faulthandler
import os
import re
import signal
import socket
import subprocess
import sys
import threading

import pytest

READY = re.compile(r"Network Manager running on (\S+):(\d+) \(TLS (ENABLED|DISABLED)\)")
START_TIMEOUT = 30


class ManagerProcess:
    """A Manager subprocess; ``lines`` collects its output, ``port`` is where it listens."""

    def __init__(self, argv, env=None, kind="netmgr", **popen):
        self.kind = kind
        self.argv = argv
        self.lines = []
        self.port = None
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env, text=True, bufsize=1, **popen)
        ready = threading.Event()
        self._thread = threading.Thread(target=self._drain, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT) or self.port is None:
            self.stop()
            raise RuntimeError(f"{kind} did not start:\n" + "".join(self.lines))

    def _drain(self, ready):
        for line in self.proc.stdout:
            self.lines.append(line)
            match = READY.search(line)
            if match and self.port is None:
                self.port = int(match.group(2))
                ready.set()
        ready.set()

    @property
    def output(self):
        return "".join(self.lines)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(5)
        return self.proc.returncode


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def netmgr_argv(*args):
    return [sys.executable, "-m", "netmgr.launcher", "start", *args]


@pytest.fixture
def netmgr_home(tmp_path):
    """A fresh netmgr home (certs/, keys/, logs/, manager.sqlite3) for this test."""
    home = tmp_path / "netmgr-home"
    home.mkdir()
    return home


@pytest.fixture
def netmgr_factory(netmgr_home):
    """Start ``netmgr start --disable-tls -H 127.0.0.1 -p 0 <args>``; stopped at teardown.

    The daemon's home is ``netmgr_home`` (``NETMGR_HOME``), so its log, keys and database stay
    in the test's temporary directory.
    """
    started = []

    def start(*args, tls=False, port=0, host="127.0.0.1", env=None):
        argv = netmgr_argv("-H", host, "-p", str(port), *(() if tls else ("--disable-tls",)), *args)
        # NETMGR_CONFIG=/dev/null: a real /etc/netmgr/netmgr.conf on the machine must not leak in
        environ = dict(os.environ, NETMGR_HOME=str(netmgr_home), NETMGR_CONFIG=os.devnull,
                       **(env or {}))
        mgr = ManagerProcess(argv, env=environ)
        started.append(mgr)
        return mgr

    yield start
    for mgr in started:
        mgr.stop()


@pytest.fixture
def netmgr(netmgr_factory):
    """A plaintext netmgr with no authentication."""
    return netmgr_factory()


@pytest.fixture
def msl_factory(tmp_path):
    """Start the msl-network 1.0 Manager (plaintext, no auth unless args say otherwise)."""
    started = []
    env = dict(os.environ, MSL_NETWORK_HOME=str(tmp_path / "msl-home"))

    def start(*args):
        port = free_port()
        argv = [sys.executable, "-c", "from msl.network.cli import main; main()", "start",
                "-H", "127.0.0.1", "-p", str(port), "--disable-tls",
                "-d", str(tmp_path / "msl.sqlite3"), "-l", str(tmp_path / "msl.log"), *args]
        mgr = ManagerProcess(argv, env=env, kind="msl-network")
        started.append(mgr)
        return mgr

    yield start
    for mgr in started:
        mgr.stop(sig=signal.SIGINT)


def _without_inherited_settings(monkeypatch):
    for name in list(os.environ):
        if name.startswith("NETMGR_") or name in ("MSL_NETWORK_HOME", "RUNTIME_DIRECTORY"):
            monkeypatch.delenv(name)


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No inherited NETMGR_*, MSL_NETWORK_HOME or RUNTIME_DIRECTORY, and an empty config file
    instead of /etc's, named by NETMGR_CONFIG so that subprocesses get it too."""
    from netmgr.store import models

    _without_inherited_settings(monkeypatch)
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    monkeypatch.setenv("NETMGR_CONFIG", str(empty))
    yield
    models.close_db()


@pytest.fixture
def home_env(tmp_path, monkeypatch):
    """A home of its own (NETMGR_HOME, returned), no config file (never the real /etc), no
    inherited NETMGR_* settings: for commands run in this process."""
    from netmgr import config
    from netmgr.store import models

    _without_inherited_settings(monkeypatch)
    home = tmp_path / "home"
    monkeypatch.setenv("NETMGR_HOME", str(home))
    monkeypatch.setattr(config, "SYSTEM_CONFIG", str(tmp_path / "no-such-netmgr.conf"))
    yield home
    models.close_db()


@pytest.fixture
def watchdog(request):
    """A hung test dumps every thread's stack and ends the run after the module's
    ``TEST_DEADLINE`` seconds (no pytest-timeout). Use: ``pytestmark = pytest.mark.usefixtures("watchdog")``."""
    faulthandler.dump_traceback_later(getattr(request.module, "TEST_DEADLINE", 120), exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
