"""The cases of issue 12 (big10m, floor_relay, idle20000): the relay forwards bytes verbatim, the
big client's payloads and reply reader, the options, the table; and a quick run against both
Managers (no figure asserted, only that every column ran and was measured)."""
import json
import random
import socket
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest

from bench import bigecho, relay, report, runner
from bench.scalereport import render_big
from bench.cases import BigCase, ManyCase, case_rows
from bench.wire import CLIENT_IDENTITY, SERVICE_IDENTITY, BlockingPeer

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# The relay

@pytest.fixture(params=relay.MODES)
def running_relay(request):
    r = relay.Relay(request.param)
    t = threading.Thread(target=r.serve_forever, daemon=True)
    t.start()
    yield r
    r.close()
    t.join(5)


def recv_exactly(sock, n):
    out = bytearray()
    while len(out) < n:
        data = sock.recv(n - len(out))
        assert data, "closed early"
        out += data
    return bytes(out)


def test_the_relay_forwards_lines_verbatim_both_ways(running_relay):
    service = BlockingPeer(running_relay.port, SERVICE_IDENTITY, timeout=10)
    probe = BlockingPeer(running_relay.port, CLIENT_IDENTITY, timeout=10)
    for _ in range(200):  # the Service registers in the relay's thread
        if "Echo" in probe.call_manager("identity", [], "i")["services"]:
            break
    else:
        pytest.fail("the relay never listed the Service")
    client = BlockingPeer(running_relay.port, CLIENT_IDENTITY, timeout=10)
    client.link_echo()
    # not parsed, not spliced: invalid JSON, a spoofed requester and a large line arrive unchanged
    big = b'{"args":["' + bytes(random.Random(1).choices(b"abc", k=3_000_000)) + b'"],"uid":"1"}\r\n'
    for line in (b'{"requester":"victim","uid":"x"}\r\n', b"not json at all\n", big):
        client.sock.sendall(line)
        assert recv_exactly(service.sock, len(line)) == line
        service.sock.sendall(line[::-1])
        assert recv_exactly(client.sock, len(line)) == line[::-1]
    other = BlockingPeer(running_relay.port, CLIENT_IDENTITY, timeout=10)
    with pytest.raises(Exception, match="cannot"):  # one linked Client for the relay's life
        other.link_echo()
    for p in (service, probe, client, other):
        p.close()


@pytest.mark.parametrize("pump", [relay.pump_copy, relay.pump_splice])
def test_each_pump_copies_a_stream_until_eof(pump):
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    data = bytes(random.Random(2).randbytes(2_500_000))
    t = threading.Thread(target=pump, args=(b, c, 1 << 16))
    t.start()
    threading.Thread(target=lambda: (a.sendall(data), a.shutdown(socket.SHUT_WR)), daemon=True).start()
    assert recv_exactly(d, len(data)) == data
    t.join(5)
    assert not t.is_alive()
    for s in (a, b, c, d):
        s.close()


# ---------------------------------------------------------------------------------------------
# The big client

@pytest.mark.parametrize("size", [11, 1_000, 123_457, 10_000_000])
def test_the_array_payload_is_valid_json_of_about_size_bytes_and_survives_a_round_trip(size):
    payload = bigecho.array_payload(size)
    values = orjson.loads(payload)
    assert all(isinstance(v, float) and 0 < v < 1 for v in values)
    assert len(payload) == 10 * len(values) + 1 and size - 10 < len(payload) <= size
    assert orjson.dumps(values) == payload  # the Echo Service writes back the same bytes
    if size == 10_000_000:
        assert len(values) == 999_999


@pytest.mark.parametrize("size", [2, 3, 1_000, 10_000_000])
def test_the_string_payload_is_a_json_string_of_exactly_size_bytes(size):
    payload = bigecho.string_payload(size)
    assert len(payload) == size and isinstance(orjson.loads(payload), str)
    assert orjson.dumps(orjson.loads(payload)) == payload


def test_requests_are_the_dumps_of_the_request_and_uids_are_rewritten_in_place():
    call = bigecho.Call("array", 1_000)
    for n in (1, 2):
        uid = call.next_uid()
        msg = orjson.loads(call.request)
        assert uid == f'"a{n:07d}"'.encode() and msg["uid"] == uid.strip(b'"').decode()
        assert msg["args"] == [orjson.loads(bigecho.array_payload(1_000))]
        assert orjson.dumps(msg) + b"\r\n" == call.request


