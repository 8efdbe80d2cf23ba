"""One run of the cases of issue 12: ``big10m`` (one column: a Manager, or the floor relay) and
``idle20000``. Each ``run_*`` returns a dict of metrics (the keys of its rows in :mod:`bench.cases`)
or raises :class:`bench.runs.CaseError`; the caller stops every child afterwards.
"""
import contextlib
import os
import statistics
import subprocess
import sys
import time

import orjson

from bench import managers, procs
from bench.runs import (CaseError, expect_line, latency_us, manager_figures, peer_cmd, spawn_peer,
                        stderr_tail, stop_echo_service, wait_registered)
from bench.wire import CLIENT_IDENTITY, BlockingPeer, manager_request

PY = sys.executable


# ---------------------------------------------------------------------------------------------
# big10m

class RunningRelay:
    """Context manager: ``python -m bench.relay`` on a free port, in place of a Manager."""

    label = "floor relay"

    def __init__(self, tmp, mode):
        self.tmp, self.mode = tmp, mode
        self.proc = self.port = None

    @property
    def pid(self):
        return self.proc.pid

    def __enter__(self):
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.proc = spawn_peer([PY, "-m", "bench.relay", "--mode", self.mode], self.tmp, "relay")
        words = procs.read_line(self.proc.stdout, 20, self.proc).split()
        if len(words) != 2 or words[0] != "READY":
            raise CaseError(f"relay: expected 'READY <port>', got {words!r}" + stderr_tail(self.tmp, "relay"))
        self.port = int(words[1])
        return self

    def alive(self):
        return self.proc.poll() is None

    def __exit__(self, *exc):
        procs.stop(self.proc)
        return False


def big_server(key, opts, tmp):
    """The Manager of the column ``key``, or the relay for ``floor`` (a context manager)."""
    if key == "floor":
        return RunningRelay(tmp / "relay", opts.relay_mode)
    return managers.RunningManager(key, tmp / "manager")


def run_big_case(key, case, opts, tmp):
    with big_server(key, opts, tmp) as mgr:
        svc = spawn_peer(peer_cmd("service", "--port", mgr.port), tmp, "service")
        expect_line(svc, "READY", 20, tmp, "service")
        wait_registered(mgr.port, svc, tmp, "service")
        argv = [PY, "-m", "bench.bigecho", "--port", mgr.port, "--mgr-pid", mgr.pid, "--svc-pid", svc.pid,
                "--size", case.size, "--payloads", ",".join(case.payloads), "--rounds", case.rounds,
                "--warmup-rounds", case.warmup_rounds, "--out", tmp / "big.json"]
        cli = spawn_peer([str(a) for a in argv], tmp, "client")
        calls = (case.rounds + case.warmup_rounds) * len(case.payloads)
        expect_line(cli, "DONE", 60 + 30 * calls, tmp, "client")  # 30 s a call: 20x msl-network 1.0's
        r = orjson.loads((tmp / "big.json").read_bytes())
        if not mgr.alive():
            raise CaseError(f"{mgr.label} exited during the case")
        procs.stop(cli)
        served = stop_echo_service(svc)
    if r["failure"]:
        raise CaseError(r["failure"])
    if served[:2] != ["SERVED", str(calls)]:
        raise CaseError(f"the Echo Service served {served!r}, the client made {calls} calls")
    out = big_figures(r, case)
    if key != "floor":
        out.update(manager_figures(mgr, ("startup_s", "stop_s", "exit_code")))
    return out


def big_figures(r, case):
    """The metrics of one big10m run from the client's result ``r``."""
    out = {"other_cpu_pct": r["other_cpu_pct"], "errors": 0, "error_samples": []}
    for kind in case.payloads:
        c = r["calls"][kind]
        moved, wall = sum(c["bytes"]), sum(c["lat_ns"])
        if not wall:
            raise CaseError(f"{kind}: no call measured")
        mb = moved / 1e6
        out.update({
            f"{kind}_mbps": moved / wall * 1e3,
            f"{kind}_p50_ms": statistics.median(c["lat_ns"]) / 1e6,
            f"{kind}_mgr_ms_per_mb": c["mgr_ns"] / 1e6 / mb,
            f"{kind}_svc_ms_per_mb": c["svc_ns"] / 1e6 / mb,
            f"{kind}_client_ms_per_mb": c["client_ns"] / 1e6 / mb,
            f"{kind}_req_mb": c["request_bytes"] / 1e6,
            f"{kind}_mgr_ms_per_mb_ticks": c["mgr_ticks"] / procs.CLK_TCK * 1e3 / mb,
        })
        out["errors"] += c["errors"]
        out["error_samples"] += c["error_samples"]
    return out


# ---------------------------------------------------------------------------------------------
# idle20000

def snapshot(mgr_pid, others=()):
    """(Manager RSS KiB, Manager CPU ticks, CPU ticks of ``others`` and of this process, machine busy ticks)."""
    return (procs.rss_kib(mgr_pid), procs.cpu_ticks(mgr_pid),
            sum(procs.cpu_ticks(p) for p in (*others, os.getpid())), procs.machine_busy_ticks())


