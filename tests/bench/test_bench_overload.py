"""The overload case of the benchmark: its options, the canary's windows, and a quick run against both
Managers (two attacks; no figure asserted, only that every attack ran and was measured)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import runner
from bench.canary import summary

ROOT = Path(__file__).resolve().parents[2]


def test_overload_is_asked_for_by_name_and_attacks_are_checked():
    assert "overload" not in runner.parse_args([]).case_list
    opts = runner.parse_args(["--cases", "overload", "--attacks", "flood_requests_tls,nesting", "--quick"])
    (case,) = runner.build_cases(opts)
    assert [a.label for a in case.attacks] == ["flood_requests_tls", "nesting"] and case.tls
    with pytest.raises(SystemExit):
        runner.parse_args(["--cases", "overload", "--attacks", "nope"])


def test_canary_summary_counts_the_calls_that_overlap_a_window():
    samples = [(0.0, 0.001, "ok"), (1.0, 3.0, "pending"), (5.0, 0.002, "ok"), (6.0, 10.0, "stalled")]
    whole = summary(samples)
    assert (whole["calls"], whole["ok"], whole["pending"], whole["stalled"]) == (4, 2, 1, 1)
    assert whole["max_ms"] == 10_000
    window = summary(samples, 3.0, 5.5)  # the pending call of 1.0 s lasted into it
    assert (window["calls"], window["max_ms"]) == (2, 3000)


def test_bench_overload_quick_runs_both_managers(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--cases", "overload", "--quick",
                           "--attacks", "flood_notify,nesting", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[overload]" in proc.stdout and "msl-network 1.0" in proc.stdout
    runs = json.loads(out.read_text())["cases"]["overload"]["runs"]
    for key in ("netmgr", "msl"):
        attacks = runs[key][0]["attacks"]
        assert set(attacks) == {"flood_notify", "nesting"}, attacks
        for figures in attacks.values():
            assert "error" not in figures, figures
            assert figures["attack"]["calls"] > 0 and figures["rss_peak_mib"] >= figures["rss_before_mib"] > 0
