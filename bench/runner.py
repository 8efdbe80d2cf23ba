"""The benchmark cases, their repetition, and the report (``python -m bench --help``)."""
import argparse
import contextlib
import datetime
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench import managers, procs
from bench.peers import (CLIENT_IDENTITY, BlockingPeer, ProtocolFailure, client_tls_context,
                         wait_for_service)

PY = sys.executable


@dataclass(frozen=True)
class LoadCase:
    name: str
    clients: int
    window: int
    payload: int
    tls: bool = False

    @property
    def title(self):
        size = f"{self.payload // 1000} kB" if self.payload >= 1000 else f"{self.payload} B"
        return (f"{self.clients} client(s) x {self.window} request(s) in flight, {size} payload, "
                f"via the Echo Service" + (", every peer over TLS" if self.tls else ""))


@dataclass(frozen=True)
class IdleCase:
    name: str
    count: int
    tls: bool = False

    @property
    def title(self):
        what = "the TLS and identity handshakes" if self.tls else "the identity handshake"
        return f"{self.count} connections, each completing {what} as a client, kept open"


@dataclass(frozen=True)
class LibSeqCase:
    """The blocking libraries, one call in flight: netmgr, msl-network 1.0 and the raw floor
    interleaved in one process (``bench/libpeers.py seq``)."""
    name: str
    rounds: int
    burst: int
    payload: int = 10
    tls: bool = False  # plain TCP only

    @property
    def title(self):
        return (f"blocking echo({self.payload} B) round trips, 1 call in flight, {self.rounds} rounds x "
                f"{self.burst} calls per path, the paths interleaved; each Service in its own process")


@dataclass(frozen=True)
class LibThreadsCase:
    """``threads`` client threads sharing ONE connection of a library (``bench/libpeers.py threads``)."""
    name: str
    threads: int
    payload: int = 10
    tls: bool = False  # plain TCP only

    @property
    def title(self):
        return (f"{self.threads} threads sharing ONE library connection, each making sequential blocking "
                f"echo({self.payload} B) calls; the library's own Service in its own process")


CASE_NAMES = ("seq", "c8w16", "c8w16_100k", "idle2000", "seq_tls", "c8w16_tls", "idle_tls",
              "lib_seq", "lib_threads16")
# TLS case -> the plain case it is compared with in the overhead block
PLAIN_OF = {"seq_tls": "seq", "c8w16_tls": "c8w16", "idle_tls": "idle2000"}

# (key, label, format, better): better is "high" or "low", None for informational rows
LOAD_ROWS = [
    ("rps", "routed requests/s", "{:,.0f}", "high"),
    ("p50_us", "latency p50 (us)", "{:,.0f}", "low"),
    ("p99_us", "latency p99 (us)", "{:,.0f}", "low"),
    ("mgr_cpu_us_per_req", "Manager CPU per request (us)", "{:,.1f}", "low"),
    ("mgr_cpu_pct", "Manager CPU use (% of 1 core)", "{:.0f}", None),
    ("gen_cpu_pct", "load generator CPU (%)", "{:.0f}", None),
    ("svc_cpu_pct", "Echo Service CPU (%)", "{:.0f}", None),
    ("other_cpu_pct", "other processes' CPU, noise (%)", "{:.0f}", None),
    ("errors", "error replies (sum of runs)", "{:.0f}", None),
]
IDLE_ROWS = [
    ("handshakes_per_s", "handshakes/s", "{:,.0f}", "high"),
    ("p50_us", "connect->identity request p50 (us)", "{:,.0f}", "low"),
    ("p99_us", "connect->identity request p99 (us)", "{:,.0f}", "low"),
    ("mgr_cpu_us_per_conn", "Manager CPU per handshake (us)", "{:,.0f}", "low"),
    ("rss_kib_per_conn", "Manager RSS growth per conn (KiB)", "{:.2f}", "low"),
    ("rss_mib_after", "Manager RSS with all open (MiB)", "{:.1f}", "low"),
    ("other_cpu_pct", "other processes' CPU, noise (%)", "{:.0f}", None),
]
# lib_seq, per path (netmgr, msl, floor)
LIB_SEQ_ROWS = [
    ("p50_us", "round trip p50 (us)", "{:,.0f}", "low"),
    ("p99_us", "round trip p99 (us)", "{:,.0f}", "low"),
    ("mean_us", "round trip mean (us)", "{:,.0f}", "low"),
    ("mgr_cpu_us_per_req", "Manager CPU per request (us)", "{:,.1f}", "low"),
    ("svc_cpu_us_per_req", "Service CPU per request (us)", "{:,.1f}", "low"),
    ("client_cpu_us_per_req", "client CPU per request (us)", "{:,.1f}", "low"),
    ("calls", "calls measured per run", "{:,.0f}", None),
    ("other_cpu_pct", "other processes' CPU, noise (%)", "{:.0f}", None),
    ("errors", "error replies (sum of runs)", "{:.0f}", None),
]
LIB_THREADS_ROWS = [
    ("rps", "calls/s (all threads)", "{:,.0f}", "high"),
    ("p50_us", "latency p50 (us)", "{:,.0f}", "low"),
    ("p99_us", "latency p99 (us)", "{:,.0f}", "low"),
    ("mgr_cpu_us_per_req", "Manager CPU per request (us)", "{:,.1f}", "low"),
    ("svc_cpu_us_per_req", "Service CPU per request (us)", "{:,.1f}", "low"),
    ("client_cpu_us_per_req", "client CPU per request (us)", "{:,.1f}", "low"),
    ("mgr_cpu_pct", "Manager CPU use (% of 1 core)", "{:.0f}", None),
    ("gen_cpu_pct", "client process CPU (%)", "{:.0f}", None),
    ("svc_cpu_pct", "Echo Service CPU (%)", "{:.0f}", None),
    ("other_cpu_pct", "other processes' CPU, noise (%)", "{:.0f}", None),
    ("errors", "error replies (sum of runs)", "{:.0f}", None),
]
# the paths of lib_seq: key -> (label, the Manager it goes through, description)
LIB_PATHS = {
    "netmgr": ("netmgr", "netmgr",
               "netmgr.client.connect(...).link('Echo').echo -> netmgr Manager -> netmgr.service.Service"),
    "msl": ("msl-network 1.0", "msl",
            "msl.network.connect(...).link('Echo').echo -> msl-network 1.0 Manager -> msl.network.Service"),
    "floor": ("floor", "netmgr",
              "raw blocking-socket client (bench.libpeers) -> netmgr Manager -> raw Echo Service (bench.peers)"),
}
# lib_seq p50 goals: (numerator path, denominator path, at most this ratio, "target" or "aim")
LIB_TARGETS = [("netmgr", "msl", 0.5, "target"), ("netmgr", "floor", 1.3, "aim")]
SUMMED = {"errors"}
# (key, label) of the overhead block of a TLS case: TLS / plain of these medians, per Manager
OVERHEAD_ROWS = {
    LoadCase: [("mgr_cpu_us_per_req", "Manager CPU per request"), ("p50_us", "latency p50")],
    IdleCase: [("mgr_cpu_us_per_conn", "Manager CPU per handshake"),
               ("p50_us", "connect->identity p50")],
}


