"""The report of the issue 12 cases. Performs no I/O.

* ``big10m`` / ``floor_relay``: one column per Manager and the floor relay, the ratios netmgr /
  msl-network 1.0 and netmgr / floor, and issue 12's targets;
* the notes under ``idle2000`` and ``idle20000``: the descriptor limit and netmgr's extra options
  (their tables are the common one of :mod:`bench.report`).
"""
from bench.cases import BIG_COLUMNS, BIG_TARGETS, NETMGR_CONN_LIMITS, ManyCase, case_rows

RATIOS = (("msl", "netmgr/msl"), ("floor", "netmgr/floor"))


def big_medians(case, results, summarize):
    rows = case_rows(case)
    return {k: summarize(results[case.name].get(k, []), rows) for k in case.columns}


def value(per, column, key):
    return (per.get(column) or {}).get(key)


def target_values(per):
    """[(key, a, b, "min"/"max", bound, a / b or None, met or None)] of :data:`BIG_TARGETS`."""
    out = []
    for key, a, b, kind, bound in BIG_TARGETS:
        x, y = value(per, a, key), value(per, b, key)
        r = x / y if x is not None and y else None
        met = None if r is None else (r <= bound if kind == "max" else r >= bound)
        out.append((key, a, b, kind, bound, r, met))
    return out


def targets_json(case, results, summarize):
    return [{"row": key, "ratio": f"{a}/{b}", kind: bound, "value": r, "met": met}
            for key, a, b, kind, bound, r, met in target_values(big_medians(case, results, summarize))]


def render_big(case, results, summarize, fmt_cell):
    per = big_medians(case, results, summarize)
    cols = list(case.columns)
    ratios = [(b, label) for b, label in RATIOS if "netmgr" in cols and b in cols]
    out = ["", f"[{case.name}] {case.title}",
           "  echo MB/s = (request + reply bytes) / round-trip time, 1 MB = 10^6 B; CPU per MB of request + reply"
           " (the Manager/relay and the Echo Service see both); CPU from /proc/PID/task/*/schedstat",
           "  " + f"{'metric':40}" + "".join(f" {BIG_COLUMNS[k]:>15}" for k in cols)
           + "".join(f" {label:>13}" for _, label in ratios)]
    for key, label, fmt, better in case_rows(case):
        v = {k: value(per, k, key) for k in cols}
        cells = "".join(f" {cell(results, case, k, fmt, v[k], fmt_cell):>15}" for k in cols)
        rs = "".join(f" {ratio(v['netmgr'], v[b], better):>13}" for b, _ in ratios)
        out.append(f"  {label:40}{cells}{rs}")
    if "netmgr" in cols:
        out += render_targets(per, cols)
    return out + notes(case, results)


def cell(results, case, column, fmt, v, fmt_cell):
    runs = results[case.name].get(column) or []
    if v is None and runs and all("error" in r for r in runs):
        return "FAILED"
    return fmt_cell(fmt, v)


def ratio(a, b, better):
    return f"{a / b:.2f}x" if better and a is not None and b else "-"


def render_targets(per, cols):
    out = []
    for key, a, b, kind, bound, r, met in target_values(per):
        if b not in cols:
            continue
        word = "at most" if kind == "max" else "at least"
        verdict = "n/a" if met is None else ("met" if met else "NOT met")
        shown = "-" if r is None else f"{r:.2f}x"
        out.append(f"  target (issue 12): {key} {a}/{b} {word} {bound:.3g}x: {shown} -> {verdict}")
    return out


def notes(case, results):
    out = []
    for k in case.columns:
        for i, r in enumerate(results[case.name].get(k) or []):
            if "error" in r:
                out.append(f"  {BIG_COLUMNS[k]} run {i + 1} FAILED: {r['error']}")
            elif r.get("error_samples"):
                out.append(f"  {BIG_COLUMNS[k]} run {i + 1} error replies, e.g.: {r['error_samples'][0]}")
    return out


def conn_notes(case, machine):
    """netmgr's extra options to hold the connections (all from 127.0.0.1); idle20000: the fd limit."""
    out = []
    if isinstance(case, ManyCase):
        out.append(f"  RLIMIT_NOFILE of the benchmark, its openers and the Managers it starts: "
                   f"{machine.get('nofile')}")
    args = machine.get("netmgr_args", {}).get(case.name)
    if args:
        out.append(f"  netmgr started with {' '.join(args)} (every connection comes from 127.0.0.1; defaults: "
                   + ", ".join(f"{o} {d:,}" for o, d in NETMGR_CONN_LIMITS) + ")")
    return out
