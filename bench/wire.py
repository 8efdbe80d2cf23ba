"""The raw MSL-Network 1.0 protocol as the benchmark's peers speak it: no msl-network (or netmgr) code.

Framing follows reference 1.1: lines end with LF, a CR before it is tolerated, several messages may
arrive in one ``recv`` and one message may span many. Every Manager line is parsed as JSON (compact or
spaced), never string-matched.

TLS: an ``SSLSocket.recv`` returns at most one TLS record (16 KiB), and OpenSSL may hold decrypted
bytes that the kernel no longer reports as readable. So after each read the peers also take what is
already there (``drain_tls``/``drain_tls_blocking``: ``pending()``, then whatever the kernel holds), so
that one "recv" still means "everything that had arrived", as with plain TCP, and nothing is left
behind a ``select`` that will not fire again.

Also here: what every peer process shares (:class:`BlockingPeer`, the ``GO`` line, the result file).
"""
import socket
import ssl
import sys

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

    def link_echo(self):
        """Link with the Echo Service; nothing else may have arrived (the caller reads raw after this)."""
        self.call_manager("link", ["Echo"], "link")
        if self.lines:
            raise ProtocolFailure(f"unexpected extra lines after link: {self.lines[:2]!r}")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# What every peer process does with its parent (bench.runner)

def read_go():
    """Wait for ``GO <t_start> <t_ms> <t_me>`` on stdin; the three times in ``monotonic_ns``, or None."""
    go = sys.stdin.readline().split()
    if not go or go[0] != "GO":
        return None
    t_start, t_ms, t_me = (int(float(x) * 1e9) for x in go[1:4])
    return t_start, t_ms, t_me


def write_result(path, result):
    """Write ``result`` as JSON to ``path``, then tell the parent with ``DONE``."""
    with open(path, "wb") as f:
        f.write(orjson.dumps(result))
    print("DONE", flush=True)
