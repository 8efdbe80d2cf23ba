"""The benchmark's own pieces, without a Manager: framing, the Echo Service's replies, the load
generator's loop over a socketpair, the options and the medians."""
import argparse
import socket
import threading
import time
from pathlib import Path

import orjson
import pytest

from bench import httpreport, loadgen, managers, observer, peers, report, runner
from bench.cases import LOAD_ROWS, LoadCase
from bench.wire import LineFramer

LINES = [b'{"a":1}', b'{"uid":"x"}\r', b"", b"\r", b'{"b":[1,2]}']
STREAM = b"\n".join(LINES) + b"\n"


@pytest.mark.parametrize("size", [1, 2, 3, 7, len(STREAM)])
def test_line_framer_any_chunking(size):
    framer, got = LineFramer(), []
    for i in range(0, len(STREAM), size):
        got += framer.feed(STREAM[i:i + size])
    assert got == [b'{"a":1}', b'{"uid":"x"}\r', b'{"b":[1,2]}']


def test_echo_replies_answer_requests_only():
    lines = [orjson.dumps({"attribute": "echo", "args": ["x"], "kwargs": {}, "requester": "c", "uid": "1"}),
             orjson.dumps({"attribute": "nope", "args": [], "kwargs": {}, "requester": "c", "uid": "2"}),
             orjson.dumps({"result": 1, "uid": "3"})]
    out = peers.echo_replies(lines)
    assert out[1::2] == [b"\r\n", b"\r\n"]
    echo, error = (orjson.loads(r) for r in out[0::2])
    assert echo == {"error": False, "requester": "c", "result": [["x"], {}], "uid": "1"}
    assert error["error"] is True and error["uid"] == "2" and "nope" in error["message"]


def test_load_driver_counts_every_reply_of_the_echo_service():
    pairs = [socket.socketpair() for _ in range(2)]
    stats, servers = [], []
    for _, srv in pairs:
        stats.append([0, 0])
        servers.append(threading.Thread(target=peers.serve, args=(srv, LineFramer(), [], stats[-1])))
        servers[-1].start()
    prefix = loadgen.request_prefix(10)
    clients = []
    for i, (cli, _) in enumerate(pairs):
        cli.setblocking(False)
        clients.append(loadgen.LoadClient(i, cli, LineFramer(), prefix))
    args = argparse.Namespace(window=4, payload=10, drain_timeout=5.0, stall_timeout=5.0, tls_cert=None)
    now = time.monotonic_ns()
    result = loadgen.drive(clients, args, now, now + 20_000_000, now + 120_000_000)
    for cli, srv in pairs:
        cli.close()
    for t in servers:
        t.join(5)
    for _, srv in pairs:
        srv.close()
    assert result["failure"] is None and result["errors"] == 0
    assert 0 < result["completed_in_window"] == len(result["lat_ns"]) <= result["completed_total"]
    assert sum(s[0] for s in stats) == result["completed_total"]


def test_quick_and_full_defaults():
    quick, full = runner.parse_args(["--quick"]), runner.parse_args([])
    assert (quick.duration, quick.repeat, quick.idle_count, quick.lib_burst) == (0.5, 1, 200, 25)
    assert (full.duration, full.repeat, full.idle_count, full.lib_burst) == (5.0, 3, 2000, 100)
    assert runner.parse_args(["--repeat", "2", "--quick"]).repeat == 2
    with pytest.raises(SystemExit):
        runner.parse_args(["--cases", "nope"])


def test_summarize_takes_medians_sums_errors_and_skips_failed_runs():
    runs = [{"rps": 1.0, "errors": 1}, {"rps": 3.0, "errors": 2}, {"rps": 2.0, "errors": 0},
            {"error": "ManagerError: boom"}]
    med = report.summarize(runs, LOAD_ROWS)
    assert med == {"rps": 2.0, "errors": 3}
    assert report.summarize(runs[3:], LOAD_ROWS) is None


def test_a_missing_tmpdir_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        runner.parse_args(["--tmpdir", "/nonexistent/netmgr-bench", "--quick"])
    assert exc.value.code == 2
    assert "--tmpdir /nonexistent/netmgr-bench: no such directory" in capsys.readouterr().err


def test_netmgr_http_is_a_manager_column():
    opts = runner.parse_args(["--quick", "--managers", "msl,netmgr,netmgr+http"])
    assert opts.manager_list == ["msl", "netmgr", "netmgr+http"]
    assert managers.family("netmgr+http") == "netmgr" and managers.family("msl") == "msl"
    assert managers.connection_args("netmgr+http", 10) == managers.connection_args("netmgr", 10)
    argv, _ = managers.MANAGERS["netmgr+http"][1](4000, Path("/tmp/x"), http_port=4001)
    assert argv[-2:] == ["--http", "127.0.0.1:4001"] and "-G" in argv and "WARNING" in argv


OBSERVED = {"scrapes": 3, "status": {"200": 3}, "failures": 0, "scrape_ms": [2.0, 3.0, 9.0],
            "scrape_bytes": 5100, "requests_total": 3345.0, "interval_s": 1.0,
            "events": {"peer": 6, "service": 2, "heartbeat": 1}, "event_bytes": 1500,
            "stream_status": 200, "stream_error": None, "cpu_s": 0.07}


def test_report_shows_netmgr_http_beside_netmgr_with_its_cost_and_what_was_observed():
    case = LoadCase("seq", 1, 1, 10)
    base = {"rps": 1000.0, "p50_us": 100.0, "p99_us": 200.0, "mgr_cpu_us_per_req": 50.0, "errors": 0}
    results = {"seq": {"netmgr": [base], "msl": [{"error": "ManagerError: boom"}],
                       "netmgr+http": [{**base, "rps": 900.0, "mgr_cpu_us_per_req": 55.0,
                                        "observed": OBSERVED}]}}
    lines = report.render_case(case, results, ["netmgr", "msl", "netmgr+http"])
    assert lines[2].split()[-2:] == ["netmgr+http", "+http/netmgr"]
    rps = next(line for line in lines if "routed requests/s" in line).split()
    assert rps[-4:] == ["FAILED", "-", "900", "0.90x"]
    cpu = next(line for line in lines if "Manager CPU per request" in line).split()
    assert cpu[-2:] == ["55.0", "1.10x"]
    notes = report.render_case_notes(case, results, ["netmgr", "msl", "netmgr+http"], None)
    assert any(n.startswith("  netmgr+http run 1 observed: 3 scrapes of /metrics (3 x 200, p50 3.0 ms")
               and "peer 6, service 2, heartbeat 1" in n and "3,345" in n for n in notes)
    # without netmgr+http asked for, the table is the two-Manager one it always was
    assert report.render_case(case, results, ["netmgr", "msl"])[2].split()[-1] == "ratio"
    cost = httpreport.cost_json(case, results, LOAD_ROWS, report.summarize)
    assert cost["rps"] == 0.9 and cost["mgr_cpu_us_per_req"] == 1.1


def test_observer_sums_the_request_counters_of_a_scrape_and_says_when_it_failed():
    text = (b'# HELP netmgr_requests_total Requests forwarded to a Service\n'
            b'# TYPE netmgr_requests_total counter\n'
            b'netmgr_requests_total{service="Echo"} 12.0\n'
            b'netmgr_requests_total{service="Other"} 3.0\n'
            b'netmgr_requests_created{service="Echo"} 1.7e9\n'
            b'netmgr_request_errors_total{service="Echo"} 1.0\n')
    assert observer.requests_total(text) == 15.0
    assert httpreport.observed_words({"failure": "the observer said ''"}).startswith("observer FAILED")
