"""Interop with the real msl-network 1.0.0 package through ``netmgr start --disable-tls``.

Every peer here is 1.0 code: clients come from ``msl.network.connect`` / ``LinkedClient``,
services are ``msl.network.Service`` subclasses (``tests/msl_services.py``) started in daemon
threads. The expected texts are those of the reference, sections 1.5, 1.11, 1.14, 1.15 and
the section 5 checklist (test_client, test_services, test_lock, test_unlink,
test_linked_client, test_emit_notification, test_run_services).

Waiting is always on a condition (a bounded poll, a future, a thread join), never a fixed
sleep; the only timing thresholds are coarse concurrency checks.
"""
import concurrent.futures
import platform
import re
import threading
import time

import pytest

import rawpeer
from msl.network import LinkedClient, connect
from msl.network.client import Link
from msl.network.constants import HOSTNAME

from msl_services import BasicMath, Echo, Heartbeat, Single, Stoppable

HOST = "127.0.0.1"
WAIT = 30  # seconds: generous bound for any condition on a loaded 2-core machine
TEST_DEADLINE = 120  # a hung test dumps every thread's stack and ends the run (no pytest-timeout)

LANGUAGE = f"Python {platform.python_version()}"
OS_NAME = f"{platform.system()} {platform.release()} {platform.machine()}"



def wait_until(condition, timeout=WAIT, what="condition"):
    return rawpeer.wait_until(condition, timeout, what, interval=0.02)


class Network:
    """One netmgr subprocess plus the 1.0 clients and services a test creates."""

    def __init__(self, mgr):
        self.mgr = mgr
        self.port = mgr.port
        self.clients = []
        self.threads = []
        self.probe = None  # the client that polls identities() while services start

    def kwargs(self, **kw):
        return {"host": HOST, "port": self.port, "disable_tls": True, "timeout": WAIT, **kw}

    def connect(self, name="Client"):
        cxn = connect(name=name, **self.kwargs())
        self.clients.append(cxn)
        return cxn

    def linked_client(self, service, name="LinkedClient", **kw):
        lc = LinkedClient(service, name=name, **self.kwargs(**kw))
        self.clients.append(lc)
        return lc

    def services(self):
        if self.probe is None:
            self.probe = self.connect("Probe")
        return self.probe.identities(timeout=WAIT)["services"]

    def start(self, *services):
        """Start each Service in a daemon thread; return once the Manager lists them all."""
        for svc in services:
            thread = threading.Thread(target=svc.start, kwargs=self.kwargs(), daemon=True,
                                      name=f"service-{svc.name}")
            thread.start()
            svc.thread = thread
            self.threads.append(thread)
        names = {svc.name for svc in services}
        wait_until(lambda: names <= self.services().keys(), what=f"services {sorted(names)}")
        return services if len(services) > 1 else services[0]

    def close(self):
        errors = []
        for cxn in reversed(self.clients):
            try:
                cxn.disconnect(timeout=10)
            except Exception as exc:  # noqa: BLE001 -- report every leak, not just the first
                errors.append(f"{cxn!r}.disconnect(): {exc!r}")
        self.mgr.stop()  # services see EOF and their start() returns
        for thread in self.threads:
            thread.join(10)
            if thread.is_alive():
                errors.append(f"{thread.name} still running after the Manager stopped")
        assert not errors, errors


pytestmark = pytest.mark.usefixtures("watchdog")


@pytest.fixture
def net(netmgr_factory):
    network = Network(netmgr_factory())
    yield network
    network.close()


def spy(cxn, service):
    """Record every notification ``cxn`` receives for ``service`` without linking with it.

    The 1.0 client hands a notification to each local Link whose service name matches, so a
    Link object that the Manager never saw reveals notifications the Manager should not have
    routed to this client.
    """
    seen = []
    fake = Link(cxn, service, {"address": "?", "attributes": {}, "language": "?", "os": "?",
                               "max_clients": -1})
    fake.notification_handler = lambda *args, **kwargs: seen.append((args, kwargs))
    cxn._links.append(fake)  # noqa: SLF001 -- test-only instrumentation of the 1.0 client
    return seen


def collector(link):
    seen = []
    link.notification_handler = lambda *args, **kwargs: seen.append((args, kwargs))
    return seen


