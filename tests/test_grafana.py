"""The Grafana dashboard (etc/grafana/netmgr.json) asks only for what a real Manager exposes.

Every metric name in every panel's PromQL, and in the template variables, must be a sample name of a
live scrape of ``/metrics`` (a Manager started with ``--http 127.0.0.1:0``, with a Service, a Client
and a few requests so that the per-Service series exist); every label a selector, a ``by`` clause or a
legend names must be one of that metric's labels (or ``instance``/``job``, which Prometheus adds); the
dashboard must import anywhere (a ``${DS_PROMETHEUS}`` input, used by every panel) and ship in the
wheel (setup.cfg ``[options.data_files]``). The metrics table of docs/observability.md is checked
against the same scrape: every metric, its type and its labels, no more and no fewer.
"""
import configparser
import http.client
import json
import os
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ManagerProcess, netmgr_argv
from rawpeer import RawPeer

pytestmark = pytest.mark.usefixtures("watchdog")
TEST_DEADLINE = 120

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "etc" / "grafana" / "netmgr.json"
DOC = ROOT / "docs" / "observability.md"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
LISTENING = re.compile(r"http_listening host=(\S+) port=(\d+)")
#: labels Prometheus attaches to every scraped series
TARGET_LABELS = {"instance", "job"}
FUNCTIONS = {"rate", "irate", "increase", "sum", "max", "min", "avg", "count", "histogram_quantile",
             "time", "max_over_time", "avg_over_time", "label_values", "topk", "clamp_min"}
KEYWORDS = {"and", "or", "unless", "bool", "offset"}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"(?<![\w.])([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
WORD = re.compile(r"(?<![\w.$])([A-Za-z_:][\w:]*)")


def load():
    with open(DASHBOARD) as f:
        return json.load(f)


def panels(dashboard):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", ())  # the panels of a collapsed row


def expressions(dashboard):
    """``(where, PromQL, legend)`` of every panel target and template variable query."""
    for panel in panels(dashboard):
        for target in panel.get("targets", ()):
            yield panel["title"], target["expr"], target.get("legendFormat", "")
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield f"${variable['name']}", query["query"] if isinstance(query, dict) else query, ""


