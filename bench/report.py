"""Medians of the runs, the printed report and the JSON document. Performs no I/O.

``results`` is ``{case name: {column: [metrics of each run]}}``; a column is a Manager key (``netmgr``,
``msl``, ``netmgr+http``) or, for lib_seq, a path (``netmgr``, ``msl``, ``floor``). A failed run is
``{"error": text}``. The ``netmgr+http`` column is shown only when it was asked for
(:mod:`bench.httpreport`).
"""
import math
import statistics

from bench import httpreport, managers
from bench.scalereport import conn_notes, render_big, targets_json
from bench.cases import (LIB_PATHS, LIB_SEQ_ROWS, LIB_TARGETS, OVERHEAD_ROWS, PLAIN_OF, SUMMED, BigCase, IdleCase,
                         LibSeqCase, LibThreadsCase, ManyCase, OverloadCase, case_keys, case_rows)

MANAGER_KEYS = ("netmgr", "msl", "netmgr+http")


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


def render_overhead(case, cases, results, keys=()):
    plain, ovh = tls_overhead(case, cases, results)
    if plain is None:
        return [f"  TLS overhead: not shown, {PLAIN_OF[case.name]} is not part of this run "
                f"(add it to --cases to compare with plain TCP)"]
    out = [f"  TLS overhead per Manager, [{case.name}] vs [{plain.name}] of this run"]
    if isinstance(case, IdleCase) and case.count != plain.count:
        out[0] += f" ({case.count} vs {plain.count} connections)"
    fmts = {key: fmt for key, _, fmt, _ in case_rows(case)}
    http = httpreport.shown(keys)
    for key, label in OVERHEAD_ROWS[type(case)]:
        pairs = {k: ratio_and_added(*ovh[k][key]) for k in MANAGER_KEYS}
        cells = [fmt_cell("{:.2f}x", pairs[k][0]) for k in MANAGER_KEYS]
        extra = f" {cells[2]:>14}" if http else ""
        out.append(f"  {label + ', TLS / plain':38} {cells[0]:>14} {cells[1]:>16} {'-':>8}{extra}")
        a, m = pairs["netmgr"][1], pairs["msl"][1]
        cross = f"{a / m:.2f}x" if a is not None and m is not None and a > 0 and m > 0 else "-"
        cells = [fmt_cell(fmts[key].replace("{:", "{:+"), pairs[k][1]) for k in MANAGER_KEYS]
        extra = f" {cells[2]:>14}" if http else ""
        out.append(f"  {label + ', added (us)':38} {cells[0]:>14} {cells[1]:>16} {cross:>8}{extra}")
    return out


# ---------------------------------------------------------------------------------------------
# overload

# issue 10, "Done when" 2: under every single-peer attack, netmgr's canary p99 and max (ms), and its
# RSS peak within the attack's bound over the RSS before it
OVERLOAD_TARGETS = {"p99_ms": 20.0, "max_ms": 250.0}


def short_overload(m):
    """The progress line of an overload run: how many attacks met netmgr's targets."""
    figures = [f for f in m["attacks"].values() if "error" not in f]
    met = sum(1 for f in figures if overload_met(f))
    return f"{met}/{len(m['attacks'])} attacks within the targets, {len(m['attacks']) - len(figures)} failed"


def overload_met(f):
    """Whether one attack's figures meet the targets (None when they cannot be judged)."""
    if "error" in f or f.get("status") != "ok" or f["attack"]["calls"] == 0:
        return False
    a = f["attack"]
    return (a["p99_ms"] <= OVERLOAD_TARGETS["p99_ms"] and a["max_ms"] <= OVERLOAD_TARGETS["max_ms"]
            and (f["rss_peak_mib"] - f["rss_before_mib"]) * 1.048576 <= f["bound_mb"])


def attacker_summary(r):
    """What the attacker saw, in a few words."""
    if not isinstance(r, dict) or r.get("failure"):
        return f"attacker failed: {r.get('failure') if isinstance(r, dict) else r}"
    capped = " (stopped at the RSS cap)" if r.get("stopped_at_rss_cap") else ""
    return attack_words(r) + capped