def barrier(cxn):
    """A Manager round trip: whatever the Manager queued for ``cxn`` before this request
    (e.g. a notification) has been handled by the 1.0 client when it returns."""
    cxn.identities(timeout=WAIT)


# ------------------------------------------------------------------------------------------
# requests


def test_echo_sync_and_async(net):
    net.start(Echo())
    cxn = net.connect()
    echo = cxn.link("Echo")
    assert echo.echo() == [[], {}]
    assert echo.echo(1, 2, 3) == [[1, 2, 3], {}]
    assert echo.echo(x=1, y="two") == [[], {"x": 1, "y": "two"}]
    assert echo.echo(1.5, None, True, "é ✓", [1, [2]], {"a": {"b": 3}}, z=False) == \
        [[1.5, None, True, "é ✓", [1, [2]], {"a": {"b": 3}}], {"z": False}]
    futures = [echo.echo(i, n=i, asynchronous=True) for i in range(20)]
    assert [f.result(WAIT) for f in futures] == [[[i], {"n": i}] for i in range(20)]


def test_sync_requests_really_wait(net):
    net.start(BasicMath())
    bm = net.connect().link("BasicMath")
    assert bm.add(1, 2) == 3
    assert bm.subtract(1, 2) == -1
    assert bm.euler() == 2.718281828459045  # non-callable attributes answer their value
    assert bm.pi() == 3.141592653589793
    assert bm.ensure_positive(10) is True
    with pytest.raises(RuntimeError, match="ValueError: The value is < 0"):
        bm.ensure_positive(-1)
    t0 = time.monotonic()
    assert bm.add(1, 2, delay=0.3) == 3
    assert bm.subtract(5, 2, delay=0.3) == 3
    assert bm.add(-1, 2, delay=0.3) == 1
    assert time.monotonic() - t0 >= 0.85  # three sequential 0.3 s calls, each waited for


def test_async_requests_run_concurrently(net):
    net.start(BasicMath())
    bm = net.connect().link("BasicMath")
    bm.add(0, 0)  # warm up the service's thread pool path
    t0 = time.monotonic()
    futures = [bm.slow(1, value=i, asynchronous=True) for i in range(8)]
    results = [f.result(WAIT) for f in futures]
    elapsed = time.monotonic() - t0
    assert [r["value"] for r in results] == list(range(8))
    # 8 calls of 1 s: concurrent means about 1 s, sequential would be 8 s
    assert elapsed < 4, f"8 asynchronous 1 s calls took {elapsed:.2f} s"
    assert max(r["start"] for r in results) < min(r["end"] for r in results), "calls did not overlap"


def test_async_and_sync_on_the_same_link(net):
    net.start(BasicMath())
    bm = net.connect().link("BasicMath")
    slow_add = bm.add(1, 2, delay=2.0, asynchronous=True)
    assert bm.subtract(9, 4, delay=0.2) == 5  # answered while the add is still running
    assert not slow_add.done()
    assert slow_add.result(WAIT) == 3


def test_timeouts(net):
    net.start(BasicMath())
    bm = net.connect().link("BasicMath")
    with pytest.raises(concurrent.futures.TimeoutError):
        bm.slow(1.5, timeout=0.2)
    assert issubclass(concurrent.futures.TimeoutError, TimeoutError)  # the same class in 3.11
    future = bm.slow(1.0, value="late", asynchronous=True)
    with pytest.raises(TimeoutError):
        future.result(timeout=0.1)
    assert future.result(WAIT)["value"] == "late"  # the reply still arrives
    assert bm.add(2, 2) == 4


def test_not_serialisable_result_keeps_the_service_working(net):
    net.start(BasicMath())
    bm = net.connect().link("BasicMath")
    with pytest.raises(RuntimeError, match="not JSON serializable"):
        bm.complex_result()
    assert bm.add(1, 1) == 2
    with pytest.raises(RuntimeError, match="not JSON serializable"):
        bm.not_serialisable()
    future = bm.complex_result(asynchronous=True)
    with pytest.raises(RuntimeError, match="not JSON serializable"):
        future.result(WAIT)
    assert bm.add(2, 3, asynchronous=True).result(WAIT) == 5
    assert bm.subtract(2, 3) == -1


