"""The event stream without sockets: each change of the registry's state is an event (issue 13),
the bus delivers by type and keeps a history, and the request figures add up."""
import itertools
import math

import orjson
import pytest

from netmgr.daemon import routing
from netmgr.daemon.events import AUDIT, PUBLIC, TYPES, EventBus, check_types
from netmgr.daemon.registry import Registry, check_identity
from netmgr.daemon.stats import BUCKETS, ServiceStats, StatsTable

_ports = itertools.count(1000)


@pytest.fixture
def reg():
    registry = Registry("Manager[h:1875]")
    registry.now = 100.0  # the Manager sets it as input arrives
    return registry


class Handle:
    """What the Manager's sessions are to the registry: a destination, never called by it."""


def add(reg, kind, name, **identity):
    port = next(_ports)
    kind, fields = check_identity({"type": kind, "name": name, **identity})
    return reg.add(Handle(), f"{name}[h:{port}]", f"h:{port}", kind, fields)


def events(reg):
    return [(kind, event, fields) for kind, event, fields in reg.take_events()]


def test_a_client_connecting_is_a_peer_event(reg):
    c = add(reg, "client", "C")
    assert events(reg) == [("peer", "connected", {"name": c.name, "kind": "client",
                                                  "address": c.name[2:-1], "language": "unknown",
                                                  "os": "unknown"})]
    assert reg.take_events() == []  # taken once


def test_a_service_connecting_is_a_peer_and_a_service_event(reg):
    s = add(reg, "service", "Echo", attributes={"echo": "(*args)"}, max_clients=2,
            language="Python", os="Linux")
    (k1, e1, f1), (k2, e2, f2) = events(reg)
    assert (k1, e1, f1["kind"], f1["name"]) == ("peer", "connected", "service", s.network_name)
    assert (k2, e2) == ("service", "registered")
    assert f2 == {"name": "Echo", "network_name": s.network_name, "address": f1["address"],
                  "attributes": {"echo": "(*args)"}, "max_clients": 2, "language": "Python",
                  "os": "Linux"}


def test_link_unlink_and_a_relink(reg):
    c, s = add(reg, "client", "C"), add(reg, "service", "S", attributes={})
    reg.take_events()
    reg.link(c, "S")
    reg.link(c, "S")  # a re-link changes nothing: no event
    assert events(reg) == [("link", "linked", {"service": "S", "client": c.name})]
    reg.unlink(c, "S")
    assert events(reg) == [("link", "unlinked", {"service": "S", "client": c.name, "reason": "unlink"})]


def test_locks_acquired_and_released_once_each(reg):
    c, s = add(reg, "client", "C"), add(reg, "service", "S", attributes={})
    reg.link(c, "S")
    reg.take_events()
    reg.acquire_lock(c, "S", True)
    reg.acquire_lock(c, "S", True)
    assert events(reg) == [("lock", "acquired", {"service": "S", "client": c.name, "shared": True})]
    reg.release_lock(c, "S")
    reg.release_lock(c, "S")
    assert events(reg) == [("lock", "released", {"service": "S", "client": c.name, "reason": "release"})]


def test_unlinking_a_locked_service_releases_the_lock_first(reg):
    c, s = add(reg, "client", "C"), add(reg, "service", "S", attributes={})
    reg.link(c, "S")
    reg.acquire_lock(c, "S", False)
    reg.take_events()
    reg.unlink(c, "S")
    assert [(k, e, f["reason"]) for k, e, f in events(reg)] == [("lock", "released", "unlink"),
                                                               ("link", "unlinked", "unlink")]


def test_a_request_links_implicitly_and_says_so(reg):
    c, s = add(reg, "client", "C"), add(reg, "service", "S", attributes={})
    reg.take_events()
    routing.route(reg, c, b'{"service":"S","attribute":"a","args":[],"kwargs":{},"uid":"1"}',
                  {"service": "S", "attribute": "a", "args": [], "kwargs": {}, "uid": "1"}, True)
    assert events(reg) == [("link", "linked", {"service": "S", "client": c.name})]
    assert s.stats.requests == 1


