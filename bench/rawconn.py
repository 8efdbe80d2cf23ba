"""Raw connections for the overload attacks and the canary (:mod:`bench.attacks`, :mod:`bench.canary`).

* :class:`Conn`: one blocking connection to a Manager on the loopback, optionally from a chosen source
  address (``127.1.x.y``: the whole of 127/8 is the loopback on Linux) and over TLS, with the
  handshake and its prompts (``password``, ``username``, ``identity``) answered as a 1.0 peer does.
* :func:`first_lines`: the next line of each of many connections, read together (``selectors``).
* :class:`Pump`: one thread moving bytes for several non-blocking connections at once (floods): each
  :class:`Flow` writes batches as fast as its socket takes them, and reads (and answers) or never reads.

Loopback only: a host that is not ``127.*`` is refused, so an attack cannot leave the machine.
"""
import collections
import selectors
import socket
import ssl
import time

import orjson

from bench.wire import CRLF, RECV_SIZE, TLS_SERVER_NAME, TLS_WOULD_BLOCK, LineFramer, ProtocolFailure, drain_tls

CLOSED_ERRORS = (ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError)


def reply_line(result, uid="", requester=None):
    """A result line as a peer sends it (identity, password, username answers, Service replies)."""
    return orjson.dumps({"error": False, "requester": requester, "result": result, "uid": uid}) + CRLF


def request_line(service, attribute, args=(), uid="", kwargs=None):
    return orjson.dumps({"args": list(args), "attribute": attribute, "error": False,
                         "kwargs": kwargs or {}, "service": service, "uid": uid}) + CRLF


def parse(line):
    """A Manager line as a dict; ``{"raw": text}`` when it is not a JSON object."""
    try:
        msg = orjson.loads(line)
    except orjson.JSONDecodeError:
        return {"raw": line[:300].decode("utf-8", "replace")}
    return msg if isinstance(msg, dict) else {"raw": line[:300].decode("utf-8", "replace")}


def client_identity(name):
    return {"type": "client", "name": name, "language": "raw", "os": "Linux"}


def service_identity(name):
    return {"type": "service", "name": name, "attributes": {"echo": "(*args, **kwargs)"},
            "max_clients": -1, "language": "raw", "os": "Linux"}


def message_text(msg):
    """The error message (or raw text) of a Manager line; '' when there is none; None at EOF."""
    if msg is None:
        return None
    return msg.get("message") or msg.get("raw") or ""


def check_loopback(host):
    if not host.startswith("127."):
        raise ValueError(f"attacks run on the loopback only, not against {host!r}")