def test_private_and_missing_attributes(net):
    net.start(BasicMath(), Echo())
    cxn = net.connect()
    bm, echo = cxn.link("BasicMath"), cxn.link("Echo")
    with pytest.raises(RuntimeError, match="PermissionError: Cannot request a private attribute"):
        bm._password()
    with pytest.raises(RuntimeError, match="Cannot request a private attribute"):
        bm._nap(1)
    with pytest.raises(RuntimeError, match="AttributeError: 'BasicMath' object has no attribute 'nope'"):
        bm.nope()
    with pytest.raises(RuntimeError, match="'Echo' object has no attribute 'does_not_exist'"):
        echo.does_not_exist(1, x=2)
    assert bm.add(3, 4) == 7
    assert echo.echo("still here") == [["still here"], {}]


# ------------------------------------------------------------------------------------------
# identities


def test_identities_have_exactly_the_reference_keys(net):
    net.start(Echo(), Single())
    c1, c2 = net.connect("A.B.C"), net.connect("Other")
    # a client's own request follows its identity on the same socket, so the reply lists it;
    # another connection's identity may still be in flight (1.0 never acknowledges one)
    for cxn in (c1, c2):
        assert str(cxn) in cxn.identities()["clients"]
    ident = c1.identities()
    assert set(ident) == {"hostname", "port", "attributes", "language", "os", "clients", "services"}
    assert ident["hostname"] == HOSTNAME
    assert ident["port"] == net.port
    assert ident["attributes"] == {"identity": "() -> dict", "link": "(service: str) -> bool"}
    assert ident["language"] == LANGUAGE and ident["os"] == OS_NAME  # same interpreter and host
    for cxn in (c1, c2):
        # the Manager's name for a local peer is the one the 1.0 client computes for itself
        assert str(cxn) == f"{cxn.name}[{HOSTNAME}:{cxn.port}]"
        assert str(cxn) in ident["clients"]
        assert ident["clients"][str(cxn)] == {"name": cxn.name, "address": f"{HOSTNAME}:{cxn.port}",
                                              "language": LANGUAGE, "os": OS_NAME}
    for entry in ident["clients"].values():
        assert set(entry) == {"name", "address", "language", "os"}
    assert set(ident["services"]) == {"Echo", "Single"}
    for name, entry in ident["services"].items():
        assert set(entry) == {"attributes", "address", "language", "os", "max_clients"}, name
        assert entry["address"].startswith(f"{HOSTNAME}:")
        assert entry["language"] == LANGUAGE and entry["os"] == OS_NAME
    echo = ident["services"]["Echo"]
    assert echo["max_clients"] == -1
    assert set(echo["attributes"]) == {"echo", "set_logging_level"}
    assert echo["attributes"]["echo"] == "(*args, **kwargs)"
    assert ident["services"]["Single"]["max_clients"] == 1
    # the link reply is the service's identity entry
    link = c2.link("Echo")
    assert link.service_attributes == echo["attributes"]
    assert link.service_address == echo["address"]
    assert link.service_max_clients == -1
    assert link.service_language == LANGUAGE and link.service_os == OS_NAME


def test_identities_as_string(net):
    net.start(Echo())
    c1 = net.connect("First")
    c2 = net.connect("Second")
    names = {str(c1), str(c2), str(net.probe)}
    wait_until(lambda: c1.identities()["clients"].keys() == names, what="three clients")
    text = c1.identities(as_string=True)
    print(text)
    lines = text.splitlines()
    ident = c1.identities()
    # 6 Manager lines; "Clients [3]:" + 3 lines per client; "Services [1]:" + Echo's 7 lines
    assert len(lines) == 6 + 1 + 3 * 3 + 1 + 7, text
    assert lines[:6] == [f"Manager[{HOSTNAME}:{net.port}]", "  attributes:", "    identity() -> dict",
                         "    link(service: str) -> bool", f"  language: {LANGUAGE}", f"  os: {OS_NAME}"]
    assert lines[6] == "Clients [3]:"
    assert {line.strip() for line in lines[7:16:3]} == names
    assert lines[16] == "Services [1]:"
    assert lines[17:] == [f"  Echo[{ident['services']['Echo']['address']}]", "    attributes:",
                          "      echo(*args, **kwargs)",
                          "      set_logging_level(level: Union[str, int]) -> bool",
                          f"    language: {LANGUAGE}", "    max_clients: -1", f"    os: {OS_NAME}"]


