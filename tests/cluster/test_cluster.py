"""Several netmgr nodes share one namespace over real nats-server processes (issue 14).

The peers are real msl-network 1.0 Services and Clients, raw-socket peers (as a LabVIEW VI), and
netmgr's own library with failover. Every wait is bounded and on a condition, never a sleep.
"""
import signal
import subprocess
import sys
import threading
import time

import pytest

from msl_services import ECHO_1_0
from rawpeer import RawPeer, wait_until

WAIT = 20.0


def services_at(port):
    with RawPeer(port, timeout=WAIT) as peer:
        peer.handshake_client("Look")
        return peer.call("Manager", "identity")["result"]["services"]


def wait_for_service(port, name, node=None):
    """Until the Manager at ``port`` lists ``name`` (on ``node``); its identity entry."""
    def listed():
        entry = services_at(port).get(name)
        return entry if entry is not None and (node is None or entry.get("node") == node) else None
    return wait_until(listed, WAIT, f"{name!r} listed at port {port}")


def wait_gone(port, name):
    wait_until(lambda: name not in services_at(port), WAIT, f"{name!r} gone at port {port}")


@pytest.fixture
def two_nodes(nats_server, netmgr_node):
    a = netmgr_node(nats_server.url, "a")
    b = netmgr_node(nats_server.url, "b")
    return a, b


def test_a_1_0_service_on_one_node_is_called_by_a_1_0_client_on_another(two_nodes):
    import msl.network

    a, b = two_nodes
    proc = subprocess.Popen([sys.executable, "-c", ECHO_1_0, str(a.port)])
    try:
        entry = wait_for_service(b.port, "Echo", node="a")
        assert "echo" in entry["attributes"]
        assert services_at(a.port)["Echo"]["node"] == "a"
        cxn = msl.network.connect(host="127.0.0.1", port=b.port, disable_tls=True, timeout=WAIT)
        try:
            echo = cxn.link("Echo")
            assert echo.echo(1, 2, x=3) == [[1, 2], {"x": 3}]
            assert [echo.echo(n) for n in range(20)] == [[[n], {}] for n in range(20)]
        finally:
            cxn.disconnect()
    finally:
        proc.kill()
        proc.wait()
    wait_gone(b.port, "Echo")


def test_notifications_reach_linked_clients_on_every_node(two_nodes):
    a, b = two_nodes
    with RawPeer(a.port, timeout=WAIT) as service, RawPeer(a.port, timeout=WAIT) as near, \
            RawPeer(b.port, timeout=WAIT) as far, RawPeer(b.port, timeout=WAIT) as unlinked:
        service.handshake_service("Heart")
        wait_for_service(b.port, "Heart", node="a")
        near.handshake_client("Near")
        far.handshake_client("Far")
        unlinked.handshake_client("Other")
        assert near.call("Manager", "link", "Heart")["error"] is False
        assert far.call("Manager", "link", "Heart")["error"] is False
        service.send_json({"error": False, "result": [[7], {}], "service": "Heart", "uid": "notification"})
        for peer in (near, far):
            message = peer.read()
            assert message == {"error": False, "result": [[7], {}], "service": "Heart", "uid": "notification"}
        # the unlinked Client got nothing: its next message is the reply to this request
        assert unlinked.call("Manager", "identity")["error"] is False


def test_max_clients_links_and_locks_are_the_owning_nodes(two_nodes):
    a, b = two_nodes
    with RawPeer(a.port, timeout=WAIT) as service, RawPeer(b.port, timeout=WAIT) as far, \
            RawPeer(a.port, timeout=WAIT) as near, RawPeer(b.port, timeout=WAIT) as third:
        service.handshake_service("Single", max_clients=1)
        wait_for_service(b.port, "Single", node="a")
        far.handshake_client("Far")
        near.handshake_client("Near")
        third.handshake_client("Third")
        assert far.call("Manager", "link", "Single")["error"] is False
        refused = near.call("Manager", "link", "Single")
        assert refused["error"] is True
        assert refused["message"].startswith("PermissionError: The maximum number of Clients are already "
                                             "linked with 'Single'")
        assert "Far[" in refused["message"]
        # a request is an implicit link, under the same checks (reference 6.1)
        assert third.call("Single", "echo")["message"].startswith("PermissionError: The maximum number")
        # the lock, from the far node
        assert far.call("Manager", "acquire_lock", "Single", shared=False)["error"] is False
        assert far.call("Manager", "release_lock", "Single")["result"] == []
        assert far.call("Manager", "unlink", "Single")["error"] is False
        assert near.call("Manager", "link", "Single")["error"] is False  # room again


