"""A Client's subscriptions to the Manager's event stream (issue 13; docs/protocol.md, "Events on
the wire").

:meth:`Client.events <netmgr.client.Client.events>` sends the Manager request
``subscribe_events``; the Manager then sends each event as a notification from ``"service":
"Manager"`` with uid ``"notification"``. No thread of this module reads: whichever thread reads
the socket (a caller, or the background reader) hands the event here through
:meth:`Dispatch._notification <netmgr.client.dispatch.Dispatch._notification>`.

* :class:`EventSubscription`, with a handler: ``handler(event)`` runs on the Client's dispatcher
  thread, in order, as a Link's ``notification_handler`` does.
* :class:`EventStream`, without one: an iterator over a bounded queue that drops its *oldest*
  event when full and counts it in ``dropped``. It does not block instead because the thread
  that puts is the thread that reads the socket: blocking it would stall every reply to this
  Client (a consumer that calls the Client from its loop would wait on itself), and the
  Manager would then drop the whole connection as a slow consumer. The newest events describe
  the present, so they are the ones kept.

The Manager keeps one cumulative set of types per connection. The Client asks it for the union
of what its subscriptions want, filters each event per subscription, and on ``close()`` asks it
to drop only the types no other subscription wants. After a reconnect the union is asked for
again on a thread of its own, as links are restored (:mod:`netmgr.client.reconnect`). Events
published while the connection was down are not replayed, and a restarted Manager counts
``seq`` from 1 again.

:class:`Events` is a mixin of :class:`netmgr.client.Client` and uses its state.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from netmgr.client.peer import CONNECTED

logger = logging.getLogger("netmgr.client")

#: An event as it came on the wire: ``{"type", "event", "seq", "time", ...}``.
Event = dict[str, Any]
#: ``handler(event)`` of :meth:`Client.events <netmgr.client.Client.events>`.
EventHandler = Callable[[Event], Any]
#: Default ``maxsize`` of an :class:`EventStream`: events kept for a consumer that lags.
DEFAULT_MAXSIZE = 10_000


class EventSubscription:
    """Events of some types delivered to a handler; from :meth:`Client.events` with ``handler=``.

    ``close()`` (or leaving a ``with`` block) unsubscribes. While it is open, the Client
    subscribes again after each reconnect, with no user code.
    """

    def __init__(self, owner: Events, types: frozenset[str] | None,
                 handler: EventHandler | None = None) -> None:
        self._owner = owner
        self._requested = types  # None: every type this connection may have
        self._handler = handler
        self._gen = -1  # the connection on which the Manager confirmed the subscription
        #: The event types this subscription receives (for ``types=None``: those the Manager granted).
        self.types: frozenset[str] = types or frozenset()
        #: True once closed by :meth:`close`, or when the Client disconnected for good.
        self.closed = False

    def __enter__(self) -> EventSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "active" if self.active else "inactive"
        return f"<{type(self).__name__} {','.join(sorted(self.types)) or '-'} {state}>"

    @property
    def active(self) -> bool:
        """Whether the Manager has confirmed this subscription on the current connection
        (False while reconnecting, until the Client has subscribed again)."""
        return not self.closed and self._owner._subscription_active(self)

    def wait_active(self, timeout: float | None = None) -> bool:
        """Wait until :attr:`active` (after a reconnect: until subscribed again); its value."""
        return self._owner._wait_subscription_active(self, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Unsubscribe (the types no other subscription of this Client wants). Idempotent; does
        not raise when the connection is already gone."""
        if not self.closed:
            self._end()
            self._owner._unsubscribe(self, timeout)

    # ------------------------------------------------------------ called by the Client
    def _wants(self, kind: Any) -> bool:
        return self._requested is None or kind in self._requested

    def _subscribed(self, gen: int, granted: Any) -> None:
        if self._requested is None and isinstance(granted, list):
            self.types = frozenset(granted)
        self._gen = gen

    def _deliver(self, event: Event) -> None:
        """On the reading thread: queue the handler call for the dispatcher thread."""
        self._owner._post((self._call, event))

    def _call(self, event: Event) -> None:
        if not self.closed:
            self._handler(event)

    def _end(self, error: BaseException | None = None) -> None:
        """No more events: closed by the user, the Client gone for good, or refused (`error`)."""
        self.closed = True