# ------------------------------------------------------------------------------------------
# notifications


def test_notifications_reach_exactly_the_linked_clients(net):
    net.start(Heartbeat(), Echo())
    only_echo, hb1, hb2 = net.connect("OnlyEcho"), net.connect("Hb1"), net.connect("Hb2")
    only_echo.link("Echo")
    leaked = spy(only_echo, "Heartbeat")
    seen1 = collector(hb1.link("Heartbeat"))
    seen2 = collector(hb2.link("Heartbeat"))
    lc = net.linked_client("Heartbeat")
    seen3 = []
    lc.notification_handler = lambda *args, **kwargs: seen3.append((args, kwargs))
    wait_until(lambda: min(len(seen1), len(seen2), len(seen3)) >= 10, what="10 heartbeats on each link")
    barrier(only_echo)
    assert leaked == [], "a client linked only with Echo received Heartbeat notifications"
    for seen in (seen1[:10], seen2[:10], seen3[:10]):
        values = [args[0] for args, kwargs in seen]
        assert all(kwargs == {} for args, kwargs in seen)
        # emit_notification from the event loop: nothing lost, nothing reordered
        assert values == list(range(values[0], values[0] + 10)), values


def test_unlinked_client_stops_receiving_notifications(net):
    net.start(Heartbeat())
    leaving, staying = net.connect("Leaving"), net.connect("Staying")
    link = leaving.link("Heartbeat")
    seen = collector(link)
    kept = collector(staying.link("Heartbeat"))
    wait_until(lambda: len(seen) >= 3, what="heartbeats before unlink")
    leaving.unlink(link)
    leaked = spy(leaving, "Heartbeat")
    start = len(kept)
    wait_until(lambda: len(kept) >= start + 5, what="heartbeats after the other client unlinked")
    barrier(leaving)
    assert leaked == []


def test_threadsafe_notifications_arrive_before_the_reply(net):
    net.start(Heartbeat())
    c1, c2 = net.connect("Caller"), net.connect("Listener")
    hb1, hb2 = c1.link("Heartbeat"), c2.link("Heartbeat")
    seen1, seen2 = collector(hb1), collector(hb2)
    expected = [((i,), {"index": i + 10}) for i in range(10)]
    for _ in range(3):
        del seen1[:], seen2[:]
        assert hb1.burst(10) == 10
        # emitted from the worker thread before it returned: handled before the reply
        assert [n for n in seen1 if n[1]] == expected
        barrier(c2)
        assert [n for n in seen2 if n[1]] == expected
    hb1.reset()
    wait_until(lambda: any(args == (0,) and not kwargs for args, kwargs in list(seen2)),
               what="the counter restarted by reset()")


def test_notification_from_the_loop_precedes_the_shutdown_reply(net):
    hb = net.start(Heartbeat())
    cxn = net.connect()
    link = cxn.link("Heartbeat")
    seen = collector(link)
    assert link.shutdown_service() == "stopped"
    assert seen and seen[-1] == (("goodbye",), {})
    hb.thread.join(WAIT)
    assert not hb.thread.is_alive()


# ------------------------------------------------------------------------------------------
# links, max_clients and locks (reference 1.11)


def test_link_unknown_service(net):
    cxn = net.connect()
    with pytest.raises(RuntimeError, match=r"KeyError: .*the 'Invalid' service does not exist, "
                                           r"cannot link with " + re.escape(str(cxn))):
        cxn.link("Invalid")


def test_unlimited_clients(net):
    net.start(Echo())
    clients = [net.connect(f"Many{i}") for i in range(12)]
    links = [c.link("Echo") for c in clients]
    futures = [link.echo(i, asynchronous=True) for i, link in enumerate(links)]
    assert [f.result(WAIT) for f in futures] == [[[i], {}] for i in range(12)]
    names = {str(c) for c in clients} | {str(net.probe)}
    assert clients[0].identities()["clients"].keys() == names


