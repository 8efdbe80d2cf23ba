"""Medians of the runs, the printed report and the JSON document. Performs no I/O.

``results`` is ``{case name: {column: [metrics of each run]}}``; a column is a Manager key (``netmgr``,
``msl``) or, for lib_seq, a path (``netmgr``, ``msl``, ``floor``). A failed run is ``{"error": text}``.
"""
import math
import statistics

from bench import managers
from bench.cases import (LIB_PATHS, LIB_SEQ_ROWS, LIB_TARGETS, OVERHEAD_ROWS, PLAIN_OF, SUMMED, IdleCase,
                         LibSeqCase, LibThreadsCase, case_keys, case_rows)

MANAGER_KEYS = ("netmgr", "msl")


def short(metrics, rows):
    """The progress line of one run: its first four rows."""
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


def manager_labels():
    return {k: managers.MANAGERS[k][0] for k in MANAGER_KEYS}


# ---------------------------------------------------------------------------------------------
# lib_seq

def lib_seq_medians(case, results):
    return {k: summarize(results[case.name].get(k, []), LIB_SEQ_ROWS) for k in LIB_PATHS}


def lib_seq_ratios(per):
    """{(a, b): median of a / median of b} of the lib_seq p50s, for the targets."""
    out = {}
    for a, b, limit, word in LIB_TARGETS:
        x = (per.get(a) or {}).get("p50_us")
        y = (per.get(b) or {}).get("p50_us")
        out[(a, b)] = x / y if x is not None and y else None
    return out


def lib_seq_targets_json(case, results):
    ratios = lib_seq_ratios(lib_seq_medians(case, results))
    return [{"p50_ratio": f"{a}/{b}", "value": ratios[(a, b)], "at_most": limit,
             "met": None if ratios[(a, b)] is None else ratios[(a, b)] <= limit}
            for a, b, limit, _ in LIB_TARGETS]


def render_lib_seq(case, results, keys, opts):
    per = lib_seq_medians(case, results)
    labels = {k: LIB_PATHS[k][0] for k in LIB_PATHS}
    return (lib_seq_head(case, results, labels) + lib_seq_table(per, labels)
            + lib_seq_targets(per, labels) + lib_seq_notes(case, results, opts, labels))


def lib_seq_head(case, results, labels):
    """The title, what each path is, and which clock the CPU figures come from."""
    out = ["", f"[{case.name}] {case.title}"]
    for k in LIB_PATHS:
        out.append(f"  {labels[k] + ':':17} {LIB_PATHS[k][2]}")
    clocks = {r.get("cpu_clock") for k in LIB_PATHS for r in results[case.name].get(k, []) if "error" not in r}
    clocks.discard(None)
    if clocks:
        out.append("  CPU per request: over each path's own bursts, "
                   + ("ns from /proc/PID/task/*/schedstat" if clocks == {"schedstat"}
                      else "clock ticks from /proc/PID/stat (coarse)")
                   + "; the floor's Manager is a second netmgr Manager")
    return out


def lib_seq_table(per, labels):
    out = [f"  {'metric':34} {labels['netmgr']:>10} {labels['msl']:>16} {labels['floor']:>9} "
           f"{'netmgr/msl':>11} {'netmgr/floor':>13}"]
    for key, label, fmt, better in LIB_SEQ_ROWS:
        v = {k: per[k].get(key) if per[k] else None for k in LIB_PATHS}
        cells = [fmt_cell(fmt, v[k]) for k in LIB_PATHS]
        ratios = [f"{v['netmgr'] / v[b]:.2f}x" if better and v["netmgr"] is not None and v[b] else "-"
                  for b in ("msl", "floor")]
        out.append(f"  {label:34} {cells[0]:>10} {cells[1]:>16} {cells[2]:>9} {ratios[0]:>11} {ratios[1]:>13}")
    return out


def lib_seq_targets(per, labels):
    out = []
    ratios = lib_seq_ratios(per)
    for a, b, limit, word in LIB_TARGETS:
        r = ratios[(a, b)]
        verdict = "n/a" if r is None else ("met" if r <= limit else "NOT met")
        shown = "-" if r is None else f"{r:.2f}x"
        out.append(f"  {word}: {labels[a]} p50 <= {limit:g}x {labels[b]}'s: {shown} -> {verdict}")
    return out


def lib_seq_notes(case, results, opts, labels):
    """Paths not run (and why), failed runs, and a sample of the error replies."""
    out = []
    ran = [k for k in LIB_PATHS if results[case.name].get(k) is not None]
    for k in LIB_PATHS:
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


# ---------------------------------------------------------------------------------------------
# TLS overhead

def tls_overhead(case, cases, results):
    """(plain case, {manager: {key: (TLS median, plain median)}}) for a TLS case; (None, None) when its
    plain case is not part of this run."""
    plain = next((c for c in cases if c.name == PLAIN_OF.get(case.name)), None)
    if plain is None:
        return None, None
    out = {}
    for k in MANAGER_KEYS:
        t = summarize(results[case.name].get(k, []), case_rows(case)) or {}
        b = summarize(results[plain.name].get(k, []), case_rows(plain)) or {}
        out[k] = {key: (t.get(key), b.get(key)) for key, _ in OVERHEAD_ROWS[type(case)]}
    return plain, out


