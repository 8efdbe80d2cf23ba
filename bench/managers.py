"""How to start each Manager under test, and how to know it is ready.

Readiness is the Manager speaking first (reference 1.1): a probe connection must receive the identity
request (after the TLS handshake for a TLS Manager). netmgr's ``Network Manager running on`` start-up
line is also recorded when it appears. Nothing waits a fixed time.

TLS: :func:`make_tls_files` writes one RSA-2048 key and self-signed certificate per benchmark run
(with ``netmgr.crypto``); both Managers are started with ``--cert-file``/``--key-file`` pointing at
them, so neither generates a key while it starts and both serve the same certificate.

``netmgr+http`` (issue 13) is netmgr started with ``--http 127.0.0.1:PORT`` and watched for its whole
life by ``python -m bench.observer`` (``/metrics`` scraped once a second, one ``/api/events`` reader):
the same Manager as ``netmgr``, with the cost of being observed. Its HTTP port is chosen like the
Manager's (a free port of 127.0.0.1), not ``:0``: the ``http_listening`` event that names a port
chosen by the kernel is an INFO line, and the benchmark runs every Manager at ``-G WARNING``.
"""
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench import procs
from bench.cases import NETMGR_CONN_LIMITS
from bench.wire import TLS_SERVER_NAME, client_tls_context

ROOT = Path(__file__).resolve().parent.parent
READY_LINE = "Network Manager running on"


class ManagerError(Exception):
    pass


def _msl_network_exe():
    exe = Path(sysconfig.get_path("scripts")) / "msl-network"
    if exe.exists():
        return str(exe)  # a Python script: exec'ed in place, so the pid is the Manager's
    found = shutil.which("msl-network")
    if not found:
        raise ManagerError("msl-network is not installed (pip install msl-network==1.0.0)")
    return found


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    made_with: str  # what generated them, for the report


# netmgr's generator first; 1.0's when netmgr cannot be imported (its functions are keyword-only).
_KEYGEN = {
    "netmgr.crypto": "from netmgr import crypto as c; import sys; "
                     "c.generate_key(sys.argv[2], 'rsa', size=2048); "
                     "c.generate_certificate(sys.argv[1], sys.argv[2], hostname='localhost')",
    "msl.network.cryptography": "from msl.network import cryptography as c; import sys; "
                                "c.generate_key(path=sys.argv[2], algorithm='RSA', size=2048); "
                                "c.generate_certificate(path=sys.argv[1], key_path=sys.argv[2])",
}