def test_max_clients_one(net):
    net.start(Single())
    c1, c2, c3 = net.connect("C1"), net.connect("C2"), net.connect("C3")
    link1 = c1.link("Single")
    assert c1.link("Single").echo(1) == [[1], {}]  # the same client may link again
    with pytest.raises(RuntimeError, match="PermissionError: The maximum number of Clients are "
                                           "already linked with 'Single'") as info:
        c2.link("Single")
    assert str(c1) in str(info.value)
    c1.unlink(link1)
    link2 = c2.link("Single")
    assert link2.echo(2) == [[2], {}]
    with pytest.raises(RuntimeError, match="The maximum number of Clients are already linked with"):
        c3.link("Single")
    c2.disconnect(timeout=WAIT)
    # the Manager released c2's link before it closed c2's connection
    assert c3.link("Single").echo(3) == [[3], {}]
    with pytest.raises(RuntimeError, match="The maximum number of Clients are already linked with"):
        c1.link("Single")


def test_exclusive_lock(net):
    net.start(Echo())
    c1, c2 = net.connect("C1"), net.connect("C2")
    link1 = c1.link("Echo")
    assert link1.acquire_lock() == [str(c1)]
    assert link1.acquire_lock() == [str(c1)]  # re-locking is fine
    assert c1.link("Echo").acquire_lock() == [str(c1)]  # a second Link of the same client
    with pytest.raises(RuntimeError, match="PermissionError: 'Echo' service is locked"):
        c2.link("Echo")
    assert link1.echo("locked") == [["locked"], {}]  # the lock holder keeps working
    assert link1.release_lock() == []
    link2 = c2.link("Echo")
    with pytest.raises(RuntimeError, match=re.escape(str(c1)) + " cannot acquire an exclusive lock, "
                                           "there are 2 links with the 'Echo' service") as info:
        link1.acquire_lock()
    assert str(c2) in str(info.value)
    c2.unlink(link2)
    assert link1.acquire_lock(shared=False) == [str(c1)]
    assert link1.release_lock() == []


def test_lock_errors_when_not_linked_or_unknown(net):
    net.start(Echo())
    cxn = net.connect()
    # admin_request sends {"service": "Manager", "attribute": ..., "args": [...], "kwargs": {...}},
    # exactly what Link.acquire_lock/release_lock send
    with pytest.raises(RuntimeError, match="PermissionError: " + re.escape(str(cxn)) +
                       " cannot acquire a lock because it is not linked with the 'Echo' service"):
        cxn.admin_request("acquire_lock", "Echo", shared=False)
    assert cxn.admin_request("release_lock", "Echo") == []
    with pytest.raises(RuntimeError, match=r"'Invalid' service does not exist, .* cannot release the lock"):
        cxn.admin_request("release_lock", "Invalid")
    with pytest.raises(RuntimeError, match=r"'Invalid' service does not exist, .* cannot acquire a lock"):
        cxn.admin_request("acquire_lock", "Invalid", shared=True)
    link = cxn.link("Echo")
    assert link.acquire_lock() == [str(cxn)]
    cxn.unlink(link)  # Client.unlink keeps the Link object usable: the Manager refuses
    with pytest.raises(RuntimeError, match="cannot acquire a lock because it is not linked"):
        link.acquire_lock()
    link = cxn.link("Echo")
    link.unlink()  # Link.unlink breaks the Link object itself
    with pytest.raises(AttributeError, match="the link has been broken"):
        link.echo(1)


def test_shared_locks(net):
    net.start(Echo())
    clients = [net.connect(f"C{i}") for i in range(6)]
    c0 = clients[0]
    only = c0.link("Echo")
    assert only.acquire_lock(shared=True) == [str(c0)]
    assert only.acquire_lock(shared=False) == [str(c0)]  # the only link may turn it exclusive
    assert only.release_lock() == []
    # a shared lock lists every linked client: the list grows with the links
    for n in (2, 3):
        clients[n - 1].link("Echo")
        assert sorted(only.acquire_lock(shared=True)) == sorted(str(c) for c in clients[:n])
        assert only.release_lock() == []
    links = [c.link("Echo") for c in clients[1:5]]  # c0 linked, c1 and c2 re-link: 5 links
    names = sorted(str(c) for c in clients[:5])
    lockers = [only] + links
    for link in lockers:
        assert sorted(link.acquire_lock(shared=True)) == names
    with pytest.raises(RuntimeError, match="'Echo' service is locked"):
        clients[5].link("Echo")
    assert lockers[0].echo("shared") == [["shared"], {}]
    for i, link in enumerate(lockers):
        remaining = link.release_lock()
        assert sorted(remaining) == sorted(str(c) for c in clients[i + 1:5])
        if remaining:
            with pytest.raises(RuntimeError, match="'Echo' service is locked"):
                clients[5].link("Echo")
    assert clients[5].link("Echo").echo(6) == [[6], {}]


