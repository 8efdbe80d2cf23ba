"""Raw MSL-Network 1.0 protocol peers used as load: no msl-network (or netmgr) code here.

Run as ``python -m bench.peers ROLE [options]``; every role talks to 127.0.0.1 only, over plain TCP,
or over TLS with ``--tls-cert CERT`` (the Manager's certificate, trusted as ``cafile`` and checked for
the name ``localhost``, as a 1.0 Client trusts the certificate it saved).

* ``service``: the Echo Service. Blocking socket; all the replies produced by one ``recv`` go out in
  one ``sendall``. Prints ``READY`` once its identity has been sent. ``--recv-size`` (default
  RECV_SIZE, 256 KiB) is the size asked of each ``recv``: above glibc's mmap threshold (128 KiB)
  every ``recv`` maps and unmaps its buffer (~14 us here), so the floor of ``lib_seq`` uses 64 KiB.
* ``load``: N raw Clients in one process (``selectors``), each keeping W requests in flight. Connects,
  links with the Echo Service, prints ``READY``, then waits for ``GO <t_start> <t_ms> <t_me>`` on stdin
  (absolute ``time.monotonic()`` values, so several load processes share one window). Replies that
  arrive inside [t_ms, t_me] are counted and their round trip recorded; sending stops at t_me and the
  requests still in flight are drained. Results go to ``--out`` as JSON, then ``DONE`` is printed.
* ``idle``: opens ``--count`` connections that each complete the identity handshake as a client and
  stay open; measures the Manager's handshakes/s, CPU time and RSS growth (``--mgr-pid``).

Framing follows reference 1.1: lines end with LF, a CR before it is tolerated, several messages may
arrive in one ``recv`` and one message may span many. Every Manager line is parsed as JSON (compact or
spaced), never string-matched.

TLS: an ``SSLSocket.recv`` returns at most one TLS record (16 KiB), and OpenSSL may hold decrypted
bytes that the kernel no longer reports as readable. So after each read the peers also take what is
already there (``drain_tls``/``drain_tls_blocking``: ``pending()``, then whatever the kernel holds), so
that one "recv" still means "everything that had arrived", as with plain TCP, and nothing is left
behind a ``select`` that will not fire again.
"""
import argparse
import errno
import os
import selectors
import signal
import select
import socket
import ssl
import sys
import time

import orjson

CRLF = b"\r\n"
RECV_SIZE = 1 << 18
TLS_SERVER_NAME = "localhost"  # in the subjectAltName of netmgr's and of 1.0's certificates
TLS_WOULD_BLOCK = (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError)

CLIENT_IDENTITY = {"type": "client", "name": "bench", "language": "Python", "os": "Linux"}
SERVICE_IDENTITY = {
    "type": "service",
    "name": "Echo",
    "attributes": {"echo": "(*args, **kwargs)"},
    "max_clients": -1,
    "language": "Python",
    "os": "Linux",
}


class ProtocolFailure(Exception):
    """The Manager sent something the benchmark cannot continue with."""


class LineFramer:
    """Split a byte stream on LF; a partial line is kept (as chunks, so long lines cost O(n))."""

    __slots__ = ("_parts",)

    def __init__(self):
        self._parts = []

    def feed(self, data):
        if b"\n" not in data:
            self._parts.append(data)
            return []
        if self._parts:
            self._parts.append(data)
            data = b"".join(self._parts)
            self._parts = []
        lines = data.split(b"\n")
        tail = lines.pop()
        if tail:
            self._parts.append(tail)
        # drop blank lines ("" or a lone "\r") without copying long ones
        return [line for line in lines if len(line) > 1 or (line and line != b"\r")]


def identity_reply(identity):
    return orjson.dumps({"error": False, "requester": None, "result": identity, "uid": ""}) + CRLF


def manager_request(attribute, args, uid):
    msg = {"args": args, "attribute": attribute, "error": False, "kwargs": {}, "service": "Manager", "uid": uid}
    return orjson.dumps(msg) + CRLF


def check_identity_request(line):
    """Return the parsed first line of the Manager; it must be the identity request (no auth)."""
    try:
        msg = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ProtocolFailure(f"first line is not JSON: {line[:200]!r}") from exc
    if not isinstance(msg, dict) or msg.get("attribute") != "identity" or msg.get("error"):
        raise ProtocolFailure(f"expected the identity request, got {line[:300]!r}")
    return msg


def client_tls_context(cert):
    """The client side of TLS as 1.0's Client builds it: the Manager's certificate as ``cafile``."""
    return ssl.create_default_context(cafile=str(cert)) if cert else None