def attack_words(r):
    kind = r.get("attack")
    if kind in ("flood_notify", "identity_flood"):
        dropped = r.get("closed_after_s")
        return (f"sent {r['sent_bytes'] / 1e6:,.0f} MB in {r['elapsed_s']:.1f} s, "
                + ("never dropped" if dropped is None else f"dropped after {dropped:.1f} s"))
    if kind == "flood_requests":
        return (f"{r['requests_sent']:,} requests sent, {r['service']['lines_received']:,} forwarded, "
                f"{r['client']['lines_received']:,} answers read")
    if kind == "inflight_flood":
        refused = sum(r["refused"].values())
        return (f"{r['forwarded']:,} forwarded, {refused:,} refused, "
                f"{sum(r['failed_at_close'].values()):,} failed when the Service left")
    if "before" in r:
        return "before: " + answer_summary(r["before"]) + "; after: " + answer_summary(r["after"]["array"])
    return answer_summary(r)


def answer_summary(r):
    if not r.get("answered"):
        return "no answer"
    if r.get("closed"):
        return f"closed after {r['after_s']:.2f} s"
    return f"answered in {r['after_s']:.2f} s: {(r.get('message') or 'a result')[:48]}"


def fmt_ms(v):
    return "n/a" if v is None or v != v else (f"{v:,.1f}" if v < 1000 else f"{v:,.0f}")


def fmt_mib(v):
    return "n/a" if v is None else f"{v:,.0f}"


def overload_rows(case, run, key):
    """The table of one Manager's overload run: the canary alone (all attacks' windows), then each attack."""
    figures = run["attacks"]
    alone = sorted(v for f in figures.values() if "error" not in f for v in f["alone_ms"])
    p = [alone[max(0, math.ceil(q / 100 * len(alone)) - 1)] if alone else None for q in (50, 99)]
    out = [f"    {'alone':18} {fmt_ms(p[0]):>8} {fmt_ms(p[1]):>8} {fmt_ms(alone[-1] if alone else None):>9} "
           f"{len(alone):>6}"]
    for attack in case.attacks:
        f = figures.get(attack.label, {"error": "not run"})
        if "error" in f:
            out.append(f"    {attack.label:18} FAILED: {f['error']}")
            continue
        a = f["attack"]
        verdict = ("met" if overload_met(f) else "NOT met") if managers.family(key) == "netmgr" else "-"
        out.append(f"    {attack.label:18} {fmt_ms(a['p50_ms']):>8} {fmt_ms(a['p99_ms']):>8} "
                   f"{fmt_ms(a['max_ms']):>9} {a['calls']:>6} {fmt_mib(f['rss_before_mib']):>7} "
                   f"{fmt_mib(f['rss_peak_mib']):>7} {fmt_mib(f['rss_after_mib']):>7} {f['bound_mb']:>6,.0f}  "
                   f"{verdict:8} {f['status']}; {attacker_summary(f['attacker'])}")
    return out


def render_overload(case, results, keys):
    labels = manager_labels()
    out = ["", f"[{case.name}] {case.title}"]
    for a in case.attacks:
        size = f" (N = {a.size:,})" if a.size else (f" (N = {a.count:,})" if a.count else "")
        out.append(f"  {a.label:18} {a.finding}{size}")
    out.append("  canary: its echo calls overlapping the window, ms (a call with no answer counts with its age); "
               "RSS: the Manager's VmRSS in MiB, before the attack, peak (also VmHWM) and after it; bound: "
               "netmgr's allowance over 'before', MB")
    head = (f"    {'attack':18} {'p50':>8} {'p99':>8} {'max':>9} {'calls':>6} {'before':>7} {'peak':>7} "
            f"{'after':>7} {'bound':>6}  {'target':8} status; attacker saw")
    for k in MANAGER_KEYS:
        runs = results[case.name].get(k)
        if k not in keys or not runs:
            continue
        out += [f"  {labels[k]}", head]
        out += (overload_rows(case, runs[0], k) if "error" not in runs[0]
                else [f"    FAILED: {runs[0]['error']}"])
    run = (results[case.name].get("netmgr") or [None])[0]
    if run and "error" not in run:
        met = sum(1 for a in case.attacks if overload_met(run["attacks"].get(a.label, {"error": "not run"})))
        out.append(f"  targets for netmgr (issue 10): under each attack canary p99 <= "
                   f"{OVERLOAD_TARGETS['p99_ms']:g} ms and max <= {OVERLOAD_TARGETS['max_ms']:g} ms, status ok, "
                   f"RSS peak <= before + bound: met under {met} of {len(case.attacks)} attacks")
    return out


# ---------------------------------------------------------------------------------------------
# The report

def render(cases, results, keys, opts, machine):
    out = render_header(cases, opts, machine, keys)
    for case in cases:
        if isinstance(case, LibSeqCase):
            out += render_lib_seq(case, results, keys, opts)
            continue
        if isinstance(case, OverloadCase):
            out += render_overload(case, results, keys)
            continue
        if isinstance(case, BigCase):
            out += render_big(case, results, summarize, fmt_cell)
            continue
        out += render_case(case, results, keys)
        if isinstance(case, (IdleCase, ManyCase)):
            out += conn_notes(case, machine)
        out += render_case_notes(case, results, keys, opts)
        if case.tls:
            out += render_overhead(case, cases, results, keys)
    return "\n".join(out)


