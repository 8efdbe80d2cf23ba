"""The canary of the overload attacks, and the watch on the Manager's memory.

:class:`Canary` is an honest Echo Service and an honest Client linked to it, both raw protocol
(:class:`bench.rawconn.Conn`, so it runs against netmgr and the msl-network 1.0 Manager alike), the
Client calling ``echo`` every ``period`` seconds, one call at a time, and recording each call's start
(``time.monotonic()``, shared by every process of the machine) and latency. A call with no reply after
``call_timeout`` is recorded as "stalled" with that timeout as its latency (a lower bound), and the
call still waiting when the canary stops as "pending" with its age. :func:`summary` gives p50/p99/max
over all calls or over a window of time.

:class:`RssWatch` samples ``VmRSS`` of a pid from ``/proc/<pid>/status`` every 20 ms in a thread: the
peak, an event when a limit is crossed (the attack's ``stop``), and a SIGKILL above a hard cap
(default 4 GiB), so that no attack on a Manager without bounds can exhaust the shared machine.

``python -m bench.canary --port P [--tls-cert C] [--period S]`` runs the canary in its own process:
it prints ``READY`` once linked and calling, runs until a line or EOF on stdin, then prints the
samples as one JSON line.
"""
import argparse
import math
import os
import signal
import socket
import sys
import threading
import time

import orjson

from bench.rawconn import Conn, reply_line, request_line
from bench.wire import ProtocolFailure, client_tls_context

GIB = 1 << 20  # in KiB
KILL_ABOVE_KIB = 4 * GIB


def percentile(values, p):
    """Nearest-rank percentile of a sorted list (nan when empty)."""
    if not values:
        return math.nan
    return values[max(0, math.ceil(p / 100 * len(values)) - 1)]


def summary(samples, t_from=None, t_to=None):
    """p50/p99/max (ms) and counts of the calls that overlap [t_from, t_to] (all calls by default).

    ``samples`` are ``(start, latency_s, status)``; a stalled or pending call counts with its lower bound.
    """
    lo = -math.inf if t_from is None else t_from
    hi = math.inf if t_to is None else t_to
    chosen = [s for s in samples if s[0] < hi and s[0] + s[1] >= lo]
    lat = sorted(s[1] * 1e3 for s in chosen)
    count = {k: sum(1 for s in chosen if s[2] == k) for k in ("ok", "stalled", "pending", "failed", "error")}
    return {"calls": len(chosen), **count, "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
            "max_ms": lat[-1] if lat else math.nan}


