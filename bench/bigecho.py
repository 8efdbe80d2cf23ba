"""``python -m bench.bigecho``: the client of ``big10m``, sequential echo calls of megabytes.

One raw blocking Client (handshake and link by :class:`bench.wire.BlockingPeer`), one request in
flight. Each payload is built once; each request is one preallocated ``bytearray`` (the uid is
rewritten in place) sent with ONE ``sendall``; each reply is read with ``recv_into`` into one
reusable buffer until its LF. The reply is never parsed: the client checks its length, its uid
(near its end, or its start) and that it is not an error reply, so that the client is not what is
measured (a 10 MB ``orjson.loads`` would cost as much as a fast Manager).

Payloads (``--payloads``; ``--size`` bytes of JSON each):

* ``array``: ``[0.2408912,0.3674592,...]``, about size/10 floats of 7 decimals (1M for 10 MB): the
  Echo Service's ``orjson`` writes them back byte for byte;
* ``string``: ``"ABC...xyz0123..."``: printable ASCII, nothing to escape.

After ``--warmup-rounds`` rounds, ``--rounds`` measured rounds of one call per payload (the order
rotated each round). Per call: the round trip (``perf_counter_ns`` from before ``sendall`` to the
reply's LF), the bytes of request and reply, and the CPU time of the Manager and the Service
(``/proc/PID/task/*/schedstat``, ns) and of this process. Results go to ``--out`` as JSON, then ``DONE``.
"""
import argparse
import os
import random
import string
import sys
import time

from bench.libpeers import cpu_ns
from bench.procs import CLK_TCK, cpu_ticks, machine_busy_ticks
from bench.wire import CLIENT_IDENTITY, BlockingPeer, write_result

KINDS = ("array", "string")
UID_LEN = 8  # kind letter + 7 digits, rewritten in place in the request
MAX_ERROR_SAMPLES = 5