def metric_names(expr):
    """The metric names of a PromQL expression: its words that are neither functions, keywords,
    labels (in ``{}``, ``by (…)``) nor Grafana variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = GROUPING.sub("", text)
    text = re.sub(r"\$\w+", "", text)
    names = set()
    for match in WORD.finditer(text):
        word = match.group(1)
        if text[match.end():].lstrip().startswith("("):
            assert word in FUNCTIONS, f"unexpected function {word!r} in {expr!r}"
        elif word not in KEYWORDS:
            names.add(word)
    if expr.startswith("label_values("):  # label_values(metric{…}, label): the last word is a label
        names.discard(expr.rstrip(") ").rsplit(",", 1)[1].strip())
    return names


@pytest.fixture(scope="module")
def exposition(tmp_path_factory):
    """The text of a live scrape of /metrics, after known traffic."""
    home = tmp_path_factory.mktemp("grafana-home")
    env = dict(os.environ, NETMGR_HOME=str(home), NETMGR_CONFIG=os.devnull)
    mgr = ManagerProcess(netmgr_argv("-H", "127.0.0.1", "-p", "0", "--disable-tls",
                                     "--http", "127.0.0.1:0"), env=env)
    try:
        port = int(LISTENING.search(mgr.output).group(2))
        service = RawPeer(mgr.port).handshake_service("Echo")
        client = RawPeer(mgr.port).handshake_client()
        assert client.call("Manager", "link", "Echo")["error"] is False
        for i in range(3):
            uid = client.request("Echo", "echo", i)
            service.serve_one()
            assert client.read()["uid"] == uid
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200
        text = response.read().decode()
        conn.close()
        service.close()
        client.close()
    finally:
        mgr.stop()
    return text


@pytest.fixture(scope="module")
def scrape(exposition):
    """``{sample name: {label: set of values}}`` of the live scrape."""
    samples = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = samples.setdefault(sample.name, {})
            for name, value in sample.labels.items():
                labels.setdefault(name, set()).add(value)
    return samples


def test_the_dashboard_is_importable_anywhere():
    dashboard = load()
    assert dashboard["__inputs"] == [{
        "name": "DS_PROMETHEUS", "label": "Prometheus",
        "description": "The Prometheus that scrapes the Manager's /metrics",
        "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}]
    required = {(r["type"], r["id"]) for r in dashboard["__requires"]}
    assert {("grafana", "grafana"), ("datasource", "prometheus")} <= required
    assert 36 <= dashboard["schemaVersion"] <= 41 and dashboard["id"] is None and dashboard["uid"]
    ids, cells = set(), set()
    for panel in panels(dashboard):
        assert panel["id"] not in ids, f"panel id {panel['id']} twice"
        ids.add(panel["id"])
        assert ("panel", panel["type"]) in required or panel["type"] == "row", panel["type"]
        box = panel["gridPos"]
        assert 0 <= box["x"] and box["x"] + box["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(box["x"], box["x"] + box["w"])
                for y in range(box["y"], box["y"] + box["h"])}
        assert not mine & cells, f"{panel['title']!r} overlaps another panel"
        cells |= mine
        if panel["type"] != "row":
            assert panel["datasource"] == DATASOURCE, panel["title"]
            assert panel["targets"] and all(t["datasource"] == DATASOURCE for t in panel["targets"])
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["instance"]["datasource"] == DATASOURCE
    for _, expr, _ in expressions(dashboard):
        if not expr.startswith("label_values("):
            assert 'instance="$instance"' in expr, f"{expr!r} is not limited to the chosen Manager"


def test_every_metric_and_label_of_the_dashboard_is_in_a_live_scrape(scrape):
    used = set()
    for where, expr, legend in expressions(load()):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        missing = names - set(scrape)
        assert not missing, f"{where}: {sorted(missing)} not in the scrape (it has {sorted(scrape)})"
        used |= names
        labels = TARGET_LABELS.union(*(scrape[n] for n in names))
        for metric, matchers in SELECTOR.findall(expr):
            for label, op, value in MATCHER.findall(matchers):
                assert label in TARGET_LABELS | set(scrape[metric]), f"{where}: {metric} has no {label!r}"
                if op == "=" and "$" not in value and label not in TARGET_LABELS:
                    assert value in scrape[metric][label], f"{where}: no {metric}{{{label}={value!r}}}"
        for group in GROUPING.findall(expr):
            for label in filter(None, (g.strip() for g in group.split(","))):
                assert label in labels, f"{where}: grouping by {label!r}, which {sorted(names)} lack"
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
            assert label in labels, f"{where}: the legend names {label!r}, which {sorted(names)} lack"
        if expr.startswith("label_values("):
            label = expr.rstrip(") ").rsplit(",", 1)[1].strip()
            assert label in labels, f"{where}: {sorted(names)} have no label {label!r}"
    # what the issue asks the dashboard for, by the metric behind it
    assert {"netmgr_connections", "netmgr_services", "netmgr_requests_total",
            "netmgr_request_errors_total", "netmgr_request_duration_seconds_bucket",
            "netmgr_requests_in_flight", "netmgr_queued_bytes", "netmgr_peers_dropped_total",
            "netmgr_handshakes_total", "netmgr_auth_failures_total", "netmgr_event_loop_lag_seconds",
            "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"} <= used


def test_the_scrape_is_what_the_dashboard_was_checked_against(scrape):
    """The per-Service series exist (else the check above would prove little)."""
    assert scrape["netmgr_requests_total"]["service"] == {"Echo"}
    assert "le" in scrape["netmgr_request_duration_seconds_bucket"]
    assert scrape["netmgr_connections"]["kind"] >= {"client", "service"}


def test_the_documented_metrics_are_exactly_those_scraped(exposition):
    """docs/observability.md's table: ``| `name` | type | labels | meaning |`` per metric, as scraped
    (a counter with its ``_total``; a histogram by its base name, with ``le`` among its labels)."""
    scraped, values_of = {}, {}
    for family in text_string_to_metric_families(exposition):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = set().union(*(sample.labels for sample in family.samples))
        scraped[name] = (family.type, labels)
        values_of[name] = {label: {sample.labels[label] for sample in family.samples if label in sample.labels}
                           for label in labels}
    documented = {}
    for line in DOC.read_text().splitlines():
        row = re.match(r"\| `((?:netmgr|process)_\w+)` \| (\w+) \|([^|]*)\|", line)
        if row:
            name, kind, cell = row.groups()
            assert name not in documented, f"{name} documented twice"
            # "`kind`: `client`, `service`" names one label and its values; "`service`, `le`" two labels
            labels = re.findall(r"`(\w+)`:", cell) or re.findall(r"`(\w+)`", cell)
            documented[name] = (kind, set(labels))
            if ":" in cell:  # and the values it takes, all of them
                label, values = cell.split(":", 1)
                values = set(re.findall(r"`(\w+)`", values))
                assert values == values_of[name][label.strip(" `")], f"{name}: {cell.strip()}"
    assert documented == scraped


def test_metric_names_reads_promql():
    assert metric_names('histogram_quantile(0.99, sum by (service, le) (rate(x_bucket{a="b"}[1m])))') \
        == {"x_bucket"}
    assert metric_names('sum by (service) (rate(a_total[1m])) / (sum by (service) (rate(b_total[1m])) > 0)') \
        == {"a_total", "b_total"}
    assert metric_names("time() - start_seconds{instance=\"$instance\"}") == {"start_seconds"}
    assert metric_names('label_values(netmgr_info{instance="$instance"}, service)') == {"netmgr_info"}


def test_the_dashboard_ships_in_the_wheel():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    files = cfg["options.data_files"]["share/netmgr/grafana"].split()
    assert files == ["etc/grafana/netmgr.json"] and (ROOT / files[0]).is_file()