def drain_tls(sock, data):
    """Non-blocking ``SSLSocket``: append what can be read now (up to RECV_SIZE) to ``data``."""
    parts, size = [data], len(data)
    while size < RECV_SIZE:
        try:
            more = sock.recv(RECV_SIZE)
        except TLS_WOULD_BLOCK:
            break
        if not more:
            break  # EOF: returned by the next read
        parts.append(more)
        size += len(more)
    return b"".join(parts) if len(parts) > 1 else data


def drain_tls_blocking(sock, data, poller):
    """Blocking ``SSLSocket``: append the decrypted bytes OpenSSL holds and the records that have
    already arrived (``poller`` has the socket registered for POLLIN), up to RECV_SIZE."""
    parts, size = [data], len(data)
    while size < RECV_SIZE and (sock.pending() or poller.poll(0)):
        more = sock.recv(RECV_SIZE)
        if not more:
            break
        parts.append(more)
        size += len(more)
    return b"".join(parts) if len(parts) > 1 else data


class BlockingPeer:
    """A blocking raw connection (TLS when ``tls`` is an ``SSLContext``): handshake, then request/reply helpers."""

    def __init__(self, port, identity, host="127.0.0.1", timeout=10.0, tls=None):
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            try:
                sock = tls.wrap_socket(sock, server_hostname=TLS_SERVER_NAME)
            except BaseException:
                sock.close()
                raise
        self.sock = sock
        self.framer = LineFramer()
        self.lines = []
        check_identity_request(self.read_line())
        self.sock.sendall(identity_reply(identity))

    def read_line(self):
        while not self.lines:
            data = self.sock.recv(RECV_SIZE)
            if not data:
                raise ProtocolFailure("the Manager closed the connection")
            self.lines.extend(self.framer.feed(data))
        return self.lines.pop(0)

    def call_manager(self, attribute, args, uid):
        """Send a Manager request and return the parsed reply with the same uid."""
        self.sock.sendall(manager_request(attribute, args, uid))
        while True:
            msg = orjson.loads(self.read_line())
            if isinstance(msg, dict) and "result" in msg:
                if msg.get("error"):
                    raise ProtocolFailure(f"Manager error for {attribute}{args}: {msg.get('message')}")
                if msg.get("uid") == uid:
                    return msg["result"]
            # anything else (e.g. a notification) is ignored

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def wait_for_service(port, name, timeout=20.0, tls=None):
    """Ask the Manager's identity until ``name`` is among its services; returns seconds waited."""
    t0 = time.monotonic()
    peer = BlockingPeer(port, CLIENT_IDENTITY, timeout=timeout, tls=tls)
    try:
        n = 0
        while True:
            n += 1
            ident = peer.call_manager("identity", [], f"probe-{n}")
            if name in (ident.get("services") or {}):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise ProtocolFailure(f"service {name!r} not registered after {timeout} s")
            time.sleep(0.01)
    finally:
        peer.close()


# ---------------------------------------------------------------------------------------------
# /proc readers (duplicated from procs.py so this module imports nothing from the package)

def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15 of the full line)


def machine_busy_ticks():
    with open("/proc/stat", "rb") as f:
        fields = f.readline().split()
    return int(fields[1]) + int(fields[2]) + int(fields[3])  # user + nice + system


def rss_kib(pid):
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1])
    raise ProtocolFailure(f"no VmRSS for pid {pid}")


# ---------------------------------------------------------------------------------------------
# Echo Service

def run_service(port, name, tls=None, recv_size=RECV_SIZE):
    """Serve until EOF or SIGTERM, then print ``SERVED <requests> <recv batches>``."""
    identity = dict(SERVICE_IDENTITY, name=name)
    peer = BlockingPeer(port, identity, tls=tls)
    peer.sock.settimeout(None)
    stats = [0, 0]
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    print("READY", flush=True)
    try:
        serve(peer.sock, peer.framer, peer.lines, stats, recv_size)
    except SystemExit:
        pass
    finally:
        peer.close()
        print(f"SERVED {stats[0]} {stats[1]}", flush=True)
    return 0


def _exit_on_sigterm(signum, frame):
    raise SystemExit(0)