def run_many_case(key, case, opts, tmp):
    with contextlib.ExitStack() as stack:
        mgr = stack.enter_context(managers.RunningManager(key, tmp / "manager",
                                                          extra_args=managers.connection_args(key, case.count)))
        probe = BlockingPeer(mgr.port, CLIENT_IDENTITY, timeout=120.0)
        stack.callback(probe.close)
        base = len(probe.call_manager("identity", [], "probe-0")["clients"])
        openers = start_openers(mgr, case, opts, tmp)
        try:
            m = measure_many(mgr, probe, base, openers, case, opts, tmp)
        except CaseError as exc:
            raise CaseError(f"{exc} ({mgr.label} {'alive' if mgr.alive() else 'exited'}"
                            f"{manager_said(mgr)})") from None
        for o in openers:
            procs.stop(o)
    return {**m, **manager_figures(mgr, ("startup_s", "stop_s", "exit_code"))}


def manager_said(mgr):
    """The last line of the Manager's output (e.g. its EMFILE warning), shortened."""
    tail = mgr.output_tail(1).strip()
    return f"; its last line: {tail[:160]!r}" if tail else ""


def start_openers(mgr, case, opts, tmp):
    """The opener processes (``python -m bench.peers open``), connections shared out; all READY."""
    out = []
    for i in range(case.procs):
        n = case.count // case.procs + (1 if i < case.count % case.procs else 0)
        argv = peer_cmd("open", "--port", mgr.port, "--count", n, "--parallel", case.parallel // case.procs,
                        "--timeout", opts.many_timeout, "--stall", opts.many_stall, "--out", tmp / f"open{i}.json")
        out.append(spawn_peer(argv, tmp, f"open{i}", stdin=subprocess.PIPE))
    for i, o in enumerate(out):
        expect_line(o, "READY", 30, tmp, f"open{i}")
    return out


def measure_many(mgr, probe, base, openers, case, opts, tmp):
    """GO to the openers, wait until the Manager lists every connection, then time identity()."""
    pids = [o.pid for o in openers]
    before = snapshot(mgr.pid, pids)
    t0 = time.monotonic() + 0.05
    for o in openers:
        o.stdin.write(f"GO {t0!r} {t0!r} {t0!r}\n".encode())
        o.stdin.flush()
    results = []
    for i, o in enumerate(openers):
        expect_line(o, "DONE", opts.many_timeout + 30, tmp, f"open{i}")
        results.append(orjson.loads((tmp / f"open{i}.json").read_bytes()))
    done = sum(r["handshakes"] for r in results)
    failures = [f"opener {i}: {r['failure']}" for i, r in enumerate(results) if r["failure"]]
    if failures:
        raise CaseError(f"{done}/{case.count} handshakes: " + "; ".join(failures))
    await_registered(probe, base, case.count, t0 + opts.many_timeout)
    t1 = time.monotonic()
    after = snapshot(mgr.pid, pids)
    ident = time_identity(probe, case.identity_calls, base + case.count)
    return many_figures(case, results, before, after, t1 - t0, ident)


def await_registered(probe, base, count, deadline):
    """Poll the Manager's identity until it lists ``count`` more clients (it never acknowledges one)."""
    n = 0
    while True:
        n += 1
        registered = len(probe.call_manager("identity", [], f"probe-{n}")["clients"]) - base
        if registered >= count:
            return
        if time.monotonic() > deadline:
            raise CaseError(f"only {registered}/{count} clients listed by the Manager")
        time.sleep(0.05)


def time_identity(probe, calls, expect):
    """(round trips in ms, reply bytes) of ``calls`` identity() requests; each must list ``expect`` clients."""
    ms, size = [], 0
    for i in range(calls):
        uid = f"ident-{i}"
        t0 = time.perf_counter_ns()
        probe.sock.sendall(manager_request("identity", [], uid))
        line = probe.read_line()
        ms.append((time.perf_counter_ns() - t0) / 1e6)
        msg = orjson.loads(line)
        clients = (msg.get("result") or {}).get("clients") if isinstance(msg, dict) else None
        if msg.get("uid") != uid or clients is None or len(clients) < expect:
            raise CaseError(f"identity() reply {i}: uid {msg.get('uid')!r}, "
                            f"{None if clients is None else len(clients)} clients (expected {expect})")
        size = len(line)
    return ms, size


def many_figures(case, results, before, after, elapsed, ident):
    (rss0, cpu0, own0, busy0), (rss1, cpu1, own1, busy1) = before, after
    n = case.count
    ms, size = ident
    return {
        "handshakes_per_s": n / elapsed,
        **latency_us(sorted(x for r in results for x in r["first_line_ns"])),
        "mgr_cpu_us_per_conn": (cpu1 - cpu0) / procs.CLK_TCK / n * 1e6,
        "rss_kib_per_conn": (rss1 - rss0) / n,
        "rss_mib_after": rss1 / 1024,
        "identity_ms": statistics.median(ms),
        "identity_max_ms": max(ms),
        "identity_all_ms": ms,
        "identity_kb": size / 1e3,
        "other_cpu_pct": max(0, (busy1 - busy0) - (cpu1 - cpu0) - (own1 - own0)) / procs.CLK_TCK / elapsed * 100,
        "rss_kib_before": rss0,
    }
