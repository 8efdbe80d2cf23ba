"""The Manager attributes every Client may use (reference 1.7): ``identity``, ``link``,
``unlink``, ``acquire_lock``, ``release_lock``, and netmgr's ``subscribe_events`` and
``unsubscribe_events`` (the event stream, :mod:`netmgr.daemon.events`), dispatched by table
(STYLE.md rule 6).

Any other attribute of the Manager is an admin request (:mod:`netmgr.daemon.admin`). Errors
go back to the peer with the request's uid, in 1.0's words (reference 1.10, 1.11).
"""
import orjson

from netmgr.daemon.events import PUBLIC, TYPES, check_types
from netmgr.daemon.registry import Client
from netmgr.protocol import dumps
from netmgr.errors import Refused, error_text
from netmgr.hostinfo import HOSTNAME, LANGUAGE, OS_NAME


def _client(session):
    if type(session.record) is not Client:
        raise Refused("PermissionError", "only a Client can link with a Service")
    return session.record


class Attributes:
    """Serves a Manager request of a session: ``handle(session, data, attribute, uid)``."""

    def __init__(self, manager):
        self.manager = manager
        self.registry = manager.registry
        self._identity_cache = None  # ((registry.changes, port), identity as a JSON fragment)
        self._handlers = {
            "identity": self._identity,
            "link": self._link,
            "unlink": self._unlink,
            "acquire_lock": self._acquire_lock,
            "release_lock": self._release_lock,
            "subscribe_events": self._subscribe_events,
            "unsubscribe_events": self._unsubscribe_events,
        }

    def handle(self, session, data, attribute, uid):
        handler = self._handlers.get(attribute)
        if handler is None:
            self.manager.admin.handle(session, data, attribute, uid)
            return
        try:
            value = handler(session, data)
        except Refused as exc:
            session.reply_error(exc.message, uid)
            return
        except KeyError as exc:  # malformed arguments keep 1.0's texts, e.g. KeyError: 'shared'
            session.reply_error(error_text("KeyError", exc.args[0] if exc.args else ""), uid)
            return
        except Exception as exc:  # noqa: BLE001 -- IndexError, TypeError … as 1.0 words them
            session.reply_error(f"{type(exc).__name__}: {exc}", uid)
            return
        finally:
            if self.registry.pending:
                self.manager.publish_pending()
        session.reply(value, uid)

    def _identity(self, session, data):
        """The identity, serialised once per change of the registry (20,000 peers: ~2 MB of JSON)."""
        key = (self.registry.changes, self.manager.port)
        if self._identity_cache is None or self._identity_cache[0] != key:
            value = self.registry.identity(HOSTNAME, self.manager.port, LANGUAGE, OS_NAME)
            try:
                value = orjson.Fragment(dumps(value)[:-2])  # embedded as it is in each reply
            except (TypeError, ValueError):  # a Service's attributes only 1.0's dialect can hold
                pass
            self._identity_cache = (key, value)
        return self._identity_cache[1]

    def _remote(self, name):
        """The record of a Service of another cluster node, else None."""
        record = self.registry.service(name) if type(name) is str else None
        return record if record is not None and record.node is not None else None

    def _link(self, session, data):
        client, name = _client(session), data["args"][0]
        remote = self._remote(name)
        if remote is not None:  # the Service's node decides (max_clients, locks)
            self.manager.cluster.ctl(remote, client, "link")
        return self.registry.link(client, name)

    def _unlink(self, session, data):
        client, name = _client(session), data["args"][0]
        remote = self._remote(name)
        if remote is not None:
            self.manager.cluster.ctl(remote, client, "unlink")
        return self.registry.unlink(client, name)

    def _acquire_lock(self, session, data):
        client, name, shared = _client(session), data["args"][0], bool(data["kwargs"]["shared"])
        remote = self._remote(name)
        if remote is not None:
            return self.manager.cluster.ctl(remote, client, "acquire_lock", shared)
        return self.registry.acquire_lock(client, name, shared)

    def _release_lock(self, session, data):
        client, name = _client(session), data["args"][0]
        remote = self._remote(name)
        if remote is not None:
            return self.manager.cluster.ctl(remote, client, "release_lock")
        return self.registry.release_lock(client, name)

    def _subscribe_events(self, session, data):
        """Event types for this peer's stream; the reply is every type it now receives."""
        types = _event_types(data)
        allowed = frozenset(TYPES) if session.is_admin else PUBLIC
        if not types:  # none given, or an empty list: every type this peer may have
            types = allowed
        refused = check_types(types) - allowed
        if refused:
            raise Refused("PermissionError",
                          f"the event types {', '.join(map(repr, sorted(refused)))} are for "
                          f"administrators; a non-administrator may subscribe to: "
                          f"{', '.join(sorted(PUBLIC))}")
        return sorted(self.manager.events.subscribe(session.send_event, types))

    def _unsubscribe_events(self, session, data):
        """None given: every type; an empty list: none (a client computing what to drop)."""
        return sorted(self.manager.events.unsubscribe(session.send_event, _event_types(data)))


def _event_types(data):
    """The types of a (un)subscribe request: ``args[0]`` or ``kwargs["types"]``; None if none."""
    kwargs = data.get("kwargs")
    args = data.get("args")
    if type(kwargs) is dict and "types" in kwargs:
        types = kwargs["types"]
    elif type(args) is list and args:
        types = args[0]
    else:
        types = None
    if types is not None and type(types) not in (list, str):
        raise Refused("TypeError", "the event types must be a list of strings")
    return types