def serve(sock, framer, pending, stats, recv_size=RECV_SIZE):
    """Answer echo requests; ``stats`` = [requests served, batches], updated after each sendall."""
    loads, dumps = orjson.loads, orjson.dumps
    poller = None
    if isinstance(sock, ssl.SSLSocket):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
    while True:
        if pending:
            lines, pending = pending, None
        else:
            try:
                data = sock.recv(recv_size)
                if data and poller is not None:
                    data = drain_tls_blocking(sock, data, poller)
            except OSError:
                return
            if not data:
                return
            lines = framer.feed(data)
        out = []
        for line in lines:
            msg = loads(line)
            if not isinstance(msg, dict) or "result" in msg:
                continue  # replies/notifications are not for us
            if msg.get("attribute") == "echo":
                reply = {"error": False, "requester": msg.get("requester"),
                         "result": [msg.get("args", []), msg.get("kwargs", {})], "uid": msg.get("uid", "")}
            else:
                reply = {"error": True, "message": f"AttributeError: no attribute {msg.get('attribute')!r}",
                         "requester": msg.get("requester"), "result": None, "traceback": [],
                         "uid": msg.get("uid", "")}
            out.append(dumps(reply))
            out.append(CRLF)
        if out:
            try:
                sock.sendall(b"".join(out))
            except OSError:
                return
            stats[0] += len(out) // 2
            stats[1] += 1


# ---------------------------------------------------------------------------------------------
# Load generator

class LoadClient:
    __slots__ = ("idx", "sock", "framer", "pending", "fresh", "out", "seq", "prefix", "writing")

    def __init__(self, idx, sock, framer, prefix):
        self.idx = idx
        self.sock = sock
        self.framer = framer
        self.pending = {}  # uid (str) -> send time (ns)
        self.fresh = []  # uids queued in out, stamped when flushed
        self.out = []
        self.seq = 0
        self.prefix = prefix  # request bytes up to the uid value
        self.writing = False


def connect_load_client(port, idx, prefix, tls=None):
    peer = BlockingPeer(port, CLIENT_IDENTITY, tls=tls)
    peer.call_manager("link", ["Echo"], "link")
    if peer.lines:
        raise ProtocolFailure(f"unexpected extra lines after link: {peer.lines[:2]!r}")
    peer.sock.setblocking(False)
    return LoadClient(idx, peer.sock, peer.framer, prefix)


def request_prefix(payload_size):
    # Equivalent to orjson.dumps of {"args":[payload],"attribute":"echo","error":false,"kwargs":{},
    # "service":"Echo","uid":UID}; built once so the generator does not pay a dumps per request.
    payload = b"x" * payload_size
    return b'{"args":["' + payload + b'"],"attribute":"echo","error":false,"kwargs":{},"service":"Echo","uid":"'


def run_load(args):
    prefix = request_prefix(args.payload)
    assert orjson.loads(prefix + b'u"}')["args"][0] == "x" * args.payload
    tls = client_tls_context(args.tls_cert)
    clients = [connect_load_client(args.port, args.first_client + i, prefix, tls) for i in range(args.clients)]
    print("READY", flush=True)
    go = sys.stdin.readline().split()
    if not go or go[0] != "GO":
        return 2
    t_start, t_ms, t_me = (int(float(x) * 1e9) for x in go[1:4])
    result = drive(clients, args, t_start, t_ms, t_me)
    with open(args.out, "wb") as f:
        f.write(orjson.dumps(result))
    for c in clients:
        try:
            c.sock.close()
        except OSError:
            pass
    print("DONE", flush=True)
    return 0


