"""Who is connected, who is linked with whom, who holds a lock, which requests are in flight.

This module performs no I/O and imports neither gevent nor sockets. Every method runs to
completion without blocking, so under gevent each call is atomic and needs no lock
(STYLE.md rule 2). A method either returns what the caller must deliver or raises
:class:`Refused`, whose ``message`` is the 1.0 error text the peer expects (reference 1.11).

Peers are registered with an opaque ``handle`` (the Manager's session object); the registry
hands handles back as destinations and never calls them.

Each change of state is also an event (issue 13): the registry appends ``(type, event, fields)``
to :attr:`Registry.pending`, as it returns deliveries, and the Manager publishes them
(:mod:`netmgr.daemon.events`). Request figures per Service are kept in :mod:`netmgr.daemon.stats`.
"""
import re
import reprlib
import time

from netmgr.daemon.stats import StatsTable
from netmgr.errors import Refused, error_text
from netmgr.protocol import encode_str, error


class Client:
    __slots__ = ("name", "name_json", "handle", "links", "sent_to", "inflight")

    def __init__(self, name, handle):
        self.name = name  # network name, "Name[host:port]"
        self.name_json = encode_str(name)  # spliced into every request it sends (routing)
        self.handle = handle
        self.links = set()  # Service records this client is linked with
        self.sent_to = set()  # Service records holding requests of this client in flight
        self.inflight = 0  # requests of this client in flight, to all Services


class Service:
    __slots__ = ("name", "network_name", "handle", "max_clients", "links", "locks", "inflight",
                 "stats", "shared", "node")

    def __init__(self, name, network_name, handle, max_clients, stats=None, node=None):
        self.name = name
        self.node = node  # the cluster node it is connected to, if that is another node
        self.network_name = network_name
        self.handle = handle
        self.max_clients = max_clients
        self.links = set()  # Client records
        self.locks = set()  # Client records, a subset of links
        self.shared = False  # whether the locks held are shared ones
        # requests forwarded and not yet answered: {requester network name: {uid: start}}, the
        # monotonic time it was forwarded; a list of those for several requests with one uid
        # (terminal users send every request with uid ""). A float, not a list of one: the hot
        # path allocates nothing.
        self.inflight = {}
        self.stats = stats  # netmgr.daemon.stats.ServiceStats, kept under the name

    def in_flight(self):
        return sum(_count(starts) for uids in self.inflight.values() for starts in uids.values())


def _count(starts):
    """How many requests an in-flight entry stands for (a start time, or a list of them)."""
    return 1 if type(starts) is float else len(starts)


def _by_name(record):
    return record.name


def _names(peers):
    return "\n  ".join(sorted(p.name for p in peers))


def _bad_name(name):
    return any(c in name for c in "[]\r\n")


# C0, DEL and C1 controls, the line and paragraph separators, and the bidi embeddings,
# overrides and isolates: written raw to a log or a terminal they can rewrite it (``\x1bc``
# resets an admin's terminal) or reorder it (issue 10, finding 8).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# half of a UTF-16 pair, which the stdlib JSON parser accepts (``"\ud800"``) and UTF-8 cannot hold
_SURROGATE = re.compile("[\ud800-\udfff]")

# repr() of what a peer sent, bounded: repr() of a name 1000 lists deep raised RecursionError, and
# of a long one made an error reply as long. Short values are shown exactly as repr() shows them.
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 200
_SHORT.maxlevel = 3
_shown = _SHORT.repr


