"""One connected peer: handshake, read loop, bounded writer queue, cleanup.

The session moves bytes; what a line means, and what must be sent because of it, is decided by
the pure :mod:`netmgr.daemon.routing` (and the Manager's attributes by
:mod:`netmgr.daemon.attributes`), which return effects that the session delivers.

A session has one reader greenlet (the handler the server spawns from its pool) and one writer
greenlet fed by a bounded queue: ``send()`` only enqueues, so a peer that stops reading never
delays anyone else (reference 6.16). All complete lines of a received chunk are dispatched
before the reader blocks again, which lets the writers flush each destination's messages in one
``sendall``. Whatever ends a session, ``finally`` releases its links, locks and in-flight
requests (STYLE.md rule 7).
"""
import collections

import gevent

from netmgr import protocol
from netmgr.daemon import log
from netmgr.protocol import LineReader, dumps, loads
from netmgr.daemon import routing
from netmgr.daemon.registry import check_identity
from netmgr.errors import HandshakeFailed, ProtocolError, Refused

logger = log.get_logger("netmgr.daemon.session")

#: Lines at least this long are parsed in the hub's threadpool (STYLE.md rule 4).
THREADPOOL_PARSE_BYTES = 1 << 20


class Session:
    """One connected peer: handshake, read loop, writer queue, cleanup."""

    def __init__(self, manager, sock, address):
        self.manager = manager
        self.sock = sock
        self.ip, self.port = address[0], address[1]
        self.address = None  # "host:port" as 1.0 names peers (reference 1.4)
        self.domain = None  # reverse DNS of the peer ("localhost" for loopback)
        self.hostname = None  # 1.0's short name: the domain's first label, or the dotted IPv4
        self.name = None  # network name, "Name[host:port]"
        self.record = None  # registry.Client or registry.Service once identified
        self.is_admin = False
        self.challenging = False  # an inline admin login is waiting for its answers
        self.closed = False
        self.log = logger.bind(peer=f"{self.ip}:{self.port}")
        self._reader = LineReader(manager.HANDSHAKE_LINE_LIMIT)
        self._lines = collections.deque()
        self._eof = False
        self._hangup = False  # the peer asked to disconnect while an inline login waited
        self._out = collections.deque()
        self._queued = 0
        self._dirty = False  # a flush of this session is scheduled
        self._tls = False  # self.sock is a netmgr.daemon.tls.TLSStream
        self._writer = None
        self._greenlet = None

    # ------------------------------------------------------------------ lifecycle
    def run(self):
        self._greenlet = gevent.getcurrent()
        cfg = self.manager.cfg
        flush = False
        try:
            try:
                with gevent.Timeout(cfg.handshake_timeout, HandshakeFailed("handshake timed out")):
                    tls = self.manager.wrap_tls(self.sock)  # the Manager speaks after TLS
                    self._tls = tls is not self.sock
                    self.sock = tls
                    identified = self._handshake()
            except HandshakeFailed as exc:
                self.log.info("handshake_failed", reason=str(exc))
                identified = False
            flush = True  # a rejection error must reach the peer before the close
            if identified:
                self._reader.limit = self.manager.cfg.max_line_size
                self._read_loop()
        except ProtocolError as exc:
            self.log.info("peer_disconnected", reason=str(exc))
            flush = False
        except (OSError, gevent.GreenletExit) as exc:
            if isinstance(exc, OSError):
                self.log.info("connection_error", reason=str(exc))
            flush = False
        finally:
            self._cleanup(flush)

    def _cleanup(self, flush):
        self.closed = True
        if self.record is not None:
            for session, message in self.manager.registry.remove(self.record):
                session.send(dumps(message))
            self.manager.record(self, "disconnected")
        if flush and self._out and self._writer is None:
            self._writer = gevent.spawn(self._write_loop)  # a rejection must reach the peer
        if self._writer is not None:
            if flush:
                self._writer.join(timeout=self.manager.STOP_TIMEOUT)
            if self._writer is not None:
                self._writer.kill(block=False)
        try:
            self.sock.close()
        except OSError:
            pass
        self.log.info("disconnected", name=self.name)

    def abort(self, reason):
        """Drop this peer from any greenlet: its reader unwinds through ``finally``."""
        if self.closed:
            return
        self.closed = True
        self.log.info("peer_dropped", reason=reason, name=self.name)
        if self._greenlet is not None and self._greenlet is not gevent.getcurrent():
            self._greenlet.kill(block=False)

    # ------------------------------------------------------------------ output
    def send(self, data):
        """Queue ``data`` for this peer; never blocks.

        Everything queued while the current chunk is dispatched leaves in one non-blocking
        ``send`` from a hub callback (:meth:`flush`). Only a peer whose socket is full gets a
        writer greenlet, which then owns the queue until it is empty. A peer is dropped when
        the bytes it has not accepted exceed the queue limit (reference 6.16).
        """
        if self.closed:
            return
        self._queued += len(data)
        self._out.append(data)
        if self._writer is not None:
            if self._queued > self.manager.cfg.max_queue_size:
                self.abort("outbound queue overflow")
        elif not self._dirty:
            self._dirty = True
            self.manager.schedule_flush(self)

    def flush(self):
        """Send what is queued without blocking; hand the rest to a writer greenlet."""
        self._dirty = False
        out = self._out
        if self._writer is not None or not out or self.closed:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        try:
            sent = self.sock.send(data, 0, 0.0)  # timeout 0: EAGAIN raises instead of waiting
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._queued = 0
            self.abort(f"write failed: {exc}")
            return
        self._queued -= sent
        backlog = len(self.sock.backlog) if self._tls else 0
        if sent < len(data) or backlog:
            if sent < len(data):
                out.appendleft(data[sent:] if sent else data)
            if self._queued + backlog > self.manager.cfg.max_queue_size:
                self.abort("outbound queue overflow")
                return
            self._writer = gevent.spawn(self._write_loop)

    def _write_loop(self):
        out, sendall = self._out, self.sock.sendall
        try:
            while True:
                while out:
                    if len(out) == 1:
                        data = out.popleft()
                    else:
                        data = b"".join(out)
                        out.clear()
                    self._queued -= len(data)
                    sendall(data)
                if self._tls and self.sock.backlog:
                    sendall()  # encrypted bytes the kernel did not take earlier
                    continue
                return
        except OSError as exc:
            self.abort(f"write failed: {exc}")
        finally:
            self._writer = None

    def reply(self, value, uid):
        self.send(dumps(protocol.result(value, self.name, uid)))

    def reply_error(self, message, uid):
        self.send(dumps(protocol.error(message, self.name, uid)))

    # ------------------------------------------------------------------ input
    def _recv_lines(self):
        """Block until at least one line (or EOF) is buffered; False at EOF."""
        while not self._lines:
            if self._eof:
                return False
            data = self.sock.recv(65536)
            if not data:
                self._eof = True
                tail = self._reader.close()
                if tail:
                    self._lines.append(tail)
                continue
            self._lines.extend(self._reader.feed(data))
        return True

    def _read_loop(self):
        lines, feed, recv, dispatch = self._lines, self._reader.feed, self.sock.recv, self._dispatch
        size = 65536
        while not self.closed:
            while lines:
                if dispatch(lines.popleft()) is False or self.closed or self._hangup:
                    return
            data = recv(size)
            if not data:
                tail = self._reader.close()
                if tail:
                    dispatch(tail)
                return
            if len(data) == size and size < 1 << 20:
                size <<= 1  # a large message is arriving: read bigger chunks
            lines.extend(feed(data))

    # ------------------------------------------------------------------ handshake (1.3)
    def _handshake(self):
        self.address, self.domain, self.hostname = self.manager.name_peer(self.ip, self.port)
        self.name = f"<Unknown>[{self.address}]"
        self.log = self.log.bind(address=self.address)
        self.log.info("new_connection")
        self.manager.record(self, "new connection request")
        if not self.manager.auth.authenticate(self):
            return False
        value = self.ask("identity")
        if value is None:
            self.manager.record(self, "connection closed prematurely")
            return False
        identity = protocol.parse_terminal_input(value) if isinstance(value, str) else value
        try:
            if identity is None:  # 1.0's words for text that is not ``client [name]``
                raise Refused("TypeError", "'NoneType' object is not subscriptable")
            kind, fields = check_identity(identity)
            name = f"{fields['name']}[{self.address}]"
            record = self.manager.registry.add(self, name, self.address, kind, fields)
        except Refused as exc:
            self.log.info("identity_rejected", reason=exc.message)
            self.manager.record(self, "rejected: invalid identity")
            self.reject(exc.message)
            return False
        self.record, self.name = record, name
        self.log = self.log.bind(name=name)
        self.log.info("connected_as_client" if kind == "client" else "connected_as_service")
        self.manager.record(self, f"connected as a {kind}")
        return True  # 1.0 never acknowledges the identity (reference 1.3)

    def ask(self, attribute, *args):
        """Send a handshake request and return the reply (reference 1.3, get_handshake_data).

        JSON with a ``result`` gives that value; anything else gives the stripped text, so a
        terminal user can type the answer. None when the peer closed or sent invalid UTF-8.
        """
        self.send(dumps(protocol.request(attribute, args, self.manager.name)))
        if not self._recv_lines():
            return None
        line = self._lines.popleft()
        try:
            text = line.decode("utf-8").rstrip()
        except UnicodeDecodeError:
            return None
        try:
            data = loads(text)
        except ValueError:
            return text
        if isinstance(data, dict) and "result" in data:
            return data["result"]
        return text

    def ask_inline(self, attribute, *args):
        """Ask during the session (the inline admin login) and return the answer.

        The answer is a result addressed to the Manager, or terminal text. Any other line is
        dispatched as usual while waiting, so a concurrent request is not taken for a password
        (reference 6.15). None when the peer closed.
        """
        self.send(dumps(protocol.request(attribute, args, self.manager.name)))
        while self._recv_lines():
            line = self._lines.popleft()
            try:
                data = loads(line)
            except ValueError:
                try:
                    return line.decode("utf-8").strip()
                except UnicodeDecodeError:
                    return None
            if type(data) is dict and "result" in data and data.get("requester") == self.manager.name:
                return data["result"]
            if self._dispatch(line) is False or self.closed:
                self._hangup = True  # the read loop ends the session after this request
                return None
        return None

    def reject(self, message):
        """A handshake error from the Manager; the caller then closes the connection."""
        self.send(dumps(protocol.error(message, self.manager.name, "")))

    # ------------------------------------------------------------------ dispatch (1.6)
    def _dispatch(self, line):
        """Handle one line from an identified peer (:mod:`netmgr.daemon.routing` decides).
        False ends the session."""
        try:
            if len(line) >= THREADPOOL_PARSE_BYTES:
                data = gevent.get_hub().threadpool.apply(loads, (line,))
            else:
                data = loads(line)
            raw = True
        except ValueError:
            data, message = routing.terminal(line)
            if data is None:
                self.reply_error(message, "")
                return True
            raw = False
        verdict, effects = routing.route(self.manager.registry, self.record, line, data, raw)
        for handle, out in effects:
            handle.send(out)
        if verdict is None:
            return True
        if verdict is routing.MANAGER:
            self.manager.attributes.handle(self, data, data["attribute"], data.get("uid", ""))
            return True
        if verdict is routing.DROPPED:
            self.log.info("reply_dropped", requester=data.get("requester"), uid=data.get("uid"))
            return True
        return False  # routing.DISCONNECT
