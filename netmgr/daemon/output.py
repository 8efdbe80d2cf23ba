"""A session's outbound side: a bounded queue, one non-blocking send per turn, a slow-consumer writer.

``send()`` only enqueues and never blocks. Everything queued while the current turn of the hub
dispatches input leaves in one non-blocking ``send`` from a hub callback (:meth:`Output.flush`).
Only a peer whose socket is full gets a writer greenlet, which then owns the queue until it is
empty, sending at most :data:`WRITE_PIECE` bytes per call so that its progress is seen.

The bounds (reference 6.16; NATS's ``max_pending`` and ``write_deadline``, Redis's
``client-output-buffer-limit``), all enforced at enqueue time or by the Manager's sweep:

* ``max_queue_size``: the bytes a peer has not accepted; one message of any size is always
  admitted into an empty queue, so a maximum-size reply can still be delivered;
* ``max_queue_total``: the bytes queued for all peers; over it the Manager drops the peer with
  the largest queue;
* ``write_timeout``: a peer with queued output that accepts no bytes for that long is dropped.

:class:`Output` is a mixin of :class:`netmgr.daemon.session.Session` and uses its ``sock``,
``manager``, ``closed``, ``name`` and ``abort``.
"""
import collections
import time

import gevent

from netmgr import protocol
from netmgr.protocol import dumps

#: bytes per blocking send of the writer greenlet: a peer must take this much per write_timeout
WRITE_PIECE = 64 * 1024
#: at most this much of the queue is joined for one non-blocking send
FLUSH_JOIN = 1024 * 1024


def _take(out, limit):
    """Join queued pieces from the front of ``out`` up to about ``limit`` bytes (at least one):
    a backlog of hundreds of MB is never joined, nor copied, as a whole."""
    parts, size = [], 0
    while out and size < limit:
        piece = out.popleft()
        parts.append(piece)
        size += len(piece)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class Output:
    """The outbound queue of a session (a mixin; see the module docstring)."""

    __slots__ = ()  # the attributes are Session's slots

    def _init_output(self):
        self._out = collections.deque()
        self._queued = 0  # bytes queued and not yet accepted by the kernel (plaintext)
        self._dirty = False  # a flush of this session is scheduled
        self._writer = None
        self.write_progress = 0.0  # monotonic time of the writer's last progress

    @property
    def queued(self):
        """Bytes this peer has not accepted yet (encrypted TLS bytes waiting in the backlog too)."""
        return self._queued + (len(self.sock.backlog) if self._tls else 0)

    def send(self, data):
        """Queue ``data`` for this peer; never blocks. A peer over its queue limit is dropped.

        ``data`` is bytes, or a tuple of pieces of one message (a large line and its CRLF), so
        that a message of megabytes is forwarded without being copied into a new one.
        """
        if self.closed:
            return
        manager = self.manager
        pieces = type(data) is tuple
        size = sum(map(len, data)) if pieces else len(data)
        queued = self._queued + len(self.sock.backlog) if self._tls else self._queued
        if queued and queued + size > manager.cfg.max_queue_size:
            self.abort("outbound queue overflow")
            return
        self._queued += size
        self._out.extend(data) if pieces else self._out.append(data)
        manager.queued_total += size
        if manager.queued_total > manager.cfg.max_queue_total:
            manager.limits.over_budget()
        if self._writer is None and not self._dirty:
            self._dirty = True
            manager.schedule_flush(self)

    def _dequeue(self, sent):
        self._queued -= sent
        self.manager.queued_total -= sent

    def drop_queue(self):
        """Forget what is queued (the peer is gone); give its bytes back to the global budget."""
        self.manager.queued_total -= self._queued
        self._queued = 0
        self._out.clear()

    def flush(self):
        """Send what is queued without blocking; hand the rest to a writer greenlet."""
        self._dirty = False
        out = self._out
        if self._writer is not None or not out or self.closed:
            return
        data = out.popleft() if len(out) == 1 else _take(out, FLUSH_JOIN)
        try:
            sent = self.sock.send(data, 0, 0.0)  # timeout 0: EAGAIN raises instead of waiting
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.abort(f"write failed: {exc}")
            return
        self._dequeue(sent)
        if sent < len(data) or out or (self._tls and self.sock.backlog):
            if sent < len(data):
                out.appendleft(memoryview(data)[sent:] if sent else data)
            self._start_writer()

    def _start_writer(self):
        self.write_progress = time.monotonic()
        self._writer = gevent.spawn(self._write_loop)
        self.manager.writing.add(self)

    def _write_loop(self):
        out = self._out
        try:
            while out or (self._tls and self.sock.backlog):
                data = out.popleft() if len(out) == 1 else _take(out, WRITE_PIECE) if out else b""
                self._send_pieces(memoryview(data))
        except OSError as exc:
            self.abort(f"write failed: {exc}")
        finally:
            self._writer = None
            self.manager.writing.discard(self)

    def _send_pieces(self, view):
        sendall = self.sock.sendall
        for start in range(0, len(view), WRITE_PIECE):
            piece = view[start:start + WRITE_PIECE]
            sendall(piece)
            self._dequeue(len(piece))
            self.write_progress = time.monotonic()
        if not view and self._tls:
            sendall()  # encrypted bytes the kernel did not take earlier
            self.write_progress = time.monotonic()

    def reply(self, value, uid):
        self.send(dumps(protocol.result(value, self.name, uid)))

    def reply_error(self, message, uid):
        self.send(dumps(protocol.error(message, self.name, uid)))