def test_a_refused_request_is_a_request_failed_event(reg):
    c = add(reg, "client", "C")
    reg.take_events()
    _, effects = routing.route(reg, c, b'{"service":"Gone","attribute":"a","uid":"7"}',
                               {"service": "Gone", "attribute": "a", "uid": "7"}, True)
    [(kind, event, fields)] = events(reg)
    assert (kind, event, fields["service"], fields["requester"], fields["uid"]) == \
        ("request_failed", "refused", "Gone", c.name, "7")
    assert orjson.loads(effects[0][1])["message"] == fields["message"]  # what the requester got


def test_a_service_leaving_fails_each_request_in_flight_and_ends_links_and_locks(reg):
    c1, c2 = add(reg, "client", "C1"), add(reg, "client", "C2")
    s = add(reg, "service", "S", attributes={})
    reg.link(c1, "S")
    reg.link(c2, "S")
    reg.acquire_lock(c1, "S", True)  # a shared lock: both stay linked
    reg.route_request(c1, "S", "a")
    reg.route_request(c2, "S", "")
    reg.route_request(c2, "S", "")  # terminal users' requests all have uid ""
    reg.take_events()

    effects = reg.remove(s, "connection error: reset")
    got = events(reg)
    failed = [f for k, e, f in got if (k, e) == ("request_failed", "service_left")]
    assert sorted((f["requester"], f["uid"]) for f in failed) == [(c1.name, "a"), (c2.name, ""), (c2.name, "")]
    assert len(effects) == 3 and all(f["message"] == effects[0][1]["message"] for f in failed)
    rest = [(k, e, f.get("client"), f.get("reason")) for k, e, f in got if k != "request_failed"]
    assert rest == [("lock", "released", c1.name, "service gone"),
                    ("link", "unlinked", c1.name, "service gone"),
                    ("link", "unlinked", c2.name, "service gone"),
                    ("service", "gone", None, "connection error: reset"),
                    ("peer", "disconnected", None, "connection error: reset")]
    assert s.stats.errors == 3


def test_a_client_leaving_ends_its_links_and_locks(reg):
    c = add(reg, "client", "C")
    add(reg, "service", "S", attributes={})
    add(reg, "service", "T", attributes={})
    reg.link(c, "T")
    reg.link(c, "S")
    reg.acquire_lock(c, "S", False)
    reg.take_events()
    reg.remove(c, "slow consumer")
    assert [(k, e, f.get("service"), f["reason"]) for k, e, f in events(reg)] == [
        ("lock", "released", "S", "client disconnected"),
        ("link", "unlinked", "S", "client disconnected"),
        ("link", "unlinked", "T", "client disconnected"),
        ("peer", "disconnected", None, "slow consumer")]


def test_removing_twice_says_nothing_the_second_time(reg):
    c, s = add(reg, "client", "C"), add(reg, "service", "S", attributes={})
    reg.remove(c)
    reg.remove(s)
    reg.take_events()
    reg.remove(c)
    reg.remove(s)
    assert reg.take_events() == []


def test_the_manager_measures_request_to_reply(reg):
    c, s = add(reg, "client", "C"), add(reg, "service", "S", attributes={})
    reg.route_request(c, "S", "1")
    reg.route_request(c, "S", "2")
    reg.now += 0.003
    reg.route_reply(s, c.name, "1")
    reg.now += 0.5
    reply = b'{"error":true,"message":"boom","traceback":[],"result":null,"requester":"%s","uid":"2"}' % c.name.encode()
    routing.route(reg, s, reply, orjson.loads(reply), True)
    buckets, total, count = s.stats.histogram()
    assert count == 2 and math.isclose(total, 0.506)
    assert dict(buckets)[0.005] == 1 and dict(buckets)[0.5] == 1 and dict(buckets)[1.0] == 2
    assert s.stats.requests == 2 and s.stats.errors == 1
    window = s.stats.close_window(2.0)
    assert window["rate"] == 1.0 and window["error_rate"] == 0.5
    assert 0.003 <= window["p50"] < 0.003 * 1.1 and 0.503 <= window["p99"] < 0.503 * 1.1
    assert s.stats.close_window(2.0) == {"rate": 0.0, "error_rate": 0.0, "p50": None, "p99": None}