def drive(clients, args, t_start, t_ms, t_me):
    now_ns = time.monotonic_ns
    loads = orjson.loads
    window = args.window
    payload_size = args.payload
    drain_ns = int(args.drain_timeout * 1e9)
    stall_ns = int(args.stall_timeout * 1e9)
    tls = bool(args.tls_cert)
    sel = selectors.DefaultSelector()
    for c in clients:
        sel.register(c.sock, selectors.EVENT_READ, c)

    lat = []  # round trips (ns) of replies received inside the window
    completed_total = 0
    batches = 0
    errors = 0
    error_samples = []
    failure = None
    stopping = False

    delay = (t_start - now_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)

    def enqueue(c):
        c.seq += 1
        uid = f"{c.idx}-{c.seq}"
        c.fresh.append(uid)
        c.out.append(c.prefix + uid.encode() + b'"}\r\n')

    def flush(c):
        if c.fresh:  # the round trip starts when the request is handed to the kernel
            t = now_ns()
            pending = c.pending
            for uid in c.fresh:
                pending[uid] = t
            c.fresh.clear()
        data = b"".join(c.out) if len(c.out) != 1 else c.out[0]
        c.out.clear()
        try:
            n = c.sock.send(data)
        except TLS_WOULD_BLOCK:
            # TLS: nothing was accepted; OpenSSL wants the same bytes again (a longer buffer that
            # starts with them is allowed), which the next flush sends since data stays first in out
            n = 0
        if n < len(data):
            c.out.append(data[n:])
            if not c.writing:
                c.writing = True
                sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        elif c.writing:
            c.writing = False
            sel.modify(c.sock, selectors.EVENT_READ, c)

    for c in clients:
        for _ in range(window):
            enqueue(c)
        flush(c)
    last_progress = now_ns()

    while True:
        now = now_ns()
        if not stopping and now >= t_me:
            stopping = True
        in_flight = sum(len(c.pending) for c in clients)
        if stopping and in_flight == 0:
            break
        if stopping and now - t_me > drain_ns:
            failure = failure or f"{in_flight} request(s) unanswered {args.drain_timeout} s after the window"
            break
        if now - last_progress > stall_ns:
            failure = f"stalled: no reply for {args.stall_timeout} s with {in_flight} request(s) in flight"
            break
        events = sel.select(0.25)
        if not events:
            continue
        for key, mask in events:
            c = key.data
            if mask & selectors.EVENT_READ:
                try:
                    data = c.sock.recv(RECV_SIZE)
                    if data and tls:
                        data = drain_tls(c.sock, data)
                except TLS_WOULD_BLOCK:  # e.g. only part of a TLS record has arrived
                    data = None
                except OSError as exc:
                    failure = f"client {c.idx}: {exc!r}"
                    break
                if data == b"":
                    failure = f"client {c.idx}: the Manager closed the connection"
                    break
                if data:
                    t = now_ns()
                    lines = c.framer.feed(data)
                    if lines:
                        last_progress = t
                        batches += 1
                        in_window = t_ms <= t <= t_me
                        for line in lines:
                            msg = loads(line)
                            sent = c.pending.pop(msg.get("uid"), None) if type(msg) is dict else None
                            if sent is None:
                                # e.g. an error with uid "": the request it belongs to is unknown
                                errors += 1
                                if len(error_samples) < 5:
                                    error_samples.append(line[:300].decode("utf-8", "replace"))
                                failure = f"client {c.idx}: reply with unknown uid: {line[:200]!r}"
                                continue
                            completed_total += 1
                            if msg.get("error"):
                                errors += 1
                                if len(error_samples) < 5:
                                    error_samples.append(str(msg.get("message"))[:300])
                            else:
                                res = msg.get("result")
                                if len(res[0][0]) != payload_size:
                                    errors += 1
                            if in_window:
                                lat.append(t - sent)
                            if not stopping:
                                enqueue(c)
                        if c.out:
                            flush(c)
            if mask & selectors.EVENT_WRITE and c.out:
                flush(c)
        if failure:
            break

    sel.close()
    return {
        "completed_in_window": len(lat),
        "completed_total": completed_total,
        "recv_batches": batches,
        "errors": errors,
        "error_samples": error_samples,
        "failure": failure,
        "window_s": (t_me - t_ms) / 1e9,
        "lat_ns": lat,
    }


# ---------------------------------------------------------------------------------------------
# Idle connections

class IdleConn:
    """One idle connection: plain ``stage`` is "line" from the start; TLS goes "connect" -> "tls" -> "line"."""

    __slots__ = ("sock", "framer", "t_conn", "stage")

    def __init__(self, sock, stage):
        self.sock = sock
        self.framer = LineFramer()
        self.t_conn = time.monotonic_ns()
        self.stage = stage