class CaseError(Exception):
    pass


def percentile(sorted_values, p):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[k]


def sleep_until(t):
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return
        time.sleep(left)


def peer_cmd(*args):
    return [PY, "-m", "bench.peers", *map(str, args)]


def spawn_peer(argv, tmp, name, stdin=subprocess.DEVNULL):
    err = open(tmp / f"{name}.stderr", "wb")
    try:
        return procs.spawn(argv, cwd=managers.ROOT, env=managers._child_env(), stdin=stdin,
                           stdout=subprocess.PIPE, stderr=err)
    finally:
        err.close()


def expect_line(proc, word, timeout, tmp, name):
    line = procs.read_line(proc.stdout, timeout, proc)
    if line.strip() != word:
        try:
            err = (tmp / f"{name}.stderr").read_text(errors="replace").strip().splitlines()[-6:]
        except OSError:
            err = []
        state = "exited" if proc.poll() is not None else "still running"
        raise CaseError(f"{name}: expected {word!r}, got {line.strip()!r} ({state})"
                        + ("\n    " + "\n    ".join(err) if err else ""))


def libpeer_cmd(*args):
    return [PY, "-m", "bench.libpeers", *map(str, args)]


def wait_registered(port, proc, tmp, name, timeout=20.0):
    """Wait until the Manager on ``port`` lists the Echo Service started as ``proc`` (fails at once
    when ``proc`` exits first, with the tail of its stderr)."""
    t0 = time.monotonic()
    why = f"not registered after {timeout:g} s"
    peer = BlockingPeer(port, CLIENT_IDENTITY, timeout=timeout)
    try:
        n = 0
        while True:
            n += 1
            if "Echo" in (peer.call_manager("identity", [], f"probe-{n}").get("services") or {}):
                return time.monotonic() - t0
            if proc.poll() is not None:
                why = f"exited with code {proc.returncode}"
                break
            if time.monotonic() - t0 > timeout:
                break
            time.sleep(0.01)
    finally:
        peer.close()
    try:
        err = (tmp / f"{name}.stderr").read_text(errors="replace").strip().splitlines()[-6:]
    except OSError:
        err = []
    raise CaseError(f"{name}: the Echo Service {why}" + ("\n    " + "\n    ".join(err) if err else ""))


def window_cpu(watched, t_ms, t_me):
    """Sleep through [t_ms, t_me]; return (wall seconds, CPU seconds of each pid, machine busy seconds)."""
    try:
        sleep_until(t_ms)
        w0, c0 = time.monotonic(), [procs.cpu_seconds(p) for p in watched]
        m0 = procs.machine_busy_seconds()
        sleep_until(t_me)
        w1, c1 = time.monotonic(), [procs.cpu_seconds(p) for p in watched]
        m1 = procs.machine_busy_seconds()
    except FileNotFoundError as exc:
        raise CaseError("a process died during the measurement") from exc
    return w1 - w0, [b - a for a, b in zip(c0, c1)], m1 - m0


def case_tls(case, opts):
    """(TlsFiles or None, extra peer arguments) for ``case``."""
    if not case.tls:
        return None, []
    if opts.tls is None:
        raise CaseError(f"no TLS certificate: {opts.tls_error}")
    return opts.tls, ["--tls-cert", opts.tls.cert]