def make_tls_files(directory):
    """One RSA-2048 key and a self-signed certificate for it (CN and SAN localhost), in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "bench.crt", directory / "bench.key"
    errors = []
    for module, code in _KEYGEN.items():
        try:
            r = subprocess.run([sys.executable, "-c", code, str(cert), str(key)], cwd=ROOT, env=child_env(),
                               capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            errors.append(f"{module}: timed out")
            continue
        if r.returncode == 0 and cert.is_file() and key.is_file():
            return TlsFiles(cert, key, f"{module}, RSA-2048")
        errors.append(f"{module}: " + (r.stderr.strip().splitlines() or ["?"])[-1])
    raise ManagerError("cannot create the TLS key and certificate: " + "; ".join(errors))


def child_env(**extra):
    """The environment of a child: this one, with the repository root first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _importable(modules):
    """(ok, reason): ``import <modules>`` succeeds in a child Python from the repo root."""
    statement = f"import {modules}"
    try:
        r = subprocess.run([sys.executable, "-c", statement], cwd=ROOT, env=child_env(),
                           capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False, f"{statement} timed out"
    if r.returncode:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return False, f"{statement} failed: {last}"
    return True, ""


def netmgr_available():
    """(ok, reason): netmgr's Manager, its command line and the entry point the benchmark runs
    (``python -m netmgr.launcher start``) can be imported."""
    return _importable("netmgr.launcher, netmgr.daemon.manager, netmgr.cli.app")


def netmgr_lib_available():
    """(ok, reason): netmgr's client and Service library can be imported (the lib cases)."""
    return _importable("netmgr.client")


_netmgr_options = None


def netmgr_http_available():
    """(ok, reason): netmgr's HTTP endpoint and prometheus_client can be imported (``netmgr+http``)."""
    return _importable("netmgr.daemon.http, netmgr.daemon.metrics, prometheus_client")


def family(key):
    """The Manager program of a column: ``netmgr+http`` is netmgr (its library, its options)."""
    return "netmgr" if key == "netmgr+http" else key


def connection_args(key, count):
    """The options that let Manager ``key`` hold ``count`` connections from 127.0.0.1 (+ probes):
    for netmgr, each limit of :data:`NETMGR_CONN_LIMITS` it has and that ``count`` exceeds."""
    if family(key) != "netmgr":
        return []
    need = count + 100
    help_text = _netmgr_start_options()
    return [a for option, default in NETMGR_CONN_LIMITS if need > default and option in help_text
            for a in (option, str(need))]


def _netmgr_start_options():
    """Options of ``netmgr start`` (from its --help) so its database/log can go to the temp dir."""
    global _netmgr_options
    if _netmgr_options is None:
        try:
            r = subprocess.run([sys.executable, "-m", "netmgr.launcher", "start", "--help"], cwd=ROOT,
                               env=child_env(), capture_output=True, text=True, timeout=60)
            _netmgr_options = r.stdout if r.returncode == 0 else ""
        except (subprocess.TimeoutExpired, OSError):
            _netmgr_options = ""
    return _netmgr_options


def _tls_options(tls):
    if tls is None:
        return ["--disable-tls"]
    return ["--cert-file", str(tls.cert), "--key-file", str(tls.key)]


def msl_command(port, tmpdir, tls=None):
    argv = [_msl_network_exe(), "start", *_tls_options(tls), "-p", str(port), "-G", "WARNING",
            "-d", str(tmpdir / "manager.sqlite3"), "-l", str(tmpdir / "manager.log")]
    return argv, child_env(MSL_NETWORK_HOME=str(tmpdir))


def netmgr_command(port, tmpdir, tls=None):
    argv = [sys.executable, "-m", "netmgr.launcher", "start", *_tls_options(tls), "-p", str(port),
            "-H", "127.0.0.1", "-G", "WARNING"]
    help_text = _netmgr_start_options()
    if "--database" in help_text:
        argv += ["--database", str(tmpdir / "netmgr.sqlite3")]
    if "--log-file" in help_text:
        argv += ["--log-file", str(tmpdir / "netmgr.daemon.log")]
    # keep any home-relative state of netmgr and of msl-network inside the temp dir
    return argv, child_env(MSL_NETWORK_HOME=str(tmpdir), NETMGR_HOME=str(tmpdir))


def netmgr_http_command(port, tmpdir, tls=None, http_port=None):
    """netmgr's command with ``--http 127.0.0.1:<http_port>`` (the endpoint is plain HTTP on loopback
    whether or not the Manager runs TLS)."""
    if "--http" not in _netmgr_start_options():
        raise ManagerError("this netmgr has no --http option (netmgr+http needs the HTTP endpoint)")
    argv, env = netmgr_command(port, tmpdir, tls)
    return argv + ["--http", f"127.0.0.1:{http_port}"], env


# key -> (label in the report, command); the keys are --managers' words
MANAGERS = {
    "netmgr": ("netmgr", netmgr_command),
    "msl": ("msl-network 1.0", msl_command),
    "netmgr+http": ("netmgr+http", netmgr_http_command),
}
#: the columns run with the HTTP endpoint on and the observer (bench/observer.py) watching
OBSERVED = frozenset({"netmgr+http"})
#: seconds between two scrapes of /metrics by the observer (Prometheus's common 1 s at its busiest)
SCRAPE_INTERVAL = 1.0


def probe_first_line(port, timeout=5.0, tls=None, info=None):
    """Connect and return the parsed first line if it is the identity request, else None.

    With ``tls`` (a client ``SSLContext``) the probe does the TLS handshake first and, if ``info`` is
    a dict, stores the negotiated protocol and cipher in ``info["tls"]``.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            if tls is not None:
                s = tls.wrap_socket(s, server_hostname=TLS_SERVER_NAME)
                if info is not None:
                    info["tls"] = f"{s.version()} {s.cipher()[0]}"
            buf = b""
            while b"\n" not in buf:
                data = s.recv(65536)
                if not data:
                    return None
                buf += data
    except OSError:  # ssl.SSLError included
        return None
    try:
        msg = orjson.loads(buf.split(b"\n", 1)[0])
    except orjson.JSONDecodeError:
        return None
    return msg if isinstance(msg, dict) and msg.get("attribute") == "identity" else None


class RunningManager:
    """Context manager: start one Manager on a free port in ``tmpdir``, stop it on exit."""

    def __init__(self, key, tmpdir, ready_timeout=30.0, tls=None, extra_args=()):
        self.key = key
        self.extra_args = list(extra_args)  # appended to the start command
        self.label, self._command = MANAGERS[key]
        self.tmpdir = Path(tmpdir)
        self.tls = tls  # TlsFiles, or None for plain TCP
        self.tls_info = None  # negotiated "protocol cipher" seen by the readiness probe
        self.ready_timeout = ready_timeout
        self.proc = None
        self.port = None
        self.startup_s = None
        self.ready_line_seen = False
        self.exit_code = None
        self.stop_s = None
        self.http_port = None  # the HTTP endpoint's port (netmgr+http)
        self.observer = None  # python -m bench.observer, while it runs
        self.observed = None  # what it saw (its JSON line), once stopped

    @property
    def pid(self):
        return self.proc.pid

    def __enter__(self):
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.port = procs.free_port()
        if self.key in OBSERVED:
            self.http_port = procs.free_port()
            argv, env = self._command(self.port, self.tmpdir, self.tls, http_port=self.http_port)
        else:
            argv, env = self._command(self.port, self.tmpdir, self.tls)
        argv += self.extra_args
        self.stdout_path = self.tmpdir / "stdout.txt"
        t0 = time.monotonic()
        with open(self.stdout_path, "wb") as out:
            self.proc = procs.spawn(argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)
        try:
            self._wait_ready(t0)
            if self.key in OBSERVED:
                self._start_observer()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_observer(self):
        """``python -m bench.observer`` on the HTTP port; returns once it is READY (subscribed to
        the event stream and answered by /metrics), before any peer of the case connects."""
        argv = [sys.executable, "-m", "bench.observer", "--port", str(self.http_port),
                "--interval", str(SCRAPE_INTERVAL)]
        err = open(self.tmpdir / "observer.stderr", "wb")
        try:
            self.observer = procs.spawn(argv, cwd=ROOT, env=child_env(), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=err)
        finally:
            err.close()
        line = procs.read_line(self.observer.stdout, 30, self.observer).strip()
        if line != "READY":
            raise ManagerError(f"the observer of {self.label} did not start: {line or 'no answer'}"
                               f"{self._observer_stderr()}; the Manager's output:\n{self.output_tail()}")

    def _observer_stderr(self):
        try:
            tail = (self.tmpdir / "observer.stderr").read_text(errors="replace").strip().splitlines()[-4:]
        except OSError:
            tail = []
        return (" (" + " | ".join(tail) + ")") if tail else ""

    def _stop_observer(self):
        """Tell the observer to stop (one last scrape), keep what it saw in ``observed``."""
        proc, self.observer = self.observer, None
        line = ""
        try:
            if proc.poll() is None:
                proc.stdin.write(b"STOP\n")
                proc.stdin.flush()
            line = procs.read_line(proc.stdout, 15, proc).strip()
        except OSError:
            pass
        finally:
            procs.stop(proc)
        try:
            self.observed = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.observed = {"failure": f"the observer said {line[:200]!r}" + self._observer_stderr()}

    def _wait_ready(self, t0):
        context = client_tls_context(self.tls.cert) if self.tls else None
        info = {}
        while True:
            if self.proc.poll() is not None:
                raise ManagerError(f"{self.label} exited with code {self.proc.returncode} before it was "
                                   f"ready; output:\n{self.output_tail()}")
            if probe_first_line(self.port, timeout=5.0, tls=context, info=info) is not None:
                self.tls_info = info.get("tls")
                break
            if time.monotonic() - t0 > self.ready_timeout:
                raise ManagerError(f"{self.label} not ready after {self.ready_timeout} s; output:\n"
                                   f"{self.output_tail()}")
            time.sleep(0.02)  # poll interval of the readiness probe
        self.startup_s = time.monotonic() - t0
        self.ready_line_seen = READY_LINE in self.output()

    def output(self):
        try:
            return self.stdout_path.read_text(errors="replace")
        except OSError:
            return ""

    def output_tail(self, n=15):
        return "\n".join(self.output().splitlines()[-n:])

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM (then SIGKILL after 5 s); records the exit code and how long the stop took."""
        if self.observer is not None:  # first: it scrapes once more, and the stream must not end early
            self._stop_observer()
        if self.proc is not None and self.stop_s is None:
            t0 = time.monotonic()
            self.exit_code = procs.stop(self.proc)
            self.stop_s = time.monotonic() - t0

    def __exit__(self, *exc):
        self.stop()
        return False
