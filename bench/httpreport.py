"""The ``netmgr+http`` column of the report (issue 13): netmgr with its HTTP endpoint on and watched.

* in the tables of the load, idle and lib_threads16 cases: a ``netmgr+http`` column and a
  ``+http/netmgr`` ratio (netmgr+http / netmgr of the medians: the cost of being observed; above 1
  is better for req/s and handshakes/s, below 1 for the rest);
* under each such table, one line per run of what the observer (``bench/observer.py``) saw, which
  shows that it was really watched: scrapes and their HTTP statuses, events read by type;
* in the JSON, ``cases.<name>.http_cost`` (those ratios) and ``runs.netmgr+http[i].observed``.

Performs no I/O.
"""
import statistics

HTTP = "netmgr+http"
BASE = "netmgr"
HEADER = (f"{HTTP} = netmgr started with --http 127.0.0.1:PORT, /metrics scraped every second and one "
          f"/api/events reader (every type) for the Manager's whole life; +http/netmgr = {HTTP} / netmgr "
          f"of the medians: the cost of being observed")


def shown(keys):
    """Whether the report has a netmgr+http column (only when it was asked for)."""
    return HTTP in keys


def cost(per, rows):
    """``{row key: netmgr+http / netmgr}`` of the medians ``per`` (column -> medians), for the rows
    that have a better direction; None where a median is missing."""
    a, b = per.get(HTTP) or {}, per.get(BASE) or {}
    return {key: (a[key] / b[key] if a.get(key) is not None and b.get(key) else None)
            for key, _, _, better in rows if better}


def cost_cell(per, key, better):
    """The ``+http/netmgr`` cell of one row."""
    a, b = (per.get(HTTP) or {}).get(key), (per.get(BASE) or {}).get(key)
    return f"{a / b:.2f}x" if better and a is not None and b else "-"


def observed_words(o):
    """What one run's observer saw, in one line."""
    if not isinstance(o, dict):
        return "no observer figures"
    if o.get("failure"):
        return f"observer FAILED: {o['failure']}"
    statuses = ", ".join(f"{n} x {code}" for code, n in sorted(o["status"].items())) or "none answered"
    p50 = f", p50 {statistics.median(o['scrape_ms']):.1f} ms" if o.get("scrape_ms") else ""
    events = sum(o["events"].values())
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(o["events"].items(), key=lambda kv: -kv[1]))
    stream = f"; the stream ended early: {o['stream_error']}" if o.get("stream_error") else ""
    return (f"{o['scrapes']} scrapes of /metrics ({statuses}{p50}, {o['scrape_bytes'] / 1e3:,.1f} kB), "
            f"{o['failures']} unanswered; /api/events {o['stream_status']}: {events} events"
            + (f" ({kinds})" if kinds else "") + f"{stream}; last scrape: netmgr_requests_total "
            f"{o['requests_total']:,.0f}; observer CPU {o['cpu_s']:.2f} s")


def observed_notes(case, results):
    """One line per netmgr+http run of ``case``: what its observer saw."""
    out = []
    for i, r in enumerate(results[case.name].get(HTTP) or []):
        if "error" not in r:
            out.append(f"  {HTTP} run {i + 1} observed: {observed_words(r.get('observed'))}")
    return out


def cost_json(case, results, rows, summarize):
    """``cases.<name>.http_cost`` of the JSON, or None without both netmgr and netmgr+http runs."""
    per = {k: summarize(results[case.name].get(k, []), rows) for k in (HTTP, BASE)}
    if not per[HTTP] or not per[BASE]:
        return None
    return cost(per, rows)
