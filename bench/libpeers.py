"""Peers of the library cases: blocking ``echo`` calls made through netmgr's and msl-network 1.0's
client libraries, and through a minimal raw-socket client (the floor).

Run as ``python -m bench.libpeers ROLE [options]``; every role talks to 127.0.0.1 over plain TCP.
Only the public APIs are used: ``netmgr.client.connect``, ``netmgr.client.Service`` (the class
``netmgr.service.Service`` re-exports), ``msl.network.connect`` and ``msl.network.Service``.

* ``service --kind netmgr|msl``: the Echo Service of that library, ``def echo(self, *args,
  **kwargs): return args, kwargs``, started with ``Echo().start(host=..., port=P,
  disable_tls=True)``; runs until killed. (The floor's Service is ``python -m bench.peers service``.)
* ``seq``: one process, one request in flight, the paths given with ``--path KIND:PORT:MGR_PID:SVC_PID``
  (KIND = netmgr, msl or floor). Connects and links each, warms up for ``--warmup`` s, then
  measures ``--rounds`` rounds of ``--burst`` calls per path, the paths alternating within each
  round (rotated each round, so no path always follows the same one) so that the noise of the
  machine hits them alike. Per path: every round trip, and the CPU time of its Manager and of its
  Service over its own bursts (``/proc/PID/task/*/schedstat``, ns), and of this process
  (``time.process_time_ns``, all its threads). Results go to ``--out`` as JSON, then ``DONE``.
* ``threads --kind netmgr|msl``: ONE connection of that library, linked once, shared by ``--threads``
  threads that each make sequential calls. Prints ``READY``, waits for ``GO <t_start> <t_ms> <t_me>``
  on stdin (as ``bench.peers load``); calls that return inside [t_ms, t_me] are counted and timed;
  no call starts after t_me. Results go to ``--out`` as JSON, then ``DONE``.
"""
import argparse
import os
import sys
import threading
import time

import orjson

from bench.procs import CLK_TCK, cpu_ticks, machine_busy_ticks
from bench.wire import CLIENT_IDENTITY, CRLF, BlockingPeer, read_go, write_result

HOST = "127.0.0.1"
KINDS = ("netmgr", "msl", "floor")
MAX_ERROR_SAMPLES = 5


# ---------------------------------------------------------------------------------------------
# CPU time of another process

def cpu_ns(pid):
    """On-CPU time of every thread of ``pid`` in ns (first field of /proc/PID/task/TID/schedstat);
    utime+stime in clock ticks (10 ms) where schedstat is not available. A thread that exits
    between two readings takes its time with it; the Managers and Services keep theirs alive."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue  # the thread has just exited
        return total
    except (OSError, ValueError, IndexError):
        return cpu_ticks(pid) * (1_000_000_000 // CLK_TCK)


def schedstat_available(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat", "rb") as f:
            return int(f.read().split()[0]) >= 0
    except (OSError, ValueError, IndexError):
        return False


# ---------------------------------------------------------------------------------------------
# Echo Service of a library

def run_service(kind, port):
    if kind == "netmgr":
        from netmgr.client import Service
    else:
        from msl.network import Service

    class Echo(Service):
        def echo(self, *args, **kwargs):
            return args, kwargs

    Echo().start(host=HOST, port=port, disable_tls=True)
    return 0


# ---------------------------------------------------------------------------------------------
# Clients: each returns (call(x) -> result, close())

def lib_client(kind, port):
    if kind == "netmgr":
        from netmgr.client import connect
    else:
        from msl.network import connect
    cxn = connect(host=HOST, port=port, disable_tls=True)
    # bound once, as a caller in a loop would hold it; link.echo(x) would add a __getattr__
    return cxn.link("Echo").echo, cxn.disconnect


FLOOR_RECV_SIZE = 1 << 16  # below glibc's mmap threshold: recv(256 KiB) maps and unmaps each time


def floor_client(port):
    """The floor: a minimal single-threaded raw-socket Client (blocking socket, no timeout,
    TCP_NODELAY, one request in flight), orjson to build each request and to parse each line.
    The handshake and the link are ``bench.wire.BlockingPeer``'s."""
    peer = BlockingPeer(port, CLIENT_IDENTITY)
    peer.link_echo()
    peer.sock.settimeout(None)
    sock, dumps, loads = peer.sock, orjson.dumps, orjson.loads
    counter = iter(range(1, 1 << 62))
    lines = []
    tail = [b""]

    def read_line():
        while not lines:
            data = sock.recv(FLOOR_RECV_SIZE)
            if not data:
                raise ConnectionAbortedError("the Manager closed the connection")
            *more, tail[0] = (tail[0] + data).split(b"\n")
            lines.extend(more)
        return lines.pop(0)

    def echo(x):
        uid = str(next(counter))
        sock.sendall(dumps({"args": [x], "attribute": "echo", "error": False, "kwargs": {},
                            "service": "Echo", "uid": uid}) + CRLF)
        while True:
            line = read_line()
            if len(line) < 2:
                continue  # a blank line
            msg = loads(line)
            if msg.get("uid") == uid:
                if msg.get("error"):
                    raise RuntimeError(msg.get("message"))
                return msg["result"]

    return echo, peer.close