def run_load_case(key, case, opts, tmp):
    tls, tls_args = case_tls(case, opts)
    with managers.RunningManager(key, tmp / "manager", tls=tls) as mgr:
        svc = spawn_peer(peer_cmd("service", "--port", mgr.port, *tls_args), tmp, "service")
        expect_line(svc, "READY", 20, tmp, "service")
        try:
            wait_for_service(mgr.port, "Echo", tls=client_tls_context(tls.cert) if tls else None)
        except (OSError, ProtocolFailure) as exc:
            raise CaseError(f"Echo Service not registered: {exc!r}") from exc

        nproc = max(1, min(opts.gen_procs, case.clients))
        gens, first = [], 0
        for i in range(nproc):
            n = case.clients // nproc + (1 if i < case.clients % nproc else 0)
            argv = peer_cmd("load", "--port", mgr.port, "--clients", n, "--first-client", first,
                            "--window", case.window, "--payload", case.payload,
                            "--drain-timeout", opts.drain_timeout, "--stall-timeout", opts.stall_timeout,
                            "--out", tmp / f"load{i}.json", *tls_args)
            gens.append(spawn_peer(argv, tmp, f"load{i}", stdin=subprocess.PIPE))
            first += n
        for i, g in enumerate(gens):
            expect_line(g, "READY", 30, tmp, f"load{i}")

        t_start = time.monotonic() + 0.05
        t_ms = t_start + opts.warmup
        t_me = t_ms + opts.duration
        for g in gens:
            g.stdin.write(f"GO {t_start!r} {t_ms!r} {t_me!r}\n".encode())
            g.stdin.flush()
        watched = [mgr.pid, svc.pid] + [g.pid for g in gens]
        try:
            sleep_until(t_ms)
            w0, c0 = time.monotonic(), [procs.cpu_seconds(p) for p in watched]
            m0 = procs.machine_busy_seconds()
            sleep_until(t_me)
            w1, c1 = time.monotonic(), [procs.cpu_seconds(p) for p in watched]
            m1 = procs.machine_busy_seconds()
        except FileNotFoundError as exc:
            raise CaseError(f"a process died during the measurement (Manager alive: {mgr.alive()})") from exc
        for i, g in enumerate(gens):
            expect_line(g, "DONE", opts.drain_timeout + opts.stall_timeout + 20, tmp, f"load{i}")
        results = [orjson.loads((tmp / f"load{i}.json").read_bytes()) for i in range(len(gens))]
        if not mgr.alive():
            raise CaseError(f"{mgr.label} exited (code {mgr.proc.returncode}) during the case:\n"
                            f"{mgr.output_tail()}")
        for g in gens:
            procs.stop(g)
        if svc.poll() is None:
            os.killpg(svc.pid, signal.SIGTERM)
        served = procs.read_line(svc.stdout, 10, svc).split()
        procs.stop(svc)

    failures = [r["failure"] for r in results if r["failure"]]
    if failures:
        raise CaseError("; ".join(failures))
    completed_total = sum(r["completed_total"] for r in results)
    if len(served) != 3 or served[0] != "SERVED":
        raise CaseError(f"Echo Service did not report its count: {served!r}")
    svc_served, svc_batches = int(served[1]), int(served[2])
    if svc_served != completed_total:
        raise CaseError(f"the Echo Service answered {svc_served} requests, the clients got "
                        f"{completed_total} replies")
    lat = sorted(x for r in results for x in r["lat_ns"])
    done = len(lat)
    if not done:
        raise CaseError("no request completed inside the measurement window")
    wall = w1 - w0
    d = [b - a for a, b in zip(c0, c1)]
    return {
        "rps": done / opts.duration,
        "p50_us": percentile(lat, 50) / 1e3,
        "p99_us": percentile(lat, 99) / 1e3,
        "mgr_cpu_us_per_req": d[0] / done * 1e6,
        "mgr_cpu_pct": d[0] / wall * 100,
        "svc_cpu_pct": d[1] / wall * 100,
        "gen_cpu_pct": sum(d[2:]) / wall * 100,
        "other_cpu_pct": max(0.0, (m1 - m0) - sum(d)) / wall * 100,
        "errors": sum(r["errors"] for r in results),
        "error_samples": [s for r in results for s in r["error_samples"]][:5],
        "completed": done,
        "completed_total": completed_total,
        "svc_msgs_per_recv": svc_served / max(svc_batches, 1),
        "gen_msgs_per_recv": completed_total / max(sum(r["recv_batches"] for r in results), 1),
        "startup_s": mgr.startup_s,
        "ready_line_seen": mgr.ready_line_seen,
        "stop_s": mgr.stop_s,
        "exit_code": mgr.exit_code,
        "tls": mgr.tls_info,
    }


def run_lib_threads_case(key, case, opts, tmp):
    with managers.RunningManager(key, tmp / "manager") as mgr:
        svc = spawn_peer(libpeer_cmd("service", "--kind", key, "--port", mgr.port), tmp, "service")
        wait_registered(mgr.port, svc, tmp, "service")
        argv = libpeer_cmd("threads", "--kind", key, "--port", mgr.port, "--threads", case.threads,
                           "--payload", case.payload, "--out", tmp / "threads.json")
        cli = spawn_peer(argv, tmp, "client", stdin=subprocess.PIPE)
        expect_line(cli, "READY", 30, tmp, "client")
        t_start = time.monotonic() + 0.05
        t_ms = t_start + opts.warmup
        t_me = t_ms + opts.duration
        cli.stdin.write(f"GO {t_start!r} {t_ms!r} {t_me!r}\n".encode())
        cli.stdin.flush()
        try:
            wall, d, busy = window_cpu([mgr.pid, svc.pid, cli.pid], t_ms, t_me)
        except CaseError as exc:
            raise CaseError(f"{exc} (Manager alive: {mgr.alive()}, Service alive: {svc.poll() is None})")
        expect_line(cli, "DONE", opts.drain_timeout + opts.stall_timeout + 20, tmp, "client")
        r = orjson.loads((tmp / "threads.json").read_bytes())
        if not mgr.alive():
            raise CaseError(f"{mgr.label} exited (code {mgr.proc.returncode}) during the case:\n"
                            f"{mgr.output_tail()}")
        if svc.poll() is not None:
            raise CaseError(f"the Echo Service exited (code {svc.returncode}) during the case")
        procs.stop(cli)
        procs.stop(svc)
    if r["failure"]:
        raise CaseError(r["failure"])
    lat = sorted(r["lat_ns"])
    done = len(lat)
    if not done:
        raise CaseError("no call completed inside the measurement window")
    return {
        "rps": done / opts.duration,
        "p50_us": percentile(lat, 50) / 1e3,
        "p99_us": percentile(lat, 99) / 1e3,
        "mgr_cpu_us_per_req": d[0] / done * 1e6,
        "svc_cpu_us_per_req": d[1] / done * 1e6,
        "client_cpu_us_per_req": d[2] / done * 1e6,
        "mgr_cpu_pct": d[0] / wall * 100,
        "svc_cpu_pct": d[1] / wall * 100,
        "gen_cpu_pct": d[2] / wall * 100,
        "other_cpu_pct": max(0.0, busy - sum(d)) / wall * 100,
        "errors": r["errors"],
        "error_samples": r["error_samples"],
        "completed": done,
        "completed_total": r["completed_total"],
        "startup_s": mgr.startup_s,
        "stop_s": mgr.stop_s,
        "exit_code": mgr.exit_code,
    }