def test_a_services_figures_outlive_a_reconnect(reg):
    c, s = add(reg, "client", "C"), add(reg, "service", "S", attributes={})
    reg.route_request(c, "S", "1")
    reg.remove(s)
    again = add(reg, "service", "S", attributes={})
    assert again.stats is s.stats and again.stats.requests == 1


def test_service_stats_fold_lazily_and_exactly():
    stats = ServiceStats()
    values = [1e-5 * 1.37 ** i for i in range(40)] * 300  # more than one fold
    for v in values:
        stats.observe(v)
    buckets, total, count = stats.histogram()
    assert count == len(values) and math.isclose(total, math.fsum(values))
    for bound, cumulative in buckets:
        assert cumulative == sum(1 for v in values if v <= bound)
    assert buckets[-1] == (math.inf, len(values))
    assert len(buckets) == len(BUCKETS) + 1


def test_the_stats_table_is_bounded_and_keeps_connected_names():
    table = StatsTable(limit=4)
    connected = {"a", "b"}
    for name in ["a", "b", "x1", "x2", "x3", "x4", "x5"]:
        table.get(name, connected.__contains__)
    names = [name for name, _ in table.items()]
    assert len(names) <= 4 and "a" in names and "b" in names and "x5" in names


# ---------------------------------------------------------------------------- the bus

def test_the_bus_delivers_by_type_and_numbers_every_event():
    bus, got_a, got_b = EventBus(clock=lambda: 5.0), [], []
    assert bus.subscribe(got_a.append, ["peer"]) == {"peer"}
    assert bus.subscribe(got_a.append, ["service"]) == {"peer", "service"}  # cumulative
    bus.subscribe(got_b.append)  # every type
    bus.publish("peer", "connected", name="C[h:1]")
    bus.publish("lock", "acquired", service="S")
    assert [e.type for e in got_a] == ["peer"]
    assert [e.seq for e in got_b] == [1, 2]
    assert got_a[0].data == {"type": "peer", "event": "connected", "seq": 1, "time": 5.0, "name": "C[h:1]"}
    assert orjson.loads(got_a[0].json) == got_a[0].data


def test_a_notification_is_a_1_0_notification_from_the_manager():
    bus, got = EventBus(), []
    bus.subscribe(got.append, ["health"])
    bus.publish("health", "changed", status="ok", checks={})
    line = got[0].notification
    assert line.endswith(b"\r\n") and line.count(b"\n") == 1
    message = orjson.loads(line)
    assert message == {"error": False, "result": got[0].data, "service": "Manager", "uid": "notification"}


def test_unsubscribe_and_unknown_types():
    bus, got = EventBus(), []
    bus.subscribe(got.append, ["peer", "service"])
    assert bus.unsubscribe(got.append, ["peer"]) == {"service"}
    bus.publish("peer", "connected")
    assert got == []
    assert bus.unsubscribe(got.append) == frozenset()
    assert bus.unsubscribe(got.append) == frozenset()  # not subscribed: nothing to do
    bus.publish("service", "gone")
    assert got == []
    with pytest.raises(ValueError, match="unknown event type 'nope'; the types are: peer, service"):
        bus.subscribe(got.append, ["peer", "nope"])
    with pytest.raises(ValueError):
        check_types([["peer"]])


def test_history_for_late_readers():
    bus = EventBus(history=3)
    for n in range(5):
        bus.publish("peer" if n % 2 else "service", "x", n=n)
    assert [e.seq for e in bus.recent()] == [3, 4, 5]
    assert [e.seq for e in bus.recent(after=4)] == [5]
    assert [e.seq for e in bus.recent(types={"peer"})] == [4]
    assert [e.seq for e in bus.recent(n=1)] == [5]


def test_public_and_audit_types_are_types():
    assert PUBLIC < set(TYPES) and AUDIT < set(TYPES) and not PUBLIC & AUDIT
