"""Where gevent meets asyncio: nats-py in a thread of its own, bridged to the Manager's hub.

The Manager's process is monkey-patched, so this module starts a *real* thread with the
unpatched ``_thread.start_new_thread`` and gives its asyncio loop the unpatched selector
(``selectors.DefaultSelector``): the NATS client's loop then waits on epoll like any asyncio
program, and the hub never waits on it.

* hub -> NATS: :meth:`Bridge.publish` only appends to an outbox and, once per batch, schedules
  one drain on the loop (``call_soon_threadsafe``): publishes keep their order and cost the hub an
  append. :meth:`Bridge.call` runs a coroutine on the loop and waits for its result in the
  calling greenlet only.
* NATS -> hub: the loop appends ``(function, args)`` to an inbox and wakes the hub with a gevent
  ``async`` watcher (the one thread-safe way in); a pump greenlet runs them in order. Handlers
  run on the hub like any other greenlet code: they may send to peers, never block long.

Nothing else in netmgr touches asyncio or nats-py (docs/cluster.md, "Bridging").
"""
import asyncio
import collections
import ssl

import gevent
from gevent import monkey
from gevent.event import AsyncResult, Event

from netmgr.daemon import log

logger = log.get_logger("netmgr.daemon.cluster")

_start_new_thread = monkey.get_original("_thread", "start_new_thread")
_DefaultSelector = monkey.get_original("selectors", "DefaultSelector")

#: bytes queued for NATS beyond which new publishes are dropped (NATS cut off, or too slow)
OUTBOX_LIMIT = 256 * 1024 * 1024


