"""The report of ``python -m bench.cluster`` (issue 14): the cases, the rows, medians, the checks, the
printed tables and the JSON document. Performs no I/O.

``results`` is ``{case name: {set-up: [metrics of each run]}, "natsrt": [NATS round trip of each run]}``;
a set-up is ``same`` (node a only), ``cross`` (Echo on node a, clients on node b) or ``base`` (a plain
netmgr); a failed run is ``{"error": text}``.
"""
import statistics

from bench.cases import ERRORS, OTHER_CPU_PCT, P50, P99, SVC_CPU_PCT, LoadCase
from bench.report import fmt_cell, summarize

CASES = (LoadCase("seq", 1, 1, 10), LoadCase("c8w16", 8, 16, 10))
SETUPS = ("same", "cross", "base")
LABELS = {"same": "same-node", "cross": "cross-node", "base": "baseline"}
WHERE = {
    "same": "Echo Service and clients on node a (netmgr --cluster); nothing crosses NATS",
    "cross": "Echo Service on node a, clients on node b: every request and reply crosses NATS",
    "base": "Echo Service and clients on a plain netmgr (no --cluster)",
}
ROWS = [
    ("rps", "routed requests/s", "{:,.0f}", "high"),
    P50, P99,
    ("a_cpu_us_per_req", "node a CPU per request (us)", "{:,.1f}", "low"),
    ("b_cpu_us_per_req", "node b CPU per request (us)", "{:,.1f}", None),  # same-node: idle, no ratio
    ("mgrs_cpu_us_per_req", "Managers' CPU per request, a + b (us)", "{:,.1f}", "low"),
    ("nats_cpu_us_per_req", "nats-server CPU per request (us)", "{:,.1f}", None),
    ("a_cpu_pct", "node a CPU use (% of 1 core)", "{:.0f}", None),
    ("b_cpu_pct", "node b CPU use (% of 1 core)", "{:.0f}", None),
    ("gen_cpu_pct", "load generator CPU (%)", "{:.0f}", None),
    SVC_CPU_PCT, OTHER_CPU_PCT, ERRORS,
]
# rows of the "same-node with --cluster vs baseline" check: (key, words)
REGRESSION_ROWS = (("rps", "req/s"), ("p50_us", "p50"), ("p99_us", "p99"), ("a_cpu_us_per_req", "CPU/request"))
NOISE_FLOOR = 0.05  # a difference under 5 % is never called a regression

THREAD_KEYS = ("a_main_thread_us_per_req", "a_other_threads_us_per_req", "b_main_thread_us_per_req",
               "b_other_threads_us_per_req")


def medians(results):
    rows = ROWS + [(k, k, "", None) for k in THREAD_KEYS]
    return {c.name: {s: summarize(results[c.name][s], rows) for s in SETUPS} for c in CASES}


def spread(runs, key):
    """(max - min) / median of ``key`` over the successful runs (0 with fewer than two)."""
    vals = [r[key] for r in runs if "error" not in r and r.get(key) is not None]
    if len(vals) < 2:
        return 0.0
    med = statistics.median(vals)
    return (max(vals) - min(vals)) / med if med else 0.0


def regression_check(case, results, per):
    """{row: (same/baseline, allowed relative difference, verdict)} for :data:`REGRESSION_ROWS`."""
    out = {}
    better = {k: b for k, _, _, b in ROWS}
    for key, _ in REGRESSION_ROWS:
        s, b = (per["same"] or {}).get(key), (per["base"] or {}).get(key)
        if s is None or not b:
            out[key] = (None, None, "n/a")
            continue
        ratio = s / b
        runs = [[r for r in results[case.name][x] if "error" not in r] for x in ("base", "same")]
        if min(len(r) for r in runs) < 2:
            out[key] = (ratio, None, "not judged: 1 run")
            continue
        noise = max(NOISE_FLOOR, spread(runs[0], key), spread(runs[1], key))
        worse = (ratio < 1 - noise) if better[key] == "high" else (ratio > 1 + noise)
        out[key] = (ratio, noise, "REGRESSION" if worse else "within noise")
    return out


