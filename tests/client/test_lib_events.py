"""``cxn.events()``: the Manager's event stream in the library (issue 13), against real Managers.

Both forms (a handler on the dispatcher thread, an iterator over a bounded queue), the filter per
subscription on one connection, drop-oldest, the end of the iteration, re-subscription after the
Manager is killed and started again on the same port, the Manager's refusals as the library's
usual RuntimeError, and a msl-network 1.0 Client beside a subscriber. Every wait is on an event,
a bounded ``next`` or a readiness poll, never a bare sleep.
"""
import os
import signal
import subprocess
import sys
import threading

import msl.network
import pytest

from lib_support import HOST, Echo, service_process, start_service, until
from netmgr.client import RECONNECTING, EventStream, EventSubscription, connect

WAIT = 20
ALL = {"peer", "service", "link", "lock", "request_failed", "auth", "admin", "heartbeat", "health", "cluster"}
pytestmark = pytest.mark.usefixtures("watchdog")


def plain(port, **kwargs):
    return connect(host=HOST, port=port, disable_tls=True, **kwargs)


def next_event(stream, kind, event, name=None):
    """The next event of `kind`/`event` (about `name`) from `stream`, skipping others."""
    stream.timeout = WAIT
    for ev in stream:
        if ev["type"] == kind and ev["event"] == event and name in (None, ev.get("name")):
            return ev
    raise AssertionError(f"the stream ended before {kind} {event}")


class Collector:
    """A handler that keeps the events and signals each one."""

    def __init__(self):
        self.events = []
        self.threads = set()
        self.cond = threading.Condition()

    def __call__(self, event):
        with self.cond:
            self.events.append(event)
            self.threads.add(threading.current_thread().name)
            self.cond.notify_all()

    def wait_for(self, kind, event, name=None):
        def found():
            return next((e for e in self.events if e["type"] == kind and e["event"] == event
                         and name in (None, e.get("name"))), None)
        with self.cond:
            assert self.cond.wait_for(found, WAIT), f"no {kind} {event} in {self.events}"
            return found()


# ------------------------------------------------------------------------------- the two forms

def test_a_handler_gets_service_events_on_the_dispatcher_thread(netmgr):
    with plain(netmgr.port) as cxn:
        seen = Collector()
        sub = cxn.events(["service"], handler=seen)
        assert isinstance(sub, EventSubscription) and not isinstance(sub, EventStream)
        assert sub.types == {"service"} and sub.active
        running = start_service(netmgr.port, Echo())
        registered = seen.wait_for("service", "registered", "Echo")
        assert registered["network_name"].startswith("Echo[")
        assert registered["attributes"]["echo"] == "(*args, **kwargs)"
        assert registered["max_clients"] == -1
        assert isinstance(registered["seq"], int) and isinstance(registered["time"], float)
        running.stop()
        gone = seen.wait_for("service", "gone", "Echo")
        assert gone["seq"] > registered["seq"] and gone["address"] == registered["address"]
        assert {e["type"] for e in seen.events} == {"service"}  # no peer events: not asked for
        assert seen.threads == {f"{cxn}-notifications"}
        with sub:
            pass  # leaving the block closes it
        assert sub.closed and not sub.active
        sub.close()  # idempotent

        # closed: the next Service reaches a stream of the same Client but not the handler
        with cxn.events("service") as stream, _serving(netmgr.port, Echo()):
            next_event(stream, "service", "registered", "Echo")
        assert all(e["seq"] <= gone["seq"] for e in seen.events)


class _serving:
    """A netmgr Service in a thread for the block."""

    def __init__(self, port, service):
        self.port, self.service = port, service

    def __enter__(self):
        self.running = start_service(self.port, self.service)

    def __exit__(self, *exc):
        self.running.stop()