class Bridge:
    """One NATS connection, used from the hub.

    ``on_state(state)`` is called on the hub with ``"connected"``, ``"disconnected"``,
    ``"reconnected"`` or ``"closed"``.
    """

    def __init__(self, servers, name, on_state, creds=None, tls_ca=None):
        self.servers = servers
        self.name = name
        self.on_state = on_state
        self.creds = creds
        self.tls_ca = tls_ca
        self.nc = None
        self.js = None
        self.connected = False
        self.dropped = 0  # publishes dropped because the outbox was full
        self._loop = None
        self._inbox = collections.deque()
        self._wake = Event()
        self._watcher = None
        self._pump_greenlet = None
        self._outbox = collections.deque()
        self._outbox_bytes = 0
        self._draining = False
        self._ready = AsyncResult()

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        """Start the thread and its loop; the NATS connection is made (and remade) there."""
        hub = gevent.get_hub()
        self._watcher = hub.loop.async_()
        self._watcher.start(self._wake.set)
        self._pump_greenlet = gevent.spawn(self._pump)
        _start_new_thread(self._thread_main, ())
        self._ready.get()  # the loop exists (not the connection: NATS may be down)

    def close(self, timeout=2.0):
        if self._loop is None:
            return
        try:
            self.call(self._close, timeout=timeout)
        except Exception:  # noqa: BLE001 -- closing: nothing more to do
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._pump_greenlet is not None:
            self._pump_greenlet.kill(block=False)
        if self._watcher is not None:
            self._watcher.close()

    def _thread_main(self):
        loop = asyncio.SelectorEventLoop(_DefaultSelector())
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._to_hub(self._ready.set, None)
        loop.create_task(self._connect())
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _connect(self):
        import nats  # only in cluster mode: the extra `netmgr[cluster]`

        options = {
            "servers": self.servers, "name": self.name, "allow_reconnect": True,
            "max_reconnect_attempts": -1, "reconnect_time_wait": 0.5, "connect_timeout": 2,
            # a NATS server that stops answering is noticed in ~2 s, not the default 4 minutes
            "ping_interval": 1, "max_outstanding_pings": 2,
            "disconnected_cb": self._state_cb("disconnected"),
            "reconnected_cb": self._state_cb("reconnected"),
            "closed_cb": self._state_cb("closed"),
            "error_cb": self._error_cb,
        }
        if self.creds:
            options["user_credentials"] = self.creds
        if self.tls_ca:
            options["tls"] = ssl.create_default_context(cafile=self.tls_ca)
        while True:
            try:
                self.nc = await nats.connect(**options)
                break
            except Exception as exc:  # noqa: BLE001 -- NATS down at start: keep trying
                self._to_hub(logger.warning, "cluster_connect_failed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(1.0)
        self.js = self.nc.jetstream()
        self._to_hub(self._set_state, "connected")

    def _state_cb(self, state):
        async def callback():
            self._to_hub(self._set_state, state)
        return callback

    async def _error_cb(self, exc):
        self._to_hub(logger.info, "cluster_nats_error", error=str(exc) or type(exc).__name__)

    def _set_state(self, state):
        self.connected = state in ("connected", "reconnected")
        self.on_state(state)

    async def _close(self):
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()

    # ------------------------------------------------------------------ NATS -> hub
    def _to_hub(self, function, *args, **kwargs):
        """From the loop's thread: run ``function`` on the hub (in order)."""
        self._inbox.append((function, args, kwargs))
        self._watcher.send()

    def _pump(self):
        inbox, wake = self._inbox, self._wake
        while True:
            wake.wait()
            wake.clear()
            n = 0
            while inbox:
                function, args, kwargs = inbox.popleft()
                try:
                    function(*args, **kwargs)
                except Exception:  # noqa: BLE001 -- one bad message never stops the pump
                    log.log_exception("cluster_handler_failed", __import__("sys").exc_info(), logger)
                n += 1
                if n % 256 == 0:
                    gevent.sleep(0)  # a burst from NATS shares the hub with the peers

    def subscribe(self, subject, handler):
        """``handler(data, reply)`` on the hub for each message on ``subject``."""
        async def callback(msg):
            self._to_hub(handler, msg.data, msg.reply)

        async def subscribe():
            await self.nc.subscribe(subject, cb=callback)
        return self.call(subscribe)

    # ------------------------------------------------------------------ hub -> NATS
    def call(self, coroutine_function, *args, timeout=5.0):
        """Run ``coroutine_function(*args)`` on the loop; wait for its result in this greenlet."""
        result = AsyncResult()

        def done(future):
            exc = future.exception()
            if exc is not None:
                self._to_hub(result.set_exception, exc)
            else:
                self._to_hub(result.set, future.result())

        future = asyncio.run_coroutine_threadsafe(coroutine_function(*args), self._loop)
        future.add_done_callback(done)
        try:
            return result.get(timeout=timeout)
        except gevent.Timeout:
            future.cancel()
            raise TimeoutError(f"NATS did not answer within {timeout} s") from None

    def publish(self, subject, data):
        """Queue a publish; never blocks. False when the outbox is full (the message is dropped)."""
        if self._outbox_bytes + len(data) > OUTBOX_LIMIT or self.nc is None:
            self.dropped += 1
            return False
        self._outbox.append((subject, data))
        self._outbox_bytes += len(data)
        if not self._draining:
            self._draining = True
            self._loop.call_soon_threadsafe(self._start_drain)
        return True

    def _start_drain(self):
        self._loop.create_task(self._drain())

    async def _drain(self):
        outbox, publish = self._outbox, self.nc.publish
        try:
            while outbox:
                subject, data = outbox.popleft()
                self._outbox_bytes -= len(data)
                try:
                    await publish(subject, data)
                except Exception:  # noqa: BLE001 -- disconnected: nats-py buffers or refuses
                    self.dropped += 1
        finally:
            self._draining = False
            if outbox:  # appended after the last look
                self._draining = True
                self._loop.create_task(self._drain())

    async def request_async(self, subject, data, timeout):
        msg = await self.nc.request(subject, data, timeout=timeout)
        return msg.data

    def request(self, subject, data, timeout=2.0):
        """A NATS request from a greenlet: the reply's bytes, or TimeoutError."""
        return self.call(self.request_async, subject, data, timeout, timeout=timeout + 1.0)

    def respond(self, reply, data):
        """Answer a request received by a subscription handler."""
        if reply:
            self.publish(reply, data)
