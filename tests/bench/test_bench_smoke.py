"""The README's benchmark commands run end to end against real Managers (no timing asserted)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_runs_both_managers(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "netmgr" in proc.stdout and "msl-network 1.0" in proc.stdout
    assert out.exists()


def test_bench_quick_netmgr_observed_over_http(tmp_path):
    """``--managers netmgr+http``: netmgr runs with --http while the observer scrapes /metrics and
    reads /api/events; every scrape was answered 200, the stream saw the case's peers come and go,
    and the last scrape counted exactly the requests the Echo Service answered."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--cases", "seq", "--managers",
                           "netmgr+http", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "netmgr+http" in proc.stdout and "+http/netmgr" in proc.stdout
    assert "netmgr+http run 1 observed:" in proc.stdout
    run = json.loads(out.read_text())["cases"]["seq"]["runs"]["netmgr+http"][0]
    seen = run["observed"]
    assert seen["scrapes"] >= 2 and seen["status"] == {"200": seen["scrapes"]} and seen["failures"] == 0
    assert seen["stream_status"] == 200 and seen["stream_error"] is None
    assert seen["events"]["service"] >= 1 and seen["events"]["peer"] >= 2  # Echo, the load client
    assert seen["requests_total"] == run["completed_total"] > 0