class Conn:
    """A blocking raw connection; ``read_line`` returns None at EOF (a reset counts as EOF)."""

    def __init__(self, port, host="127.0.0.1", source=None, tls=None, timeout=10.0, rcvbuf=None):
        check_loopback(host)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if source:
                sock.bind((source, 0))
            sock.settimeout(timeout)
            sock.connect((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=TLS_SERVER_NAME)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.timeout = timeout
        self.framer = LineFramer()
        self.lines = collections.deque()
        self.eof = False

    def send(self, data):
        self.sock.sendall(data)

    def feed(self, data):
        """Frame received bytes; b'' marks EOF."""
        if not data:
            self.eof = True
        else:
            self.lines.extend(self.framer.feed(data))

    def read_line(self, timeout=None):
        """The next line (bytes, no LF), None at EOF; raises ``socket.timeout`` after ``timeout``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.lines:
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no line in time")
            self.sock.settimeout(left)
            try:
                self.feed(self.sock.recv(RECV_SIZE))
            except CLOSED_ERRORS:
                self.eof = True
        return self.lines.popleft()

    def read_msg(self, timeout=None):
        line = self.read_line(timeout)
        return None if line is None else parse(line)

    def read_until(self, predicate, timeout=None):
        """The first message for which ``predicate`` is true (others are skipped); None at EOF."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            msg = self.read_msg(max(0.0, deadline - time.monotonic()))
            if msg is None or predicate(msg):
                return msg

    def handshake(self, identity, password=None, username=None, user_password=None):
        """Answer the Manager's prompts, then send ``identity``; raises ProtocolFailure on an error."""
        answers = {"password": password, "username": username}
        while True:
            msg = self.read_msg()
            if msg is None:
                raise ProtocolFailure("the Manager closed the connection during the handshake")
            attribute = msg.get("attribute")
            if msg.get("error") or attribute not in ("identity", "password", "username"):
                raise ProtocolFailure(f"handshake refused: {msg.get('message', msg)}")
            if attribute == "identity":
                self.send(reply_line(identity))
                return self
            if attribute == "password" and username is not None:
                answers["password"] = user_password  # a login: the user's password, not the Manager's
            self.send(reply_line(answers[attribute]))

    def call_manager(self, attribute, *args, uid="m", timeout=None):
        """A Manager request and the message that answers it (by uid, or any error: 1.0 drops uids)."""
        self.send(request_line("Manager", attribute, args, uid))
        return self.read_until(lambda m: m.get("uid") == uid or m.get("error"), timeout)

    def closed_within(self, seconds):
        """True when the Manager closes (EOF or reset) within ``seconds``; data meanwhile is dropped."""
        deadline = time.monotonic() + seconds
        self.lines.clear()
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                if not self.sock.recv(RECV_SIZE):
                    self.eof = True
            except socket.timeout:
                return False
            except CLOSED_ERRORS:
                self.eof = True
            except OSError:
                self.eof = True
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def next_lines(conns, timeout):
    """``{conn: its next line, or None at EOF}`` for the connections that have one within ``timeout``;
    the others are left out. Plain sockets only; the connections are read together (``selectors``),
    and it returns as soon as at least one has a line, after taking what else is already there."""
    out, sel = {}, selectors.DefaultSelector()
    for c in conns:
        if c.lines or c.eof:
            out[c] = c.lines.popleft() if c.lines else None
        else:
            c.sock.setblocking(False)
            sel.register(c.sock, selectors.EVENT_READ, c)
    deadline = time.monotonic() + timeout
    while sel.get_map():
        if out:  # one has a line: take only what else is already there
            events = sel.select(0)
            if not events:
                break
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            events = sel.select(min(0.2, left))
        for key, _ in events:
            c = key.data
            try:
                c.feed(c.sock.recv(RECV_SIZE))
            except BlockingIOError:
                continue
            except OSError:
                c.eof = True
            if c.lines or c.eof:
                out[c] = c.lines.popleft() if c.lines else None
                sel.unregister(c.sock)
    sel.close()
    for c in conns:
        c.sock.settimeout(c.timeout)
    return out


def first_lines(conns, timeout):
    """``{conn: next line or None}`` for every connection (None: EOF, or nothing within ``timeout``)."""
    out, pending = {}, list(conns)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        out.update(next_lines(pending, deadline - time.monotonic()))
        pending = [c for c in pending if c not in out]
    return {c: out.get(c) for c in conns}


class Flow:
    """One connection in a :class:`Pump`.

    ``source()`` gives the next bytes to write (None: nothing more); ``answer(lines)`` gets the
    complete lines read and returns bytes to write back (or None); ``read=False`` never reads.
    Counters: ``sent`` and ``received`` bytes, ``lines`` read; ``closed`` is the time the Manager
    closed the connection (or None), ``error`` why.
    """

    def __init__(self, conn, source=None, answer=None, read=True):
        self.conn, self.sock = conn, conn.sock
        self.source, self.answer, self.read = source, answer, read
        self.tls = isinstance(conn.sock, ssl.SSLSocket)
        self.out = collections.deque()
        self.view = None
        self.sent = self.received = self.lines = 0
        self.closed = self.error = None
        self.last_read = time.monotonic()

    def wants_write(self):
        if self.view is None:
            if not self.out and self.source is not None:
                data = self.source()
                if data:
                    self.out.append(data)
            if self.out:
                self.view = memoryview(self.out.popleft())
        return self.view is not None

    def on_write(self):
        try:
            n = self.sock.send(self.view)
        except TLS_WOULD_BLOCK:
            return
        self.sent += n
        self.view = self.view[n:] if n < len(self.view) else None

    def on_read(self):
        try:
            data = self.sock.recv(RECV_SIZE)
            if data and self.tls:
                data = drain_tls(self.sock, data)
        except TLS_WOULD_BLOCK:
            return
        if not data:
            raise ConnectionResetError("EOF")
        self.received += len(data)
        self.last_read = time.monotonic()
        lines = self.conn.framer.feed(data)
        self.lines += len(lines)
        if self.answer is not None and lines:
            reply = self.answer(lines)
            if reply:
                self.out.append(reply)


class Pump:
    """Move bytes for ``flows`` until ``deadline`` (monotonic), ``stop()`` is true, or every flow
    is closed; a flow the Manager closes is recorded and dropped from the loop."""

    def __init__(self, flows):
        self.flows = flows
        for f in flows:
            f.sock.setblocking(False)

    def run(self, deadline, stop=lambda: False):
        sel = selectors.DefaultSelector()
        live = list(self.flows)
        while live and time.monotonic() < deadline and not stop():
            for f in live:
                events = selectors.EVENT_READ if f.read else 0
                events |= selectors.EVENT_WRITE if f.wants_write() else 0
                if events:
                    sel.register(f.sock, events, f)
            for key, events in sel.select(0.05):
                self._step(key.data, events)
            for f in live:  # decrypted bytes OpenSSL holds do not make the socket readable
                if f.tls and f.read and f.closed is None and f.sock.pending():
                    self._step(f, selectors.EVENT_READ)
            for key in list(sel.get_map().values()):
                sel.unregister(key.fileobj)
            live = [f for f in live if f.closed is None]
        sel.close()

    @staticmethod
    def _step(flow, events):
        try:
            if events & selectors.EVENT_READ:
                flow.on_read()
            if events & selectors.EVENT_WRITE and flow.view is not None:
                flow.on_write()
        except OSError as exc:
            flow.closed, flow.error = time.monotonic(), f"{type(exc).__name__}: {exc}"
