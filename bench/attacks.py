"""Hostile and misbehaving peers, one function per finding of issue 10, for the tests and the bench.

Every attack runs on the loopback only (:func:`bench.rawconn.check_loopback`), is bounded in time
(``duration`` / ``timeout``) and in count or size, stops by itself, and closes what it opened (except
:func:`idle_clients`, which hands its connections to the caller). ``stop`` is an optional callable
(e.g. ``RssWatch.exceeded.is_set``) that ends a flood early. Each returns a dict of what the attacker
saw, for the test to assert on and the bench to print. Raw protocol only, so each attack runs against
netmgr and against the msl-network 1.0 Manager alike. The numbers (1a, 2, ...) are the issue's.

``python -m bench.attacks NAME --port P [--tls-cert C] [--duration S] [--size N] [--count N]
[--mgr-pid PID --rss-cap-mib N]`` runs one attack of the bench (:func:`run_named`) in its own process
and prints its result as one JSON line; with ``--mgr-pid`` a flood stops once the Manager's RSS passes
the cap. The login attacks (findings 4 and 9) live in :mod:`bench.guessing` and are re-exported here.
"""
import argparse
import socket
import sys
import time

import orjson

from bench.canary import RssWatch
from bench.guessing import inline_admin_guessing, login_guessing, pending_handshakes, wrong_logins
from bench.rawconn import (CRLF, Conn, Flow, Pump, client_identity, message_text, parse, reply_line,
                           request_line, service_identity)
from bench.wire import ProtocolFailure, client_tls_context

__all__ = [  # one function per attack; the login attacks (4, 9) live in bench.guessing
    "flood_notifications", "flood_requests", "flood_two_clients", "identity_flood", "terminal_before_identity",
    "terminal_literal", "login_guessing", "pending_handshakes", "inline_admin_guessing", "big_line",
    "partial_lines", "deep_nesting_before", "deep_nesting_after", "idle_clients", "inflight_flood",
    "control_char_names", "wrong_logins", "client_identity", "service_identity", "CONTROL_CHARACTERS", "MB",
]

MB = 1_000_000
QUIET = 3.0  # seconds without a byte after which an attacker stops waiting for more
NEVER = lambda: False  # noqa: E731 -- the default ``stop``


def linked_client(port, name, service, tls=None, **kw):
    client = Conn(port, tls=tls, **kw).handshake(client_identity(name))
    reply = client.call_manager("link", service, uid="link")
    if reply is None or reply.get("error"):
        raise ProtocolFailure(f"{name} could not link with {service}: {reply}")
    return client


def notification_batch(service, payload=100, lines=1000):
    line = orjson.dumps({"error": False, "result": [["x" * payload], {}], "service": service,
                         "uid": "notification"}) + CRLF
    return line * lines


def outcome(flow, t0):
    return {"sent_bytes": flow.sent, "received_bytes": flow.received, "lines_received": flow.lines,
            "closed_after_s": None if flow.closed is None else round(flow.closed - t0, 3),
            "close_reason": flow.error}


# ------------------------------------------------------------------------------------------ 1
def flood_notifications(port, duration=5.0, tls=None, stop=NEVER, payload=100):
    """(1a) A Service emits notifications nobody subscribed to, as fast as the Manager reads them."""
    svc = Conn(port, tls=tls).handshake(service_identity("Flooder"))
    flow = Flow(svc, source=lambda batch=notification_batch("Flooder", payload): batch)
    t0 = time.monotonic()
    try:
        Pump([flow]).run(t0 + duration, stop)
    finally:
        svc.close()
    return {"attack": "flood_notify", "elapsed_s": time.monotonic() - t0, **outcome(flow, t0)}


def sink_answer(lines, cache={}):
    """A Service that answers every forwarded request with a constant-size result (its requester
    and uid taken from the first request of each batch: the flood sends one requester and uid)."""
    msg = parse(lines[0])
    key = (msg.get("requester"), msg.get("uid", ""))
    if key not in cache:
        cache[key] = reply_line(None, key[1], key[0])
    return cache[key] * len(lines)


