"""The event stream on the wire (issue 13): a raw-socket subscriber, as a LabVIEW VI would be,
against ``netmgr start``, with real msl-network 1.0 Services as the peers that come and go."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from msl_services import ECHO_1_0
from rawpeer import RawPeer, wait_until

WAIT = 20.0


class UnixPeer(RawPeer):
    """A RawPeer on the Manager's control socket: an administrator without a login."""

    def __init__(self, path, timeout=WAIT):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self._buf = bytearray()


def subscribe(peer, types, attribute="subscribe_events", uid="sub-1"):
    """Send a (un)subscribe request and return its reply (no event can come before it)."""
    peer.request("Manager", attribute, types, uid=uid)
    reply = peer.read()
    assert reply["uid"] == uid, reply
    return reply


def next_event(peer, kind, event, /, **match):
    """Read notifications until an event of ``kind``/``event`` whose fields match; return it."""
    while True:
        message = peer.read()
        assert message["uid"] == "notification" and message["service"] == "Manager", message
        ev = message["result"]
        if (ev["type"], ev["event"]) == (kind, event) and all(ev.get(k) == v for k, v in match.items()):
            return ev


def start_1_0_echo(port):
    return subprocess.Popen([sys.executable, "-c", ECHO_1_0, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_a_vi_sees_a_1_0_service_connect_and_be_killed(netmgr):
    with RawPeer(netmgr.port, timeout=WAIT) as vi:
        vi.handshake_client("VI")
        reply = subscribe(vi, ["service", "peer"])
        assert reply["error"] is False and reply["result"] == ["peer", "service"]

        proc = start_1_0_echo(netmgr.port)
        try:
            connected = next_event(vi, "peer", "connected", kind="service")
            registered = next_event(vi, "service", "registered", name="Echo")
            assert registered["network_name"] == connected["name"] and connected["name"].startswith("Echo[")
            assert "echo" in registered["attributes"] and registered["max_clients"] == -1
            assert registered["language"].startswith("Python")
            proc.send_signal(signal.SIGKILL)
            gone = next_event(vi, "service", "gone", name="Echo")
            left = next_event(vi, "peer", "disconnected", name=connected["name"])
            assert left["kind"] == "service" and gone["seq"] < left["seq"]
            assert gone["reason"] and gone["address"] == connected["address"]
        finally:
            proc.kill()
            proc.wait()


def test_a_non_administrator_is_refused_admin_only_types(netmgr):
    with RawPeer(netmgr.port, timeout=WAIT) as vi:
        vi.handshake_client("VI")
        reply = subscribe(vi, ["peer", "auth", "link"], uid="u1")
        assert reply["error"] is True
        assert reply["message"] == ("PermissionError: the event types 'auth', 'link' are for administrators; "
                                    "a non-administrator may subscribe to: health, peer, service")
        reply = subscribe(vi, ["nope"], uid="u2")
        assert reply["error"] is True and reply["message"].startswith("ValueError: unknown event type 'nope'")
        assert subscribe(vi, [], uid="u3")["result"] == ["health", "peer", "service"]  # all it may have
        # unsubscribing an empty list drops nothing (no arguments at all drops everything)
        assert subscribe(vi, [], attribute="unsubscribe_events", uid="u3b")["result"] == ["health", "peer", "service"]
        assert subscribe(vi, ["peer"], attribute="unsubscribe_events", uid="u4")["result"] == ["health", "service"]
        assert subscribe(vi, None, attribute="unsubscribe_events", uid="u5")["result"] == []
        # nothing arrives any more: the next message is the reply to this request
        with RawPeer(netmgr.port, timeout=WAIT) as other:
            other.handshake_client("Other")
            assert vi.call("Manager", "identity")["result"]["clients"]


def test_an_administrator_sees_links_locks_failures_heartbeats_and_audit(netmgr, netmgr_home):
    with UnixPeer(netmgr_home / "netmgr.sock") as admin, RawPeer(netmgr.port, timeout=WAIT) as echo, \
            RawPeer(netmgr.port, timeout=WAIT) as client:
        admin.handshake_client("Watcher")
        assert subscribe(admin, None)["result"] == sorted(["peer", "service", "link", "lock", "request_failed",
                                                           "auth", "admin", "heartbeat", "health", "cluster"])
        echo.handshake_service("Echo")
        next_event(admin, "service", "registered", name="Echo")
        client.handshake_client("C")
        me = next_event(admin, "peer", "connected", kind="client")["name"]

        assert client.call("Manager", "link", "Echo")["error"] is False
        assert next_event(admin, "link", "linked", service="Echo")["client"] == me
        assert client.call("Manager", "acquire_lock", "Echo", shared=True)["error"] is False
        assert next_event(admin, "lock", "acquired", service="Echo", client=me)["shared"] is True

        uid = client.request("Echo", "echo", 1)
        echo.serve_one()
        assert client.read()["uid"] == uid
        assert client.call("NoSuch", "x")["error"] is True
        failed = next_event(admin, "request_failed", "refused", service="NoSuch")
        assert failed["requester"] == me and "NoSuch" in failed["message"]

        beat = next_event(admin, "heartbeat", "tick")
        assert beat["services"]["Echo"]["requests"] == 1 and beat["services"]["Echo"]["errors"] == 0
        assert beat["totals"]["services"] == 1 and beat["totals"]["clients"] == 2

        admin.call("Manager", "reload")
        audit = next_event(admin, "admin", "request", attribute="reload")
        assert audit["by"].startswith("Watcher[local:") and audit["ok"] is True

        client.close()
        released = next_event(admin, "lock", "released", service="Echo")
        assert released["reason"] == "client disconnected"


def test_login_failures_are_auth_events_without_the_password(netmgr_factory, netmgr_home):
    mgr = netmgr_factory("--auth-password", "right-one")
    with UnixPeer(netmgr_home / "netmgr.sock") as admin:
        admin.handshake_client("Watcher")
        subscribe(admin, ["auth"])
        with RawPeer(mgr.port, timeout=WAIT) as guess:
            assert guess.read()["attribute"] == "password"
            guess.send_json({"result": "wrong-guess-123", "error": False, "requester": None, "uid": ""})
            assert guess.read()["error"] is True
        line = admin.read_raw_line()
        event = json.loads(line)["result"]
        assert (event["type"], event["event"], event["mode"]) == ("auth", "failed", "password")
        assert event["reason"] == "wrong Manager password" and b"wrong-guess-123" not in line
        assert "address" in event and "user" not in event


def test_a_subscriber_that_stops_reading_is_dropped_and_the_others_keep_up(netmgr_factory, netmgr_home):
    """A flooding Client makes thousands of events; a subscriber that reads none is dropped as a
    slow consumer, while a reading subscriber gets every one and the Manager keeps answering."""
    mgr = netmgr_factory(env={"NETMGR_MAX_QUEUE_SIZE": str(16 << 20), "NETMGR_WRITE_TIMEOUT": "1"})
    count = 20_000
    silent = socket.socket(socket.AF_UNIX)
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    silent.connect(str(netmgr_home / "netmgr.sock"))
    stuck = UnixPeer.__new__(UnixPeer)
    stuck.sock, stuck._buf = silent, bytearray()
    stuck.sock.settimeout(WAIT)
    stuck.handshake_client("Stuck")
    subscribe(stuck, ["request_failed"])
    with UnixPeer(netmgr_home / "netmgr.sock") as reader, RawPeer(mgr.port, timeout=WAIT) as flood:
        reader.handshake_client("Reader")
        subscribe(reader, ["request_failed"])
        seen = []
        thread = threading.Thread(target=lambda: seen.append(
            next_event(reader, "request_failed", "refused", uid=f"f{count - 1}")), daemon=True)
        thread.start()
        flood.handshake_client("Flood")
        flood.send(b"".join(b'{"service":"Nowhere","attribute":"x","args":[],"kwargs":{},"uid":"f%d"}\r\n' % n
                            for n in range(count)))
        thread.join(60)
        assert seen and seen[0]["requester"].startswith("Flood[")
        # dropped while it still reads nothing (reading would be progress), then closed
        wait_until(lambda: "slow consumer" in mgr.output or "outbound queue overflow" in mgr.output,
                   WAIT, "the subscriber that never read to be dropped")
        assert "Stuck[local:" in mgr.output.split("peer_dropped")[1].splitlines()[0]
        assert stuck.wait_closed(WAIT)
        for _ in range(count):  # the flooder's own error replies all came
            assert flood.read()["error"] is True
        with RawPeer(mgr.port, timeout=WAIT) as late:
            late.handshake_client("Late")
            assert late.call("Manager", "identity")["error"] is False
    stuck.close()
