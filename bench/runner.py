"""``python -m bench``: the options, the repeat loop over cases and Managers, and the report.

What a case is lives in :mod:`bench.cases`, one run of it in :mod:`bench.runs`, the medians and the
printed and JSON report in :mod:`bench.report`.
"""
import argparse
import datetime
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import orjson

from bench import managers, procs
from bench.cases import (CASE_NAMES, DEFAULT_CASES, BigCase, IdleCase, LibSeqCase, LibThreadsCase, LoadCase,
                         ManyCase, OverloadCase, build_cases, case_rows, lib_paths, overload_attacks)
from bench.overload import run_overload_case
from bench.report import json_doc, render, short, short_overload
from bench.relay import MODES as RELAY_MODES
from bench.runs import CaseError, run_idle_case, run_lib_seq_case, run_lib_threads_case, run_load_case
from bench.scale import run_big_case, run_many_case
from bench.wire import ProtocolFailure

# option -> (default, default with --quick); the --help texts below say the same
DEFAULTS = {
    "duration": (5.0, 0.5),
    "warmup": (1.0, 0.2),
    "repeat": (3, 1),
    "idle_count": (2000, 200),
    "idle_tls_count": (500, 50),
    "lib_rounds": (12, 2),
    "lib_burst": (100, 25),
    "big_size": (10_000_000, 200_000),
    "big_rounds": (8, 2),
    "many_count": (20_000, 300),
}
RUNNERS = {LoadCase: run_load_case, IdleCase: run_idle_case, LibThreadsCase: run_lib_threads_case,
           OverloadCase: run_overload_case, BigCase: run_big_case, ManyCase: run_many_case}
FDS_PER_OPENER = 10_000  # idle20000: connections per opener process (its descriptors stay far below 20k)
ATTACK_LABELS = tuple(a.label for a in overload_attacks(quick=False))
# what a failed run raises; anything else is a bug of the benchmark (reported with its traceback)
RUN_ERRORS = (CaseError, managers.ManagerError, OSError, ProtocolFailure, ValueError)


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


# ---------------------------------------------------------------------------------------------
# Options

def build_parser():
    p = argparse.ArgumentParser(prog="python -m bench", description="Benchmark netmgr against the "
                                "MSL-Network 1.0 Manager with raw-protocol load (see bench/README.md).")
    p.add_argument("--quick", action="store_true", help="tiny counts (whole run < 30 s), for CI smoke tests")
    p.add_argument("--cases", default=",".join(DEFAULT_CASES),
                   help=f"comma list of {', '.join(CASE_NAMES)} (default: all but overload)")
    p.add_argument("--attacks", default="", help=f"overload only: comma list of {', '.join(ATTACK_LABELS)} "
                                                 "(default: all)")
    p.add_argument("--managers", default="msl,netmgr",
                   help="comma list of msl, netmgr, netmgr+http (netmgr with --http, /metrics scraped every "
                        "second and one /api/events reader throughout; default msl,netmgr)")
    p.add_argument("--duration", type=float, help="measured seconds per case (default 5; --quick 0.5)")
    p.add_argument("--warmup", type=float, help="warm-up seconds before measuring (default 1; --quick 0.2)")
    p.add_argument("--repeat", type=int, help="runs per case and Manager; medians reported (default 3; --quick 1)")
    p.add_argument("--idle-count", type=int, help="connections of idle2000 (default 2000; --quick 200)")
    p.add_argument("--idle-tls-count", type=int, help="TLS connections of idle_tls (default 500; --quick 50)")
    p.add_argument("--lib-rounds", type=int, help="rounds of lib_seq (default 12; --quick 2)")
    p.add_argument("--lib-burst", type=int, help="calls per path and round of lib_seq (default 100; --quick 25)")
    p.add_argument("--gen-procs", type=int, default=1, help="load generator processes (1 or 2; default 1)")
    p.add_argument("--big-size", type=int, help="bytes of each big10m payload (default 10000000; --quick 200000)")
    p.add_argument("--big-rounds", type=int, help="measured round trips per big10m payload (default 8; --quick 2)")
    p.add_argument("--relay-mode", choices=RELAY_MODES, default="copy",
                   help="how the floor relay of big10m forwards: recv_into + sendall, or os.splice (default copy)")
    p.add_argument("--many-count", type=int, help="connections of idle20000 (default 20000; --quick 300)")
    p.add_argument("--many-procs", type=int, help=f"opener processes of idle20000 (default: one per "
                                                  f"{FDS_PER_OPENER} connections)")
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    p.add_argument("--tmpdir", metavar="DIR",
                   help="where the Managers' databases and logs go (default /dev/shm if present: msl-network "
                        "commits to SQLite on every connection event, so on a busy disk fsync dominates)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (Manager logs, DBs)")
    return p


