"""A Client's background thread: it reads only when no caller does, and it reconnects.

It takes the reading role when asynchronous requests are pending, and when the callers have
been idle for :data:`IDLE_READ_DELAY` seconds (to deliver notifications and to notice a Manager
that went away); a caller that needs the role writes one byte to the wake-up pipe and the thread
steps aside (see :mod:`netmgr.client.calls`). It also fails futures past their deadline, and runs
:meth:`Reconnect._reconnect <netmgr.client.reconnect.Reconnect._reconnect>` while the Client is
``RECONNECTING``.

:class:`Background` is a mixin of :class:`netmgr.client.Client` and uses its state.
"""
import logging
import os
import select
import threading
import time

from netmgr.client.calls import BACKGROUND, _Future
from netmgr.client.peer import CONNECTED, DISCONNECTED, RECONNECTING

logger = logging.getLogger("netmgr.client")

#: The background thread starts reading after the callers have been idle this long (seconds).
IDLE_READ_DELAY = 0.02


class Background:
    """The background thread of a Client (a mixin; see the module docstring)."""

    def _background(self):
        self._loop_thread_id = threading.get_ident()
        try:
            while True:
                job = self._bg_next()
                if job is None:
                    return
                if job is RECONNECTING:
                    self._reconnect()
                    continue
                try:
                    self._bg_read(*job)
                finally:
                    with self._lock:
                        if self._leader == BACKGROUND:
                            self._leader = None
                        self._cond.notify_all()
        except Exception:  # noqa: BLE001 -- keep the reason in the log, never die silently
            logger.exception("the reader thread of %s failed", self._network_name)
            self._lost(self._gen, None)

    def _bg_next(self):
        """Wait for work: None (stop), RECONNECTING, or ``(transport, gen, lines)`` to read,
        the thread then holding the reading role."""
        with self._lock:
            while True:
                if self._closing and self._state != CONNECTED:
                    return None
                if self._state == RECONNECTING:
                    return RECONNECTING
                if self._state == CONNECTED and self._leader is None and not self._fg_waiting:
                    idle = time.monotonic() - self._last_fg
                    if self._pending or idle >= IDLE_READ_DELAY:
                        self._leader = BACKGROUND
                        self._kicked = False
                        return self._transport, self._gen, self._lines
                    self._cond.wait(IDLE_READ_DELAY - idle)
                    continue
                if self._state == DISCONNECTED:
                    return None
                # a caller is reading: look again soon (a caller leaving does not wake
                # this thread, which would cost every call a wake-up)
                self._cond.wait(IDLE_READ_DELAY)

    def _bg_read(self, transport, gen, lines):
        poller = select.poll()
        poller.register(transport.fd, select.POLLIN | select.POLLPRI)
        poller.register(self._wake_r, select.POLLIN)
        wake = self._wake_r
        while True:
            timeout = self._expire_futures()
            if transport.tls and transport.readable_now():
                events = [(transport.fd, select.POLLIN)]
            else:
                events = poller.poll(timeout)
            for fd, _ in events:
                if fd == wake:
                    if not self._bg_woken(wake):
                        return
                elif not self._receive(transport, gen, lines):
                    return
            with self._lock:
                if self._fg_waiting or gen != self._gen:
                    return
                if not self._pending and time.monotonic() - self._last_fg < IDLE_READ_DELAY:
                    return

    def _bg_woken(self, wake):
        """A caller asked for the reading role; False if the pipe is gone (closing)."""
        try:
            os.read(wake, 4096)
        except OSError:
            return False
        with self._lock:
            self._kicked = False
        return True

    def _expire_futures(self):
        """Fail asynchronous requests past their deadline; the next poll timeout in ms (-1: none)."""
        now = time.monotonic()
        expired = []
        soonest = None
        with self._lock:
            for uid, waiter in list(self._pending.items()):
                if waiter.__class__ is _Future and waiter.deadline is not None:
                    if waiter.deadline <= now:
                        expired.append(self._pending.pop(uid))
                    elif soonest is None or waiter.deadline < soonest:
                        soonest = waiter.deadline
        for waiter in expired:
            waiter._resolve(None, TimeoutError(f"No reply to {waiter.request} from "
                                               f"Manager[{self._address_manager}] within the "
                                               f"timeout"))
        if soonest is None:
            return -1
        return max(1, int((soonest - now) * 1000) + 1)