def test_unlink_and_disconnect_release_locks(net):
    net.start(Echo())
    c1, c2, c3 = net.connect("C1"), net.connect("C2"), net.connect("C3")
    link1 = c1.link("Echo")
    assert link1.acquire_lock() == [str(c1)]
    c1.unlink(link1)
    link2 = c2.link("Echo")  # c1's lock went with its link
    assert link2.acquire_lock() == [str(c2)]
    with pytest.raises(RuntimeError, match="'Echo' service is locked"):
        c3.link("Echo")
    c2.disconnect(timeout=WAIT)
    link3 = c3.link("Echo")  # c2's lock went with its connection
    assert link3.acquire_lock() == [str(c3)]
    assert link3.release_lock() == []


def test_a_lock_also_holds_off_requests_from_unlinked_clients(net):
    # netmgr's fix of reference 6.1 (1.0 forwarded any request): seen from a 1.0 client
    net.start(Echo())
    owner, intruder = net.connect("Owner"), net.connect("Intruder")
    stale = intruder.link("Echo")
    intruder.unlink(stale)  # Client.unlink leaves the Link object usable
    assert owner.link("Echo").acquire_lock() == [str(owner)]
    with pytest.raises(RuntimeError, match="PermissionError: 'Echo' service is locked"):
        stale.echo("sneaky", timeout=WAIT)
    assert intruder.identities()["services"].keys() == {"Echo"}  # the refusal kept it connected


def test_lock_cycles_with_four_clients(net):
    net.start(Echo())
    clients = [net.connect(f"C{i}") for i in range(4)]
    for _ in range(2):
        for cxn in clients:
            link = cxn.link("Echo")
            assert link.acquire_lock() == [str(cxn)]
            for other in clients:
                if other is not cxn:
                    with pytest.raises(RuntimeError, match="'Echo' service is locked"):
                        other.link("Echo")
            assert link.release_lock() == []
            cxn.unlink(link)


# ------------------------------------------------------------------------------------------
# LinkedClient, spawn


def test_linked_client(net):
    net.start(Echo())
    lc = net.linked_client("Echo", name="foobar", host="localhost")
    assert lc.echo(1, 2, x="y") == [[1, 2], {"x": "y"}]
    assert set(lc.service_attributes) == {"echo", "set_logging_level"}
    assert lc.name == "foobar"
    assert lc.address_manager == f"localhost:{net.port}"
    assert lc.service_address.startswith(f"{HOSTNAME}:")
    assert lc.service_language == LANGUAGE and lc.service_os == OS_NAME
    assert lc.service_max_clients == -1
    assert str(lc.client) in lc.identities()["clients"]
    with pytest.raises(RuntimeError, match="'Echo' object has no attribute 'nope'"):
        lc.nope()
    assert repr(lc).startswith("<Link[name=foobar] with Echo[")
    spawned = lc.spawn()
    net.clients.append(spawned)
    assert spawned.echo("spawned") == [["spawned"], {}]
    assert str(spawned.client).startswith(f"LinkedClient[{HOSTNAME}:")
    assert str(spawned.client) in lc.identities()["clients"]
    lc.unlink()
    assert repr(lc).startswith("<Un-Linked[name=foobar] from Echo[")
    with pytest.raises(AttributeError, match="the link has been broken"):
        lc.echo(1)


def test_linked_client_locks(net):
    net.start(Echo())
    lc = net.linked_client("Echo", name="Locker")
    assert lc.acquire_lock() == [str(lc.client)]
    with pytest.raises(RuntimeError, match="'Echo' service is locked"):
        LinkedClient("Echo", name="Refused", **net.kwargs())
    assert lc.release_lock() == []
    other = net.linked_client("Echo", name="Accepted")
    assert other.echo(1) == [[1], {}]
    lc.unlink()
    with pytest.raises(AttributeError, match="acquire_lock"):
        lc.acquire_lock()
    with pytest.raises(AttributeError, match="release_lock"):
        lc.release_lock()