def test_the_reply_reader_finds_each_line_in_any_chunking():
    a, b = socket.socketpair()
    lines = [b'{"error":false,"result":[[1]],"uid":"a0000001"}\r', b"x" * 300_000, b"", b"tail"]
    stream = b"\n".join(lines) + b"\n"
    rng = random.Random(3)

    def feed():
        i = 0
        while i < len(stream):
            n = rng.randint(1, 70_000)
            a.sendall(stream[i:i + n])
            i += n

    t = threading.Thread(target=feed)
    t.start()
    reader = bigecho.ReplyReader(b, 1024)  # smaller than a line: it grows
    for line in lines:
        n = reader.read_line()
        assert bytes(reader.buf[:n]) == line
        reader.consume()
    t.join(5)
    a.close()
    b.close()


def test_check_reply_wants_the_uid_and_no_error():
    ok = b'{"error":false,"requester":null,"result":[["' + b"x" * 1000 + b'"],{}],"uid":"s0000001"}\r'
    assert bigecho.check_reply(ok, len(ok), b'"s0000001"', 900) is None
    assert "uid" in bigecho.check_reply(ok, len(ok), b'"s0000002"', 900)
    err = b'{"error":true,"message":"too long","requester":"c","result":null,"uid":"s0000001"}\r'
    assert "error" in bigecho.check_reply(err, len(err), b'"s0000001"', 10)
    assert "short" in bigecho.check_reply(ok, len(ok), b'"s0000001"', 5000)


# ---------------------------------------------------------------------------------------------
# Options and the table

def test_the_issue_12_cases_are_asked_for_by_name_and_floor_relay_joins_big10m():
    assert not {"big10m", "floor_relay", "idle20000"} & set(runner.parse_args([]).case_list)
    opts = runner.parse_args(["--cases", "big10m,floor_relay,idle20000"])
    big, many = runner.build_cases(opts)
    assert isinstance(big, BigCase) and big.columns == ("netmgr", "msl", "floor") and big.size == 10_000_000
    assert isinstance(many, ManyCase) and (many.count, many.procs) == (20_000, 2)
    (alone,) = runner.build_cases(runner.parse_args(["--cases", "floor_relay", "--quick"]))
    assert alone.columns == ("floor",) and alone.size == 200_000
    with pytest.raises(SystemExit):
        runner.parse_args(["--cases", "big10m", "--big-size", "1"])


def test_the_big_table_has_the_floor_ratio_the_targets_and_failed_columns():
    opts = runner.parse_args(["--cases", "big10m"])
    (case,) = runner.build_cases(opts)
    run = {key: 1.0 for key, *_ in case_rows(case)}
    results = {"big10m": {"netmgr": [dict(run, array_mbps=300.0)], "msl": [{"error": "CaseError: boom"}],
                          "floor": [dict(run, array_mbps=400.0)]}}
    text = "\n".join(render_big(case, results, report.summarize, report.fmt_cell))
    assert "netmgr/floor" in text and "0.75x" in text  # 300 / 400
    assert "FAILED" in text and "msl-network 1.0 run 1 FAILED: CaseError: boom" in text
    assert "array_mbps netmgr/floor at least 0.667x: 0.75x -> met" in text
    assert "array_mbps netmgr/msl at least 5x: - -> n/a" in text


# ---------------------------------------------------------------------------------------------
# A quick run of every column

def test_bench_quick_runs_big10m_and_idle20000(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--cases", "big10m,idle20000", "--quick",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[big10m]" in proc.stdout and "[idle20000]" in proc.stdout
    cases = json.loads(out.read_text())["cases"]
    for key in ("netmgr", "msl", "floor"):
        med = cases["big10m"]["median"][key]
        assert med["array_mbps"] > 0 and med["string_mbps"] > 0 and med["errors"] == 0, med
    for key in ("netmgr", "msl"):
        med = cases["idle20000"]["median"][key]
        assert med["handshakes_per_s"] > 0 and med["identity_ms"] > 0, med