def run_idle(args):
    """Open ``count`` client connections, ``parallel`` handshakes at a time, and keep them open.

    With TLS, each connection is connected, then does the TLS handshake (non-blocking), then reads
    the identity request; the round trip timed is from connect to that request, TLS included.
    """
    mgr = args.mgr_pid
    tls = client_tls_context(args.tls_cert)
    probe = BlockingPeer(args.port, CLIENT_IDENTITY, tls=tls)
    base_clients = len(probe.call_manager("identity", [], "probe-0")["clients"])
    rss0, cpu0 = rss_kib(mgr), cpu_ticks(mgr)
    me0, busy0 = cpu_ticks(os.getpid()), machine_busy_ticks()
    reply = identity_reply(CLIENT_IDENTITY)
    sel = selectors.DefaultSelector()
    open_conns = []
    first_line_ns = []
    started = done = 0
    failure = None
    t0 = time.monotonic_ns()

    def start_one():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        conn = IdleConn(s, "connect" if tls else "line")
        err = s.connect_ex(("127.0.0.1", args.port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            raise OSError(err, os.strerror(err))
        open_conns.append(conn)
        sel.register(s, selectors.EVENT_WRITE if tls else selectors.EVENT_READ, conn)

    def tls_step(conn):
        """Advance the TLS handshake; (re)register for what it waits for."""
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            sel.register(conn.sock, selectors.EVENT_READ, conn)
            return
        except ssl.SSLWantWriteError:
            sel.register(conn.sock, selectors.EVENT_WRITE, conn)
            return
        conn.stage = "line"
        sel.register(conn.sock, selectors.EVENT_READ, conn)

    deadline = t0 + int(args.timeout * 1e9)
    try:
        while done < args.count:
            while started < args.count and started - done < args.parallel:
                start_one()
                started += 1
            if time.monotonic_ns() > deadline:
                failure = f"only {done}/{args.count} handshakes after {args.timeout} s"
                break
            for key, _ in sel.select(0.5):
                conn = key.data
                if conn.stage != "line":
                    sel.unregister(key.fileobj)
                    if conn.stage == "connect":
                        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            raise OSError(err, os.strerror(err))
                        conn.sock = tls.wrap_socket(conn.sock, server_hostname=TLS_SERVER_NAME,
                                                    do_handshake_on_connect=False)
                        conn.stage = "tls"
                    tls_step(conn)
                    continue
                try:
                    data = conn.sock.recv(65536)
                    if data and tls:
                        data = drain_tls(conn.sock, data)
                except TLS_WOULD_BLOCK:
                    continue
                if not data:
                    raise ProtocolFailure("the Manager closed a connection during the handshake")
                lines = conn.framer.feed(data)
                if lines:
                    first_line_ns.append(time.monotonic_ns() - conn.t_conn)
                    check_identity_request(lines[0])
                    sel.unregister(conn.sock)
                    conn.sock.sendall(reply)  # tiny: fits in the empty send buffer
                    done += 1
    except (OSError, ProtocolFailure) as exc:
        failure = f"after {done} handshakes: {exc!r}"

    # The Manager never acknowledges an identity (1.3): wait until it lists every connection.
    registered = 0
    n = 0
    while failure is None:
        n += 1
        registered = len(probe.call_manager("identity", [], f"probe-{n}")["clients"]) - base_clients
        if registered >= args.count:
            break
        if time.monotonic_ns() > deadline:
            failure = f"only {registered}/{args.count} clients registered after {args.timeout} s"
            break
        time.sleep(0.005)
    t1 = time.monotonic_ns()
    rss1, cpu1 = rss_kib(mgr), cpu_ticks(mgr)
    me1, busy1 = cpu_ticks(os.getpid()), machine_busy_ticks()
    probe.close()
    result = {
        "count": args.count,
        "handshakes": done,
        "registered": registered,
        "elapsed_s": (t1 - t0) / 1e9,
        "cpu_ticks": cpu1 - cpu0,
        "own_cpu_ticks": me1 - me0,
        "other_cpu_ticks": max(0, (busy1 - busy0) - (cpu1 - cpu0) - (me1 - me0)),
        "rss_kib_before": rss0,
        "rss_kib_after": rss1,
        "first_line_ns": first_line_ns,
        "failure": failure,
    }
    with open(args.out, "wb") as f:
        f.write(orjson.dumps(result))
    print("DONE", flush=True)
    sys.stdin.readline()  # keep the connections open until told (or until stdin closes)
    for conn in open_conns:
        conn.sock.close()
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.peers")
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("service")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--name", default="Echo")
    s.add_argument("--tls-cert", help="connect over TLS, trusting this certificate")
    s.add_argument("--recv-size", type=int, default=RECV_SIZE, help="bytes asked of each recv")
    lo = sub.add_parser("load")
    lo.add_argument("--port", type=int, required=True)
    lo.add_argument("--clients", type=int, required=True)
    lo.add_argument("--first-client", type=int, default=0)
    lo.add_argument("--window", type=int, required=True)
    lo.add_argument("--payload", type=int, required=True)
    lo.add_argument("--drain-timeout", type=float, default=10.0)
    lo.add_argument("--stall-timeout", type=float, default=10.0)
    lo.add_argument("--tls-cert", help="connect over TLS, trusting this certificate")
    lo.add_argument("--out", required=True)
    i = sub.add_parser("idle")
    i.add_argument("--port", type=int, required=True)
    i.add_argument("--count", type=int, required=True)
    i.add_argument("--parallel", type=int, default=64)
    i.add_argument("--mgr-pid", type=int, required=True)
    i.add_argument("--timeout", type=float, default=60.0)
    i.add_argument("--tls-cert", help="connect over TLS, trusting this certificate")
    i.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.role == "service":
        return run_service(args.port, args.name, client_tls_context(args.tls_cert), args.recv_size)
    if args.role == "load":
        return run_load(args)
    return run_idle(args)


if __name__ == "__main__":
    sys.exit(main())