def flood_requests(port, duration=5.0, tls=None, stop=NEVER, payload=10):
    """(1b) A Client sends requests to its Service as fast as the Manager reads them; the Service
    answers every one and the Client reads (and drops) the replies."""
    sink = Conn(port, tls=tls).handshake(service_identity("Sink"))
    client = linked_client(port, "Flooder", "Sink", tls=tls)
    batch = request_line("Sink", "echo", ["x" * payload], uid="f") * 1000
    flows = [Flow(client, source=lambda: batch), Flow(sink, answer=sink_answer)]
    t0 = time.monotonic()
    try:
        Pump(flows).run(t0 + duration, stop)
    finally:
        client.close()
        sink.close()
    return {"attack": "flood_requests", "tls": tls is not None, "elapsed_s": time.monotonic() - t0,
            "client": outcome(flows[0], t0), "service": outcome(flows[1], t0),
            "requests_sent": flows[0].sent // len(batch) * 1000, "replies_sent": flows[1].sent}


class Listing:
    """Whether the Manager still lists a Client, asked at most every ``interval`` s through a probe
    connection (a Client that never reads cannot see its own close: the FIN waits behind the data)."""

    def __init__(self, port, name, tls=None, interval=0.1):
        self.probe = Conn(port, tls=tls).handshake(client_identity("Probe"))
        self.prefix, self.interval, self.n, self.next = name + "[", interval, 0, 0.0
        self.gone = None  # when the Manager was first seen without the Client

    def check(self):
        if self.gone is None and time.monotonic() >= self.next:
            self.n += 1
            reply = self.probe.call_manager("identity", uid=f"probe-{self.n}") or {}
            if not any(n.startswith(self.prefix) for n in (reply.get("result") or {}).get("clients", {})):
                self.gone = time.monotonic()
            self.next = time.monotonic() + self.interval
        return self.gone is not None


def flood_two_clients(port, duration=5.0, tls=None, stop=NEVER, payload=100, slow_wait=10.0):
    """(1c) A flooding Service with two linked Clients: ``reader`` reads everything (during the flood
    and ``slow_wait`` s after it), ``slow`` never reads. ``slow_dropped_after_s``: when the Manager
    was first seen no longer listing ``slow`` (checked after the flood, for up to ``slow_wait`` s)."""
    svc = Conn(port, tls=tls).handshake(service_identity("Flood2"))
    reader = linked_client(port, "Reader", "Flood2", tls=tls)
    slow = linked_client(port, "Slow", "Flood2", tls=tls, rcvbuf=4096)
    listing = Listing(port, "Slow", tls)
    flows = [Flow(svc, source=lambda batch=notification_batch("Flood2", payload): batch), Flow(reader)]
    t0 = time.monotonic()
    try:
        Pump(flows).run(t0 + duration, stop)
        Pump(flows[1:]).run(time.monotonic() + slow_wait, listing.check)
        slow_after = None if listing.gone is None else round(listing.gone - t0, 3)
    finally:
        for c in (svc, reader, slow, listing.probe):
            c.close()
    return {"attack": "flood_two_clients", "elapsed_s": time.monotonic() - t0,
            "service": outcome(flows[0], t0), "reader": outcome(flows[1], t0),
            "slow_dropped": slow_after is not None, "slow_dropped_after_s": slow_after}


# ------------------------------------------------------------------------------------------ 2
IDENTITY_REQUEST = b'{"service":"Manager","attribute":"identity","uid":"h"}\n'


def identity_flood(port, duration=8.0, stop=NEVER, batch=1000):
    """(2) ``client H``, then batches of identity requests for ``duration`` s, never reading."""
    c = Conn(port)
    first = c.read_msg()
    if not first or first.get("attribute") != "identity":
        raise ProtocolFailure(f"expected the identity request, got {first}")
    c.send(b"client H\n")
    flow = Flow(c, source=lambda data=IDENTITY_REQUEST * batch: data, read=False)
    t0 = time.monotonic()
    try:
        Pump([flow]).run(t0 + duration, stop)
    finally:
        c.close()
    return {"attack": "identity_flood", "elapsed_s": time.monotonic() - t0,
            "requests_sent": flow.sent // len(IDENTITY_REQUEST), "disconnected": flow.closed is not None,
            **outcome(flow, t0)}


# ------------------------------------------------------------------------------------------ 3
def answer_of(conn, t0, timeout):
    """What the Manager did after an attack line: the first line (or EOF) and when."""
    try:
        msg = conn.read_msg(timeout)
    except socket.timeout:
        return {"answered": False, "after_s": None, "message": None, "closed": False}
    return {"answered": True, "after_s": round(time.monotonic() - t0, 3), "message": message_text(msg),
            "uid": None if msg is None else msg.get("uid"), "closed": msg is None}


def terminal_before_identity(port, size=65_000, tls=None, timeout=10.0):
    """(3) Before identifying: ``x y `` + ``size`` x ``a``, one line (the quadratic parser)."""
    with Conn(port, tls=tls) as c:
        c.read_msg()  # the identity request
        t0 = time.monotonic()
        c.send(b"x y " + b"a" * size + b"\n")
        return {"attack": "terminal_before_identity", "size": size, **answer_of(c, t0, timeout)}


def terminal_literal(port, size=2 * MB, tls=None, timeout=10.0):
    """(3) After identifying: ``Nope echo [1,1,...]``, a terminal-syntax line of ``size`` bytes."""
    with Conn(port, tls=tls).handshake(client_identity("Literal")) as c:
        t0 = time.monotonic()
        c.send(b"Nope echo [" + b"1," * (size // 2 - 7) + b"1]\n")
        return {"attack": "terminal_literal", "size": size, **answer_of(c, t0, timeout)}


# ------------------------------------------------------------------------------------------ 5
def big_request(size):
    """The three pieces of one request line with a ``size``-byte string (to a Service that does not
    exist: the Manager parses it and answers with a short error)."""
    return (b'{"args":["', b"a" * size,
            b'"],"attribute":"echo","error":false,"kwargs":{},"service":"Nope","uid":"big"}\n')


def big_line(port, size=100 * MB, tls=None, timeout=60.0):
    """(5) One line of ``size`` bytes; ``after_s``: from the last byte sent to the Manager's answer."""
    with Conn(port, tls=tls, timeout=timeout).handshake(client_identity("Big")) as c:
        for piece in big_request(size):
            c.send(piece)
        t0 = time.monotonic()
        return {"attack": "big_line", "size": size, **answer_of(c, t0, timeout)}


def partial_lines(port, count=4, size=100 * MB, hold=0.0, timeout=60.0):
    """(5) ``count`` Clients each send ``size`` bytes of a line and no LF, hold the connections up to
    ``hold`` s (or until the Manager closes them all), then close. ``dropped_after_s``: when the
    Manager closed each (None: still open when the attacker closed it)."""
    conns = []
    try:
        for i in range(count):
            c = Conn(port, timeout=timeout).handshake(client_identity(f"Partial{i}"))
            conns.append(c)
            c.send(big_request(size)[0])
            c.send(big_request(size)[1])
        t0 = time.monotonic()
        dropped = []
        for c in conns:
            gone = c.closed_within(max(0.0, t0 + hold - time.monotonic()))
            dropped.append(round(time.monotonic() - t0, 3) if gone else None)
    finally:
        for c in conns:
            c.close()
    return {"attack": "partial_lines", "count": count, "size": size, "hold_s": hold,
            "dropped_after_s": dropped}


# ------------------------------------------------------------------------------------------ 6
def nested(depth):
    return b"[" * depth + b"]" * depth


def deep_nesting_before(port, depth=1100, tls=None, timeout=10.0):
    """(6) The answer to the Manager's first prompt (identity, or password) is ``[``x depth ``]``x depth."""
    with Conn(port, tls=tls) as c:
        first = c.read_msg()
        t0 = time.monotonic()
        c.send(nested(depth) + b"\n")
        return {"attack": "deep_nesting_before", "prompt": (first or {}).get("attribute"),
                **answer_of(c, t0, timeout)}


def deep_nesting_after(port, depth=1100, tls=None, timeout=10.0, **credentials):
    """(6) An identified Client sends ``[``x depth ``]``x depth, then a request whose args nest as deep
    (uid ``deep``), then asks the Manager for its identity (uid ``alive``): is the session alive?"""
    with Conn(port, tls=tls).handshake(client_identity("Deep"), **credentials) as c:
        t0 = time.monotonic()
        c.send(nested(depth) + b"\n")
        array = answer_of(c, t0, timeout)
        c.send(b'{"uid":"deep","service":"Manager","attribute":"identity","args":' + nested(depth) + b"}\n")
        obj = answer_of(c, time.monotonic(), timeout)
        try:
            alive = c.call_manager("identity", uid="alive", timeout=timeout)
        except (OSError, socket.timeout):
            alive = None
        return {"attack": "deep_nesting_after", "array": array, "object": obj,
                "alive": bool(alive) and not alive.get("error") and alive.get("uid") == "alive"}


# ------------------------------------------------------------------------------------------ 7
def idle_clients(port, count, source="127.0.0.1", timeout=10.0):
    """(7) ``count`` identified idle Clients from one address. Returns (open connections, result);
    the caller closes them. ``refused`` holds the error texts of the connections turned away."""
    conns, refused = [], []
    for i in range(count):
        c = Conn(port, source=source, timeout=timeout)
        try:
            c.handshake(client_identity(f"Idle{i}"))
            conns.append(c)
        except ProtocolFailure as exc:
            refused.append(str(exc))
            c.close()
    return conns, {"attack": "idle_clients", "count": count, "open": len(conns), "refused": len(refused),
                   "refused_samples": refused[:3]}


class Piler:
    """The Client of :func:`inflight_flood`: ``count`` requests to ``Hole`` in batches of 1000 (uids
    ``p<i>``), and a count of the error replies by text (``errors``) with the first uids."""

    def __init__(self, count):
        self.count, self.next = count, 0
        self.errors, self.uids = {}, []

    def batch(self):
        i = self.next
        if i >= self.count:
            return None
        self.next = n = min(self.count, i + 1000)
        return b"".join(b'{"service":"Hole","attribute":"echo","args":[],"kwargs":{},"uid":"p%d"}\n' % k
                        for k in range(i, n))

    def answer(self, lines):
        for line in lines:
            msg = parse(line)
            text = message_text(msg)[:60]
            self.errors[text] = self.errors.get(text, 0) + 1
            if len(self.uids) < 5:
                self.uids.append(msg.get("uid"))

    def take_errors(self):
        errors, self.errors = self.errors, {}
        return errors


def inflight_flood(port, count=500_000, timeout=60.0, stop=NEVER):
    """(7) One Client sends ``count`` requests (uids ``p<i>``) to a Service that reads them and never
    answers; then the Service disconnects, so the Manager fails whatever is in flight at once (1.0
    does not: the wait for those failures ends after ``QUIET`` s without a byte).
    ``refused``: error replies while sending (``PermissionError: too many requests in flight``)."""
    hole = Conn(port).handshake(service_identity("Hole"))
    client = linked_client(port, "Piler", "Hole")
    piler = Piler(count)
    flows = [Flow(client, source=piler.batch, answer=piler.answer), Flow(hole)]
    t0 = time.monotonic()
    try:
        Pump(flows).run(t0 + timeout, lambda: stop() or flows[1].lines + sum(piler.errors.values()) >= count)
        refused, t1 = piler.take_errors(), time.monotonic()
        hole.close()
        flows[0].last_read = t1
        Pump(flows[:1]).run(t1 + min(timeout, 30.0), lambda: sum(piler.errors.values()) >= flows[1].lines
                            or time.monotonic() - flows[0].last_read > QUIET)
    finally:
        client.close()
        hole.close()
    failed = piler.take_errors()
    return {"attack": "inflight_flood", "count": count, "forwarded": flows[1].lines, "refused": refused,
            "failed_at_close": failed, "first_error_uids": piler.uids, "pile_up_s": round(t1 - t0, 3),
            "fail_all_s": round(flows[0].last_read - t1, 3) if failed else None}


# ------------------------------------------------------------------------------------------ 8
CONTROL_CHARACTERS = ("\x1b", "\x07", "\x00", "\u2028")


def control_char_names(port, chars=CONTROL_CHARACTERS, timeout=5.0):
    """(8) For each character and each kind, an identity whose name contains it: was it accepted?
    (The Manager never acknowledges an identity, so an identity request follows it.)"""
    out = {}
    for ch in chars:
        for kind, identity in (("client", client_identity(f"evil{ch}name")),
                               ("service", service_identity(f"Evil{ch}Svc"))):
            with Conn(port, timeout=timeout) as c:
                c.read_msg()
                c.send(reply_line(identity))
                c.send(request_line("Manager", "identity", uid="who"))
                msg = c.read_msg()
                accepted = msg is not None and not msg.get("error") and msg.get("uid") == "who"
                out[f"{kind} {ch!r}"] = {"accepted": accepted, "message": message_text(msg)}
    return {"attack": "control_char_names", "names": out}


# ------------------------------------------------------------------------------------------ CLI
def run_named(name, port, tls=None, duration=5.0, size=None, count=None, stop=NEVER):
    """The bench's attacks by name (one attacker each, as ``python -m bench --cases overload`` runs them)."""
    table = {
        "flood_notify": lambda: flood_notifications(port, duration, tls, stop),
        "flood_requests": lambda: flood_requests(port, duration, tls, stop),
        "identity_flood": lambda: identity_flood(port, duration, stop),
        "terminal_64k": lambda: terminal_before_identity(port, size or 65_000, tls, timeout=duration),
        "terminal_2mb": lambda: terminal_literal(port, size or 2 * MB, tls, timeout=duration),
        "line_100mb": lambda: big_line(port, size or 100 * MB, tls, timeout=duration),
        "nesting": lambda: {"before": deep_nesting_before(port, tls=tls, timeout=duration),
                            "after": deep_nesting_after(port, tls=tls, timeout=duration)},
        "inflight": lambda: inflight_flood(port, count or 500_000, timeout=duration, stop=stop),
    }
    return table[name]()


def rss_guard(pid, cap_mib):
    """(stop callable, watch): ``stop()`` is true once ``pid``'s RSS exceeds ``cap_mib``; no pid: never."""
    if not pid:
        return NEVER, None
    watch = RssWatch(pid, stop_above_kib=cap_mib * 1024).start()
    return watch.exceeded.is_set, watch


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.attacks")
    p.add_argument("name")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls-cert")
    p.add_argument("--duration", type=float, default=5.0, help="flood length, or how long to wait for an answer")
    p.add_argument("--size", type=int)
    p.add_argument("--count", type=int)
    p.add_argument("--mgr-pid", type=int,
                   help="the Manager's pid: a flood stops once its RSS passes --rss-cap-mib")
    p.add_argument("--rss-cap-mib", type=int, default=2048)
    args = p.parse_args(argv)
    stop, watch = rss_guard(args.mgr_pid, args.rss_cap_mib)
    try:
        result = run_named(args.name, args.port, client_tls_context(args.tls_cert), args.duration, args.size,
                           args.count, stop)
    except (OSError, ProtocolFailure) as exc:
        result = {"failure": f"{type(exc).__name__}: {exc}"}
    if watch is not None:
        watch.stop()
        result["stopped_at_rss_cap"] = watch.exceeded.is_set()
    print(orjson.dumps(result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