def ratio_and_added(t, b):
    """(TLS / plain, TLS - plain) of two medians; None where it cannot be computed."""
    return (t / b if t is not None and b else None,
            t - b if t is not None and b is not None else None)


def overhead_json(case, cases, results):
    plain, ovh = tls_overhead(case, cases, results)
    if plain is None:
        return None
    doc = {"plain_case": plain.name}
    for k, vals in ovh.items():
        doc[k] = {key: overhead_cell(t, b) for key, (t, b) in vals.items()}
    return doc


def overhead_cell(t, b):
    ratio, added = ratio_and_added(t, b)
    return {"tls": t, "plain": b, "ratio": ratio, "added": added}


def render_overhead(case, cases, results):
    plain, ovh = tls_overhead(case, cases, results)
    if plain is None:
        return [f"  TLS overhead: not shown, {PLAIN_OF[case.name]} is not part of this run "
                f"(add it to --cases to compare with plain TCP)"]
    out = [f"  TLS overhead per Manager, [{case.name}] vs [{plain.name}] of this run"]
    if isinstance(case, IdleCase) and case.count != plain.count:
        out[0] += f" ({case.count} vs {plain.count} connections)"
    fmts = {key: fmt for key, _, fmt, _ in case_rows(case)}
    for key, label in OVERHEAD_ROWS[type(case)]:
        pairs = {k: ratio_and_added(*ovh[k][key]) for k in MANAGER_KEYS}
        cells = [fmt_cell("{:.2f}x", pairs[k][0]) for k in MANAGER_KEYS]
        out.append(f"  {label + ', TLS / plain':38} {cells[0]:>14} {cells[1]:>16} {'-':>8}")
        a, m = pairs["netmgr"][1], pairs["msl"][1]
        cross = f"{a / m:.2f}x" if a is not None and m is not None and a > 0 and m > 0 else "-"
        cells = [fmt_cell(fmts[key].replace("{:", "{:+"), pairs[k][1]) for k in MANAGER_KEYS]
        out.append(f"  {label + ', added (us)':38} {cells[0]:>14} {cells[1]:>16} {cross:>8}")
    return out


# ---------------------------------------------------------------------------------------------
# The report

def render(cases, results, keys, opts, machine):
    out = render_header(cases, opts, machine)
    for case in cases:
        if isinstance(case, LibSeqCase):
            out += render_lib_seq(case, results, keys, opts)
            continue
        out += render_case(case, results)
        out += render_case_notes(case, results, keys, opts)
        if case.tls:
            out += render_overhead(case, cases, results)
    return "\n".join(out)


def render_header(cases, opts, machine):
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
    return out


def render_case(case, results):
    """The title and the table of a case with one column per Manager."""
    labels = manager_labels()
    rows = case_rows(case)
    per = {k: summarize(results[case.name].get(k, []), rows) for k in MANAGER_KEYS}
    out = ["", f"[{case.name}] {case.title}"]
    if case.tls:
        seen = {k: next((r["tls"] for r in results[case.name].get(k, []) if r.get("tls")), None)
                for k in MANAGER_KEYS}
        if any(seen.values()):
            out.append("  negotiated: " + ", ".join(f"{labels[k]} {v}" for k, v in seen.items() if v))
    out.append(f"  {'metric':38} {labels['netmgr']:>14} {labels['msl']:>16} {'ratio':>8}")
    for key, label, fmt, better in rows:
        a = per["netmgr"].get(key) if per["netmgr"] else None
        b = per["msl"].get(key) if per["msl"] else None
        ratio = f"{a / b:.2f}x" if better and a is not None and b else "-"
        out.append(f"  {label:38} {fmt_cell(fmt, a):>14} {fmt_cell(fmt, b):>16} {ratio:>8}")
    return out


def render_case_notes(case, results, keys, opts):
    """Managers not run, failed runs, and a sample of the error replies of a case."""
    labels = manager_labels()
    out = []
    for k in MANAGER_KEYS:
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
    return out


# ---------------------------------------------------------------------------------------------
# The JSON document

JSON_OPTIONS = ("quick", "duration", "warmup", "repeat", "idle_count", "idle_tls_count", "gen_procs",
                "lib_rounds", "lib_burst")


def json_doc(cases, results, keys, opts, machine, notes, interrupted):
    if opts.tls:
        tls = {"cert": str(opts.tls.cert), "made_with": opts.tls.made_with}
    else:
        tls = {"error": opts.tls_error} if opts.tls_error else None
    return {"machine": machine, "notes": notes, "interrupted": interrupted,
            "options": {k: getattr(opts, k) for k in JSON_OPTIONS},
            "tls": tls,
            "cases": {c.name: case_json(c, cases, results, keys, opts) for c in cases}}


def case_json(case, cases, results, keys, opts):
    doc = {"title": case.title,
           "median": {k: summarize(results[case.name].get(k, []), case_rows(case))
                      for k in case_keys(case, keys, opts)}}
    if isinstance(case, LibSeqCase):
        doc["targets"] = lib_seq_targets_json(case, results)
    doc["runs"] = results[case.name]
    if case.tls:
        doc["tls_overhead"] = overhead_json(case, cases, results)
    return doc
