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
import sys
import time

import gevent

from netmgr import protocol
from netmgr.daemon import log
from netmgr.protocol import MAX_TERMINAL_LINE, LineReader, dumps, find_uid, loads
from netmgr.daemon import routing
from netmgr.daemon.limits import normal_ip
from netmgr.daemon.output import Output
from netmgr.daemon.registry import Client, check_identity
from netmgr.daemon.memory import trim_memory
from netmgr.errors import HandshakeFailed, NestingTooDeep, ProtocolError, Refused

logger = log.get_logger("netmgr.daemon.session")

#: Lines at least this long are decoded in the hub's threadpool (STYLE.md rule 4).
THREADPOOL_PARSE_BYTES = 1 << 20
#: Lines at least this long are decoded for their envelope only (:func:`routing.decode`): the
#: payload is validated but never built. Below it a full parse is as fast (orjson, ~0.5 us).
ENVELOPE_BYTES = 4096
#: A turn of a session's read loop: at most this many lines, or bytes received, then it yields.
TURN_LINES = 512
TURN_BYTES = 256 * 1024
TURN_PAUSE = 1e-6  # any timer: it fires after the next poll
#: A trailing unterminated line at EOF longer than this is dropped rather than parsed.
TAIL_LIMIT = 64 * 1024
TERMINAL_TOO_LONG = f"ValueError: a terminal-syntax line is limited to {MAX_TERMINAL_LINE} bytes"


def _next_turn():
    """Yield to the hub until it has polled every socket once.

    ``gevent.sleep(0)`` only queues a callback, and the hub runs queued callbacks for up to a
    switch interval (5 ms) before it polls: a flooding peer could take several turns before the
    others are even read. A timer fires only after the poll.
    """
    gevent.sleep(TURN_PAUSE)


