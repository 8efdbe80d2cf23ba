"""A Client's connection life: install a connection, lose it, reconnect with failover, close.

Each connection has a generation number (``_gen``); losing it bumps the number, so a reader or
a caller holding an old generation stops using it. On loss every pending request fails with
``ConnectionAbortedError`` (the Client's own disconnect and ``shutdown_manager`` resolve
quietly), the state becomes ``RECONNECTING`` when ``reconnect`` allows it and the background
thread (:mod:`netmgr.client.reader`) makes rounds over the failover list with back-off
(:meth:`Failover.run <netmgr.client.failover.Failover.run>`, the loop the Service uses too); once
connected, links are restored (and locks re-acquired with ``relock``) on their own thread, event
subscriptions are made again on another (:mod:`netmgr.client.events`), and a call through a link
of an earlier connection restores it first. A link is restored through its
:class:`~netmgr.client.proxy.LinkEnd`, the record the Client keeps of it. State callbacks run on
the dispatcher thread.

:class:`Reconnect` is a mixin of :class:`netmgr.client.Client` and uses its state.
"""
import logging
import math
import os
import threading
import time

from netmgr.client.peer import CONNECTED, DISCONNECTED, RECONNECTING, own_address
from netmgr.client.failover import Failover, summary
from netmgr.protocol import DISCONNECT_REQUEST, SHUTDOWN_MANAGER

logger = logging.getLogger("netmgr.client")

_AGAIN = object()


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
            self._network_name = f"{self._name}[{own_address(host, local_port)}]"
            self._address_manager = f"{host}:{port}" if port else host
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
        self._events_ended()
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
        found = failover.run(stop=self._is_closing, on_error=_log_failure,
                             wait=self._wait_unless_closing)
        if found is not None:
            self._manager_index = failover.index
            self._reconnected(*found)
        elif not failover.stopped:
            logger.error("gave up reconnecting to %s after %d attempt(s)",
                         "|".join(f"{h}:{p}" for h, p in self._options.managers),
                         failover.rounds)
            self._set_disconnected()

    def _is_closing(self):
        return self._closing

    def _wait_unless_closing(self, delay):
        with self._lock:
            if not self._closing:
                self._cond.wait(delay)

    def _reconnected(self, host, port, transport, local_port, leftover, lines):
        if not self._install(transport, local_port, lines, host, port):
            return
        for line in leftover:
            self._dispatch(line)
        self._state_changed(CONNECTED)
        if self._links:
            threading.Thread(target=self._restore_links, args=(self._gen,),
                             name=f"{self._network_name}-relink", daemon=True).start()
        if self._event_subs:
            threading.Thread(target=self._restore_events, args=(self._gen,),
                             name=f"{self._network_name}-resubscribe", daemon=True).start()

    def _restore_links(self, gen):
        """Re-link (and re-lock) after a reconnect, retrying until each Service is back."""
        delay = 0.05
        while gen == self._gen and not self._closing:
            todo = [end for end in list(self._links) if end.gen != gen]
            if not todo:
                return
            for end in todo:
                try:
                    self._restore_link(end, time.monotonic() + 5, retry=False)
                except Exception as exc:  # noqa: BLE001 -- retried below
                    logger.debug("relink with %r: %s", end.service, exc)
            time.sleep(delay)
            delay = min(1.0, delay * 2)

    def _restore_link(self, end, deadline, retry=True):
        """Link `end` again after a reconnect; retry while the Service is not back (until
        deadline). A caller of the link and the relink thread may both get here: one links."""
        with end.restore_lock:
            while True:
                gen = self._gen
                if end.gen == gen:
                    return
                identity = self._link_again(end, deadline, retry)
                if identity is _AGAIN or gen != self._gen:
                    continue
                end.identity = identity
                if end.lock_shared is not None and self._relock:
                    self._relock_link(end, deadline)
                end.gen = gen
                logger.info("link with %r restored", end.service)
                return

    def _link_again(self, end, deadline, retry):
        """The Service's identity from a new ``link``; ``_AGAIN`` while it is not back."""
        try:
            return self._request("Manager", "link", (end.service,), {}, _remaining(deadline))
        except RuntimeError as exc:
            if not retry or "does not exist" not in str(exc) and "not connected" not in str(exc):
                raise
            if deadline is not None and time.monotonic() + 0.1 >= deadline:
                raise TimeoutError(f"The {end.service!r} service is not available after "
                                   f"reconnecting to Manager[{self._address_manager}]") from exc
        time.sleep(0.1)
        return _AGAIN

    def _relock_link(self, end, deadline):
        try:
            self._request("Manager", "acquire_lock", (end.service,),
                          {"shared": end.lock_shared}, _remaining(deadline))
        except RuntimeError as exc:
            logger.error("could not re-acquire the lock of %r: %s", end.service, exc)
            end.lock_shared = None


def _remaining(deadline):
    if deadline is None:
        return math.inf
    return max(0.001, deadline - time.monotonic())


def _log_failure(host, port, exc):
    logger.info("reconnect to %s:%s failed: %s", host, port, summary(exc))