class Canary:
    """An Echo Service ``<name>Echo`` and a Client ``<name>`` calling it every ``period`` s.

    ``credentials``: ``password`` (Manager password) or ``username`` + ``user_password`` (a login).
    Use as a context manager, or ``start()`` / ``stop()``; ``stop()`` returns :func:`summary`.
    """

    def __init__(self, port, tls=None, period=0.2, call_timeout=10.0, name="Canary", source=None,
                 **credentials):
        self.port, self.tls, self.period, self.call_timeout = port, tls, period, call_timeout
        self.name, self.source, self.credentials = name, source, credentials
        self.samples = []
        self.dropped = None  # why the canary lost its connection, if it did
        self._stop = threading.Event()
        self._pending = None  # start of the call waiting for its reply
        self._lock = threading.Lock()  # the call and stop() record a call once between them
        self._threads = []
        self.service = self.client = None

    def start(self):
        svc_name = f"{self.name}Echo"
        identity = {"type": "service", "name": svc_name, "attributes": {"echo": "(*args, **kwargs)"},
                    "max_clients": -1, "language": "Python", "os": "Linux"}
        self.service = self._conn().handshake(identity, **self.credentials)
        self._spawn(self._serve)
        self.client = self._conn().handshake({"type": "client", "name": self.name, "language": "Python",
                                              "os": "Linux"}, **self.credentials)
        reply = self.client.call_manager("link", svc_name, uid="link")
        if reply is None or reply.get("error"):
            raise ProtocolFailure(f"the canary could not link with {svc_name}: {reply}")
        self._spawn(self._call_loop)
        return self

    def _conn(self):
        return Conn(self.port, source=self.source, tls=self.tls, timeout=max(10.0, self.call_timeout))

    def _spawn(self, target):
        t = threading.Thread(target=target, daemon=True, name=f"canary-{target.__name__}")
        t.start()
        self._threads.append(t)

    def _serve(self):
        conn = self.service
        while not self._stop.is_set():
            try:
                msg = conn.read_msg(timeout=3600)
            except (OSError, ValueError):
                return
            if msg is None:
                return
            if "attribute" in msg and "result" not in msg:
                result = [msg.get("args", []), msg.get("kwargs", {})]
                try:
                    conn.send(reply_line(result, msg.get("uid", ""), msg.get("requester")))
                except OSError:
                    return

    def _call_loop(self):
        n = 0
        while not self._stop.is_set():
            n += 1
            t0 = time.monotonic()
            status = self._call(f"canary-{n}", t0)
            if status in ("failed",):
                return
            self._stop.wait(max(0.0, t0 + self.period - time.monotonic()))

    def _call(self, uid, t0):
        """One echo call; records its sample and returns its status."""
        self._pending = t0
        try:
            self.client.send(request_line(f"{self.name}Echo", "echo", [uid], uid))
            msg = self.client.read_until(lambda m: m.get("uid") == uid, self.call_timeout)
            status = "failed" if msg is None else ("error" if msg.get("error") else "ok")
            latency = time.monotonic() - t0
        except socket.timeout:
            status, latency = "stalled", self.call_timeout
        except (OSError, ValueError) as exc:
            status, latency = "failed", time.monotonic() - t0
            if not self._stop.is_set():  # else: stop() closed the socket under this call
                self.dropped = f"{type(exc).__name__}: {exc}"
        with self._lock:
            if self._pending is None:
                return status  # stop() recorded this call as pending
            self._pending = None
            if status == "failed" and self.dropped is None:
                self.dropped = "the Manager closed the canary's connection"
            self.samples.append((t0, latency, status))
        return status

    def completed(self):
        return sum(1 for s in self.samples if s[2] == "ok")

    def wait_calls(self, n, timeout=10.0):
        """Readiness: wait until ``n`` calls have completed; False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.completed() < n:
            if time.monotonic() > deadline or self.dropped:
                return False
            self._stop.wait(0.02)
        return True

    def stop(self):
        """Stop calling, close both connections, and return :func:`summary` of every call."""
        if not self._stop.is_set():
            self._stop.set()
            with self._lock:
                pending, self._pending = self._pending, None
                if pending is not None:
                    self.samples.append((pending, time.monotonic() - pending, "pending"))
            for conn in (self.client, self.service):
                if conn is not None:
                    try:
                        conn.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    conn.close()
            for t in self._threads:
                t.join(5)
        return summary(self.samples)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def status_kib(pid, field):
    """A ``Vm*`` field of ``/proc/<pid>/status`` in KiB (None when the process is gone)."""
    prefix = field.encode() + b":"
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(prefix):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class RssWatch:
    """Sample VmRSS of ``pid`` every ``interval`` s: ``peak_kib``; ``exceeded`` is set above
    ``stop_above_kib``; the process is SIGKILLed above ``kill_above_kib`` (``killed`` then true)."""

    def __init__(self, pid, stop_above_kib=None, kill_above_kib=KILL_ABOVE_KIB, interval=0.02):
        self.pid, self.interval = pid, interval
        self.stop_above_kib, self.kill_above_kib = stop_above_kib, kill_above_kib
        self.peak_kib = status_kib(pid, "VmRSS") or 0
        self.exceeded = threading.Event()
        self.killed = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"rss-{pid}")

    def rss_kib(self):
        return status_kib(self.pid, "VmRSS")

    def hwm_kib(self):
        return status_kib(self.pid, "VmHWM")

    def _run(self):
        while not self._done.wait(self.interval):
            rss = self.rss_kib()
            if rss is None:
                return
            self.peak_kib = max(self.peak_kib, rss)
            if self.stop_above_kib is not None and rss > self.stop_above_kib:
                self.exceeded.set()
            if self.kill_above_kib is not None and rss > self.kill_above_kib and not self.killed:
                self.killed = True
                self.exceeded.set()
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._done.set()
        self._thread.join(2)
        return self.peak_kib

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.canary")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls-cert")
    p.add_argument("--period", type=float, default=0.2)
    p.add_argument("--call-timeout", type=float, default=10.0)
    args = p.parse_args(argv)
    canary = Canary(args.port, tls=client_tls_context(args.tls_cert), period=args.period,
                    call_timeout=args.call_timeout)
    try:
        canary.start()
    except (OSError, ProtocolFailure) as exc:
        print(f"FAILED {type(exc).__name__}: {exc}", flush=True)
        return 1
    canary.wait_calls(1)
    print("READY", flush=True)
    sys.stdin.readline()
    canary.stop()
    print(orjson.dumps({"samples": canary.samples, "dropped": canary.dropped}).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
