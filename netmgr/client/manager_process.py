"""The Manager that ``run_forever`` and ``run_services`` start: ``netmgr start`` as a child process.

The child's command line is built from 1.0's ``run_forever`` keywords; it is ready once it prints
its ``Network Manager running on <host>:<port>`` line (never a sleep). Its output is logged by
``netmgr.manager.process`` (the name docs/client.md gives); SIGTERM (SIGINT for Ctrl+C in
``run_forever``) stops it.
"""
import collections
import logging
import re
import signal
import subprocess
import sys
import threading

from netmgr.protocol import PORT

logger = logging.getLogger("netmgr.service")

_READY = re.compile(r"Network Manager running on (\S+):(\d+) \(TLS (ENABLED|DISABLED)\)")
MANAGER_START_TIMEOUT = 60
#: 1.0's keywords of ``run_forever``, the parameters of :func:`manager_argv`.
RUN_FOREVER_KEYS = ("host", "port", "auth_hostname", "auth_login", "auth_password", "database",
                    "disable_tls", "cert_file", "key_file", "key_file_password", "log_level",
                    "log_file")


def manager_argv(host=None, port=PORT, auth_hostname=False, auth_login=False,
                 auth_password=None, database=None, disable_tls=False, cert_file=None,
                 key_file=None, key_file_password=None, log_level="INFO", log_file=None):
    """``python -m netmgr.launcher start ...`` for 1.0's ``run_forever`` keywords."""
    argv = [sys.executable, "-m", "netmgr.launcher", "start", "-p", str(port)]
    flags = (("--auth-hostname", auth_hostname), ("--auth-login", auth_login),
             ("--disable-tls", disable_tls))
    argv += [flag for flag, on in flags if on]
    options = (("-H", host), ("-P", _joined(auth_password)), ("-d", database),
               ("-c", cert_file), ("-k", key_file), ("-D", _joined(key_file_password)),
               ("-G", log_level), ("-l", log_file))
    for option, value in options:
        if value is not None:
            argv += [option, str(value)]
    return argv


def _joined(value):
    """1.0 accepts a password as a list of words."""
    return " ".join(value) if isinstance(value, (list, tuple)) else value


class ManagerProcess:
    """``netmgr start`` as a child process; ready once it prints its running line."""

    def __init__(self, argv):
        self.lines = collections.deque(maxlen=200)
        self.port = None
        self.host = None
        self._ready = threading.Event()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._drain, name="netmgr-manager-output",
                                        daemon=True)
        self._reader.start()

    def _drain(self):
        out = logging.getLogger("netmgr.manager.process")
        for line in self.proc.stdout:
            self.lines.append(line)
            out.info("%s", line.rstrip())
            match = _READY.search(line)
            if match and self.port is None:
                self.host, self.port = match.group(1), int(match.group(2))
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout=MANAGER_START_TIMEOUT):
        if not self._ready.wait(timeout) or self.port is None:
            self.stop()
            raise RuntimeError("the Network Manager did not start:\n" + "".join(self.lines))
        return self.port

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


def run_manager(argv):
    """Run the Manager in the foreground until it exits; Ctrl+C stops it. Its exit status."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def run_with_manager(services, argv, service_kwargs):
    """Start the Manager, then each Service on its own thread; return when all have left
    (or the Manager stopped). Ctrl+C stops the Services; the Manager is always stopped."""
    manager = ManagerProcess(argv)
    try:
        service_kwargs["port"] = manager.wait_ready()
        if "host" not in service_kwargs or service_kwargs["host"] is None:
            service_kwargs["host"] = "localhost"

        def run(service):
            try:
                service.start(**service_kwargs)
            except Exception:  # noqa: BLE001 -- reported, the others keep running
                logger.exception("the %r Service failed", service.name)

        threads = [threading.Thread(target=run, args=(s,), name=f"run_services-{s.name}",
                                    daemon=True) for s in services]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.5)
                    if manager.proc.poll() is not None:
                        break
        except KeyboardInterrupt:
            logger.info("CTRL+C keyboard interrupt received")
            for s in services:
                s.stop_service()
    finally:
        manager.stop()