def lib_paths(keys, skip=()):
    """The lib_seq paths whose Manager is among ``keys``, minus those in ``skip``."""
    return [p for p, (_, mgr_key, _) in LIB_PATHS.items() if mgr_key in keys and p not in skip]


def run_lib_seq_case(keys, case, opts, tmp):
    """One run of every path of lib_seq; returns {path: metrics}."""
    paths = lib_paths(keys, opts.lib_skip)
    if not paths:
        raise CaseError("no path: lib_seq needs netmgr and/or msl in --managers")
    with contextlib.ExitStack() as stack:
        specs = []
        for path in paths:
            mgr = stack.enter_context(managers.RunningManager(LIB_PATHS[path][1], tmp / f"manager-{path}"))
            if path == "floor":
                svc = spawn_peer(peer_cmd("service", "--port", mgr.port, "--recv-size", 1 << 16), tmp,
                                 f"service-{path}")
                expect_line(svc, "READY", 20, tmp, f"service-{path}")
            else:
                svc = spawn_peer(libpeer_cmd("service", "--kind", path, "--port", mgr.port), tmp,
                                 f"service-{path}")
            wait_registered(mgr.port, svc, tmp, f"service-{path}")
            specs.append((path, mgr, svc))
        argv = libpeer_cmd("seq", "--rounds", case.rounds, "--burst", case.burst, "--warmup", opts.warmup,
                           "--payload", case.payload, "--out", tmp / "seq.json")
        for path, mgr, svc in specs:
            argv += ["--path", f"{path}:{mgr.port}:{mgr.pid}:{svc.pid}"]
        cli = spawn_peer(argv, tmp, "client")
        # generous: 20 ms per call would already be 20x msl-network 1.0's round trip
        timeout = opts.warmup + 30 + case.rounds * case.burst * len(paths) * 0.02
        expect_line(cli, "DONE", timeout, tmp, "client")
        r = orjson.loads((tmp / "seq.json").read_bytes())
        for path, mgr, svc in specs:
            if not mgr.alive():
                raise CaseError(f"{mgr.label} of the {path} path exited (code {mgr.proc.returncode}) "
                                f"during the case:\n{mgr.output_tail()}")
            if svc.poll() is not None:
                raise CaseError(f"the Echo Service of the {path} path exited (code {svc.returncode})")
        procs.stop(cli)
        for _, _, svc in specs:
            procs.stop(svc)
    if r["failure"]:
        raise CaseError(r["failure"])
    out = {}
    for path in paths:
        p = r["paths"][path]
        lat = sorted(p["lat_ns"])
        n = len(lat)
        if not n:
            raise CaseError(f"{path}: no call measured")
        out[path] = {
            "p50_us": percentile(lat, 50) / 1e3,
            "p99_us": percentile(lat, 99) / 1e3,
            "mean_us": sum(lat) / n / 1e3,
            "mgr_cpu_us_per_req": p["mgr_ns"] / n / 1e3,
            "svc_cpu_us_per_req": p["svc_ns"] / n / 1e3,
            "client_cpu_us_per_req": p["client_ns"] / n / 1e3,
            "calls": n,
            "other_cpu_pct": r["other_cpu_pct"],
            "errors": p["errors"],
            "error_samples": p["error_samples"],
            "cpu_clock": r["cpu_clock"],
            "warmup_rounds": r["warmup_rounds"],
        }
    return out


def run_idle_case(key, case, opts, tmp):
    tls, tls_args = case_tls(case, opts)
    with managers.RunningManager(key, tmp / "manager", tls=tls) as mgr:
        argv = peer_cmd("idle", "--port", mgr.port, "--count", case.count, "--mgr-pid", mgr.pid,
                        "--timeout", opts.idle_timeout, "--out", tmp / "idle.json", *tls_args)
        idle = spawn_peer(argv, tmp, "idle", stdin=subprocess.PIPE)
        expect_line(idle, "DONE", opts.idle_timeout + 30, tmp, "idle")
        r = orjson.loads((tmp / "idle.json").read_bytes())
        alive = mgr.alive()
        procs.stop(idle)
        if not alive:
            raise CaseError(f"{mgr.label} exited (code {mgr.proc.returncode}) during the case:\n"
                            f"{mgr.output_tail()}")
    if r["failure"]:
        raise CaseError(r["failure"])
    lat = sorted(r["first_line_ns"])
    n = r["count"]
    return {
        "handshakes_per_s": n / r["elapsed_s"],
        "p50_us": percentile(lat, 50) / 1e3,
        "p99_us": percentile(lat, 99) / 1e3,
        "mgr_cpu_us_per_conn": r["cpu_ticks"] / procs.CLK_TCK / n * 1e6,
        "rss_kib_per_conn": (r["rss_kib_after"] - r["rss_kib_before"]) / n,
        "rss_mib_after": r["rss_kib_after"] / 1024,
        "other_cpu_pct": r["other_cpu_ticks"] / procs.CLK_TCK / r["elapsed_s"] * 100,
        "rss_kib_before": r["rss_kib_before"],
        "startup_s": mgr.startup_s,
        "ready_line_seen": mgr.ready_line_seen,
        "stop_s": mgr.stop_s,
        "exit_code": mgr.exit_code,
        "tls": mgr.tls_info,
    }