def check_identity(identity):
    """Validate an identity reply (reference 1.3, identity step) and return ``(kind, fields)``.

    ``fields`` holds the known keys only (1.0 drops any extra identity keys). Raises
    :class:`Refused` with 1.0's texts, plus netmgr's checks: names with ``[``, ``]``, line
    breaks, control characters (C0, DEL, C1, U+2028/2029, bidi controls) or lone surrogates, a
    Service named ``Manager`` and a non-integer ``max_clients`` are refused (reference 6.11 and
    6.21; issue 10, finding 8). A Service's attribute names are not checked: 1.0 accepts any,
    and netmgr never prints them.
    """
    if not isinstance(identity, dict):
        raise Refused("TypeError", "the identity must be a JSON object")
    if "name" not in identity:
        raise Refused("KeyError", "name")
    if "type" not in identity:
        raise Refused("KeyError", "type")
    name, kind = identity["name"], identity["type"]
    if not isinstance(kind, str):
        raise Refused("TypeError", "the identity 'type' must be a string")
    kind = kind.lower()
    if kind not in ("client", "service"):
        raise Refused("TypeError", f'Unknown connection type {_shown(kind)}. Must be "client" or '
                                   '"service"')
    if not isinstance(name, str) or not name or _bad_name(name):
        raise Refused("ValueError", f"invalid {kind} name {_shown(name)}: it must be a non-empty string "
                                    "without '[', ']' or line breaks")
    if _CONTROL.search(name):
        raise Refused("ValueError", f"invalid {kind} name {_shown(name)}: it must not contain control "
                                    "characters")
    if _SURROGATE.search(name):
        raise Refused("ValueError", f"invalid {kind} name {_shown(name)}: it must not contain lone "
                                    "surrogates")
    language = identity.get("language", "unknown")
    os_name = identity.get("os", "unknown")
    if kind == "client":
        return kind, {"name": name, "language": language, "os": os_name}
    if name == "Manager":
        raise Refused("ValueError", "a Service cannot be named 'Manager'")
    if "attributes" not in identity:
        raise Refused("KeyError", "attributes")
    attributes = identity["attributes"]
    if not isinstance(attributes, dict):
        raise Refused("TypeError", "the Service 'attributes' must be a JSON object")
    max_clients = identity.get("max_clients", -1)
    if max_clients is None:
        max_clients = -1
    if isinstance(max_clients, bool) or not isinstance(max_clients, int):
        raise Refused("TypeError", f"max_clients must be an integer, not {_shown(max_clients)}")
    return kind, {"name": name, "attributes": attributes, "language": language, "os": os_name,
                  "max_clients": max_clients if max_clients > 0 else -1}


