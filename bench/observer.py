"""``python -m bench.observer``: watch a netmgr Manager over its HTTP endpoint while a case runs.

The ``netmgr+http`` column of the benchmark (issue 13) runs netmgr with ``--http`` and this observer
beside it for the Manager's whole life, so that its figures include the cost of being watched the way
a lab watches it: Prometheus scraping ``/metrics`` once a second (one kept-alive connection, as
Prometheus keeps one), and one live status page, i.e. one Server-Sent-Events reader of
``/api/events`` subscribed to every type an unauthenticated loopback reader may have.

Protocol with the benchmark (stdin/stdout, as the other peers): ``READY`` once the event stream is
subscribed (its ``retry:`` line came) and a first scrape was answered; then it scrapes every
``--interval`` seconds until a line (``STOP``) or EOF on stdin; then one last scrape, and one line of
JSON with what it saw:

``scrapes``, ``status`` (HTTP status -> count), ``failures`` (scrapes without an answer),
``scrape_ms`` (each scrape's time), ``scrape_bytes`` (of the last), ``requests_total`` (the sum of
``netmgr_requests_total`` in the last scrape), ``events`` (event type -> count), ``event_bytes``,
``stream_status``, ``stream_error`` (why the stream ended early, or None) and ``cpu_s`` (this
process). The observer's own CPU is not the Manager's: the report shows it as the noise it adds.
"""
import argparse
import http.client
import os
import select
import sys
import threading
import time

import orjson

CONNECT_TIMEOUT = 10.0  # the endpoint binds while the Manager starts: retry until then


class EventReader(threading.Thread):
    """One ``/api/events`` reader: counts the events by type (the ``event:`` field) and their bytes."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.events = {}
        self.event_bytes = 0
        self.status = None
        self.error = None
        self.subscribed = threading.Event()
        self.conn = None

    def open(self, deadline):
        """Connect and read up to the ``retry:`` line (the reader is subscribed then)."""
        while True:
            try:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                self.conn.request("GET", "/api/events")
                self.resp = self.conn.getresponse()
                break
            except OSError:
                self.conn.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # the Manager binds its HTTP port right after its TCP port
        self.status = self.resp.status
        if self.status != 200:
            raise OSError(f"/api/events answered {self.status}")
        line = self.resp.readline()
        if not line.startswith(b"retry:"):
            raise OSError(f"/api/events began with {line[:80]!r}, not retry:")

    def run(self):
        readline, events = self.resp.readline, self.events
        try:
            while True:
                line = readline()
                if not line:
                    self.error = "the stream ended"
                    return
                if line.startswith(b"event: "):
                    kind = line[7:].strip().decode()
                    events[kind] = events.get(kind, 0) + 1
                elif line.startswith(b"data: "):
                    self.event_bytes += len(line) - 7
        except (OSError, http.client.HTTPException) as exc:
            self.error = f"{type(exc).__name__}: {exc}"


class Scraper:
    """``GET /metrics`` on one kept-alive connection (a new one after an error)."""

    def __init__(self, port):
        self.port = port
        self.conn = None
        self.scrapes = 0
        self.status = {}
        self.failures = 0
        self.ms = []
        self.last = b""

    def scrape(self):
        """One scrape; True when it was answered 200."""
        t0 = time.perf_counter_ns()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.conn.request("GET", "/metrics")
            resp = self.conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException):
            self.failures += 1
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            return False
        self.ms.append((time.perf_counter_ns() - t0) / 1e6)
        self.scrapes += 1
        self.status[str(resp.status)] = self.status.get(str(resp.status), 0) + 1
        if resp.status == 200:
            self.last = body
        return resp.status == 200


def requests_total(text):
    """The sum of the ``netmgr_requests_total`` samples (every Service) of one exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(b"netmgr_requests_total{") or line.startswith(b"netmgr_requests_total "):
            total += float(line.rsplit(None, 1)[1])
    return total


def wait_stop(timeout):
    """True when the benchmark said stop (a line, or EOF: it is gone) within ``timeout`` seconds."""
    if not select.select([sys.stdin], [], [], max(0.0, timeout))[0]:
        return False
    os.read(sys.stdin.fileno(), 4096)
    return True


def observe(args):
    reader, scraper = EventReader(args.port), Scraper(args.port)
    deadline = time.monotonic() + CONNECT_TIMEOUT
    try:
        reader.open(deadline)
    except (OSError, http.client.HTTPException) as exc:
        print(f"FAILED event stream: {exc}", flush=True)
        return 1
    reader.start()
    while not scraper.scrape():
        if time.monotonic() > deadline:
            print(f"FAILED /metrics: {scraper.status or 'no answer'}", flush=True)
            return 1
        time.sleep(0.05)
    print("READY", flush=True)
    next_at = time.monotonic() + args.interval
    while not wait_stop(next_at - time.monotonic()):
        scraper.scrape()
        next_at += args.interval
    scraper.scrape()  # the last one: the counters as the case left them
    cpu = os.times()
    print(orjson.dumps({
        "scrapes": scraper.scrapes, "status": scraper.status, "failures": scraper.failures,
        "scrape_ms": [round(ms, 3) for ms in scraper.ms], "scrape_bytes": len(scraper.last),
        "requests_total": requests_total(scraper.last), "interval_s": args.interval,
        "events": reader.events, "event_bytes": reader.event_bytes, "stream_status": reader.status,
        "stream_error": reader.error, "cpu_s": cpu.user + cpu.system,
    }).decode(), flush=True)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.observer", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True, help="the Manager's HTTP port (127.0.0.1)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between two scrapes (default 1)")
    return observe(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