def make_client(kind, port):
    return floor_client(port) if kind == "floor" else lib_client(kind, port)


def check_echo(result, x):
    """The Echo reply of ``echo(x)`` is ``[[x], {}]`` (a tuple or a list, as each library gives it)."""
    try:
        return result[0][0] == x and not result[1]
    except (TypeError, IndexError, KeyError):
        return False


def add_sample(samples, r):
    if len(samples) < MAX_ERROR_SAMPLES:
        samples.append(repr(r)[:300])


# ---------------------------------------------------------------------------------------------
# seq: the paths interleaved, one request in flight

class Path:
    __slots__ = ("kind", "port", "mgr_pid", "svc_pid", "call", "close", "lat", "mgr_ns", "svc_ns",
                 "client_ns", "errors", "error_samples")

    def __init__(self, spec):
        kind, port, mgr_pid, svc_pid = spec.split(":")
        if kind not in KINDS:
            raise ValueError(f"unknown path kind {kind!r}")
        self.kind, self.port, self.mgr_pid, self.svc_pid = kind, int(port), int(mgr_pid), int(svc_pid)
        self.lat, self.mgr_ns, self.svc_ns, self.client_ns = [], 0, 0, 0
        self.errors, self.error_samples = 0, []
        self.close = None

    def figures(self):
        return {"lat_ns": self.lat, "mgr_ns": self.mgr_ns, "svc_ns": self.svc_ns,
                "client_ns": self.client_ns, "errors": self.errors, "error_samples": self.error_samples}


def burst(path, n, x, measure):
    call, now = path.call, time.perf_counter_ns
    lat = path.lat if measure else []
    if measure:
        m0, s0, c0 = cpu_ns(path.mgr_pid), cpu_ns(path.svc_pid), time.process_time_ns()
    for _ in range(n):
        t0 = now()
        try:
            r = call(x)
        except (ConnectionError, OSError):
            raise  # the connection is gone: the run fails
        except Exception as exc:  # an error reply: counted, the run goes on
            r = exc
        t1 = now()
        lat.append(t1 - t0)
        if not check_echo(r, x):
            path.errors += 1
            add_sample(path.error_samples, r)
    if measure:
        path.client_ns += time.process_time_ns() - c0
        path.mgr_ns += cpu_ns(path.mgr_pid) - m0
        path.svc_ns += cpu_ns(path.svc_pid) - s0


def warm_up(paths, args, x):
    """Interleaved bursts for ``args.warmup`` s, at least one per path; returns the rounds made."""
    t_end = time.monotonic() + args.warmup
    n = 0
    while True:
        for p in paths:
            burst(p, args.burst, x, False)
        n += 1
        if time.monotonic() >= t_end:
            break
    for p in paths:
        p.errors, p.error_samples = 0, []
    return n


def measure(paths, args, x):
    """The measured rounds, rotated each round; (elapsed s, other processes' CPU %)."""
    pids = {os.getpid()} | {p.mgr_pid for p in paths} | {p.svc_pid for p in paths}
    busy0, own0 = machine_busy_ticks(), sum(cpu_ticks(pid) for pid in pids)
    t0 = time.monotonic()
    for r in range(args.rounds):
        k = r % len(paths)
        for p in paths[k:] + paths[:k]:
            burst(p, args.burst, x, True)
    elapsed = time.monotonic() - t0
    busy1, own1 = machine_busy_ticks(), sum(cpu_ticks(pid) for pid in pids)
    other = max(0, (busy1 - busy0) - (own1 - own0)) / CLK_TCK / elapsed * 100 if elapsed > 0 else None
    return elapsed, other