def array_payload(size, seed=12):
    """A JSON array of ``(size - 1) // 10`` floats written as ``0.ddddddd`` (7 digits, the last
    non-zero, so every number is 9 bytes and survives a parse and dump unchanged): ``size`` bytes
    give ``10 n + 1`` bytes of JSON."""
    rng = random.Random(seed)
    n = max(1, (size - 1) // 10)
    return b"[" + ",".join(f"0.{rng.randrange(100000, 1000000)}{rng.randrange(1, 10)}"
                           for _ in range(n)).encode() + b"]"


def string_payload(size):
    """A JSON string of exactly ``max(size, 2)`` bytes, quotes included."""
    alphabet = (string.ascii_letters + string.digits).encode()
    n = max(0, size - 2)
    return b'"' + (alphabet * (n // len(alphabet) + 1))[:n] + b'"'


PAYLOADS = {"array": array_payload, "string": string_payload}


def build_request(payload):
    """(request, offset of the uid): the request as one ``bytearray`` ending in CRLF, its uid a
    placeholder of :data:`UID_LEN` bytes at ``offset`` (equal to ``orjson.dumps`` of the request)."""
    head = b'{"args":[' + payload + b'],"attribute":"echo","error":false,"kwargs":{},"service":"Echo","uid":"'
    return bytearray(head + b"0" * UID_LEN + b'"}\r\n'), len(head)


class Call:
    """One payload kind: its request, its figures."""

    __slots__ = ("kind", "request", "uid_at", "seq", "lat", "bytes", "mgr_ns", "svc_ns", "client_ns",
                 "mgr_ticks", "errors", "error_samples")

    def __init__(self, kind, size):
        self.kind = kind
        self.request, self.uid_at = build_request(PAYLOADS[kind](size))
        self.seq = 0
        self.lat, self.bytes = [], []
        self.mgr_ns = self.svc_ns = self.client_ns = 0
        self.mgr_ticks = 0  # /proc/PID/stat: also counts threads that exit (a cross-check of mgr_ns)
        self.errors, self.error_samples = 0, []

    def next_uid(self):
        self.seq += 1
        uid = f"{self.kind[0]}{self.seq:0{UID_LEN - 1}d}".encode()
        self.request[self.uid_at:self.uid_at + UID_LEN] = uid
        return b'"' + uid + b'"'

    def figures(self):
        return {"request_bytes": len(self.request), "lat_ns": self.lat, "bytes": self.bytes,
                "mgr_ns": self.mgr_ns, "svc_ns": self.svc_ns, "client_ns": self.client_ns,
                "mgr_ticks": self.mgr_ticks, "errors": self.errors, "error_samples": self.error_samples}


class ReplyReader:
    """Reads one reply line at a time into one reusable buffer (grown if a reply is larger)."""

    def __init__(self, sock, size):
        self.sock = sock
        self.buf = bytearray(size)
        self.have = 0  # bytes after the last line, moved to the front
        self._pending = (0, 0)  # (start of what follows the last line, end of the data)

    def read_line(self):
        """The length of the next line (without its LF); the line is ``self.buf[:length]``."""
        buf, pos = self.buf, self.have
        end = buf.find(b"\n", 0, pos)
        while end < 0:
            if pos == len(buf):
                buf.extend(bytes(len(buf)))  # rare: a reply larger than foreseen
            n = self.sock.recv_into(memoryview(buf)[pos:])
            if not n:
                raise ConnectionError("the Manager closed the connection")
            end = buf.find(b"\n", pos, pos + n)
            pos += n
        self.have = pos - end - 1
        self._pending = (end + 1, pos)
        return end

    def consume(self):
        """Drop the line returned last (keeping what followed it; normally nothing)."""
        start, pos = self._pending
        if self.have:
            self.buf[:self.have] = self.buf[start:pos]


def check_reply(buf, length, uid, min_length):
    """None if ``buf[:length]`` looks like the echo reply with ``uid``, else why not."""
    head, tail = bytes(buf[:min(length, 400)]), bytes(buf[max(0, length - 400):length])
    if uid not in tail and uid not in head:
        return f"uid {uid.decode()} not found: {head[:200]!r}"
    if b'"error":true' in head or b'"error": true' in head or length < min_length:
        return f"an error or short reply ({length} bytes): {head[:300]!r}"
    return None


def round_trip(sock, reader, call, mgr_pid, svc_pid, measure):
    """One echo call of ``call``'s payload; records its figures if ``measure``."""
    uid = call.next_uid()
    if measure:
        m0, s0, c0, k0 = cpu_ns(mgr_pid), cpu_ns(svc_pid), time.process_time_ns(), cpu_ticks(mgr_pid)
    t0 = time.perf_counter_ns()
    sock.sendall(call.request)
    length = reader.read_line()
    t1 = time.perf_counter_ns()
    why = check_reply(reader.buf, length, uid, len(call.request) - 200)
    reader.consume()
    if not measure:
        if why:
            raise ValueError(f"warm-up reply: {why}")
        return
    call.client_ns += time.process_time_ns() - c0
    call.mgr_ns += cpu_ns(mgr_pid) - m0
    call.mgr_ticks += cpu_ticks(mgr_pid) - k0
    call.svc_ns += cpu_ns(svc_pid) - s0
    call.lat.append(t1 - t0)
    call.bytes.append(len(call.request) + length + 1)
    if why:
        call.errors += 1
        if len(call.error_samples) < MAX_ERROR_SAMPLES:
            call.error_samples.append(why)


def run_rounds(sock, calls, args):
    """Warm-up, then the measured rounds; the other processes' CPU (%) over the measured ones."""
    reader = ReplyReader(sock, 2 * max(len(c.request) for c in calls) + (1 << 20))
    for _ in range(args.warmup_rounds):
        for c in calls:
            round_trip(sock, reader, c, args.mgr_pid, args.svc_pid, False)
    pids = (args.mgr_pid, args.svc_pid, os.getpid())
    own0, busy0, t0 = sum(map(cpu_ticks, pids)), machine_busy_ticks(), time.monotonic()
    for r in range(args.rounds):
        k = r % len(calls)
        for c in calls[k:] + calls[:k]:
            round_trip(sock, reader, c, args.mgr_pid, args.svc_pid, True)
    wall = time.monotonic() - t0
    own = sum(map(cpu_ticks, pids)) - own0
    return max(0, machine_busy_ticks() - busy0 - own) / CLK_TCK / wall * 100 if wall > 0 else None


def run(args):
    calls = [Call(kind, args.size) for kind in args.payloads.split(",")]
    failure, other = None, None
    peer = None
    try:
        peer = BlockingPeer(args.port, CLIENT_IDENTITY, timeout=args.timeout)
        peer.link_echo()
        other = run_rounds(peer.sock, calls, args)
    except Exception as exc:  # the connection, a timeout, a warm-up error: the run fails
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        if peer is not None:
            peer.close()
    write_result(args.out, {"failure": failure, "other_cpu_pct": other,
                            "calls": {c.kind: c.figures() for c in calls}})
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.bigecho")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mgr-pid", type=int, required=True, help="the Manager (or relay) whose CPU is measured")
    p.add_argument("--svc-pid", type=int, required=True)
    p.add_argument("--size", type=int, default=10_000_000, help="bytes of each payload's JSON")
    p.add_argument("--payloads", default=",".join(KINDS))
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--warmup-rounds", type=int, default=2)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds any socket call may block")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    bad = [k for k in args.payloads.split(",") if k not in KINDS]
    if bad:
        p.error(f"unknown payload(s) {bad}; choose from {', '.join(KINDS)}")
    return args


def main(argv=None):
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