def short(metrics, rows):
    return "  ".join(f"{label.split(' (')[0]}={fmt.format(metrics[k])}" for k, label, fmt, _ in rows[:4])


def summarize(runs, rows):
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return None
    med = {}
    for key, *_ in rows:
        vals = [r[key] for r in ok if r.get(key) is not None and not
                (isinstance(r[key], float) and math.isnan(r[key]))]
        if vals:
            med[key] = sum(vals) if key in SUMMED else statistics.median(vals)
    return med


def fmt_cell(fmt, value):
    return "n/a" if value is None else fmt.format(value)


def case_rows(case):
    if isinstance(case, LibSeqCase):
        return LIB_SEQ_ROWS
    if isinstance(case, LibThreadsCase):
        return LIB_THREADS_ROWS
    return IDLE_ROWS if isinstance(case, IdleCase) else LOAD_ROWS


def case_keys(case, keys, opts):
    """The result columns of ``case``: the Managers, or the paths of lib_seq."""
    if isinstance(case, LibSeqCase):
        return lib_paths(keys, opts.lib_skip)
    if isinstance(case, LibThreadsCase):
        return [k for k in keys if k not in opts.lib_skip]
    return keys


def lib_seq_ratios(per):
    """{(a, b): median of a / median of b} of the lib_seq p50s, for the targets."""
    out = {}
    for a, b, limit, word in LIB_TARGETS:
        x = (per.get(a) or {}).get("p50_us")
        y = (per.get(b) or {}).get("p50_us")
        out[(a, b)] = x / y if x is not None and y else None
    return out


def render_lib_seq(case, results, keys, opts):
    paths = list(LIB_PATHS)
    per = {k: summarize(results[case.name].get(k, []), LIB_SEQ_ROWS) for k in paths}
    labels = {k: LIB_PATHS[k][0] for k in paths}
    out = ["", f"[{case.name}] {case.title}"]
    for k in paths:
        out.append(f"  {labels[k] + ':':17} {LIB_PATHS[k][2]}")
    clocks = {r.get("cpu_clock") for k in paths for r in results[case.name].get(k, []) if "error" not in r}
    clocks.discard(None)
    if clocks:
        out.append("  CPU per request: over each path's own bursts, "
                   + ("ns from /proc/PID/task/*/schedstat" if clocks == {"schedstat"}
                      else "clock ticks from /proc/PID/stat (coarse)")
                   + "; the floor's Manager is a second netmgr Manager")
    out.append(f"  {'metric':34} {labels['netmgr']:>10} {labels['msl']:>16} {labels['floor']:>9} "
               f"{'netmgr/msl':>11} {'netmgr/floor':>13}")
    for key, label, fmt, better in LIB_SEQ_ROWS:
        v = {k: per[k].get(key) if per[k] else None for k in paths}
        cells = [fmt_cell(fmt, v[k]) for k in paths]
        ratios = [f"{v['netmgr'] / v[b]:.2f}x" if better and v["netmgr"] is not None and v[b] else "-"
                  for b in ("msl", "floor")]
        out.append(f"  {label:34} {cells[0]:>10} {cells[1]:>16} {cells[2]:>9} {ratios[0]:>11} {ratios[1]:>13}")
    ratios = lib_seq_ratios(per)
    for a, b, limit, word in LIB_TARGETS:
        r = ratios[(a, b)]
        verdict = "n/a" if r is None else ("met" if r <= limit else "NOT met")
        shown = "-" if r is None else f"{r:.2f}x"
        out.append(f"  {word}: {labels[a]} p50 <= {limit:g}x {labels[b]}'s: {shown} -> {verdict}")
    ran = [k for k in paths if results[case.name].get(k) is not None]
    for k in paths:
        if k not in ran:
            why = (f"netmgr's library is skipped: {opts.lib_skip[k]}" if k in opts.lib_skip else
                   f"its Manager, {LIB_PATHS[k][1]}, is not in --managers or was skipped")
            out.append(f"  {labels[k]}: not run ({why})")
    for i, r in enumerate(results[case.name][ran[0]] if ran else []):
        if "error" in r:  # a run fails as a whole: the same error is stored for every path
            out.append(f"  run {i + 1} FAILED: {r['error']}")
    for k in ran:
        for i, r in enumerate(results[case.name][k]):
            if r.get("error_samples"):
                out.append(f"  {labels[k]} run {i + 1} error replies, e.g.: {r['error_samples'][0]}")
    return out


def tls_overhead(case, cases, results):
    """(plain case, {manager: {key: (TLS median, plain median)}}) for a TLS case; (None, None) when its
    plain case is not part of this run."""
    plain = next((c for c in cases if c.name == PLAIN_OF.get(case.name)), None)
    if plain is None:
        return None, None
    out = {}
    for k in ("netmgr", "msl"):
        t = summarize(results[case.name].get(k, []), case_rows(case)) or {}
        b = summarize(results[plain.name].get(k, []), case_rows(plain)) or {}
        out[k] = {key: (t.get(key), b.get(key)) for key, _ in OVERHEAD_ROWS[type(case)]}
    return plain, out