def test_the_iterator_form_follows_a_service_that_is_killed(netmgr):
    with plain(netmgr.port) as cxn, cxn.events(["peer", "service"], timeout=WAIT) as stream:
        assert stream.types == {"peer", "service"}
        proc = service_process(netmgr.port)  # 'Sleeper' in a child process, to SIGKILL it
        try:
            connected = next_event(stream, "peer", "connected")
            assert connected["kind"] == "service" and connected["name"].startswith("Sleeper[")
            registered = next_event(stream, "service", "registered", "Sleeper")
            assert registered["seq"] > connected["seq"] and registered["network_name"] == connected["name"]
            proc.send_signal(signal.SIGKILL)
            after = [next(stream), next(stream)]  # in either order
            assert sorted((e["type"], e["event"]) for e in after) == \
                [("peer", "disconnected"), ("service", "gone")]
            assert all(e["reason"] for e in after)
        finally:
            proc.kill()
            proc.wait()
        stream.timeout = 0.2
        with pytest.raises(TimeoutError, match="no event within 0.2 s"):
            next(stream)
    assert stream.closed and list(stream) == []  # closed: the loop ends at once


def test_types_none_is_what_the_peer_may_have_and_the_filter_is_per_subscription(netmgr):
    with plain(netmgr.port) as cxn:
        everything = cxn.events()
        assert everything.types == {"peer", "service", "health"}  # not an administrator
        only_peers = cxn.events(["peer"])
        with plain(netmgr.port, name="Visitor"):
            pass
        assert next_event(everything, "peer", "connected")["name"].startswith("Visitor[")
        assert next_event(only_peers, "peer", "connected")["name"].startswith("Visitor[")
        only_peers.close()
        with _serving(netmgr.port, Echo()):
            next_event(everything, "service", "registered", "Echo")  # still subscribed to service
        everything.close()


def test_the_control_socket_may_have_every_type(netmgr, netmgr_home):
    with connect(host=str(netmgr_home / "netmgr.sock")) as admin:
        stream = admin.events()
        assert stream.types == ALL
        seen = Collector()
        admin.events(["link", "lock"], handler=seen)
        with _serving(netmgr.port, Echo()), plain(netmgr.port, name="User") as cxn:
            link = cxn.link("Echo")
            link.acquire_lock()
            linked = seen.wait_for("link", "linked")
            assert linked["service"] == "Echo" and linked["client"] == str(cxn)
            assert seen.wait_for("lock", "acquired")["shared"] is False
        stream.close()


def test_a_full_stream_drops_its_oldest_events(netmgr):
    with plain(netmgr.port) as cxn:
        stream = cxn.events(["peer"], maxsize=2)
        barrier = Collector()  # subscribed after the stream: an event reaches the stream first
        cxn.events(["peer"], handler=barrier)
        names = []
        for i in range(3):
            with plain(netmgr.port, name=f"Visitor{i}") as visitor:
                names.append(str(visitor))
        barrier.wait_for("peer", "disconnected", names[-1])
        assert stream.dropped == 4  # 6 events, 2 kept: the newest
        stream.timeout = 0
        assert [(e["event"], e["name"]) for e in (next(stream), next(stream))] == \
            [("connected", names[2]), ("disconnected", names[2])]


def test_the_iteration_ends_when_the_client_disconnects(netmgr):
    cxn = plain(netmgr.port)
    stream = cxn.events(["peer"])
    with plain(netmgr.port, name="Visitor"):
        pass
    got = []
    reader = threading.Thread(target=lambda: got.extend(stream))
    reader.start()
    assert until(lambda: len(got) == 2, timeout=WAIT)  # connected, disconnected
    cxn.disconnect()
    reader.join(WAIT)
    assert not reader.is_alive()
    assert [e["event"] for e in got] == ["connected", "disconnected"]
    assert stream.closed and not stream.active and not stream.wait_active(0)


# ---------------------------------------------------------------------------------- reconnect