def parse_args(argv):
    p = build_parser()
    opts = p.parse_args(argv)
    for name, (full, quick) in DEFAULTS.items():
        if getattr(opts, name) is None:
            setattr(opts, name, quick if opts.quick else full)
    if opts.tmpdir is None:
        opts.tmpdir = default_tmpdir()
    opts.drain_timeout = 10.0
    opts.stall_timeout = 10.0
    opts.idle_timeout = 45.0
    if opts.many_procs is None:
        opts.many_procs = max(1, -(-opts.many_count // FDS_PER_OPENER))
    opts.many_timeout = max(60.0, opts.many_count / 200)  # 1.0 opens ~2,000/s on tmpfs
    opts.many_stall = 10.0  # no handshake for this long: the Manager stopped accepting
    check_options(p, opts)
    return opts


def check_options(p, opts):
    """Reject impossible values (exit 2 with a usage line); set ``case_list`` and ``manager_list``."""
    if (opts.duration <= 0 or opts.warmup < 0 or opts.repeat < 1 or opts.idle_count < 1
            or opts.idle_tls_count < 1 or opts.lib_rounds < 1 or opts.lib_burst < 1):
        p.error("--duration, --repeat, --idle-count, --idle-tls-count, --lib-rounds and --lib-burst must be "
                "positive, --warmup >= 0")
    if not 1 <= opts.gen_procs <= 2:
        p.error("--gen-procs must be 1 or 2")
    if opts.big_size < 2 or opts.big_rounds < 1 or opts.many_count < 1 or opts.many_procs < 1:
        p.error("--big-size must be >= 2, --big-rounds, --many-count and --many-procs positive")
    if not os.path.isdir(opts.tmpdir):
        p.error(f"--tmpdir {opts.tmpdir}: no such directory (create it, or leave the option out)")
    opts.case_list = [c.strip() for c in opts.cases.split(",") if c.strip()]
    bad = [c for c in opts.case_list if c not in CASE_NAMES]
    if bad:
        p.error(f"unknown case(s) {bad}; choose from {', '.join(CASE_NAMES)}")
    if "big10m" in opts.case_list and "floor_relay" in opts.case_list:
        opts.case_list.remove("floor_relay")
        print("note: floor_relay runs as the floor column of big10m", file=sys.stderr)
    opts.attack_list = [a.strip() for a in opts.attacks.split(",") if a.strip()]
    bad = [a for a in opts.attack_list if a not in ATTACK_LABELS]
    if bad:
        p.error(f"unknown attack(s) {bad}; choose from {', '.join(ATTACK_LABELS)}")
    opts.manager_list = [m.strip() for m in opts.managers.split(",") if m.strip()]
    bad = [m for m in opts.manager_list if m not in managers.MANAGERS]
    if bad:
        p.error(f"unknown manager(s) {bad}; choose from {', '.join(managers.MANAGERS)}")


def available_managers(opts, cases):
    """(the Manager keys to run, notes for the report); sets ``opts.lib_skip`` (key -> why its library
    is not run) when netmgr's library cannot be imported."""
    keys = list(opts.manager_list)
    notes = []
    checks = {"netmgr": [managers.netmgr_available],
              "netmgr+http": [managers.netmgr_available, managers.netmgr_http_available]}
    for key in [k for k in keys if k in checks]:
        for check in checks[key]:
            ok, why = check()
            if not ok:
                keys.remove(key)
                notes.append(f"{key} skipped: {why}")
                print(f"note: {key} skipped ({why})", file=sys.stderr)
                break
    opts.lib_skip = {}
    netmgrs = [k for k in keys if managers.family(k) == "netmgr"]
    if netmgrs and any(isinstance(c, (LibSeqCase, LibThreadsCase)) for c in cases):
        ok, why = managers.netmgr_lib_available()
        if not ok:
            opts.lib_skip.update(dict.fromkeys(netmgrs, why))
            notes.append(f"netmgr's library skipped in the lib cases (the floor still runs): {why}")
            print(f"note: netmgr's library skipped in the lib cases ({why})", file=sys.stderr)
    return keys, notes


# ---------------------------------------------------------------------------------------------
# Runs

def attempt(run, summary):
    """(metrics, error or None, progress message) of ``run()``; every child is stopped afterwards."""
    try:
        m = run()
        return m, None, summary(m)
    except RUN_ERRORS as exc:
        error = f"{type(exc).__name__}: {exc}"
        return None, error, "FAILED: " + error
    except Exception as exc:  # a bug here: report it, keep the other runs going
        return None, f"{type(exc).__name__}: {exc}", "FAILED (bench bug?):\n" + traceback.format_exc()
    finally:
        procs.stop_all()


def progress(opts, rep, case, column, msg, t0):
    print(f"[{rep + 1}/{opts.repeat}] {case.name:11} {column:11} {msg}  "
          f"({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)


def run_manager_repeat(key, case, opts, tmproot, rep, results):
    """One run of ``case`` against the Manager ``key``; stores its metrics; True if it failed."""
    tmp = tmproot / f"{case.name}-{key}-{rep}"
    tmp.mkdir(parents=True)
    t0 = time.monotonic()
    summary = short_overload if isinstance(case, OverloadCase) else lambda m: short(m, case_rows(case))
    m, error, msg = attempt(lambda: RUNNERS[type(case)](key, case, opts, tmp), summary)
    results[case.name].setdefault(key, []).append({"error": error} if error else m)
    progress(opts, rep, case, key, msg, t0)
    if m is not None and isinstance(case, OverloadCase):
        return any("error" in f for f in m["attacks"].values())  # an attack that could not be run
    return error is not None


def run_lib_seq_repeat(case, keys, opts, tmproot, rep, results):
    """One run of lib_seq (every path at once); stores each path's metrics; True if it failed."""
    paths = lib_paths(keys, opts.lib_skip)
    tmp = tmproot / f"{case.name}-{rep}"
    tmp.mkdir(parents=True)
    t0 = time.monotonic()
    m, error, msg = attempt(lambda: run_lib_seq_case(keys, case, opts, tmp),
                            lambda m: "  ".join(f"{k} p50={m[k]['p50_us']:,.0f}" for k in paths))
    for k in paths:
        results[case.name].setdefault(k, []).append({"error": error} if error else m[k])
    progress(opts, rep, case, "paths", msg, t0)
    return error is not None


def run_repeat(case, keys, order, opts, tmproot, rep, results):
    """Repeat ``rep`` of ``case``: each Manager in ``order`` (lib_seq: every path in one run)."""
    if isinstance(case, LibSeqCase):
        return run_lib_seq_repeat(case, keys, opts, tmproot, rep, results)
    if isinstance(case, OverloadCase) and rep > 0:
        return False  # one run per Manager: its figures are worst cases, not medians
    if isinstance(case, BigCase):  # the relay takes its turn with the Managers
        order = [k for k in ([*order, "floor"] if rep % 2 == 0 else ["floor", *order]) if k in case.columns]
    failed = False
    for key in order:
        if isinstance(case, LibThreadsCase) and key in opts.lib_skip:
            continue
        failed |= run_manager_repeat(key, case, opts, tmproot, rep, results)
    return failed


def make_tls(opts, tmproot):
    """Once per benchmark run, so that neither Manager pays for key generation."""
    try:
        opts.tls = managers.make_tls_files(tmproot / "tls")
    except (managers.ManagerError, OSError) as exc:
        opts.tls_error = str(exc)
        print(f"warning: {exc}; the TLS cases will fail", file=sys.stderr)


def run_all(cases, keys, opts, tmproot, results):
    """Every repeat of every case; (a run failed, interrupted). Removes ``tmproot`` unless --keep-tmp."""
    failed = interrupted = False
    opts.tls, opts.tls_error = None, None
    try:
        if any(c.tls for c in cases):
            make_tls(opts, tmproot)
        for rep in range(opts.repeat):
            order = keys if rep % 2 == 0 else keys[::-1]  # alternate who goes first
            for case in cases:
                failed |= run_repeat(case, keys, order, opts, tmproot, rep, results)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping every child process", file=sys.stderr)
    finally:
        procs.stop_all()
        if opts.keep_tmp:
            print(f"temp dir kept: {tmproot}", file=sys.stderr)
        else:
            shutil.rmtree(tmproot, ignore_errors=True)
    return failed, interrupted


def nofile_notes(cases, nofile):
    """Warnings (also printed now) for the many-connection cases that the descriptor limit cuts short."""
    out = []
    for c in cases:
        if isinstance(c, ManyCase) and nofile < c.count + 64:
            out.append(f"{c.name}: RLIMIT_NOFILE is {nofile} (soft raised to the hard limit; the Managers inherit "
                       f"it), below the ~{c.count + 64} descriptors a Manager needs to hold {c.count} connections "
                       f"and its own files: expect each Manager to stop accepting near {nofile - 64}")
            print(f"warning: {out[-1]}", file=sys.stderr)
    return out


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    nofile = procs.raise_nofile_limit()
    cases = build_cases(opts)
    keys, notes = available_managers(opts, cases)
    need = max((c.count for c in cases if isinstance(c, IdleCase)), default=0) + 64
    if nofile < need:
        print(f"warning: RLIMIT_NOFILE is {nofile}, idle case needs ~{need}", file=sys.stderr)
    notes += nofile_notes(cases, nofile)
    machine = machine_info()
    machine["nofile"] = nofile
    if any(managers.family(k) == "netmgr" for k in keys):  # what the idle cases add to netmgr's command
        machine["netmgr_args"] = {c.name: managers.connection_args("netmgr", c.count) for c in cases
                                  if isinstance(c, (IdleCase, ManyCase))}
    results = {c.name: {} for c in cases}
    tmproot = Path(tempfile.mkdtemp(prefix="netmgr-bench-", dir=opts.tmpdir))
    machine["tmpdir"] = f"{tmproot.parent} ({fs_type(tmproot)})"
    t_all = time.monotonic()
    failed, interrupted = run_all(cases, keys, opts, tmproot, results)

    report = render(cases, results, keys, opts, machine)
    if interrupted:
        report += "\nINTERRUPTED: the figures above are partial"
    for n in notes:
        report += f"\nnote: {n}"
    report += f"\ntotal time {time.monotonic() - t_all:.0f} s"
    print(report)
    if opts.json:
        doc = json_doc(cases, results, keys, opts, machine, notes, interrupted)
        Path(opts.json).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    if interrupted:
        return 130
    return 1 if failed else 0
