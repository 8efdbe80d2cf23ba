"""A Client's connection life: install a connection, lose it, reconnect with failover, close.

Each connection has a generation number (``_gen``); losing it bumps the number, so a reader or
a caller holding an old generation stops using it. On loss every pending request fails with
``ConnectionAbortedError`` (the Client's own disconnect and ``shutdown_manager`` resolve
quietly), the state becomes ``RECONNECTING`` when ``reconnect`` allows it and the background
thread (:mod:`netmgr.client.reader`) makes rounds over the failover list with back-off
(:mod:`netmgr.client.failover`); once connected, links are restored (and locks re-acquired with
``relock``) on their own thread. State callbacks run on the dispatcher thread.

:class:`Reconnect` is a mixin of :class:`netmgr.client.Client` and uses its state.
"""
import logging
import os
import threading
import time

from netmgr.client.peer import CONNECTED, DISCONNECTED, RECONNECTING
from netmgr.client.failover import Failover, summary
from netmgr.hostinfo import HOSTNAME
from netmgr.protocol import DISCONNECT_REQUEST, SHUTDOWN_MANAGER

logger = logging.getLogger("netmgr.client")


class Reconnect:
    """The connection life of a Client (a mixin; see the module docstring)."""

    def _install(self, transport, local_port, lines, host, port):
        with self._lock:
            if self._closing and self._state != CONNECTED and self._gen:
                transport.close()
                return False
            self._transport = transport
            self._lines = lines
            self._port = local_port
            self._network_name = f"{self._name}[{HOSTNAME}:{local_port}]"
            self._address_manager = f"{host}:{port}"
            self._gen += 1
            self._state = CONNECTED
            self._last_fg = time.monotonic()
            self._cond.notify_all()
        logger.info("connected to Manager[%s] as %s", self._address_manager, self._network_name)
        return True

    def _lost(self, gen, exc):
        """The connection of generation `gen` is gone: fail what waits on it, maybe reconnect."""
        with self._lock:
            if gen != self._gen or self._state != CONNECTED:
                return
            self._gen += 1
            transport, self._transport = self._transport, None
            pending, self._pending = self._pending, {}
            reconnect = self._options.attempts != 0 and not self._closing and not self._no_reconnect
            self._state = RECONNECTING if reconnect else DISCONNECTED
            self._cond.notify_all()
        if transport is not None:
            transport.close()
        if not self._closing and not self._no_reconnect:
            logger.warning("lost the connection to Manager[%s]: %s", self._address_manager,
                           exc or "it closed the connection")
        error = ConnectionAbortedError(f"Manager[{self._address_manager}] closed the connection")
        quiet = (f"{self._network_name}.{DISCONNECT_REQUEST}", f"Manager.{SHUTDOWN_MANAGER}")
        for waiter in pending.values():
            if waiter.request in quiet:
                waiter._resolve(None, None)
            else:
                waiter._resolve(None, error)
        with self._lock:
            self._cond.notify_all()
        self._state_changed(RECONNECTING if reconnect else DISCONNECTED)
        if not reconnect:
            self._final()

    def _final(self):
        try:
            self.shutdown_handler()
        except Exception:  # noqa: BLE001
            logger.exception("shutdown_handler raised")
        if self._dispatch_q is not None:
            self._dispatch_q.put(None)
        with self._handled_cond:
            self._handled_cond.notify_all()

    def _state_changed(self, state):
        callback = self._options.on_state_change
        if callback is not None:
            self._post((callback, self, state))

    def _close(self, reason):
        """Stop for good: close the socket and the background thread."""
        with self._lock:
            self._closing = True
            gen = self._gen
            self._cond.notify_all()
        if self._state == CONNECTED:
            self._lost(gen, None)
        elif self._state == RECONNECTING:
            self._set_disconnected()
        if self._wake_w is not None:
            try:
                os.write(self._wake_w, b"\0")
            except OSError:
                pass
        bg = self._bg
        if bg is not None and bg is not threading.current_thread():
            bg.join(5)
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wake_r = self._wake_w = None
        self._links = []

    def _set_disconnected(self):
        """Give up for good while not connected: the state, its callback, shutdown_handler."""
        with self._lock:
            self._state = DISCONNECTED
            self._cond.notify_all()
        self._state_changed(DISCONNECTED)
        self._final()

    # ------------------------------------------------------------------ reconnecting
    def _reconnect(self):
        """Rounds over the failover list (run by the background thread) until connected."""
        failover = Failover(self._options, self._identity, self._manager_index)
        while True:
            found = failover.round(stop=self._is_closing, on_error=_log_failure)
            if failover.stopped:
                return
            if found is not None:
                self._manager_index = failover.index
                self._reconnected(*found)
                return
            if failover.exhausted():
                logger.error("gave up reconnecting to %s after %d attempt(s)",
                             "|".join(f"{h}:{p}" for h, p in self._options.managers),
                             failover.rounds)
                self._set_disconnected()
                return
            delay = failover.next_delay()
            with self._lock:
                if not self._closing:
                    self._cond.wait(delay)

    def _is_closing(self):
        return self._closing

    def _reconnected(self, host, port, transport, local_port, leftover, lines):
        if not self._install(transport, local_port, lines, host, port):
            return
        for line in leftover:
            self._dispatch(line)
        self._state_changed(CONNECTED)
        if self._links:
            threading.Thread(target=self._restore_links, args=(self._gen,),
                             name=f"{self._network_name}-relink", daemon=True).start()

    def _restore_links(self, gen):
        """Re-link (and re-lock) after a reconnect, retrying until each Service is back."""
        delay = 0.05
        while gen == self._gen and not self._closing:
            todo = [link for link in list(self._links) if link._linked_gen != gen]
            if not todo:
                return
            for link in todo:
                try:
                    link._restore(time.monotonic() + 5, retry=False)
                except Exception as exc:  # noqa: BLE001 -- retried below
                    logger.debug("relink with %r: %s", link._service_name, exc)
            time.sleep(delay)
            delay = min(1.0, delay * 2)


def _log_failure(host, port, exc):
    logger.info("reconnect to %s:%s failed: %s", host, port, summary(exc))
