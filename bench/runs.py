"""One run of one case: start a fresh Manager and the peers, measure, return the figures.

Each ``run_*_case`` returns a dict of metrics (the keys of its rows in :mod:`bench.cases`, plus
details for the JSON) or raises :class:`CaseError`; the caller stops every child afterwards.
"""
import contextlib
import math
import os
import signal
import subprocess
import sys
import time

import orjson

from bench import managers, procs
from bench.cases import LIB_PATHS, lib_paths
from bench.wire import CLIENT_IDENTITY, BlockingPeer, client_tls_context

PY = sys.executable


class CaseError(Exception):
    pass


def percentile(sorted_values, p):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[k]


def latency_us(lat):
    """p50 and p99 (us) of the sorted round trips ``lat`` (ns)."""
    return {"p50_us": percentile(lat, 50) / 1e3, "p99_us": percentile(lat, 99) / 1e3}


def sleep_until(t):
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return
        time.sleep(left)


# ---------------------------------------------------------------------------------------------
# Peer processes

def peer_cmd(*args):
    return [PY, "-m", "bench.peers", *map(str, args)]


def libpeer_cmd(*args):
    return [PY, "-m", "bench.libpeers", *map(str, args)]


def spawn_peer(argv, tmp, name, stdin=subprocess.DEVNULL):
    err = open(tmp / f"{name}.stderr", "wb")
    try:
        return procs.spawn(argv, cwd=managers.ROOT, env=managers.child_env(), stdin=stdin,
                           stdout=subprocess.PIPE, stderr=err)
    finally:
        err.close()


def stderr_tail(tmp, name):
    """The last lines a peer wrote to stderr, indented for an error message ('' if none)."""
    try:
        err = (tmp / f"{name}.stderr").read_text(errors="replace").strip().splitlines()[-6:]
    except OSError:
        err = []
    return "\n    " + "\n    ".join(err) if err else ""


def expect_line(proc, word, timeout, tmp, name):
    line = procs.read_line(proc.stdout, timeout, proc)
    if line.strip() != word:
        state = "exited" if proc.poll() is not None else "still running"
        raise CaseError(f"{name}: expected {word!r}, got {line.strip()!r} ({state})" + stderr_tail(tmp, name))


def wait_registered(port, proc, tmp, name, timeout=20.0, tls=None):
    """Wait until the Manager on ``port`` lists the Echo Service started as ``proc`` (fails at once
    when ``proc`` exits first, with the tail of its stderr); ``tls`` is the client SSLContext."""
    t0 = time.monotonic()
    why = f"not registered after {timeout:g} s"
    peer = BlockingPeer(port, CLIENT_IDENTITY, timeout=timeout, tls=tls)
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
    raise CaseError(f"{name}: the Echo Service {why}" + stderr_tail(tmp, name))


def send_go(peers, opts):
    """Tell the waiting peers when to start and which window to measure; returns (t_ms, t_me)."""
    t_start = time.monotonic() + 0.05
    t_ms = t_start + opts.warmup
    t_me = t_ms + opts.duration
    for p in peers:
        p.stdin.write(f"GO {t_start!r} {t_ms!r} {t_me!r}\n".encode())
        p.stdin.flush()
    return t_ms, t_me


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


def check_manager(mgr):
    if not mgr.alive():
        raise CaseError(f"{mgr.label} exited (code {mgr.proc.returncode}) during the case:\n"
                        f"{mgr.output_tail()}")


MANAGER_FIGURES = ("startup_s", "ready_line_seen", "stop_s", "exit_code", "tls")


def manager_figures(mgr, keys=MANAGER_FIGURES):
    """What the JSON records of the (stopped) Manager itself: start-up and stop times, exit code;
    and for an observed Manager (netmgr+http) what its observer saw, under ``observed``."""
    figures = {"startup_s": mgr.startup_s, "ready_line_seen": mgr.ready_line_seen,
               "stop_s": mgr.stop_s, "exit_code": mgr.exit_code, "tls": mgr.tls_info}
    out = {k: figures[k] for k in keys}
    if mgr.observed is not None:
        out["observed"] = mgr.observed
    return out