def render_header(cases, opts, machine, keys=()):
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
    if all(isinstance(c, OverloadCase) for c in cases):  # none of the above applies to it
        out[3:] = [f"Manager DBs and logs in {machine['tmpdir']}"]
    if httpreport.shown(keys):
        out.append(httpreport.HEADER)
    if any(c.tls for c in cases):
        made = opts.tls.made_with if opts.tls else f"none: {opts.tls_error}"
        out.append(f"TLS cases: every peer over TLS; both Managers get one key + self-signed certificate "
                   f"({made}) via --cert-file/--key-file; peers trust it as cafile, server name localhost")
        if any(c.name in PLAIN_OF for c in cases):
            out.append("TLS overhead = TLS case vs its plain case of this run, per Manager: TLS / plain, and "
                       "TLS - plain (added); its ratio column = netmgr / msl-network 1.0 of the added cost")
    return out


def render_case(case, results, keys=()):
    """The title and the table of a case with one column per Manager: netmgr, msl-network 1.0 and
    their ratio, then netmgr+http and its ratio to netmgr when it is among ``keys``."""
    labels = manager_labels()
    http = httpreport.shown(keys)
    rows = case_rows(case)
    per = {k: summarize(results[case.name].get(k, []), rows) for k in MANAGER_KEYS}
    out = ["", f"[{case.name}] {case.title}"]
    if case.tls:
        seen = {k: next((r["tls"] for r in results[case.name].get(k, []) if r.get("tls")), None)
                for k in MANAGER_KEYS}
        if any(seen.values()):
            out.append("  negotiated: " + ", ".join(f"{labels[k]} {v}" for k, v in seen.items() if v))
    out.append(f"  {'metric':38} {labels['netmgr']:>14} {labels['msl']:>16} {'ratio':>8}"
               + (f" {labels[httpreport.HTTP]:>14} {'+http/netmgr':>13}" if http else ""))
    failed = {k: bool(results[case.name].get(k)) and all("error" in r for r in results[case.name][k])
              for k in MANAGER_KEYS}
    for key, label, fmt, better in rows:
        a = per["netmgr"].get(key) if per["netmgr"] else None
        b = per["msl"].get(key) if per["msl"] else None
        ratio = f"{a / b:.2f}x" if better and a is not None and b else "-"
        cells = ["FAILED" if failed[k] else fmt_cell(fmt, v) for k, v in (("netmgr", a), ("msl", b))]
        line = f"  {label:38} {cells[0]:>14} {cells[1]:>16} {ratio:>8}"
        if http:
            c = per[httpreport.HTTP].get(key) if per[httpreport.HTTP] else None
            line += (f" {'FAILED' if failed[httpreport.HTTP] else fmt_cell(fmt, c):>14}"
                     f" {httpreport.cost_cell(per, key, better):>13}")
        out.append(line)
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
    return out + httpreport.observed_notes(case, results)


# ---------------------------------------------------------------------------------------------
# The JSON document

JSON_OPTIONS = ("quick", "duration", "warmup", "repeat", "idle_count", "idle_tls_count", "gen_procs",
                "lib_rounds", "lib_burst", "big_size", "big_rounds", "relay_mode", "many_count", "many_procs")


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
    if isinstance(case, OverloadCase):
        return {"title": case.title, "targets": OVERLOAD_TARGETS,
                "attacks": {a.label: {"finding": a.finding, "duration": a.duration, "size": a.size,
                                      "count": a.count, "bound_mb": a.bound_mb} for a in case.attacks},
                "runs": results[case.name]}
    doc = {"title": case.title,
           "median": {k: summarize(results[case.name].get(k, []), case_rows(case))
                      for k in case_keys(case, keys, opts)}}
    if isinstance(case, LibSeqCase):
        doc["targets"] = lib_seq_targets_json(case, results)
    if isinstance(case, BigCase) and "netmgr" in case.columns:
        doc["targets"] = targets_json(case, results, summarize)
    if httpreport.shown(keys) and not isinstance(case, (LibSeqCase, BigCase)):
        doc["http_cost"] = httpreport.cost_json(case, results, case_rows(case), summarize)
    doc["runs"] = results[case.name]
    if case.tls:
        doc["tls_overhead"] = overhead_json(case, cases, results)
    return doc