def nats_median(results):
    ok = [r for r in results["natsrt"] if "error" not in r]
    if not ok:
        return None
    return {k: statistics.median(r[k] for r in ok) for k in ("p50_us", "p99_us", "mean_us")}


def done_when_3(per, nats):
    """(holds or None, cross p50, same p50, NATS p50, bound) of "cross-node seq p50 <= 2 x (same-node
    seq p50 + NATS round trip p50)"."""
    cross = (per["seq"]["cross"] or {}).get("p50_us")
    same = (per["seq"]["same"] or {}).get("p50_us")
    rt = nats["p50_us"] if nats else None
    if None in (cross, same, rt):
        return None, cross, same, rt, None
    bound = 2 * (same + rt)
    return cross <= bound, cross, same, rt, bound


def render(results, opts, machine):
    """(the printed report, the same-node vs baseline checks, NATS's round trip medians, Done-when 3)."""
    per = medians(results)
    out = render_header(opts, machine)
    for case in CASES:
        out += render_case(case, results, per[case.name])
    nats_rt = nats_median(results)
    out += ["", nats_words(results, nats_rt)]
    dw3 = done_when_3(per, nats_rt)
    holds, cross, same, rt, bound = dw3
    if holds is None:
        out.append("Done-when 3: cross-node seq p50 <= 2 x (same-node seq p50 + NATS round trip p50): "
                   "n/a (a figure is missing)")
    else:
        out.append(f"Done-when 3: cross-node seq p50 {cross:,.0f} us <= 2 x (same-node seq p50 {same:,.0f} us + "
                   f"NATS round trip p50 {rt:,.0f} us) = {bound:,.0f} us: {'holds' if holds else 'DOES NOT hold'} "
                   f"({cross / bound:.2f} of the bound)")
    checks = {c.name: regression_check(c, results, per[c.name]) for c in CASES}
    bad = [f"{c} {k}" for c, rows in checks.items() for k, (_, _, v) in rows.items() if v == "REGRESSION"]
    judged = [v for rows in checks.values() for _, _, v in rows.values() if v in ("REGRESSION", "within noise")]
    out.append("same-node with --cluster vs baseline: " + ("REGRESSION in " + ", ".join(bad) if bad else
                                                           "within noise in every row" if judged else
                                                           "not judged (needs --repeat 2 or more)"))
    return "\n".join(out), checks, nats_rt, dw3


def render_header(opts, machine):
    out = [
        "",
        f"netmgr cluster benchmark (issue 14)  {machine['date']}",
        f"machine: nproc={machine['nproc']}, Python {machine['python']} ({machine['implementation']}), "
        f"{machine['platform']}; load average at start {machine['loadavg']}",
        f"NATS: {machine['nats_version']}, -js, one server on 127.0.0.1; nodes a and b: netmgr --cluster "
        f"{{url}} --node a|b; baseline: netmgr without --cluster; all plaintext, -G WARNING",
        f"per case and set-up: warm-up {opts.warmup:g} s excluded, {opts.duration:g} s measured, "
        f"{opts.repeat} run(s), medians shown; fresh Managers per repeat, fresh Echo Service per run; "
        f"set-up order rotated per repeat; Manager logs in {machine['tmpdir']}",
    ]
    for s in SETUPS:
        out.append(f"  {LABELS[s] + ':':11} {WHERE[s]}")
    out.append("  baseline column: 'node a' = the plain netmgr; CPU per request = on-CPU time of every thread "
               "(/proc/PID/task/*/schedstat) over the window / requests routed in it")
    return out


