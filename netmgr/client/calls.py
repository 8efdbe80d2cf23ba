"""A Client's request path: write the request, then read for the reply on the calling thread.

A call serialises its request and writes it itself (one ``sendall``). Then, if no other thread
is reading the socket, it becomes the *leader*: it reads the socket itself until its own reply
arrives (what it reads goes to :meth:`Dispatch._dispatch <netmgr.client.dispatch.Dispatch._dispatch>`,
which hands other replies to their waiters), then gives up the role. A thread that finds a leader
waits on the Client's condition and takes over the role when the leader leaves; when the leader
is the background thread (:mod:`netmgr.client.reader`) it is asked, through the wake-up pipe, to step
aside. A single-threaded caller therefore pays no thread hand-off at all: write, read, return.

:class:`Calls` is a mixin of :class:`netmgr.client.Client` and uses its state (``_lock``,
``_cond``, ``_pending``, ``_leader``, ``_gen``, ...), which ``Client.__init__`` creates.
"""
import concurrent.futures
import math
import os
import threading
import time
from concurrent.futures import Future
from threading import get_ident as _get_ident
from time import monotonic as _monotonic

from netmgr.client.peer import CONNECTED, RECONNECTING, request_line

#: A call made this long (seconds) after the last read first checks that the Manager is still
#: there, so that a request is not written into a connection the Manager already closed.
PRECHECK_AFTER = 0.001
#: The leader marker of the background thread.
BACKGROUND = "background"


class _Waiter:
    """A synchronous request waiting for its reply."""

    __slots__ = ("uid", "request", "done", "value", "error", "deadline", "seq")

    def __init__(self, uid, request):
        self.uid = uid
        self.request = request
        self.seq = 0
        self.done = False
        self.value = None
        self.error = None
        self.deadline = None

    def _resolve(self, value, error):
        self.value = value
        self.error = error
        self.done = True


class _Future(Future):
    """The future of an asynchronous request; ``request`` is ``"<service>.<attribute>"``."""

    def __init__(self, uid, request):
        super().__init__()
        self.uid = uid
        self.request = request
        self.deadline = None

    def _resolve(self, value, error):
        try:
            if error is not None:
                self.set_exception(error)
            else:
                self.set_result(value)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled by the user