class EventStream(EventSubscription):
    """An iterator of events; from :meth:`Client.events` without a handler.

    ``for event in stream`` yields each event (a dict); the loop ends (StopIteration) when the
    stream is closed or the Client disconnects for good, after the events already received.
    With a ``timeout`` (seconds; the attribute may be changed between iterations) a ``next``
    that waits longer raises :class:`TimeoutError`. At most ``maxsize`` events wait: when full
    the oldest is dropped and counted in ``dropped`` (see the module docstring for why).
    """

    def __init__(self, owner: Events, types: frozenset[str] | None, maxsize: int = DEFAULT_MAXSIZE,
                 timeout: float | None = None) -> None:
        super().__init__(owner, types)
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, not {maxsize!r}")
        #: The most events that wait for the consumer.
        self.maxsize = maxsize
        #: Seconds a ``next`` waits before it raises TimeoutError (None: no limit).
        self.timeout = timeout
        #: How many events were dropped because ``maxsize`` were waiting.
        self.dropped = 0
        self._queue: collections.deque[Event] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._error: BaseException | None = None

    def __enter__(self) -> EventStream:
        return self

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        timeout = self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                if self._error is not None:  # refused at a re-subscription: raised once
                    error, self._error = self._error, None
                    raise error
                if self.closed:
                    raise StopIteration
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no event within {timeout:g} s")
                self._cond.wait(remaining)
            return self._queue.popleft()

    def close(self, timeout: float | None = None) -> None:
        """Unsubscribe and end the iteration at once (events not yet taken are discarded)."""
        if not self.closed:
            with self._cond:
                self._queue.clear()
                self._error = None
        super().close(timeout)

    def _deliver(self, event: Event) -> None:
        """On the reading thread: never blocks (drop-oldest, see the module docstring)."""
        with self._cond:
            if self.closed:
                return
            if len(self._queue) >= self.maxsize:
                self._queue.popleft()
                self.dropped += 1
                if self.dropped == 1:
                    logger.warning("an event stream is full (maxsize=%d): dropping the oldest events",
                                   self.maxsize)
            self._queue.append(event)
            self._cond.notify()

    def _end(self, error: BaseException | None = None) -> None:
        with self._cond:
            self.closed = True
            self._error = error
            self._cond.notify_all()


def event_types(types: str | Iterable[str] | None) -> frozenset[str] | None:
    """``types`` of :meth:`Client.events` as a frozenset (None: every type); a str is one type."""
    if types is None:
        return None
    if isinstance(types, str):
        return frozenset((types,))
    wanted = frozenset(types)
    for kind in wanted:
        if not isinstance(kind, str):
            raise TypeError(f"an event type is a str, not {type(kind).__name__}")
    if not wanted:
        raise ValueError("no event types given (types=None subscribes to every type)")
    return wanted


def _args(types: frozenset[str] | None) -> list[Any]:
    """The request's ``args``: none for every type, else the sorted list."""
    return [] if types is None else [sorted(types)]


