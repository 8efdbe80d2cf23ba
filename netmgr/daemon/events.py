"""The Manager's event stream: what changed, for whoever subscribed (issue 13).

ConfD's notification socket is the model: a subscriber names the event types it wants, and each
event is one JSON object with a ``type``, an ``event`` (what happened), a ``seq`` and a ``time``,
and keys that depend on its type (docs/protocol.md, "Events on the wire", has the table).

This module performs no I/O and imports neither gevent nor sockets. :class:`EventBus` calls its
listeners synchronously from :meth:`EventBus.publish`; a listener only enqueues (a wire peer's
bounded output queue, an HTTP reader's bounded queue), so publishing never blocks and a
subscriber that stops reading is dropped by the same rules as any slow peer.
"""
import collections
import time

from netmgr.protocol import dumps

TYPES = ("peer", "service", "link", "lock", "request_failed", "auth", "admin", "heartbeat", "health",
         "cluster")
#: the types a peer that is not an administrator may subscribe to: what ``identity()`` reveals
PUBLIC = frozenset(("peer", "service", "health"))
#: withheld from an HTTP reader that did not authenticate (a loopback reader)
AUDIT = frozenset(("auth", "admin"))
#: events kept for a reader that comes (back) late: the web page, an SSE ``Last-Event-ID``.
#: Heartbeats are not kept (one per interval, and with many Services large): the next one comes.
HISTORY = 256

_ALL = frozenset(TYPES)


def check_types(types):
    """``types`` (None: all) as a frozenset; ValueError naming an unknown type."""
    if types is None:
        return _ALL
    if isinstance(types, str):
        types = (types,)
    try:
        wanted = frozenset(types)
    except TypeError:
        raise ValueError("the event types must be a list of strings") from None
    for name in sorted(wanted, key=str):
        if name not in _ALL:
            raise ValueError(f"unknown event type {name!r}; the types are: {', '.join(TYPES)}")
    return wanted


class Event:
    """One published event: ``seq``, ``type``, ``data`` (the dict), ``json`` (its bytes) and
    ``notification`` (the wire line a subscribed peer receives), each built once."""

    __slots__ = ("seq", "type", "data", "json", "_notification")

    def __init__(self, seq, kind, data):
        self.seq, self.type, self.data = seq, kind, data
        try:
            self.json = dumps(data)[:-2]  # 1.0's dialect too: a Service's attributes may hold 2**70
        except (TypeError, ValueError):  # nothing a peer sent gets here; never fail a publish
            self.json = dumps({k: v if k in ("type", "event", "seq", "time") else repr(v)
                               for k, v in data.items()})[:-2]
        self._notification = None

    @property
    def notification(self):
        if self._notification is None:
            self._notification = b"".join((b'{"error":false,"result":', self.json,
                                           b',"service":"Manager","uid":"notification"}\r\n'))
        return self._notification


class EventBus:
    """Subscribers by type, and the last :data:`HISTORY` events."""

    def __init__(self, history=HISTORY, clock=time.time):
        self.seq = 0
        self._clock = clock
        self._listeners = {}  # listener -> frozenset of types
        self._by_type = {kind: () for kind in TYPES}  # type -> tuple of listeners (publish reads it)
        self._history = collections.deque(maxlen=history)

    def subscribe(self, listener, types=None):
        """Add ``types`` (None: all) to what ``listener(event)`` receives; return its set."""
        wanted = check_types(types) | self._listeners.get(listener, frozenset())
        self._listeners[listener] = wanted
        self._index()
        return wanted

    def unsubscribe(self, listener, types=None):
        """Remove ``types`` (None: all) from ``listener``'s set; return what remains."""
        if listener not in self._listeners:
            return frozenset()
        remaining = frozenset()
        if types is not None:
            remaining = self._listeners.get(listener, frozenset()) - check_types(types)
        if remaining:
            self._listeners[listener] = remaining
        else:
            self._listeners.pop(listener, None)
        self._index()
        return remaining

    def subscriptions(self, listener):
        return self._listeners.get(listener, frozenset())

    def _index(self):
        self._by_type = {kind: tuple(l for l, types in self._listeners.items() if kind in types)
                         for kind in TYPES}

    def wanted(self, kind):
        """Whether anyone subscribed to ``kind`` (an expensive event can be skipped)."""
        return bool(self._by_type[kind])

    def publish(self, kind, event, /, **fields):
        """Publish one event; return it. ``fields`` are the keys of its type (spec table)."""
        self.seq += 1
        data = {"type": kind, "event": event, "seq": self.seq, "time": round(self._clock(), 6)}
        data.update(fields)
        published = Event(self.seq, kind, data)
        if kind != "heartbeat":
            self._history.append(published)
        for listener in self._by_type[kind]:
            listener(published)
        return published

    def recent(self, n=None, types=None, after=None):
        """The kept events, oldest first: the last ``n``, of ``types``, with a seq above ``after``."""
        events = [e for e in self._history
                  if (types is None or e.type in types) and (after is None or e.seq > after)]
        return events[-n:] if n else events