class Registry:
    """The Manager's state. ``clients``/``services`` are the live dicts of the identity reply."""

    def __init__(self, manager_name, max_inflight=10000):
        self.manager_name = manager_name
        #: the monotonic time of the input being routed: the Manager sets it once per chunk it
        #: receives (a batch of lines arrived together), so the hot path reads an attribute
        #: instead of calling a clock per request and per reply
        self.now = time.monotonic()
        #: events not yet published: ``(type, event, fields)`` (netmgr.daemon.events)
        self.pending = []
        self.stats = StatsTable()
        #: this Manager's node name in a cluster (docs/cluster.md), else None
        self.node = None
        self.max_inflight = max_inflight  # requests in flight per Client (--max-inflight)
        self._clients = {}  # network name -> Client
        self._services = {}  # service name -> Service
        # the identity entries, shaped exactly as reference 1.5 (tests count printed lines)
        self.clients = {}
        self.services = {}
        #: counts every change of ``clients`` and ``services``: a cached identity is current
        #: while it is unchanged
        self.changes = 0

    def emit(self, kind, event, /, **fields):
        """Queue an event for the Manager to publish."""
        self.pending.append((kind, event, fields))

    def take_events(self):
        """The queued events, oldest first; the queue is then empty."""
        events, self.pending = self.pending, []
        return events

    # ---------------------------------------------------------------- registration
    def add(self, handle, network_name, address, kind, fields, node=None):
        """Register a peer whose identity :func:`check_identity` accepted; return its record.

        ``node``: a Service of another node of the cluster (its handle forwards to it).
        """
        self.changes += 1
        if kind == "client":
            if network_name in self._clients:
                raise Refused("NameError", f"{network_name} is already connected to the Manager")
            record = Client(network_name, handle)
            self._clients[network_name] = record
            self.clients[network_name] = {"name": fields["name"], "address": address,
                                          "language": fields["language"], "os": fields["os"]}
            self.emit("peer", "connected", name=network_name, kind="client", address=address,
                      language=fields["language"], os=fields["os"])
            return record
        name = fields["name"]
        if name in self._services:
            raise Refused("NameError", f"A {name!r} service is already running on the Manager")
        stats = self.stats.get(name, self._services.__contains__)
        record = Service(name, network_name, handle, fields["max_clients"], stats, node)
        self._services[name] = record
        self.services[name] = {"attributes": fields["attributes"], "address": address,
                               "language": fields["language"], "os": fields["os"],
                               "max_clients": fields["max_clients"]}
        where = {}
        if self.node is not None:  # a cluster: every entry says its node
            self.services[name]["node"] = node or self.node
            if node is not None:
                where = {"node": node}
        if node is None:
            self.emit("peer", "connected", name=network_name, kind="service", address=address,
                      language=fields["language"], os=fields["os"])
        self.emit("service", "registered", name=name, network_name=network_name, address=address,
                  attributes=fields["attributes"], max_clients=fields["max_clients"],
                  language=fields["language"], os=fields["os"], **where)
        return record

    def add_remote_client(self, handle, network_name):
        """A Client of another node that uses a Service of this one (not in ``identity()``)."""
        record = Client(network_name, handle)
        self._clients[network_name] = record
        return record

    def client(self, network_name):
        return self._clients.get(network_name)

    def remove(self, record, reason="closed"):
        """Forget a peer and release its links, locks and in-flight requests.

        Returns ``[(handle, message), …]``: for a Service, an error reply to every request still
        in flight to it (reference 6.14), each with its requester and uid. ``reason`` is why the
        peer went, for the events.
        """
        self.changes += 1
        if isinstance(record, Client):
            if self._clients.get(record.name) is not record:
                return []
            del self._clients[record.name]
            entry = self.clients.pop(record.name, None)  # None: a Client of another node
            for service in sorted(record.links, key=_by_name):
                self._unlinked(service, record, "client disconnected")
            for service in record.sent_to:  # their replies will have no one to go to
                service.inflight.pop(record.name, None)
            record.links.clear()
            record.sent_to.clear()
            if entry is not None:
                self.emit("peer", "disconnected", name=record.name, kind="client",
                          address=entry["address"], reason=reason)
            return []

        if self._services.get(record.name) is not record:
            return []
        del self._services[record.name]
        address = self.services.pop(record.name)["address"]
        text = error_text("ConnectionError", f"the {record.name!r} Service disconnected before "
                                             "replying to this request")
        effects = []
        for requester, uids in record.inflight.items():
            client = self._clients.get(requester)
            if client is None:
                continue
            client.sent_to.discard(record)
            for uid, starts in uids.items():
                count = _count(starts)
                client.inflight -= count
                record.stats.errors += count
                effects.extend([(client.handle, error(text, requester, uid))] * count)
                for _ in range(count):
                    self.emit("request_failed", "service_left", service=record.name,
                              requester=requester, uid=uid, message=text)
        for client in sorted(record.links, key=_by_name):
            self._unlinked(record, client, "service gone")
        record.inflight.clear()
        where = {"node": record.node} if record.node is not None else {}
        self.emit("service", "gone", name=record.name, network_name=record.network_name,
                  address=address, reason=reason, **where)
        if record.node is None:
            self.emit("peer", "disconnected", name=record.network_name, kind="service",
                      address=address, reason=reason)
        return effects

    def _unlinked(self, service, client, reason):
        """End a link (and the lock it held), with its events."""
        if client in service.locks:
            service.locks.discard(client)
            self.emit("lock", "released", service=service.name, client=client.name, reason=reason)
        service.links.discard(client)
        client.links.discard(service)
        self.emit("link", "unlinked", service=service.name, client=client.name, reason=reason)

    def service(self, name):
        return self._services.get(name)

    def links_of(self, client_name):
        """The names of the Services a Client is linked with."""
        record = self._clients.get(client_name)
        return sorted(s.name for s in record.links) if record is not None else []

    def records(self):
        """The connected Services' records."""
        return self._services.values()

    # ---------------------------------------------------------------- links and locks (1.11)
    def link(self, client, name):
        """Link ``client`` with Service ``name``; return the Service's identity entry."""
        service = self._services.get(name)
        if service is None:
            raise Refused("KeyError", f"the {name!r} service does not exist, cannot link with {client.name}")
        self._link(client, service)
        return self.services[name]

    def _link(self, client, service):
        if client in service.links:
            return  # a re-link always succeeds, even while locked or full
        if service.locks:
            raise Refused("PermissionError", f"{service.name!r} service is locked")
        if service.max_clients > 0 and len(service.links) >= service.max_clients:
            raise Refused("PermissionError",
                          f"The maximum number of Clients are already linked with {service.name!r}\n"
                          f"The linked Clients are:\n  {_names(service.links)}")
        service.links.add(client)
        client.links.add(service)
        self.emit("link", "linked", service=service.name, client=client.name)

    def unlink(self, client, name):
        service = self._services.get(name)
        if service is None:
            return True  # 1.0: unlinking from a Service that has gone is a success
        if client not in service.links:
            raise Refused("KeyError", f"cannot unlink {client.name}, it was not linked with {name!r}")
        self._unlinked(service, client, "unlink")
        return True

    def acquire_lock(self, client, name, shared):
        service = self._services.get(name)
        if service is None:
            raise Refused("KeyError", f"{name!r} service does not exist, {client.name} cannot acquire a lock")
        if client not in service.links:
            raise Refused("PermissionError", f"{client.name} cannot acquire a lock because it is not "
                                             f"linked with the {name!r} service")
        if not shared and len(service.links) > 1:
            raise Refused("PermissionError",
                          f"{client.name} cannot acquire an exclusive lock, there are "
                          f"{len(service.links)} links with the {name!r} service\n"
                          f"The linked Clients are:\n  {_names(service.links)}")
        if client not in service.locks:
            service.locks.add(client)
            service.shared = shared
            self.emit("lock", "acquired", service=name, client=client.name, shared=shared)
        return [c.name for c in service.links]

    def release_lock(self, client, name):
        service = self._services.get(name)
        if service is None:
            raise Refused("KeyError", f"{name!r} service does not exist, {client.name} cannot release the lock")
        if client in service.locks:
            service.locks.discard(client)
            self.emit("lock", "released", service=name, client=client.name, reason="release")
        return [c.name for c in service.locks]

    # ---------------------------------------------------------------- routing (1.8, 1.9)
    def route_request(self, client, name, uid):
        """Return the Service a request of ``client`` goes to, recording it as in flight.

        A Client that is not linked is linked implicitly under the checks of :meth:`link`, so a
        locked or full Service cannot be reached around them (reference 6.1).
        """
        service = self._services.get(name)
        if service is None:
            raise Refused("KeyError", f"the {name!r} Service is not connected to {self.manager_name}")
        if client not in service.links:
            self._link(client, service)
        if client.inflight >= self.max_inflight:
            raise Refused("PermissionError", f"too many requests in flight: the limit is "
                                             f"{self.max_inflight} per Client")
        client.inflight += 1
        service.stats.requests += 1
        uids = service.inflight.get(client.name)
        if uids is None:
            uids = service.inflight[client.name] = {}
            client.sent_to.add(service)
        starts = uids.get(uid)
        if starts is None:
            uids[uid] = self.now
        elif type(starts) is float:
            uids[uid] = [starts, self.now]
        else:
            starts.append(self.now)
        return service

    def route_reply(self, service, requester, uid):
        """Return the Client a reply goes to, or None when no such request is in flight.

        Only the Service a request was forwarded to can answer it, once (reference 6.2).
        """
        uids = service.inflight.get(requester)
        if uids is None:
            return None
        started = uids.pop(uid, None)
        if started is None:
            return None
        if type(started) is not float:  # several requests with this uid: the oldest is answered
            starts = started
            started = starts.pop(0)
            uids[uid] = starts if len(starts) > 1 else starts[0]
        # folded into buckets off the hot path (Manager._measure_lag, 4 times a second): at most
        # the Manager's reply rate times 0.25 s of floats wait here
        service.stats.pending.append(self.now - started)
        client = self._clients.get(requester)
        if client is not None:
            client.inflight -= 1
            if not uids:
                client.sent_to.discard(service)
        if not uids:
            del service.inflight[requester]
        return client

    @staticmethod
    def subscribers(service):
        """The Clients a notification of ``service`` goes to: those linked with it."""
        return service.links

    def identity(self, hostname, port, language, os_name):
        """The Manager's identity (reference 1.5): exactly these seven keys."""
        return {"hostname": hostname, "port": port,
                "attributes": {"identity": "() -> dict", "link": "(service: str) -> bool"},
                "language": language, "os": os_name,
                "clients": self.clients, "services": self.services}