def overhead_json(case, cases, results):
    plain, ovh = tls_overhead(case, cases, results)
    if plain is None:
        return None
    doc = {"plain_case": plain.name}
    for k, vals in ovh.items():
        doc[k] = {key: {"tls": t, "plain": b, "ratio": t / b if t is not None and b else None,
                        "added": t - b if t is not None and b is not None else None}
                  for key, (t, b) in vals.items()}
    return doc


def render_overhead(case, cases, results, labels):
    plain, ovh = tls_overhead(case, cases, results)
    if plain is None:
        return [f"  TLS overhead: not shown, {PLAIN_OF[case.name]} is not part of this run "
                f"(add it to --cases to compare with plain TCP)"]
    out = [f"  TLS overhead per Manager, [{case.name}] vs [{plain.name}] of this run"]
    if isinstance(case, IdleCase) and case.count != plain.count:
        out[0] += f" ({case.count} vs {plain.count} connections)"
    fmts = {key: fmt for key, _, fmt, _ in case_rows(case)}
    for key, label in OVERHEAD_ROWS[type(case)]:
        t = {k: ovh[k][key][0] for k in ("netmgr", "msl")}
        b = {k: ovh[k][key][1] for k in ("netmgr", "msl")}
        ratio = {k: t[k] / b[k] if t[k] is not None and b[k] else None for k in t}
        added = {k: t[k] - b[k] if t[k] is not None and b[k] is not None else None for k in t}
        cells = [fmt_cell("{:.2f}x", ratio[k]) for k in ("netmgr", "msl")]
        out.append(f"  {label + ', TLS / plain':38} {cells[0]:>14} {cells[1]:>16} {'-':>8}")
        a, m = added["netmgr"], added["msl"]
        cross = f"{a / m:.2f}x" if a is not None and m is not None and a > 0 and m > 0 else "-"
        cells = [fmt_cell(fmts[key].replace("{:", "{:+"), added[k]) for k in ("netmgr", "msl")]
        out.append(f"  {label + ', added (us)':38} {cells[0]:>14} {cells[1]:>16} {cross:>8}")
    return out


def render(cases, results, keys, opts, machine):
    labels = {k: managers.MANAGERS[k][0] for k in ("netmgr", "msl")}
    out = [
        "",
        f"netmgr benchmark  {machine['date']}",
        f"machine: nproc={machine['nproc']}, Python {machine['python']} ({machine['implementation']}), "
        f"{machine['platform']}; load average at start {machine['loadavg']}",
        f"per case and Manager: warm-up {opts.warmup:g} s excluded, {opts.duration:g} s measured, "
        f"{opts.repeat} run(s), medians shown; fresh Manager per run; load generator in "
        f"{opts.gen_procs} process(es); Manager DBs and logs in {machine['tmpdir']}",
        "ratio = netmgr / msl-network 1.0 (higher is better for req/s and handshakes/s, lower for the rest)",
    ]
    if any(c.tls for c in cases):
        made = opts.tls.made_with if opts.tls else f"none: {opts.tls_error}"
        out.append(f"TLS cases: every peer over TLS; both Managers get one key + self-signed certificate "
                   f"({made}) via --cert-file/--key-file; peers trust it as cafile, server name localhost")
        out.append("TLS overhead = TLS case vs its plain case of this run, per Manager: TLS / plain, and "
                   "TLS - plain (added); its ratio column = netmgr / msl-network 1.0 of the added cost")
    for case in cases:
        if isinstance(case, LibSeqCase):
            out += render_lib_seq(case, results, keys, opts)
            continue
        rows = case_rows(case)
        per = {k: summarize(results[case.name].get(k, []), rows) for k in ("netmgr", "msl")}
        out += ["", f"[{case.name}] {case.title}"]
        if case.tls:
            seen = {k: next((r["tls"] for r in results[case.name].get(k, []) if r.get("tls")), None)
                    for k in ("netmgr", "msl")}
            if any(seen.values()):
                out.append("  negotiated: " + ", ".join(f"{labels[k]} {v}" for k, v in seen.items() if v))
        out.append(f"  {'metric':38} {labels['netmgr']:>14} {labels['msl']:>16} {'ratio':>8}")
        for key, label, fmt, better in rows:
            a = per["netmgr"].get(key) if per["netmgr"] else None
            b = per["msl"].get(key) if per["msl"] else None
            ratio = f"{a / b:.2f}x" if better and a is not None and b else "-"
            out.append(f"  {label:38} {fmt_cell(fmt, a):>14} {fmt_cell(fmt, b):>16} {ratio:>8}")
        for k in ("netmgr", "msl"):
            runs = results[case.name].get(k)
            if k not in keys:
                continue
            if runs is None:
                skipped = isinstance(case, LibThreadsCase) and k in opts.lib_skip
                out.append(f"  {labels[k]}: not run" + (f" (netmgr's library is skipped: {opts.lib_skip[k]})"
                                                         if skipped else ""))
                continue
            for i, r in enumerate(runs):
                if "error" in r:
                    out.append(f"  {labels[k]} run {i + 1} FAILED: {r['error']}")
                elif r.get("error_samples"):
                    out.append(f"  {labels[k]} run {i + 1} error replies, e.g.: {r['error_samples'][0]}")
        if case.tls:
            out += render_overhead(case, cases, results, labels)
    return "\n".join(out)


def machine_info():
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "clk_tck": procs.CLK_TCK,
        "loadavg": " ".join(open("/proc/loadavg").read().split()[:3]),
    }