def case_tls(case, opts):
    """(TlsFiles or None, extra peer arguments) for ``case``."""
    if not case.tls:
        return None, []
    if opts.tls is None:
        raise CaseError(f"no TLS certificate: {opts.tls_error}")
    return opts.tls, ["--tls-cert", opts.tls.cert]


# ---------------------------------------------------------------------------------------------
# Load cases: raw Echo Service, raw load generator(s)

def run_load_case(key, case, opts, tmp):
    tls, tls_args = case_tls(case, opts)
    with managers.RunningManager(key, tmp / "manager", tls=tls) as mgr:
        svc = spawn_peer(peer_cmd("service", "--port", mgr.port, *tls_args), tmp, "service")
        expect_line(svc, "READY", 20, tmp, "service")
        wait_registered(mgr.port, svc, tmp, "service", tls=client_tls_context(tls.cert) if tls else None)
        gens = start_generators(mgr, case, opts, tmp, tls_args)
        t_ms, t_me = send_go(gens, opts)
        try:
            window = window_cpu([mgr.pid, svc.pid] + [g.pid for g in gens], t_ms, t_me)
        except CaseError as exc:
            raise CaseError(f"{exc} (Manager alive: {mgr.alive()})") from exc.__cause__
        for i, g in enumerate(gens):
            expect_line(g, "DONE", opts.drain_timeout + opts.stall_timeout + 20, tmp, f"load{i}")
        results = [orjson.loads((tmp / f"load{i}.json").read_bytes()) for i in range(len(gens))]
        check_manager(mgr)
        for g in gens:
            procs.stop(g)
        served = stop_echo_service(svc)
    return {**load_figures(results, served, window, opts), **manager_figures(mgr)}


def start_generators(mgr, case, opts, tmp, tls_args):
    """Start the load generator process(es), the clients shared out, and wait until all are READY."""
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
    return gens


def stop_echo_service(svc):
    """SIGTERM the raw Echo Service; the words of its ``SERVED <requests> <recv batches>`` line."""
    if svc.poll() is None:
        os.killpg(svc.pid, signal.SIGTERM)
    served = procs.read_line(svc.stdout, 10, svc).split()
    procs.stop(svc)
    return served


def load_figures(results, served, window, opts):
    """The metrics of a load case from the generators' results, the Service's count and the window."""
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
    wall, d, busy = window
    return {
        "rps": done / opts.duration,
        **latency_us(lat),
        "mgr_cpu_us_per_req": d[0] / done * 1e6,
        "mgr_cpu_pct": d[0] / wall * 100,
        "svc_cpu_pct": d[1] / wall * 100,
        "gen_cpu_pct": sum(d[2:]) / wall * 100,
        "other_cpu_pct": max(0.0, busy - sum(d)) / wall * 100,
        "errors": sum(r["errors"] for r in results),
        "error_samples": [s for r in results for s in r["error_samples"]][:5],
        "completed": done,
        "completed_total": completed_total,
        "svc_msgs_per_recv": svc_served / max(svc_batches, 1),
        "gen_msgs_per_recv": completed_total / max(sum(r["recv_batches"] for r in results), 1),
    }


# ---------------------------------------------------------------------------------------------
# Idle cases

def run_idle_case(key, case, opts, tmp):
    tls, tls_args = case_tls(case, opts)
    extra = managers.connection_args(key, case.count)
    with managers.RunningManager(key, tmp / "manager", tls=tls, extra_args=extra) as mgr:
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
    n = r["count"]
    return {
        "handshakes_per_s": n / r["elapsed_s"],
        **latency_us(sorted(r["first_line_ns"])),
        "mgr_cpu_us_per_conn": r["cpu_ticks"] / procs.CLK_TCK / n * 1e6,
        "rss_kib_per_conn": (r["rss_kib_after"] - r["rss_kib_before"]) / n,
        "rss_mib_after": r["rss_kib_after"] / 1024,
        "other_cpu_pct": r["other_cpu_ticks"] / procs.CLK_TCK / r["elapsed_s"] * 100,
        "rss_kib_before": r["rss_kib_before"],
        **manager_figures(mgr),
    }