def run_seq(args):
    paths = [Path(spec) for spec in args.path]
    x = "x" * args.payload
    failure, n, elapsed, other = None, None, 0.0, None
    try:
        for p in paths:
            p.call, p.close = make_client(p.kind, p.port)
        n = warm_up(paths, args, x)
        elapsed, other = measure(paths, args, x)
    except Exception as exc:
        failure, n, elapsed, other = f"{type(exc).__name__}: {exc}", None, 0.0, None
    finally:
        for p in paths:
            if p.close:
                try:
                    p.close()
                except Exception:
                    pass
    write_result(args.out, {
        "failure": failure,
        "warmup_rounds": n,
        "elapsed_s": elapsed,
        "other_cpu_pct": other,
        "cpu_clock": "schedstat" if paths and schedstat_available(paths[0].mgr_pid) else "ticks",
        "paths": {p.kind: p.figures() for p in paths},
    })
    return 0


# ---------------------------------------------------------------------------------------------
# threads: one shared connection, N threads of sequential calls

class CallerThreads:
    """``n`` threads that wait for the GO times, then call ``call(x)`` back to back until t_me."""

    def __init__(self, call, x, n):
        self.call, self.x = call, x
        self.per_thread = [None] * n  # (round trips in the window, calls, errors, samples)
        self.failures = []
        self.times = None
        self.go = threading.Event()
        self.threads = [threading.Thread(target=self._worker, args=(i,), daemon=True) for i in range(n)]
        for t in self.threads:
            t.start()

    def run(self, times):
        """Release the threads with ``times`` = (t_start, t_ms, t_me) in ns, None to end them; wait."""
        self.times = times
        self.go.set()
        for t in self.threads:
            t.join()

    def _worker(self, i):
        self.go.wait()
        if self.times is None:
            return
        t_start, t_ms, t_me = self.times
        delay = (t_start - time.monotonic_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)
        self._calls(i, t_ms, t_me)

    def _calls(self, i, t_ms, t_me):
        call, x, now = self.call, self.x, time.monotonic_ns
        lat, done, errors, samples = [], 0, 0, []
        try:
            while True:
                t0 = now()
                if t0 >= t_me:
                    break
                try:
                    r = call(x)
                except (ConnectionError, OSError) as exc:
                    self.failures.append(f"thread {i}: {type(exc).__name__}: {exc}")
                    break
                except Exception as exc:  # an error reply
                    r = exc
                t1 = now()
                done += 1
                if not check_echo(r, x):
                    errors += 1
                    add_sample(samples, r)
                if t_ms <= t1 <= t_me:
                    lat.append(t1 - t0)
        finally:
            self.per_thread[i] = (lat, done, errors, samples)

    def result(self):
        done = [r for r in self.per_thread if r is not None]
        return {
            "threads": len(self.per_thread),
            "lat_ns": [v for r in done for v in r[0]],
            "completed_total": sum(r[1] for r in done),
            "errors": sum(r[2] for r in done),
            "error_samples": [s for r in done for s in r[3]][:MAX_ERROR_SAMPLES],
            "failure": "; ".join(self.failures[:3]) or (None if len(done) == len(self.per_thread)
                                                        else "a worker thread did not finish"),
        }


def run_threads(args):
    call, close = make_client(args.kind, args.port)
    x = "x" * args.payload
    for _ in range(20):  # the first calls: link set up, lazily created threads
        call(x)
    callers = CallerThreads(call, x, args.threads)
    print("READY", flush=True)
    times = read_go()
    callers.run(times)
    if times is None:
        return 2
    try:
        close()
    except Exception:
        pass
    write_result(args.out, callers.result())
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.libpeers")
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("service")
    s.add_argument("--kind", choices=("netmgr", "msl"), required=True)
    s.add_argument("--port", type=int, required=True)
    q = sub.add_parser("seq")
    q.add_argument("--path", action="append", required=True, help="KIND:PORT:MGR_PID:SVC_PID")
    q.add_argument("--rounds", type=int, required=True)
    q.add_argument("--burst", type=int, required=True)
    q.add_argument("--warmup", type=float, default=1.0)
    q.add_argument("--payload", type=int, default=10)
    q.add_argument("--out", required=True)
    t = sub.add_parser("threads")
    t.add_argument("--kind", choices=("netmgr", "msl"), required=True)
    t.add_argument("--port", type=int, required=True)
    t.add_argument("--threads", type=int, required=True)
    t.add_argument("--payload", type=int, default=10)
    t.add_argument("--out", required=True)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.role == "service":
        return run_service(args.kind, args.port)
    if args.role == "seq":
        return run_seq(args)
    return run_threads(args)


if __name__ == "__main__":
    sys.exit(main())