class Events:
    """The event subscriptions of a Client (a mixin; see the module docstring)."""

    _event_subs: tuple[EventSubscription, ...]
    _events_lock: threading.Lock

    def _subscribe_events(self, types, handler, maxsize, timeout):
        wanted = event_types(types)
        if handler is not None:
            if not callable(handler):
                raise TypeError(f"handler must be callable, not {type(handler).__name__}")
            sub = EventSubscription(self, wanted, handler)
        else:
            sub = EventStream(self, wanted, maxsize, timeout)
        # one subscribe/unsubscribe at a time: each computes what the Manager must keep from
        # the others; the subscription is listed before the request so that no event that
        # follows the reply is missed
        with self._events_lock:
            self._event_subs = (*self._event_subs, sub)
            gen = self._gen
            try:
                granted = self._request("Manager", "subscribe_events", _args(wanted), {})
            except BaseException:
                self._event_subs = tuple(s for s in self._event_subs if s is not sub)
                sub._end()
                raise
            sub._subscribed(gen, granted)
        return sub

    def _unsubscribe(self, sub, timeout):
        with self._lock:
            self._cond.notify_all()  # wait_active() of the closed subscription
        with self._events_lock:
            if sub not in self._event_subs:
                return
            self._event_subs = others = tuple(s for s in self._event_subs if s is not sub)
            if self._state != CONNECTED or self._closing:
                return  # nothing to tell a Manager that is gone; a reconnect asks only for the others
            if not others:
                args = []  # all
            elif any(s._requested is None for s in others):
                return
            else:
                drop = sub.types - frozenset().union(*(s._requested for s in others))
                if not drop:
                    return
                args = [sorted(drop)]
            try:
                self._request("Manager", "unsubscribe_events", args, {}, timeout)
            except OSError as exc:  # lost meanwhile: the subscription ends with the connection
                logger.debug("unsubscribe_events: %s", exc)

    def _manager_event(self, event):
        """An event notification, on the thread that read it: to each subscription that wants it."""
        subs = self._event_subs
        if not subs or event.__class__ is not dict:
            return
        kind = event.get("type")
        first = True
        for sub in subs:
            if sub._wants(kind):
                sub._deliver(event if first else dict(event))  # a dict of its own to each
                first = False

    def _restore_events(self, gen):
        """After a reconnect (on a thread of its own): subscribe to the union again."""
        with self._events_lock:
            subs = self._event_subs
            if not subs or gen != self._gen or self._closing:
                return
            wanted = (None if any(s._requested is None for s in subs)
                      else frozenset().union(*(s._requested for s in subs)))
            try:
                self._subscribe_again(wanted)
            except RuntimeError as exc:  # refused: e.g. another Manager of a failover list
                logger.error("could not subscribe to events again at Manager[%s]: %s",
                             self._address_manager, str(exc).strip().splitlines()[-1])
                self._event_subs = ()
                for sub in subs:
                    sub._end(exc)
                with self._lock:
                    self._cond.notify_all()  # wait_active()
                return
            except OSError as exc:  # lost again: the next reconnect subscribes again
                logger.debug("subscribe_events after reconnecting: %s", exc)
                return
            for sub in subs:
                sub._gen = gen
            logger.info("event subscriptions restored at Manager[%s]", self._address_manager)
        with self._lock:
            self._cond.notify_all()  # wait_active()

    def _subscribe_again(self, wanted):
        """``subscribe_events`` on a new connection. A Client that had logged in as an
        administrator inline (through an admin request, reference 1.7) is not one on the new
        connection until it logs in again: a cheap admin request (``port``) does that with the
        credentials it kept, then the subscription is asked for again."""
        try:
            return self._request("Manager", "subscribe_events", _args(wanted), {})
        except RuntimeError as exc:
            if not self._admin or "PermissionError" not in str(exc):
                raise
        self._request("Manager", "port", (), {})
        return self._request("Manager", "subscribe_events", _args(wanted), {})

    def _events_ended(self):
        """The Client disconnected for good: every iteration ends after its queued events."""
        subs, self._event_subs = self._event_subs, ()
        for sub in subs:
            sub._end()
        with self._lock:
            self._cond.notify_all()  # wait_active()

    def _subscription_active(self, sub):
        return sub._gen == self._gen and self._state == CONNECTED

    def _wait_subscription_active(self, sub, timeout):
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not sub.closed and not (sub._gen == self._gen and self._state == CONNECTED):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return not sub.closed