def test_spawn(net):
    net.start(Echo())
    cxn = net.connect("Parent")
    child = cxn.spawn("Child")
    net.clients.append(child)
    assert str(child) == f"Child[{HOSTNAME}:{child.port}]"
    assert str(child) in child.identities()["clients"]
    wait_until(lambda: str(child) in cxn.identities()["clients"], what="the child in the parent's view")
    assert cxn.link("Echo").echo("p") == [["p"], {}]
    assert child.link("Echo").echo("c") == [["c"], {}]


# ------------------------------------------------------------------------------------------
# shutdown_service, large messages, a service that goes away


def test_shutdown_service(net):
    stoppable, _ = net.start(Stoppable(), Echo())
    cxn = net.connect()
    link = cxn.link("Stoppable")
    assert link.shutdown_service(1, x=9) == [[1], {"x": 9}]
    stoppable.thread.join(WAIT)
    assert not stoppable.thread.is_alive(), "Service.start() did not return"
    assert stoppable.stopped.is_set()
    wait_until(lambda: "Stoppable" not in cxn.identities()["services"], what="Stoppable to go")
    with pytest.raises(AttributeError, match="the link has been broken"):
        link.echo(1)
    with pytest.raises(RuntimeError, match="'Stoppable' service does not exist"):
        cxn.link("Stoppable")
    assert cxn.link("Echo").echo("alive") == [["alive"], {}]


def test_large_messages(net):
    net.start(Echo())
    echo = net.connect().link("Echo")
    big = "x" * 20_000_000
    reply = echo.echo(big, timeout=WAIT)
    assert reply[1] == {} and len(reply[0]) == 1 and reply[0][0] == big
    numbers = list(range(10 ** 6))
    assert echo.echo(numbers=numbers, timeout=WAIT) == [[], {"numbers": numbers}]
    # a large request in flight does not hold back small ones on the same connection
    large = echo.echo("y" * 5_000_000, asynchronous=True)
    small = [echo.echo(i, asynchronous=True) for i in range(5)]
    assert [f.result(WAIT) for f in small] == [[[i], {}] for i in range(5)]
    assert large.result(WAIT)[0][0] == "y" * 5_000_000


def test_crashed_service_fails_pending_requests(net):
    bm = net.start(BasicMath())
    cxn = net.connect()
    link = cxn.link("BasicMath")
    pending = link.slow(30, asynchronous=True)
    wait_until(bm.running.is_set, what="the slow call to start")
    crash = link.drop_connection(asynchronous=True)
    t0 = time.monotonic()
    for future in (pending, crash):
        with pytest.raises(RuntimeError, match="disconnected"):
            future.result(timeout=10)
    assert time.monotonic() - t0 < 5, "the pending requests were not failed promptly"
    bm.thread.join(WAIT)
    assert not bm.thread.is_alive()
    assert "BasicMath" not in cxn.identities()["services"]
    with pytest.raises(RuntimeError, match="'BasicMath' Service is not connected"):
        link.add(1, 2, timeout=WAIT)


def test_reply_to_a_client_that_left_is_dropped(net):
    bm = net.start(BasicMath())
    leaving, staying = net.connect("Leaving"), net.connect("Staying")
    link = leaving.link("BasicMath")
    link.slow(0.5, value="orphan", asynchronous=True)
    wait_until(bm.running.is_set, what="the slow call to start")
    leaving.disconnect(timeout=WAIT)
    other = staying.link("BasicMath")
    assert other.slow(1.0, value="kept")["value"] == "kept"  # the orphan reply came and went
    assert other.add(1, 2) == 3
    assert str(leaving) not in staying.identities()["clients"]


def test_shutdown_service_fails_other_pending_requests(net):
    bm = net.start(BasicMath())
    waiting, stopper = net.connect("Waiting"), net.connect("Stopper")
    stop = stopper.link("BasicMath")
    pending = waiting.link("BasicMath").slow(30, asynchronous=True)
    # the two clients' requests race to the Manager: stop only once the slow call is running
    wait_until(bm.running.is_set, what="the slow call to start")
    assert stop.shutdown_service() == "bye"
    with pytest.raises(RuntimeError, match="'BasicMath' Service disconnected"):
        pending.result(timeout=10)
    bm.thread.join(WAIT)
    assert not bm.thread.is_alive()
    assert waiting.identities()["services"] == {}