def nats_words(results, nats_rt):
    """The line of NATS's own round trip."""
    if not nats_rt:
        errs = "; ".join(r.get("error", "?") for r in results["natsrt"]) or "not run"
        return f"NATS round trip, nats-py alone: FAILED ({errs})"
    n = next(r for r in results["natsrt"] if "error" not in r)
    return (f"NATS round trip, nats-py alone (sequential request/reply, {n.get('payload', '?')} B, responder and "
            f"requester in their own processes, {n['rounds']:,} rounds, median of {len(results['natsrt'])} "
            f"run(s); {n.get('how', '?')}): p50 {nats_rt['p50_us']:,.0f} us, p99 {nats_rt['p99_us']:,.0f} us, "
            f"mean {nats_rt['mean_us']:,.0f} us")


def render_case(case, results, per):
    out = ["", f"[{case.name}] {case.title}",
           f"  {'metric':38} {'same-node':>11} {'cross-node':>11} {'baseline':>11} {'cross/same':>11} "
           f"{'same/baseline':>14}"]
    failed = {s: bool(results[case.name][s]) and all("error" in r for r in results[case.name][s]) for s in SETUPS}
    for key, label, fmt, better in ROWS:
        v = {s: (per[s] or {}).get(key) for s in SETUPS}
        cells = ["FAILED" if failed[s] else fmt_cell(fmt, v[s]) for s in SETUPS]
        ratios = [f"{v[x] / v[y]:.2f}x" if better and v[x] is not None and v[y] else "-"
                  for x, y in (("cross", "same"), ("same", "base"))]
        out.append(f"  {label:38} {cells[0]:>11} {cells[1]:>11} {cells[2]:>11} {ratios[0]:>11} {ratios[1]:>14}")
    check = regression_check(case, results, per)
    words = []
    for key, name in REGRESSION_ROWS:
        ratio, noise, verdict = check[key]
        words.append(f"{name} n/a" if ratio is None else f"{name} {ratio:.2f}x ({verdict}"
                     + ("" if noise is None else f", +-{noise * 100:.0f} %") + ")")
    out.append("  same-node vs baseline (noise = the larger run-to-run spread, at least 5 %): " + "; ".join(words))
    out.append("  CPU per request by thread (us), main thread (the hub) + the others (the NATS loop): "
               + "; ".join(thread_words(per[s], s) for s in SETUPS))
    for s in SETUPS:
        for i, r in enumerate(results[case.name][s]):
            if "error" in r:
                out.append(f"  {LABELS[s]} run {i + 1} FAILED: {r['error']}")
            elif r.get("error_samples"):
                out.append(f"  {LABELS[s]} run {i + 1} error replies, e.g.: {r['error_samples'][0]}")
    return out


def thread_words(med, setup):
    if not med or med.get(THREAD_KEYS[0]) is None:
        return f"{LABELS[setup]} n/a"
    nodes = ("a", "b") if setup != "base" else ("a",)
    return f"{LABELS[setup]} " + ", ".join(
        f"{'plain' if setup == 'base' else n} {med[f'{n}_main_thread_us_per_req']:,.1f} + "
        f"{med[f'{n}_other_threads_us_per_req']:,.1f}" for n in nodes)


def json_doc(results, opts, machine, checks, nats_rt, dw3, notes, interrupted):
    holds, cross, same, rt, bound = dw3
    per = medians(results)
    return {
        "machine": machine, "notes": notes, "interrupted": interrupted,
        "options": {k: getattr(opts, k) for k in ("quick", "duration", "warmup", "repeat", "nats_rounds")},
        "cases": {c.name: {"title": c.title,
                           "median": per[c.name],
                           "same_vs_baseline": {k: {"ratio": r, "noise": n, "verdict": v}
                                                for k, (r, n, v) in checks[c.name].items()},
                           "runs": results[c.name]} for c in CASES},
        "natsrt": {"median": nats_rt, "runs": results["natsrt"]},
        "done_when_3": {"holds": holds, "cross_p50_us": cross, "same_p50_us": same, "nats_p50_us": rt,
                        "bound_us": bound},
    }
