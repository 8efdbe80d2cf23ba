"""The benchmark's own pieces, without a Manager: framing, the Echo Service's replies, the load
generator's loop over a socketpair, the options and the medians."""
import argparse
import socket
import threading
import time

import orjson
import pytest

from bench import loadgen, peers, report, runner
from bench.cases import LOAD_ROWS
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