def default_tmpdir():
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def fs_type(path):
    """File-system type of ``path`` from /proc/mounts (longest matching mount point)."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench", description="Benchmark netmgr against the "
                                "MSL-Network 1.0 Manager with raw-protocol load (see bench/README.md).")
    p.add_argument("--quick", action="store_true", help="tiny counts (whole run < 30 s), for CI smoke tests")
    p.add_argument("--cases", default=",".join(CASE_NAMES), help=f"comma list of {', '.join(CASE_NAMES)}")
    p.add_argument("--managers", default="msl,netmgr", help="comma list of msl, netmgr")
    p.add_argument("--duration", type=float, help="measured seconds per case (default 5; --quick 0.5)")
    p.add_argument("--warmup", type=float, help="warm-up seconds before measuring (default 1; --quick 0.2)")
    p.add_argument("--repeat", type=int, help="runs per case and Manager; medians reported (default 3; --quick 1)")
    p.add_argument("--idle-count", type=int, help="connections of idle2000 (default 2000; --quick 200)")
    p.add_argument("--idle-tls-count", type=int, help="TLS connections of idle_tls (default 500; --quick 50)")
    p.add_argument("--lib-rounds", type=int, help="rounds of lib_seq (default 12; --quick 2)")
    p.add_argument("--lib-burst", type=int, help="calls per path and round of lib_seq (default 100; --quick 25)")
    p.add_argument("--gen-procs", type=int, default=1, help="load generator processes (1 or 2; default 1)")
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    p.add_argument("--tmpdir", metavar="DIR",
                   help="where the Managers' databases and logs go (default /dev/shm if present: msl-network "
                        "commits to SQLite on every connection event, so on a busy disk fsync dominates)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (Manager logs, DBs)")
    opts = p.parse_args(argv)
    quick = opts.quick
    if opts.duration is None:
        opts.duration = 0.5 if quick else 5.0
    if opts.warmup is None:
        opts.warmup = 0.2 if quick else 1.0
    if opts.repeat is None:
        opts.repeat = 1 if quick else 3
    if opts.tmpdir is None:
        opts.tmpdir = default_tmpdir()
    if opts.idle_count is None:
        opts.idle_count = 200 if quick else 2000
    if opts.idle_tls_count is None:
        opts.idle_tls_count = 50 if quick else 500
    if opts.lib_rounds is None:
        opts.lib_rounds = 2 if quick else 12
    if opts.lib_burst is None:
        opts.lib_burst = 25 if quick else 100
    opts.drain_timeout = 10.0
    opts.stall_timeout = 10.0
    opts.idle_timeout = 45.0
    if (opts.duration <= 0 or opts.warmup < 0 or opts.repeat < 1 or opts.idle_count < 1
            or opts.idle_tls_count < 1 or opts.lib_rounds < 1 or opts.lib_burst < 1):
        p.error("--duration, --repeat, --idle-count, --idle-tls-count, --lib-rounds and --lib-burst must be "
                "positive, --warmup >= 0")
    if not 1 <= opts.gen_procs <= 2:
        p.error("--gen-procs must be 1 or 2")
    opts.case_list = [c.strip() for c in opts.cases.split(",") if c.strip()]
    bad = [c for c in opts.case_list if c not in CASE_NAMES]
    if bad:
        p.error(f"unknown case(s) {bad}; choose from {', '.join(CASE_NAMES)}")
    opts.manager_list = [m.strip() for m in opts.managers.split(",") if m.strip()]
    bad = [m for m in opts.manager_list if m not in managers.MANAGERS]
    if bad:
        p.error(f"unknown manager(s) {bad}; choose from netmgr, msl")
    return opts


def build_cases(opts):
    table = {
        "seq": LoadCase("seq", 1, 1, 10),
        "c8w16": LoadCase("c8w16", 8, 16, 10),
        "c8w16_100k": LoadCase("c8w16_100k", 8, 16, 100_000),
        "idle2000": IdleCase("idle2000", opts.idle_count),
        "seq_tls": LoadCase("seq_tls", 1, 1, 10, tls=True),
        "c8w16_tls": LoadCase("c8w16_tls", 8, 16, 10, tls=True),
        "idle_tls": IdleCase("idle_tls", opts.idle_tls_count, tls=True),
        "lib_seq": LibSeqCase("lib_seq", opts.lib_rounds, opts.lib_burst),
        "lib_threads16": LibThreadsCase("lib_threads16", 16),
    }
    return [table[n] for n in opts.case_list]


def run_lib_seq_repeat(case, keys, opts, tmproot, rep, results):
    """One run of lib_seq (every path at once); stores each path's metrics; True if it failed."""
    paths = lib_paths(keys, opts.lib_skip)
    tmp = tmproot / f"{case.name}-{rep}"
    tmp.mkdir(parents=True)
    t0 = time.monotonic()
    failed = False
    try:
        m = run_lib_seq_case(keys, case, opts, tmp)
        msg = "  ".join(f"{k} p50={m[k]['p50_us']:,.0f}" for k in paths)
    except (CaseError, managers.ManagerError, OSError, ProtocolFailure, ValueError) as exc:
        failed = True
        m = {k: {"error": f"{type(exc).__name__}: {exc}"} for k in paths}
        msg = "FAILED: " + m[paths[0]]["error"] if paths else "FAILED"
    except Exception as exc:  # a bug here: report it, keep the other runs going
        failed = True
        m = {k: {"error": f"{type(exc).__name__}: {exc}"} for k in paths}
        msg = "FAILED (bench bug?):\n" + traceback.format_exc()
    finally:
        procs.stop_all()
    for k in paths:
        results[case.name].setdefault(k, []).append(m[k])
    print(f"[{rep + 1}/{opts.repeat}] {case.name:11} {'paths':7} {msg}  "
          f"({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
    return failed


def lib_seq_targets_json(case, results, keys):
    per = {k: summarize(results[case.name].get(k, []), LIB_SEQ_ROWS) for k in LIB_PATHS}
    ratios = lib_seq_ratios(per)
    return [{"p50_ratio": f"{a}/{b}", "value": ratios[(a, b)], "at_most": limit,
             "met": None if ratios[(a, b)] is None else ratios[(a, b)] <= limit}
            for a, b, limit, _ in LIB_TARGETS]


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    nofile = procs.raise_nofile_limit()
    cases = build_cases(opts)
    keys = list(opts.manager_list)
    notes = []
    if "netmgr" in keys:
        ok, why = managers.netmgr_available()
        if not ok:
            keys.remove("netmgr")
            notes.append(f"netmgr skipped: {why}")
            print(f"note: netmgr skipped ({why})", file=sys.stderr)
    opts.lib_skip = {}  # lib path/Manager key -> why its library is not run
    if "netmgr" in keys and any(isinstance(c, (LibSeqCase, LibThreadsCase)) for c in cases):
        ok, why = managers.netmgr_lib_available()
        if not ok:
            opts.lib_skip["netmgr"] = why
            notes.append(f"netmgr's library skipped in the lib cases (the floor still runs): {why}")
            print(f"note: netmgr's library skipped in the lib cases ({why})", file=sys.stderr)
    need = max((c.count for c in cases if isinstance(c, IdleCase)), default=0) + 64
    if nofile < need:
        print(f"warning: RLIMIT_NOFILE is {nofile}, idle case needs ~{need}", file=sys.stderr)
    machine = machine_info()
    results = {c.name: {} for c in cases}
    tmproot = Path(tempfile.mkdtemp(prefix="netmgr-bench-", dir=opts.tmpdir))
    machine["tmpdir"] = f"{tmproot.parent} ({fs_type(tmproot)})"
    failed = interrupted = False
    t_all = time.monotonic()
    opts.tls, opts.tls_error = None, None
    try:
        if any(c.tls for c in cases):
            try:  # once per benchmark run: neither Manager pays for key generation
                opts.tls = managers.make_tls_files(tmproot / "tls")
            except (managers.ManagerError, OSError) as exc:
                opts.tls_error = str(exc)
                print(f"warning: {exc}; the TLS cases will fail", file=sys.stderr)
        for rep in range(opts.repeat):
            order = keys if rep % 2 == 0 else keys[::-1]  # alternate who goes first
            for case in cases:
                if isinstance(case, LibSeqCase):
                    failed |= run_lib_seq_repeat(case, keys, opts, tmproot, rep, results)
                    continue
                runner = {IdleCase: run_idle_case, LibThreadsCase: run_lib_threads_case}.get(
                    type(case), run_load_case)
                rows = case_rows(case)
                for key in order:
                    if isinstance(case, LibThreadsCase) and key in opts.lib_skip:
                        continue
                    tmp = tmproot / f"{case.name}-{key}-{rep}"
                    tmp.mkdir(parents=True)
                    t0 = time.monotonic()
                    try:
                        m = runner(key, case, opts, tmp)
                        msg = short(m, rows)
                    except (CaseError, managers.ManagerError, OSError, ProtocolFailure, ValueError) as exc:
                        failed = True
                        m = {"error": f"{type(exc).__name__}: {exc}"}
                        msg = "FAILED: " + m["error"]
                    except Exception as exc:  # a bug here: report it, keep the other runs going
                        failed = True
                        m = {"error": f"{type(exc).__name__}: {exc}"}
                        msg = "FAILED (bench bug?):\n" + traceback.format_exc()
                    finally:
                        procs.stop_all()
                    results[case.name].setdefault(key, []).append(m)
                    print(f"[{rep + 1}/{opts.repeat}] {case.name:11} {key:7} {msg}  "
                          f"({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping every child process", file=sys.stderr)
    finally:
        procs.stop_all()
        if opts.keep_tmp:
            print(f"temp dir kept: {tmproot}", file=sys.stderr)
        else:
            shutil.rmtree(tmproot, ignore_errors=True)

    report = render(cases, results, keys, opts, machine)
    if interrupted:
        report += "\nINTERRUPTED: the figures above are partial"
    for n in notes:
        report += f"\nnote: {n}"
    report += f"\ntotal time {time.monotonic() - t_all:.0f} s"
    print(report)
    if opts.json:
        doc = {"machine": machine, "notes": notes, "interrupted": interrupted,
               "options": {k: getattr(opts, k) for k in ("quick", "duration", "warmup", "repeat",
                                                         "idle_count", "idle_tls_count", "gen_procs",
                                                         "lib_rounds", "lib_burst")},
               "tls": ({"cert": str(opts.tls.cert), "made_with": opts.tls.made_with} if opts.tls
                       else {"error": opts.tls_error} if opts.tls_error else None),
               "cases": {c.name: {"title": c.title,
                                  "median": {k: summarize(results[c.name].get(k, []), case_rows(c))
                                             for k in case_keys(c, keys, opts)},
                                  **({"targets": lib_seq_targets_json(c, results, keys)}
                                     if isinstance(c, LibSeqCase) else {}),
                                  "runs": results[c.name],
                                  **({"tls_overhead": overhead_json(c, cases, results)} if c.tls else {})}
                         for c in cases}}
        Path(opts.json).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    if interrupted:
        return 130
    return 1 if failed else 0