def test_subscriptions_are_made_again_after_the_manager_restarts(netmgr_factory):
    """SIGKILL the Manager, start it again on the same port: the Client reconnects and both
    subscriptions receive the new Manager's events, with no user code."""
    mgr = netmgr_factory()
    port = mgr.port
    cxn = plain(port, reconnect=True, max_delay=0.3)
    try:
        stream = cxn.events(["service"])
        seen = Collector()
        handler = cxn.events(["peer"], handler=seen)
        with _serving(port, Echo()):
            first = next_event(stream, "service", "registered", "Echo")
        mgr.stop(signal.SIGKILL)
        assert until(lambda: cxn.state == RECONNECTING, timeout=WAIT)
        assert not stream.active and not handler.active
        netmgr_factory(port=port)
        assert stream.wait_active(WAIT) and handler.wait_active(WAIT)

        with _serving(port, Echo()):
            again = next_event(stream, "service", "registered", "Echo")
        assert again["address"] != first["address"]
        seen.wait_for("peer", "connected", again["network_name"])
        assert not stream.closed and stream.dropped == 0
    finally:
        cxn.disconnect()
    assert stream.closed and handler.closed


def test_an_inline_administrator_logs_in_again_to_subscribe_again(netmgr_factory, netmgr_home, tmp_path):
    """Admin types over TCP need the inline login (an admin request); the new connection after
    a restart is not logged in, so the library logs in again with the credentials it kept."""
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    add = subprocess.run([sys.executable, "-m", "netmgr.launcher", "user", "add", "admin", "--password-file",
                          str(pw), "--admin", "--bcrypt-rounds", "4"], capture_output=True, text=True,
                         env=dict(os.environ, NETMGR_HOME=str(netmgr_home), NETMGR_CONFIG=os.devnull),
                         timeout=WAIT)
    assert add.returncode == 0, add.stderr
    mgr = netmgr_factory()
    port = mgr.port
    cxn = plain(port, username="admin", password="secret", reconnect=True, max_delay=0.3)
    try:
        with pytest.raises(RuntimeError, match="PermissionError"):
            cxn.events(["admin"])  # not an administrator yet
        assert cxn.admin_request("port") == port  # the inline login
        stream = cxn.events(["admin", "peer"])
        mgr.stop(signal.SIGKILL)
        assert until(lambda: cxn.state == RECONNECTING, timeout=WAIT)
        netmgr_factory(port=port)
        assert stream.wait_active(WAIT)
        cxn.admin_request("set_logging_level", "INFO")  # audited: an admin event
        audit = next_event(stream, "admin", "request")
        assert (audit["attribute"], audit["by"], audit["ok"]) == ("set_logging_level", str(cxn), True)
    finally:
        cxn.disconnect()


# ------------------------------------------------------------------------------- refusals

def test_a_non_administrator_is_refused_admin_types_and_unknown_types(netmgr):
    with plain(netmgr.port) as cxn:
        with pytest.raises(RuntimeError, match=r"(?s)Manager\[.*\] returned the following exception:.*"
                                               r"PermissionError: the event types 'auth' are for "
                                               r"administrators; a non-administrator may subscribe to: "
                                               r"health, peer, service"):
            cxn.events(["auth"])
        with pytest.raises(RuntimeError, match="ValueError: unknown event type 'bogus'; the types are: peer"):
            cxn.events(["peer", "bogus"], handler=print)
        with pytest.raises(TypeError):
            cxn.events([1])
        with pytest.raises(ValueError):
            cxn.events([])
        # the refused subscriptions left nothing behind, and the connection works on
        assert "hostname" in cxn.identities()
        with cxn.events("peer") as stream:
            assert stream.types == {"peer"}


def test_a_msl_network_client_beside_a_subscriber_is_unaffected(netmgr):
    """A 1.0 Client links, calls and gets its Service's notifications while a netmgr Client
    receives every event of the same Manager."""
    running = start_service(netmgr.port, Echo())
    try:
        with plain(netmgr.port) as cxn, cxn.events(timeout=WAIT) as stream:
            old = msl.network.connect(host=HOST, port=netmgr.port, disable_tls=True, name="Old")
            try:
                assert next_event(stream, "peer", "connected")["name"] == str(old)
                echo = old.link("Echo")
                assert echo.echo(1, x=2) == [[1], {"x": 2}]
                assert "Echo" in old.identities()["services"]
            finally:
                old.disconnect()
            assert next_event(stream, "peer", "disconnected")["name"] == str(old)
    finally:
        running.stop()
