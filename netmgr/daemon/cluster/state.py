"""Who is in the cluster, as one node sees it from the heartbeats (pure: no I/O, no clock).

Each node publishes a heartbeat every :data:`HEARTBEAT` seconds, and at once when its Services
change: its name, a per-run ``epoch``, a ``seq`` and its Services' identity entries. A node
whose last heartbeat is older than :data:`DEAD_AFTER` seconds is gone: its Services go from this
node's registry, and every request in flight to them fails with its uid (docs/cluster.md).
"""
#: seconds between two heartbeats of a node
HEARTBEAT = 0.5
#: seconds of silence after which a node is taken for gone (the issue allows 3)
DEAD_AFTER = 2.0


class Member:
    __slots__ = ("name", "epoch", "seq", "seen", "services", "manager")

    def __init__(self, name, epoch):
        self.name, self.epoch = name, epoch
        self.seq = -1
        self.seen = 0.0
        self.services = {}  # Service name -> identity entry (with "network_name")
        self.manager = None


class Membership:
    """The other nodes: :meth:`heard` for each heartbeat, :meth:`expired` to find the silent."""

    def __init__(self, me):
        self.me = me
        self.members = {}  # node name -> Member

    def heard(self, beat, now):
        """A heartbeat: ``(joined, added, removed)`` — whether the node is new (or restarted:
        a new epoch), and the Service names it added and removed since its last one.

        An older heartbeat than one already seen (NATS may reorder across reconnects) changes
        nothing: ``(False, {}, [])``.
        """
        name, epoch, seq = beat["node"], beat["epoch"], beat["seq"]
        member = self.members.get(name)
        joined = member is None or member.epoch != epoch
        if joined:  # new, or restarted: whatever its earlier run had is dropped by the caller
            old = {}
            member = self.members[name] = Member(name, epoch)
        else:
            if seq <= member.seq:
                member.seen = now
                return False, {}, []
            old = member.services
        member.seq, member.seen, member.manager = seq, now, beat.get("manager")
        services = beat.get("services") or {}
        member.services = services
        added = {k: v for k, v in services.items() if old.get(k) != v}
        removed = [k for k in old if k not in services or old[k] != services[k]]
        return joined, added, removed

    def expired(self, now):
        """The members silent for longer than :data:`DEAD_AFTER`, removed from the membership."""
        gone = [m for m in self.members.values() if now - m.seen > DEAD_AFTER]
        for member in gone:
            del self.members[member.name]
        return gone

    def owner(self, service):
        for member in self.members.values():
            if service in member.services:
                return member.name
        return None