class Session(Output):
    """One connected peer: handshake, read loop, writer queue, cleanup."""

    # no __dict__: with 20,000 peers every byte of a session counts (issue 12)
    __slots__ = ("manager", "local_uid", "sock", "ip", "port", "address", "domain", "hostname", "name",
                 "record", "is_admin", "challenging", "closed", "_reader", "_lines", "_eof",
                 "_hangup", "_tls", "_greenlet", "input_progress", "reason",
                 # Output's
                 "_out", "_queued", "_dirty", "_writer", "write_progress", "__weakref__")

    def __init__(self, manager, sock, address, local_uid=None):
        self.manager = manager
        #: the user id of a peer on the control socket (an administrator, no TLS, no login)
        self.local_uid = local_uid
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
        self._reader = LineReader(manager.HANDSHAKE_LINE_LIMIT)
        self._lines = collections.deque()
        self._eof = False
        self._hangup = False  # the peer asked to disconnect while an inline login waited
        self._tls = False  # self.sock is a netmgr.daemon.tls.TLSStream
        self._greenlet = None
        self.input_progress = 0.0  # monotonic time of the last bytes of an unfinished line
        self.reason = "closed by the peer"  # why the session ended (the peer event says)
        self._init_output()

    @property
    def log(self):
        """This peer's logger, bound to its address and name when it has them (made per use: a
        bound logger kept per session is ~0.5 KiB, and sessions log rarely)."""
        context = {"peer": f"{self.ip}:{self.port}"}
        if self.address is not None:
            context["address"] = self.address
        if self.record is not None:
            context["name"] = self.name
        return logger.bind(**context)

    # ------------------------------------------------------------------ lifecycle
    def run(self):
        self._greenlet = gevent.getcurrent()
        cfg = self.manager.cfg
        flush = False
        try:
            try:
                with gevent.Timeout(cfg.handshake_timeout, HandshakeFailed("handshake timed out")):
                    tls = self.sock if self.local_uid is not None else self.manager.wrap_tls(self.sock)
                    self._tls = tls is not self.sock
                    self.sock = tls
                    identified = self._handshake()
            except HandshakeFailed as exc:
                self.log.info("handshake_failed", reason=str(exc))
                identified = False
            self.manager.counts["handshakes" if identified else "handshakes_failed"] += 1
            flush = True  # a rejection error must reach the peer before the close
            if identified:
                self._reader.limit = self.manager.cfg.max_line_size
                self._read_loop()
        except ProtocolError as exc:
            self.log.info("peer_disconnected", reason=str(exc))
            self.reason = str(exc)
            flush = False
        except (OSError, gevent.GreenletExit) as exc:
            if isinstance(exc, OSError):
                self.log.info("connection_error", reason=str(exc))
                self.reason = f"connection error: {exc}"
            flush = False
        except Exception as exc:  # noqa: BLE001 -- a bug ends this session only, logged with its traceback
            log.log_exception("session_failed", sys.exc_info(), self.log, name=self.name)
            self.reason = f"internal error: {type(exc).__name__}"
            flush = False
        finally:
            self._cleanup(flush)

    def _cleanup(self, flush):
        self.closed = True
        self.manager.partial.discard(self)
        self._reader.discard()  # an unfinished line (maybe 100s of MB) goes now, not at GC
        self._lines.clear()
        manager = self.manager
        manager.events.unsubscribe(self.send_event)
        try:
            if self.record is not None:
                if manager.cluster is not None and type(self.record) is Client:
                    manager.cluster.client_leaving(self.record)
                effects = manager.registry.remove(self.record, self.reason)
                manager.publish_pending()
                manager.record(self, "disconnected")
                for n, (session, message) in enumerate(effects, 1):
                    session.send(dumps(message))
                    if n % 256 == 0:
                        _next_turn()  # thousands of failed requests: let others run meanwhile
            if flush and self._out and self._writer is None:
                self._start_writer()  # a rejection must reach the peer
            if self._writer is not None and flush:
                self._writer.join(timeout=self.manager.STOP_TIMEOUT)
        finally:
            if self._writer is not None:
                self._writer.kill(block=False)
            self.drop_queue()
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
        self.reason = reason
        self.manager.count_drop(reason)
        self.log.info("peer_dropped", reason=reason, name=self.name)
        if self._greenlet is not None and self._greenlet is not gevent.getcurrent():
            self._greenlet.kill(block=False)

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
        """Dispatch every line, yielding to the hub after each turn's share of input.

        gevent's ``recv`` returns at once while data is waiting, so a peer that sends as fast
        as it can would otherwise keep the hub to itself (no other session, and no flush, would
        run). A turn ends after :data:`TURN_LINES` lines or :data:`TURN_BYTES` bytes; within a
        turn, every destination still gets one ``send`` for all its messages.
        """
        lines, feed, recv = self._lines, self._reader.feed, self.sock.recv
        registry, clock = self.manager.registry, time.monotonic
        size, turn = 65536, 0
        while not self.closed:
            n = 0
            while lines:
                line = lines.popleft()
                if self._dispatch_safely(line) is False or self.closed or self._hangup:
                    return
                if len(line) >= THREADPOOL_PARSE_BYTES:
                    del line  # its last reference: the heap pages can go back now
                    trim_memory()
                n += 1
                if n >= TURN_LINES:
                    _next_turn()  # the rest of this chunk waits for the next turn
                    n = turn = 0
            data = recv(size)
            registry.now = clock()  # when these lines arrived: the latency figures' clock
            if not data:
                self._at_eof()
                return
            if len(data) == size and size < 1 << 20:
                size <<= 1  # a large message is arriving: read bigger chunks
            lines.extend(feed(data))
            self._track_partial_line()
            turn += len(data)
            if turn >= TURN_BYTES:
                _next_turn()
                turn = 0

    def _track_partial_line(self):
        """Note an unfinished line for the Manager's idle sweep (``partial_line_timeout``)."""
        if self._reader.pending:
            self.input_progress = time.monotonic()
            self.manager.partial.add(self)
        elif self.input_progress:
            self.input_progress = 0.0
            self.manager.partial.discard(self)

    def _at_eof(self):
        """1.0 delivers a trailing unterminated line; a large one is dropped, not parsed."""
        if self._reader.pending > TAIL_LIMIT:
            self.log.info("partial_line_discarded", size=self._reader.pending)
            self._reader.discard()
            return
        tail = self._reader.close()
        if tail:
            self._dispatch_safely(tail)

    def _dispatch_safely(self, line):
        """:meth:`_dispatch`, but no exception from a peer's input reaches the greenlet's top."""
        try:
            return self._dispatch(line)
        except Exception as exc:  # noqa: BLE001 -- an error reply, and the session lives on
            log.log_exception("dispatch_failed", sys.exc_info(), self.log)  # the traceback at DEBUG
            self.reply_error(f"{type(exc).__name__}: {exc}", find_uid(line))
            return True

    # ------------------------------------------------------------------ handshake (1.3)
    def _handshake(self):
        local = self.local_uid is not None
        if local:  # the control socket: ip "local", port the peer's process id
            self.address, self.domain, self.hostname = f"local:{self.port}", f"uid={self.local_uid}", "local"
        else:
            self.address, self.domain, self.hostname = self.manager.name_peer(self.ip, self.port)
        self.name = f"<Unknown>[{self.address}]"
        self.log.info("new_connection", **({"uid": self.local_uid} if local else {}))
        self.manager.record(self, "new connection request")
        if local:
            self.is_admin = True  # whoever may connect() to the socket administers (control.py)
        elif not self.manager.auth.authenticate(self):
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
            if local and kind != "client":
                raise Refused("ValueError", "the control socket serves administrators' Clients; "
                                            "connect Services to the Manager's port")
            name = f"{fields['name']}[{self.address}]"
            if local:
                name = self._unique(fields["name"])
            cluster = self.manager.cluster
            if cluster is not None and kind == "service" and self.manager.registry.service(fields["name"]) is None:
                cluster.claim(fields["name"])  # the name, cluster-wide: Refused if another node has it
            record = self.manager.registry.add(self, name, self.address, kind, fields)
            self.manager.publish_pending()
        except Refused as exc:
            self.log.info("identity_rejected", reason=exc.message)
            self.manager.record(self, "rejected: invalid identity")
            self.reject(exc.message)
            return False
        self.record, self.name = record, name
        if not local:
            self.manager.limits.identified(normal_ip(self.ip))
        self.log.info("connected_as_client" if kind == "client" else "connected_as_service")
        self.manager.record(self, f"connected as a {kind}")
        return True  # 1.0 never acknowledges the identity (reference 1.3)

    def _unique(self, name):
        """``Name[local:PID]``, or ``Name[local:PID-2]`` … when that process has one already."""
        taken, n = self.manager.registry.clients, 1
        while f"{name}[{self.address}]" in taken:
            n += 1
            self.address = f"local:{self.port}-{n}"
        return f"{name}[{self.address}]"

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
            if self._dispatch_safely(line) is False or self.closed:
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
        size = len(line)
        try:
            if size >= THREADPOOL_PARSE_BYTES:  # in a worker thread; only the envelope comes back
                data = gevent.get_hub().threadpool.apply(routing.decode, (line,))
            elif size >= ENVELOPE_BYTES:
                data = routing.decode(line)
            else:
                data = loads(line)
            raw = True
        except NestingTooDeep as exc:
            self.reply_error(f"ValueError: {exc}", find_uid(line))
            return True
        except ValueError:
            if len(line) > MAX_TERMINAL_LINE:
                self.reply_error(TERMINAL_TOO_LONG, find_uid(line))
                return True
            data, message = routing.terminal(line)
            if data is None:
                self.reply_error(message, "")
                return True
            raw = False
        return self._route(line, data, raw)

    def send_event(self, event):
        """A listener of the Manager's event stream (``subscribe_events``): the notification line."""
        self.send(event.notification)

    def _route(self, line, data, raw):
        registry = self.manager.registry
        verdict, effects = routing.route(registry, self.record, line, data, raw)
        for handle, out in effects:
            handle.send(out)
        if registry.pending:
            self.manager.publish_pending()
        if verdict is None:
            return True
        if verdict is routing.MANAGER:
            if routing.LARGE in data.values():  # a large Manager request: its arguments count
                data = gevent.get_hub().threadpool.apply(loads, (line,))
            self.manager.attributes.handle(self, data, data["attribute"], data.get("uid", ""))
            return True
        if verdict is routing.DROPPED:
            self.log.info("reply_dropped", requester=data.get("requester"), uid=data.get("uid"))
            return True
        self.reason = "disconnect request"
        return False  # routing.DISCONNECT
