"""Peers of the library cases: blocking ``echo`` calls made through netmgr's and msl-network 1.0's
client libraries, and through a minimal raw-socket client (the floor).

Run as ``python -m bench.libpeers ROLE [options]``; every role talks to 127.0.0.1 over plain TCP.
Only the public APIs are used: ``netmgr.client.connect``, ``netmgr.service.Service``,
``msl.network.connect`` and ``msl.network.Service``.

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

from bench.peers import CLIENT_IDENTITY, CRLF, BlockingPeer, cpu_ticks, machine_busy_ticks

HOST = "127.0.0.1"
KINDS = ("netmgr", "msl", "floor")
CLK_TCK = os.sysconf("SC_CLK_TCK")


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
        from netmgr.service import Service
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
    The handshake and the link are ``bench.peers.BlockingPeer``'s."""
    peer = BlockingPeer(port, CLIENT_IDENTITY)
    peer.call_manager("link", ["Echo"], "link")
    if peer.lines:
        raise ValueError(f"unexpected extra lines after link: {peer.lines[:2]!r}")
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
            if len(path.error_samples) < 5:
                path.error_samples.append(repr(r)[:300])
    if measure:
        path.client_ns += time.process_time_ns() - c0
        path.mgr_ns += cpu_ns(path.mgr_pid) - m0
        path.svc_ns += cpu_ns(path.svc_pid) - s0


def run_seq(args):
    paths = [Path(spec) for spec in args.path]
    x = "x" * args.payload
    try:
        for p in paths:
            p.call, p.close = make_client(p.kind, p.port)
        t_end = time.monotonic() + args.warmup
        n = 0
        while True:  # warm-up: interleaved too, at least one burst per path
            for p in paths:
                burst(p, args.burst, x, False)
            n += 1
            if time.monotonic() >= t_end:
                break
        for p in paths:
            p.errors, p.error_samples = 0, []
        pids = {os.getpid()} | {p.mgr_pid for p in paths} | {p.svc_pid for p in paths}
        busy0, own0 = machine_busy_ticks(), sum(cpu_ticks(pid) for pid in pids)
        t0 = time.monotonic()
        for r in range(args.rounds):
            k = r % len(paths)
            for p in paths[k:] + paths[:k]:
                burst(p, args.burst, x, True)
        elapsed = time.monotonic() - t0
        busy1, own1 = machine_busy_ticks(), sum(cpu_ticks(pid) for pid in pids)
        failure = None
    except Exception as exc:
        failure, elapsed, busy0 = f"{type(exc).__name__}: {exc}", 0.0, None
    finally:
        for p in paths:
            if getattr(p, "close", None):
                try:
                    p.close()
                except Exception:
                    pass
    result = {
        "failure": failure,
        "warmup_rounds": n if failure is None else None,
        "elapsed_s": elapsed,
        "other_cpu_pct": (max(0, (busy1 - busy0) - (own1 - own0)) / CLK_TCK / elapsed * 100
                          if failure is None and elapsed > 0 else None),
        "cpu_clock": "schedstat" if paths and schedstat_available(paths[0].mgr_pid) else "ticks",
        "paths": {p.kind: {"lat_ns": p.lat, "mgr_ns": p.mgr_ns, "svc_ns": p.svc_ns,
                           "client_ns": p.client_ns, "errors": p.errors,
                           "error_samples": p.error_samples} for p in paths},
    }
    with open(args.out, "wb") as f:
        f.write(orjson.dumps(result))
    print("DONE", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# threads: one shared connection, N threads of sequential calls

def run_threads(args):
    call, close = make_client(args.kind, args.port)
    x = "x" * args.payload
    for _ in range(20):  # the first calls: link set up, lazily created threads
        call(x)
    now = time.monotonic_ns
    per_thread = [None] * args.threads
    failures = []
    go = threading.Event()
    times = {}

    def worker(i):
        lat, done, errors, samples = [], 0, 0, []
        go.wait()
        t_ms, t_me = times["ms"], times["me"]
        delay = (times["start"] - now()) / 1e9
        if delay > 0:
            time.sleep(delay)
        try:
            while True:
                t0 = now()
                if t0 >= t_me:
                    break
                try:
                    r = call(x)
                except (ConnectionError, OSError) as exc:
                    failures.append(f"thread {i}: {type(exc).__name__}: {exc}")
                    break
                except Exception as exc:  # an error reply
                    r = exc
                t1 = now()
                done += 1
                if not check_echo(r, x):
                    errors += 1
                    if len(samples) < 5:
                        samples.append(repr(r)[:300])
                if t_ms <= t1 <= t_me:
                    lat.append(t1 - t0)
        finally:
            per_thread[i] = (lat, done, errors, samples)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.threads)]
    for t in threads:
        t.start()
    print("READY", flush=True)
    line = sys.stdin.readline().split()
    if not line or line[0] != "GO":
        go.set()
        return 2
    times["start"], times["ms"], times["me"] = (int(float(v) * 1e9) for v in line[1:4])
    go.set()
    for t in threads:
        t.join()
    try:
        close()
    except Exception:
        pass
    done = [r for r in per_thread if r is not None]
    result = {
        "threads": args.threads,
        "lat_ns": [v for r in done for v in r[0]],
        "completed_total": sum(r[1] for r in done),
        "errors": sum(r[2] for r in done),
        "error_samples": [s for r in done for s in r[3]][:5],
        "failure": "; ".join(failures[:3]) or (None if len(done) == args.threads
                                                 else "a worker thread did not finish"),
    }
    with open(args.out, "wb") as f:
        f.write(orjson.dumps(result))
    print("DONE", flush=True)
    return 0


def main(argv=None):
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
    args = p.parse_args(argv)
    if args.role == "service":
        return run_service(args.kind, args.port)
    if args.role == "seq":
        return run_seq(args)
    return run_threads(args)


if __name__ == "__main__":
    sys.exit(main())
