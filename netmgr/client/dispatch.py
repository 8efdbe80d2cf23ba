"""What a Client does with each line it reads: replies by uid, notifications, Manager requests.

Whichever thread reads the socket (a caller holding the reading role, or the background
thread) calls :meth:`Dispatch._dispatch` for each line. A reply resolves the waiter or future
with its uid (1.0 Managers answer admin requests with uid ``""``: the latest Manager request
gets it); a notification is queued for the handlers of the links with its Service, an event
notification (from ``"service": "Manager"``) goes to the event subscriptions
(:mod:`netmgr.client.events`); the inline
admin login's ``username``/``password`` requests are answered. Notification handlers and state
callbacks run on one dispatcher thread, in order, so a slow handler never blocks reading, and a
reply from a Service is returned only after the handlers of the notifications it sent before.

:class:`Dispatch` is a mixin of :class:`netmgr.client.Client` and uses its state.
"""
import logging
import threading

from orjson import loads as _orjson_loads

from netmgr.client.calls import _Waiter
from netmgr.client.peer import credential_reply, remote_error_text
from netmgr.errors import MessageTooLargeError  # noqa: F401 -- re-exported by netmgr.client
from netmgr.protocol import NOTIFICATION_UID, TooLong, loads

logger = logging.getLogger("netmgr.client")

_INVALID = object()


class Dispatch:
    """The incoming side of a Client (a mixin; see the module docstring)."""

    def _dispatch(self, line):
        if line.__class__ is TooLong:
            self._too_long(line)
            return
        try:
            msg = _orjson_loads(line)
        except ValueError:
            msg = self._loads_slow(line)
        if msg.__class__ is not dict:
            if msg is not _INVALID:
                logger.error("unexpected message from Manager[%s]: %r", self._address_manager,
                             line[:200])
            return
        uid = msg.get("uid")
        if uid == NOTIFICATION_UID and "service" in msg:
            self._notification(msg)
            return
        if "result" not in msg and "error" not in msg:
            return
        self._reply(msg, uid)

    def _loads_slow(self, line):
        """What orjson refuses: 1.0's NaN and Infinity, or an invalid line (``_INVALID``)."""
        try:
            return loads(line)
        except ValueError:
            logger.error("invalid line from Manager[%s]: %r", self._address_manager, line[:200])
            return _INVALID

    def _reply(self, msg, uid):
        is_error = bool(msg.get("error"))
        with self._lock:
            waiter = self._pending.pop(uid, None) if uid else None
            if waiter is None and uid == "" and (is_error or "result" in msg):
                waiter = self._pop_most_recent(manager_only=not is_error)
            if waiter.__class__ is _Waiter:
                if self._posted:
                    waiter.seq = self._unhandled(waiter.request)
                if is_error:
                    waiter._resolve(*self._outcome(msg, is_error))
                else:
                    waiter.value = msg.get("result")
                    waiter.done = True
                if self._fg_waiting:
                    self._cond.notify_all()
                return
        if waiter is None:
            if uid == "" and "attribute" in msg and "result" not in msg:
                self._manager_request(msg)  # the inline admin login asks username/password
            else:
                logger.debug("dropped a reply with uid %r from Manager[%s]", uid,
                             self._address_manager)
            return
        value, error = self._outcome(msg, is_error)
        if self._posted and self._unhandled(waiter.request):
            self._post((waiter._resolve, value, error))  # after the notifications before it
        else:
            waiter._resolve(value, error)

    def _outcome(self, msg, is_error):
        """``(value, error)`` of a reply."""
        if is_error:
            return None, RuntimeError(remote_error_text(self._address_manager, msg))
        return msg.get("result"), None

    def _unhandled(self, request):
        """The count of notifications posted by the request's Service, if some are unhandled."""
        service = request.rsplit(".", 1)[0]
        posted = self._posted.get(service, 0)
        return posted if posted > self._handled.get(service, 0) else 0

    def _pop_most_recent(self, manager_only):
        """1.0 Managers reply to admin requests with uid "": the latest Manager request gets it."""
        for uid in reversed(list(self._pending)):
            if self._pending[uid].request.startswith("Manager."):
                return self._pending.pop(uid)
        if not manager_only and self._pending:
            return self._pending.pop(next(reversed(list(self._pending))))
        return None

    def _manager_request(self, msg):
        attribute = msg.get("attribute")
        if attribute not in ("username", "password"):
            logger.error("unexpected request %r from Manager[%s]", attribute, self._address_manager)
            return
        data = credential_reply(msg, self._options.credentials)
        transport = self._transport
        if transport is not None:
            try:
                with self._wlock:
                    transport.sendall(data)
            except OSError:
                pass

    def _too_long(self, marker):
        uid = marker.field("uid")
        error = MessageTooLargeError(
            f"A message of {marker.size} bytes from Manager[{self._address_manager}] exceeds "
            f"read_limit={self._options.read_limit} bytes and was discarded; connect with a "
            f"larger read_limit (or None for no limit) to receive it")
        with self._lock:
            waiter = self._pending.pop(uid, None) if uid else None
            if waiter is None and len(self._pending) == 1:
                waiter = self._pending.pop(next(iter(self._pending)))
            if self._fg_waiting:
                self._cond.notify_all()
        if waiter is None:
            logger.error("%s", error)
        else:
            waiter._resolve(None, error)
            with self._lock:
                self._cond.notify_all()

    def _eof(self, lines, gen):
        """The Manager closed the connection: deliver a trailing partial line (1.0), then lose it."""
        tail = lines.close()
        if tail:
            self._dispatch(tail)
        self._lost(gen, None)

    # ------------------------------------------------------------------ the dispatcher thread
    def _notification(self, msg):
        name = msg.get("service")
        if name == "Manager":  # an event (no Service may take that name): netmgr.client.events
            self._manager_event(msg.get("result"))
            return
        links = [end.link for end in self._links if end.service == name]
        if not links:
            return
        try:
            args, kwargs = msg["result"]
        except (TypeError, ValueError, KeyError):
            logger.error("invalid notification from %r: %r", name, msg.get("result"))
            return
        self._posted[name] = self._posted.get(name, 0) + 1
        self._post((_call_handlers, links, args, kwargs, name))

    def _post(self, item):
        """Run ``item[0](*item[1:])`` on the dispatcher thread, in order."""
        if self._dispatcher is None:
            with self._lock:
                if self._dispatcher is None:
                    import queue

                    self._dispatch_q = queue.SimpleQueue()
                    self._dispatcher = threading.Thread(
                        target=self._dispatcher_loop, args=(self._dispatch_q,),
                        name=f"{self._network_name}-notifications", daemon=True)
                    self._dispatcher.start()
        self._dispatch_q.put(item)

    def _dispatcher_loop(self, q):
        while True:
            item = q.get()
            if item is None:
                return
            try:
                item[0](*item[1:])
            except Exception:  # noqa: BLE001 -- a handler's error must not stop the others
                logger.exception("a notification handler or state callback raised")
            if item[0] is _call_handlers:
                with self._handled_cond:
                    self._handled[item[4]] = self._handled.get(item[4], 0) + 1
                    self._handled_cond.notify_all()

    def _await_handlers(self, waiter):
        """1.0 ran the handlers of the notifications that came before a reply first."""
        service = waiter.request.rsplit(".", 1)[0]
        with self._handled_cond:
            while self._handled.get(service, 0) < waiter.seq and self._dispatcher.is_alive():
                self._handled_cond.wait(0.5)


def _call_handlers(links, args, kwargs, service):
    for link in links:
        link.notification_handler(*args, **kwargs)