# ---------------------------------------------------------------------------------------------
# Library cases

def run_lib_threads_case(key, case, opts, tmp):
    with managers.RunningManager(key, tmp / "manager") as mgr:
        kind = managers.family(key)  # netmgr+http: netmgr's library
        svc = spawn_peer(libpeer_cmd("service", "--kind", kind, "--port", mgr.port), tmp, "service")
        wait_registered(mgr.port, svc, tmp, "service")
        argv = libpeer_cmd("threads", "--kind", kind, "--port", mgr.port, "--threads", case.threads,
                           "--payload", case.payload, "--out", tmp / "threads.json")
        cli = spawn_peer(argv, tmp, "client", stdin=subprocess.PIPE)
        expect_line(cli, "READY", 30, tmp, "client")
        t_ms, t_me = send_go([cli], opts)
        try:
            window = window_cpu([mgr.pid, svc.pid, cli.pid], t_ms, t_me)
        except CaseError as exc:
            raise CaseError(f"{exc} (Manager alive: {mgr.alive()}, Service alive: {svc.poll() is None})")
        expect_line(cli, "DONE", opts.drain_timeout + opts.stall_timeout + 20, tmp, "client")
        r = orjson.loads((tmp / "threads.json").read_bytes())
        check_manager(mgr)
        if svc.poll() is not None:
            raise CaseError(f"the Echo Service exited (code {svc.returncode}) during the case")
        procs.stop(cli)
        procs.stop(svc)
    return {**lib_threads_figures(r, window, opts), **manager_figures(mgr, ("startup_s", "stop_s", "exit_code"))}


def lib_threads_figures(r, window, opts):
    if r["failure"]:
        raise CaseError(r["failure"])
    lat = sorted(r["lat_ns"])
    done = len(lat)
    if not done:
        raise CaseError("no call completed inside the measurement window")
    wall, d, busy = window
    return {
        "rps": done / opts.duration,
        **latency_us(lat),
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
    }


def run_lib_seq_case(keys, case, opts, tmp):
    """One run of every path of lib_seq; returns {path: metrics}."""
    paths = lib_paths(keys, opts.lib_skip)
    if not paths:
        raise CaseError("no path: lib_seq needs netmgr and/or msl in --managers (netmgr+http has no "
                        "lib_seq path)")
    with contextlib.ExitStack() as stack:
        specs = [start_lib_path(stack, path, tmp) for path in paths]
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
            check_lib_path(path, mgr, svc)
        procs.stop(cli)
        for _, _, svc in specs:
            procs.stop(svc)
    if r["failure"]:
        raise CaseError(r["failure"])
    return {path: lib_seq_figures(path, r) for path in paths}


def start_lib_path(stack, path, tmp):
    """Start the Manager (entered into ``stack``) and the Echo Service of one lib_seq path."""
    mgr = stack.enter_context(managers.RunningManager(LIB_PATHS[path][1], tmp / f"manager-{path}"))
    name = f"service-{path}"
    if path == "floor":
        svc = spawn_peer(peer_cmd("service", "--port", mgr.port, "--recv-size", 1 << 16), tmp, name)
        expect_line(svc, "READY", 20, tmp, name)
    else:
        svc = spawn_peer(libpeer_cmd("service", "--kind", path, "--port", mgr.port), tmp, name)
    wait_registered(mgr.port, svc, tmp, name)
    return path, mgr, svc


def check_lib_path(path, mgr, svc):
    if not mgr.alive():
        raise CaseError(f"{mgr.label} of the {path} path exited (code {mgr.proc.returncode}) "
                        f"during the case:\n{mgr.output_tail()}")
    if svc.poll() is not None:
        raise CaseError(f"the Echo Service of the {path} path exited (code {svc.returncode})")


def lib_seq_figures(path, r):
    """The metrics of one lib_seq path from the client's result ``r``."""
    p = r["paths"][path]
    lat = sorted(p["lat_ns"])
    n = len(lat)
    if not n:
        raise CaseError(f"{path}: no call measured")
    return {
        **latency_us(lat),
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