def test_a_client_leaving_releases_its_lock_at_the_owning_node(two_nodes):
    a, b = two_nodes
    with RawPeer(a.port, timeout=WAIT) as service, RawPeer(a.port, timeout=WAIT) as near:
        service.handshake_service("Lab")
        wait_for_service(b.port, "Lab", node="a")
        near.handshake_client("Near")
        with RawPeer(b.port, timeout=WAIT) as far:
            far.handshake_client("Far")
            assert far.call("Manager", "link", "Lab")["error"] is False
            assert far.call("Manager", "acquire_lock", "Lab", shared=False)["error"] is False
            assert near.call("Manager", "link", "Lab")["message"] == "PermissionError: 'Lab' service is locked"
        wait_until(lambda: near.call("Manager", "link", "Lab")["error"] is False, WAIT,
                   "the lock of the Client that left to be released")


def test_a_service_name_is_claimed_once_across_the_cluster(two_nodes):
    """Both nodes get an Echo at the same moment, many times: exactly one is accepted each time."""
    a, b = two_nodes
    for round_ in range(5):
        peers, results = [RawPeer(a.port, timeout=WAIT), RawPeer(b.port, timeout=WAIT)], [None, None]
        for p in peers:
            assert p.read()["attribute"] == "identity"
        barrier = threading.Barrier(2)

        def register(i):
            barrier.wait()
            peers[i].send_json({"error": False, "requester": None, "uid": "", "result": {
                "type": "service", "name": f"Twin{round_}", "attributes": {}, "max_clients": -1}})
            # accepted: nothing comes (1.0 never acknowledges); refused: an error, then EOF
            peers[i].sock.settimeout(3.0)
            try:
                results[i] = peers[i].read()
            except (TimeoutError, OSError):
                results[i] = "accepted"
            except EOFError:
                results[i] = "closed"

        threads = [threading.Thread(target=register, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        refused = [r for r in results if isinstance(r, dict)]
        assert results.count("accepted") == 1 and len(refused) == 1, results
        assert refused[0]["message"] == f"NameError: A 'Twin{round_}' service is already running on the Manager"
        for p in peers:
            p.close()


def test_kill_9_of_a_node_fails_its_requests_in_flight_with_their_uids(two_nodes):
    """Under load: 200 requests in flight to a Service of node a when a is killed, while node b
    serves its own Service to another Client; every one of the 200 fails with its uid within 3 s,
    and b's own traffic goes on."""
    a, b = two_nodes
    with RawPeer(a.port, timeout=WAIT) as service, RawPeer(b.port, timeout=WAIT) as client, \
            RawPeer(b.port, timeout=WAIT) as local_service, RawPeer(b.port, timeout=WAIT) as local:
        service.handshake_service("Slow")
        local_service.handshake_service("Near")
        wait_for_service(b.port, "Slow", node="a")
        client.handshake_client("C")
        local.handshake_client("L")
        uids = [client.request("Slow", "work", n) for n in range(200)]
        for _ in uids:
            service.read()  # every request reached the Service, which never answers
        stop, served = threading.Event(), []

        def near_traffic():  # node b's own Service and Client, busy all along
            while not stop.is_set():
                uid = local.request("Near", "echo", len(served))
                local_service.serve_one()
                assert local.read()["uid"] == uid
                served.append(uid)

        worker = threading.Thread(target=near_traffic, daemon=True)
        worker.start()
        wait_until(lambda: len(served) > 20, WAIT, "node b's own traffic")
        a.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        failed = [client.read() for _ in uids]
        elapsed = time.monotonic() - killed
        before = len(served)
        wait_until(lambda: len(served) > before + 20, WAIT, "node b's own traffic after the kill")
        stop.set()
        worker.join(WAIT)
        assert sorted(m["uid"] for m in failed) == sorted(uids)
        assert all(m["error"] is True and "Slow" in m["message"] for m in failed)
        assert elapsed < 3.0, f"the requests failed {elapsed:.2f} s after the kill"
        assert "Slow" not in services_at(b.port)


def test_a_node_cut_off_from_nats_keeps_serving_its_peers_and_rejoins(nats_server, netmgr_node):
    a = netmgr_node(nats_server.url, "a")
    b = netmgr_node(nats_server.url, "b")
    with RawPeer(a.port, timeout=WAIT) as service, RawPeer(a.port, timeout=WAIT) as local:
        service.handshake_service("Local")
        wait_for_service(b.port, "Local", node="a")
        local.handshake_client("L")
        nats_server.kill()
        wait_gone(b.port, "Local")  # b no longer hears a
        uid = local.request("Local", "echo", 1)
        assert service.serve_one()["uid"] == uid
        assert local.read()["result"] == [[1], {}]  # a's own peers are served all along
        nats_server.restart()
        wait_for_service(b.port, "Local", node="a")  # rejoined
        with RawPeer(b.port, timeout=WAIT) as far:
            far.handshake_client("Far")
            uid = far.request("Local", "echo", 2)
            assert service.serve_one()["uid"] == uid
            assert far.read()["result"] == [[2], {}]


def test_a_failed_over_client_calls_a_failed_over_service_with_no_user_code(nats_server, netmgr_node):
    """Done-when 2: kill -9 of the node both are connected to; the library's failover list
    brings the Service and the Client to the other node, and calls work again."""
    from netmgr import Service, connect

    a = netmgr_node(nats_server.url, "a")
    b = netmgr_node(nats_server.url, "b")
    hosts = f"127.0.0.1:{a.port}|127.0.0.1:{b.port}"

    class Doubler(Service):
        def double(self, x):
            return 2 * x

    service = Doubler(name="Doubler")
    thread = threading.Thread(target=service.start, kwargs=dict(
        host=hosts, disable_tls=True, reconnect=True, max_delay=0.5), daemon=True)
    thread.start()
    wait_for_service(b.port, "Doubler", node="a")
    cxn = connect(host=hosts, disable_tls=True, reconnect=True, max_delay=0.5, timeout=WAIT)
    try:
        link = cxn.link("Doubler")
        assert link.double(21) == 42
        a.proc.send_signal(signal.SIGKILL)
        wait_for_service(b.port, "Doubler", node="b")  # re-registered at b (its claim taken over)
        assert wait_until(lambda: _try(link.double, 5), WAIT, "a call after the failover") == 10
    finally:
        cxn.disconnect()
        service.stop_service() if hasattr(service, "stop_service") else None


def _try(call, *args):
    try:
        return call(*args)
    except (ConnectionError, RuntimeError, TimeoutError):
        return None


def test_kill_9_of_one_nats_server_of_three_and_traffic_continues(nats_cluster, netmgr_node):
    """Node a's own NATS server is killed: a reconnects to another member of the NATS cluster,
    its claims (an R3 KV bucket) survive, and cross-node traffic goes on."""
    from cluster.conftest import _monitor

    a = netmgr_node(nats_cluster.urls, "a")
    b = netmgr_node(nats_cluster.urls, "b")
    with RawPeer(a.port, timeout=WAIT) as service, RawPeer(b.port, timeout=WAIT) as client:
        service.handshake_service("Echo")
        wait_for_service(b.port, "Echo", node="a")
        client.handshake_client("C")

        def call(n):
            uid = client.request("Echo", "echo", n)
            assert service.serve_one()["uid"] == uid
            return client.read()["result"]

        assert call(1) == [[1], {}]
        # the server node a is connected to (nats-py picks one of the list at random)
        mine = next(s for s in nats_cluster.servers if any(
            c.get("name") == "netmgr a" for c in (_monitor(s.monitor, "connz") or {}).get("connections", [])))
        mine.kill()
        wait_until(lambda: "cluster_nats state=reconnected" in a.output, WAIT,
                   f"node a to reconnect:\n{a.output[-3000:]}")
        for n in range(2, 30):
            assert call(n) == [[n], {}]
        assert services_at(b.port)["Echo"]["node"] == "a"
        assert "cluster_name_lost" not in a.output  # the claim outlived its server


def test_netmgr_status_shows_the_nodes(two_nodes):
    import re

    a, b = two_nodes
    with RawPeer(b.port, timeout=WAIT) as service:
        service.handshake_service("Remote")
        wait_for_service(a.port, "Remote", node="b")
        sock = re.search(r"control_socket path=(\S+)", a.output).group(1)
        proc = subprocess.run([sys.executable, "-m", "netmgr.launcher", "status", "--socket", sock],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        text = proc.stdout
        assert "Cluster: node a, NATS connected, 2 node(s)" in text, text
        rows = {line.split()[0]: line for line in text.splitlines()[text.splitlines().index(
            next(l for l in text.splitlines() if l.startswith("Cluster:"))) + 1:] if line.strip()}
        assert "this node" in rows["a"] and "Remote" in rows["b"], text