class Calls:
    """The request path of a Client (a mixin; see the module docstring)."""

    def _request(self, service, attribute, args, kwargs, timeout=None, asynchronous=False,
                 link=None):
        """Send a request; its reply (or, `asynchronous`, a Future). `link` is the
        :class:`~netmgr.client.proxy.LinkEnd` of the Link that sends it, restored first after a
        reconnect. The common case, a synchronous call on an idle, recently read connection,
        takes the reading role at once."""
        if (asynchronous or self._leader is not None or self._state != CONNECTED
                or self._closing):
            return self._request_slow(service, attribute, args, kwargs, timeout, asynchronous,
                                      link)
        now = _monotonic()
        gen = self._gen
        if now - self._last_read > PRECHECK_AFTER or (link is not None and link.gen != gen):
            return self._request_slow(service, attribute, args, kwargs, timeout, False, link)
        if timeout is None:
            timeout = self._request_timeout
        deadline = None if timeout is None or timeout == math.inf else now + timeout
        uid = self._uid_prefix + format(next(self._uid_count), "x")
        data = request_line(service, attribute, args, kwargs, uid)
        waiter = _Waiter(uid, f"{service}.{attribute}")
        me = _get_ident()
        with self._lock:
            transport = self._transport
            lead = gen == self._gen and self._leader is None
            if lead:
                self._leader = me
                self._pending[uid] = waiter
        if lead and self._send(data, waiter, transport, gen, True, me):
            self._lead(waiter, deadline)
            if waiter.done and not waiter.seq and waiter.error is None:
                return waiter.value
            return self._settle(waiter)
        return self._request_slow(service, attribute, args, kwargs, timeout, False, link)

    def _request_slow(self, service, attribute, args, kwargs, timeout, asynchronous, link):
        if timeout is None:
            timeout = self._request_timeout
        deadline = None if timeout is None or timeout == math.inf else time.monotonic() + timeout
        me = threading.get_ident()
        request_name = f"{service}.{attribute}"
        while True:
            transport, gen = self._usable(deadline, service)
            if link is not None and link.gen != gen:
                self._restore_link(link, deadline)
                continue
            uid = self._uid_prefix + format(next(self._uid_count), "x")
            data = request_line(service, attribute, args, kwargs, uid)
            waiter = _Future(uid, request_name) if asynchronous else _Waiter(uid, request_name)
            waiter.deadline = deadline
            lead = self._register(waiter, transport, gen, me, asynchronous)
            if lead is None or not self._send(data, waiter, transport, gen, lead, me):
                continue  # the connection changed before the request went out
            if asynchronous:
                with self._lock:
                    if self._leader is None and not self._fg_waiting:
                        self._cond.notify_all()  # the background thread reads for it
                return waiter
            return self._wait(waiter, deadline, lead, me)

    def _register(self, waiter, transport, gen, me, asynchronous):
        """Make `waiter` pending; whether this thread leads, or None if the connection changed."""
        lead = False
        if not asynchronous and time.monotonic() - self._last_read > PRECHECK_AFTER:
            # idle for a while: make sure the Manager did not go away before sending
            with self._lock:
                if gen == self._gen and self._leader is None:
                    self._leader = me
                    lead = True
            if lead and transport.readable_now() and not self._drain(transport, gen):
                self._release(me)
                return None  # the connection was found closed before the request went out
        with self._lock:
            if gen != self._gen:
                if lead:
                    self._leader = None
                    self._cond.notify_all()
                return None
            self._pending[waiter.uid] = waiter
            if not asynchronous and not lead and self._leader is None:
                self._leader = me
                lead = True
        return lead

    def _send(self, data, waiter, transport, gen, lead, me):
        """Write the request; False if it must be sent again once reconnected."""
        try:
            with self._wlock:
                transport.sendall(data)
            return True
        except OSError as exc:
            with self._lock:
                unsent = self._pending.pop(waiter.uid, None) is not None
            if lead:
                self._release(me)
            self._lost(gen, exc)
            if unsent and self._options.attempts != 0 and not self._closing:
                return False  # never delivered: send it again once reconnected
            raise ConnectionAbortedError(
                f"Manager[{self._address_manager}] closed the connection") from None

    def _usable(self, deadline, service):
        """(transport, generation) of a live connection; waits while reconnecting."""
        if self._state == CONNECTED and not self._closing:
            return self._transport, self._gen  # checked again under the lock before use
        with self._lock:
            while True:
                if self._state == CONNECTED and not (self._closing and service != self._network_name):
                    return self._transport, self._gen
                if self._state == RECONNECTING and not self._closing:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(f"Manager[{self._address_manager}] did not come back "
                                           f"before the request to {service!r} timed out")
                    self._cond.wait(remaining)
                    continue
                raise ConnectionError(f"Disconnected from Manager[{self._address_manager}], "
                                      f"cannot send request to {service!r}")

    def _release(self, me):
        with self._lock:
            if self._leader == me:
                self._leader = None
                self._last_fg = time.monotonic()
                self._cond.notify_all()

    def _wait(self, waiter, deadline, lead, me):
        """Read for the reply as the leader, or wait for it as a follower; its value or error."""
        while True:
            if lead:
                self._lead(waiter, deadline)
                break
            lead = self._follow(waiter, deadline, me)
            if not lead:
                break
        return self._settle(waiter)

    def _settle(self, waiter):
        """The value of a synchronous request after reading for it, or its error."""
        if not waiter.done:
            with self._lock:
                self._pending.pop(waiter.uid, None)
            if not waiter.done:
                raise TimeoutError(f"No reply to {waiter.request} from "
                                   f"Manager[{self._address_manager}] within the timeout")
        if waiter.seq and threading.current_thread() is not self._dispatcher:
            self._await_handlers(waiter)
        if waiter.error is not None:
            raise waiter.error
        return waiter.value

    def _lead(self, waiter, deadline):
        """Read (holding the reading role) until `waiter` is resolved, the deadline passes or the
        connection is lost; then give up the role."""
        transport, gen, lines = self._transport, self._gen, self._lines
        try:
            if transport is None:
                return
            feed, dispatch, recv_by = lines.feed, self._dispatch, transport.recv_by
            while not waiter.done:
                if gen != self._gen:
                    return
                if deadline is None:
                    remaining = None
                else:
                    remaining = deadline - _monotonic()
                    if remaining <= 0:
                        return
                try:
                    data = recv_by(remaining)
                except OSError as exc:
                    self._lost(gen, exc)
                    return
                if data is None:
                    continue
                if not data:
                    self._eof(lines, gen)
                    return
                self._last_read = _monotonic()
                for line in feed(data):
                    dispatch(line)
        finally:
            with self._lock:
                self._leader = None
                self._last_fg = _monotonic()
                if self._fg_waiting or self._pending:
                    self._cond.notify_all()

    def _follow(self, waiter, deadline, me):
        """Wait while another thread reads; True when this thread takes over the reading role."""
        with self._lock:
            self._fg_waiting += 1
            try:
                while not waiter.done:
                    if self._leader is None and self._state == CONNECTED:
                        self._leader = me
                        return True
                    if self._leader == BACKGROUND and not self._kicked:
                        self._kicked = True
                        try:
                            os.write(self._wake_w, b"\0")
                        except (OSError, TypeError):
                            pass
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return False
            finally:
                self._fg_waiting -= 1

    def _drain(self, transport, gen):
        """Read what is already buffered (the leader, before sending). False if the peer closed."""
        return self._receive(transport, gen, self._lines)

    def _receive(self, transport, gen, lines):
        """Read what the socket holds (without waiting) and dispatch it; False when the
        connection is gone."""
        try:
            data = transport.recv(0)
        except OSError as exc:
            self._lost(gen, exc)
            return False
        if data is None:
            return True
        if not data:
            self._eof(lines, gen)
            return False
        for line in lines.feed(data):
            self._dispatch(line)
        return True
