"""One test per fixed MSL-Network 1.0 flaw (reference section 6), run against both Managers.

Each test is parametrized over ``netmgr`` and the real msl-network 1.0 Manager. Against 1.0 it
is a strict xfail that must fail with an AssertionError: the run proves that the flaw exists in
1.0 and that netmgr fixes it (an XPASS, or any other exception, fails the suite). Every read
has a socket timeout, and a timeout or an unexpected close is turned into an AssertionError, so
1.0 fails within seconds instead of hanging.

Ordering without sleeps: a peer's lines are handled in order, so when a peer gets the reply to
its own ``identity`` request (:meth:`Peer.sync`), everything it sent before has been handled
and whatever that caused has already been written to the other peers ahead of any later message.
"""
import json
import socket
import time
import uuid

import pytest

from rawpeer import RawPeer

TIMEOUT = 3.0  # seconds for any single read; a 1.0 flaw shows up as this timeout
PROMPT = 1.0  # seconds within which a Manager closes a connection it has refused


def on_both_managers(flaw):
    """Run on netmgr, and on msl-network 1.0 as a strict xfail that must fail an assertion."""
    return pytest.mark.parametrize("kind", [
        "netmgr",
        pytest.param("msl", marks=pytest.mark.xfail(strict=True, raises=AssertionError,
                                                     reason=f"msl-network 1.0 flaw: {flaw}")),
    ])


_open_peers = []


@pytest.fixture
def start(kind, netmgr_factory, msl_factory):
    """Start the Manager under test; the arguments are netmgr options (1.0 has none of them).

    The test's peers are closed before the Manager is stopped: a failed test keeps them alive
    in its traceback, and a 1.0 Manager stuck writing to one of them would not stop.
    """
    def _start(*netmgr_args):
        return netmgr_factory(*netmgr_args) if kind == "netmgr" else msl_factory()
    yield _start
    while _open_peers:
        _open_peers.pop().sock.close()


# ------------------------------------------------------------------------------------------
# helpers

class Peer(RawPeer):
    """A RawPeer with bounded reads: a timeout or a close while waiting is an AssertionError."""

    def __init__(self, port, timeout=TIMEOUT, rcvbuf=None):
        if rcvbuf is None:
            super().__init__(port, timeout=timeout)
        else:  # a receive buffer set before connecting stays small (no autotuning)
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect(("127.0.0.1", port))
        self._buf = bytearray()
        self.name = None  # the network name, as the Manager calls this peer
        _open_peers.append(self)

    def read(self):
        try:
            line = self.read_raw_line()
        except (socket.timeout, TimeoutError):
            raise AssertionError(f"no message within {self.sock.gettimeout()} s") from None
        except ConnectionError as exc:
            raise AssertionError(f"the connection failed while waiting for a message: {exc!r}") from None
        if not line:
            raise AssertionError("the Manager closed the connection")
        return json.loads(line)

    def send(self, data):
        try:
            super().send(data)
        except (socket.timeout, TimeoutError):
            raise AssertionError(f"could not send within {self.sock.gettimeout()} s") from None

    def sync(self):
        """Send an ``identity`` request; return every message that arrived before its reply."""
        uid = self.request("Manager", "identity")
        before = []
        while True:
            msg = self.read()
            if (msg.get("uid") == uid and msg.get("error") is False
                    and isinstance(msg.get("result"), dict) and "services" in msg["result"]):
                self.name = msg["requester"]
                return before
            before.append(msg)

    def wait_closed(self, seconds=TIMEOUT):
        return super().wait_closed(seconds)

    def reset(self):
        """Close abruptly: an RST, no ``__disconnect__``."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.sock.close()


def client(port, name, **kwargs):
    peer = Peer(port, **kwargs).handshake_client(name)
    assert peer.sync() == []
    return peer


def service(port, name, max_clients=-1):
    """A registered raw Service (1.0 never acknowledges an identity: sync() is the proof)."""
    peer = Peer(port).handshake_service(name, {"echo": "(*args, **kwargs)"}, max_clients)
    assert peer.sync() == []
    return peer


def link(peer, name):
    reply = peer.call("Manager", "link", name)
    assert reply["error"] is False, reply
    return reply


def notification(service_name, *args, **kwargs):
    return {"error": False, "result": [list(args), kwargs], "service": service_name, "uid": "notification"}


def answer(peer, request, value):
    """Answer a Manager request (``username``/``password``) as a 1.0 Python Client does."""
    peer.send_json({"error": False, "requester": request["requester"], "result": value, "uid": ""})


# ------------------------------------------------------------------------------------------
# a. every reply or error carries the request's uid (reference 6.13)

@on_both_managers("'Service not connected' and admin errors carry uid '' (6.13)")
def test_a_errors_carry_the_request_uid(start):
    mgr = start()
    cli = client(mgr.port, "A")

    uid = cli.request("Nope", "echo", 1)
    error = cli.read()
    assert error["error"] is True and "'Nope' Service is not connected" in error["message"], error
    assert error["uid"] == uid, error

    # an admin request from a peer that is not an admin
    uid = cli.request("Manager", "port")
    msg = cli.read()
    if msg.get("attribute") == "username":  # an inline admin login challenge (reference 1.7)
        answer(cli, msg, "nobody")
        msg = cli.read()
        if msg.get("attribute") == "password":
            answer(cli, msg, "not the password")
            msg = cli.read()
    assert msg["error"] is True, msg
    assert msg["message"] in ("ValueError: You must be an administrator to send this request to the Manager",
                              "ValueError: Unregistered user", "ValueError: Wrong login password"), msg
    assert msg["uid"] == uid, msg
    assert msg["requester"] == cli.name, msg

    # errors of the Manager attributes keep their uid, and the session lives on
    uid = cli.request("Manager", "link")
    error = cli.read()
    assert error["error"] is True and error["uid"] == uid, error
    assert cli.sync() == []


# ------------------------------------------------------------------------------------------
# b. a Service that disconnects with requests in flight (reference 6.14)

@on_both_managers("requests in flight to a Service that disconnects are never answered (6.14)")
def test_b_service_disconnect_answers_every_request_in_flight(start):
    mgr = start()
    echo = service(mgr.port, "Echo")
    one, two = client(mgr.port, "One"), client(mgr.port, "Two")
    link(one, "Echo")
    link(two, "Echo")
    served = one.request("Echo", "echo", 0)
    echo.serve_one()  # answered: no error may follow for this one
    reply = one.read()
    assert reply["uid"] == served and reply["error"] is False
    pending_one = [one.request("Echo", "echo", 1), one.request("Echo", "echo", 2)]
    pending_two = [two.request("Echo", "echo", 3)]
    received = {echo.read()["uid"] for _ in range(3)}
    assert received == set(pending_one + pending_two)  # in flight: the Service has them

    echo.close()
    t0 = time.monotonic()
    errors_one = [one.read(), one.read()]
    errors_two = [two.read()]
    assert time.monotonic() - t0 < 2.0
    for peer, errors, pending in ((one, errors_one, pending_one), (two, errors_two, pending_two)):
        assert sorted(e["uid"] for e in errors) == sorted(pending), errors
        for error in errors:
            assert error["error"] is True and "Echo" in error["message"], error
            assert error["requester"] == peer.name, error
        assert peer.sync() == []  # one error per request, nothing else

    # the name is free again and a new Echo serves
    echo = service(mgr.port, "Echo")
    uid = one.request("Echo", "echo", 4)
    echo.serve_one()
    assert one.read()["uid"] == uid


# ------------------------------------------------------------------------------------------
# c. reply injection (reference 6.2)

@on_both_managers("any peer's message with a 'result' is forwarded to its 'requester' (6.2)")
def test_c_only_the_service_asked_can_reply_once(start):
    mgr = start()
    echo, other = service(mgr.port, "Echo"), service(mgr.port, "Other")
    victim, attacker = client(mgr.port, "Victim"), client(mgr.port, "Attacker")
    link(victim, "Echo")
    link(victim, "Other")
    link(attacker, "Echo")

    uid = victim.request("Echo", "echo", 1)
    req = echo.read()
    assert req["uid"] == uid and req["requester"] == victim.name
    forged = {"error": False, "result": "forged", "requester": victim.name, "uid": uid}

    attacker.send_json(forged)  # a client sends a result
    attacker_got = attacker.sync()
    other.send_json(dict(forged, result="forged by another service"))  # a service not asked
    other.sync()
    other.send_json({"error": True, "message": "ValueError: forged", "requester": victim.name,
                     "result": None, "traceback": [], "uid": uid})
    other.sync()

    echo.send_json({"error": False, "requester": victim.name, "result": "genuine", "uid": uid})
    first = victim.read()
    assert first == {"error": False, "requester": victim.name, "result": "genuine", "uid": uid}
    # the client that sent a result got an error, with the uid it used
    assert len(attacker_got) == 1 and attacker_got[0]["error"] is True, attacker_got
    assert attacker_got[0]["uid"] == uid and attacker_got[0]["requester"] == attacker.name

    # a request cannot name another requester: the Service sees the real sender
    uid = attacker.request("Echo", "echo", 2)
    attacker.send_json({"args": [3], "attribute": "echo", "error": False, "kwargs": {}, "service": "Echo",
                        "uid": uid, "requester": victim.name})
    for _ in range(2):
        req = echo.read()
        assert req["requester"] == attacker.name, req
        echo.send_json({"error": False, "requester": req["requester"], "result": req["args"], "uid": uid})
    assert [attacker.read()["result"] for _ in range(2)] == [[2], [3]]

    # the service asked can answer only once; a uid never sent is not answered either
    echo.send_json({"error": False, "requester": victim.name, "result": "again", "uid": uid})
    echo.send_json({"error": False, "requester": victim.name, "result": "guess", "uid": uuid.uuid4().hex})
    echo.send_json({"error": False, "requester": victim.name, "result": "empty uid", "uid": ""})
    echo.sync()
    assert victim.sync() == []


# ------------------------------------------------------------------------------------------
# d. notification spoofing (reference 6.3)

@on_both_managers("the 'service' of a notification is taken from the message, from any peer (6.3)")
def test_d_notifications_carry_the_senders_registered_name(start):
    mgr = start()
    heart, other = service(mgr.port, "Heart"), service(mgr.port, "Other")
    both, heart_only, attacker = (client(mgr.port, "Both"), client(mgr.port, "HeartOnly"),
                                  client(mgr.port, "Attacker"))
    link(both, "Heart")
    link(both, "Other")
    link(heart_only, "Heart")
    link(attacker, "Heart")

    attacker.send_json(notification("Heart", 1))  # a client cannot notify at all
    attacker_got = attacker.sync()
    other.send_json(notification("Heart", "from Other"))  # a service in another's name
    other.sync()
    heart.send_json(notification("Heart", "real"))
    heart.sync()

    # HeartOnly is linked with Heart only: it gets the real notification and nothing else
    assert heart_only.read() == notification("Heart", "real")
    assert heart_only.sync() == []
    # Both gets Other's notification under Other's name (or not at all), and the real one
    got = both.sync()
    assert notification("Heart", "real") in got, got
    assert notification("Heart", 1) not in got, got
    assert notification("Heart", "from Other") not in got, got
    assert [m for m in got if m["result"] != [["real"], {}]] in ([], [notification("Other", "from Other")]), got
    assert len(got) <= 2
    # the client that sent a notification got an error
    assert len(attacker_got) == 1 and attacker_got[0]["error"] is True, attacker_got
    assert attacker_got[0]["requester"] == attacker.name


# ------------------------------------------------------------------------------------------
# e. links, locks and max_clients are enforced (reference 6.1)

@on_both_managers("links, locks and max_clients are advisory: requests are forwarded from anyone (6.1)")
def test_e_links_locks_and_max_clients_are_enforced(start):
    mgr = start()
    locked, single, free = service(mgr.port, "Locked"), service(mgr.port, "Single", 1), service(mgr.port, "Free")
    owner, intruder = client(mgr.port, "Owner"), client(mgr.port, "Intruder")
    link(owner, "Locked")
    lock = owner.call("Manager", "acquire_lock", "Locked", shared=False)
    assert lock["error"] is False and lock["result"] == [owner.name], lock
    link(owner, "Single")

    # an unlinked client and an exclusively locked service
    uid = intruder.request("Locked", "echo", "sneak")
    got = intruder.sync()
    assert len(got) == 1 and got[0]["error"] is True and got[0]["uid"] == uid, got
    assert "'Locked' service is locked" in got[0]["message"], got
    # an unlinked client and a max_clients=1 service that another client is linked with
    uid = intruder.request("Single", "echo", "sneak")
    got = intruder.sync()
    assert len(got) == 1 and got[0]["error"] is True and got[0]["uid"] == uid, got
    assert "The maximum number of Clients are already linked with 'Single'" in got[0]["message"], got
    # the services never saw those requests, and the owner is still served
    assert locked.sync() == [] and single.sync() == []
    for name, peer in (("Locked", locked), ("Single", single)):
        uid = owner.request(name, "echo", "mine")
        req = peer.serve_one()
        assert req["requester"] == owner.name and req["args"] == ["mine"]
        assert owner.read()["uid"] == uid

    # an unlinked client and a free service: linked implicitly and served
    uid = intruder.request("Free", "echo", 1)
    req = free.serve_one()
    assert req["requester"] == intruder.name and req["uid"] == uid
    assert intruder.read() == {"error": False, "requester": intruder.name, "result": [[1], {}], "uid": uid}
    lock = intruder.call("Manager", "acquire_lock", "Free", shared=False)
    assert lock["error"] is False and lock["result"] == [intruder.name], lock
    # ... so the owner, unlinked from Free, is now kept out of it
    uid = owner.request("Free", "echo", "sneak")
    got = owner.sync()
    assert len(got) == 1 and got[0]["uid"] == uid and "'Free' service is locked" in got[0]["message"], got
    assert free.sync() == []


# ------------------------------------------------------------------------------------------
# f. malformed input: an error, the session lives on, and cleanup always runs (reference 6.12)

# (line, the uid the error must carry or None when the message has none)
GARBAGE_FROM_A_CLIENT = [
    (b"5", None),
    (b"[1,2]", None),
    (b'"text"', None),
    (b"null", None),
    (b'{"uid": "f-no-service", "args": [], "kwargs": {}}', "f-no-service"),
    (b'{"service": "Echo", "uid": "f-no-attribute"}', "f-no-attribute"),
    (b"\xff\xfe invalid UTF-8 \xc3\x28", None),
    (b"client Stray", None),
    (b"Echo echo 3+4j", None),
    (b"Echo echo {1,2}", None),
    (b'{"args": [], "attribute": "echo", "error": false, "kwargs": {}, "service": "Echo", "uid": 5}', None),
    (b'{"args": [], "attribute": "echo", "error": false, "kwargs": {}, "service": 7, "uid": "f-service-7"}',
     "f-service-7"),
    (b'{"args": [], "attribute": 7, "error": false, "kwargs": {}, "service": "Echo", "uid": "f-attribute-7"}',
     "f-attribute-7"),
    (b'{"args": [], "attribute": "link", "error": false, "kwargs": {}, "service": "Manager", "uid": "f-link"}',
     "f-link"),
]

GARBAGE_FROM_A_SERVICE = [
    b"5",
    b"[1,2]",
    b"\xff\xfe invalid UTF-8",
    b'{"uid": "s-no-service"}',
    b"client Stray",
]


@on_both_managers("malformed input crashes the connection's handler and skips cleanup (6.12)")
def test_f_malformed_input_gets_an_error_and_cleanup_always_runs(start):
    mgr = start()
    echo = service(mgr.port, "Echo")
    cli = client(mgr.port, "Sender")
    link(cli, "Echo")
    for line, uid in GARBAGE_FROM_A_CLIENT:
        cli.send(line + b"\r\n")
        got = cli.sync()  # a normal request after the garbage
        assert len(got) == 1 and got[0]["error"] is True, (line, got)
        if uid is not None:
            assert got[0]["uid"] == uid, (line, got)
    uid = cli.request("Echo", "echo", "still here")
    assert echo.serve_one()["args"] == ["still here"]  # the Service saw none of the garbage
    assert cli.read()["uid"] == uid

    for line in GARBAGE_FROM_A_SERVICE:
        echo.send(line + b"\r\n")
        got = echo.sync()
        assert len(got) == 1 and got[0]["error"] is True, (line, got)
    uid = cli.request("Echo", "echo", "served")
    echo.serve_one()
    assert cli.read()["result"] == [["served"], {}]

    # a client that holds a lock, sends garbage and drops its connection without __disconnect__
    holder = client(mgr.port, "Holder")
    link(holder, "Echo")
    assert holder.call("Manager", "acquire_lock", "Echo", shared=True)["error"] is False
    holder_name = holder.name
    holder.send(b"5\r\n\xff\r\nclient x\r\n")
    holder.reset()

    # its link and lock are released: another client can link and lock
    newcomer = client(mgr.port, "Newcomer")
    deadline = time.monotonic() + TIMEOUT
    while True:
        reply = newcomer.call("Manager", "link", "Echo")
        if reply["error"] is False:
            break
        assert time.monotonic() < deadline, f"the dropped client's lock was never released: {reply}"
        time.sleep(0.05)
    lock = newcomer.call("Manager", "acquire_lock", "Echo", shared=True)
    assert lock["error"] is False and holder_name not in lock["result"], lock
    assert sorted(lock["result"]) == sorted([cli.name, newcomer.name])
    uid = newcomer.request("Manager", "identity")
    assert holder_name not in newcomer.read()["result"]["clients"]


# ------------------------------------------------------------------------------------------
# g. identity validation (reference 6.11, 6.21)

BAD_IDENTITIES = [
    {"type": "service", "name": "Manager", "attributes": {}},
    {"type": "service", "name": "Bad[name", "attributes": {}},
    {"type": "service", "name": "Bad]name", "attributes": {}},
    {"type": "service", "name": "Bad\nname", "attributes": {}},
    {"type": "service", "name": "Fake[vm:1234]", "attributes": {}},
    {"type": "client", "name": "Fake[vm:1234]"},
    {"type": "client", "name": "Two\r\nLines"},
    {"type": 5, "name": "Typed", "attributes": {}},
    {"type": ["service"], "name": "Typed", "attributes": {}},
    {"type": "service", "name": "Max", "attributes": {}, "max_clients": "two"},
    {"type": "service", "name": "Max", "attributes": {}, "max_clients": 2.5},
    {"type": "service", "name": "Max", "attributes": {}, "max_clients": [1]},
]


@on_both_managers("identities are not validated: reserved and imitating names, non-string type, "
                  "non-integer max_clients (6.11, 6.21)")
def test_g_invalid_identities_are_refused_and_closed(start):
    mgr = start()
    for identity in BAD_IDENTITIES:
        peer = Peer(mgr.port)
        first = peer.read()
        assert first["attribute"] == "identity"
        peer.send_json({"error": False, "requester": None, "result": identity, "uid": ""})
        error = peer.read()
        assert error["error"] is True and error["uid"] == "", (identity, error)
        assert error["requester"] == first["requester"], (identity, error)  # the Manager
        assert peer.wait_closed(PROMPT), f"the connection stayed open after {identity}"

    watcher = client(mgr.port, "Watcher")
    uid = watcher.request("Manager", "identity")
    reply = watcher.read()
    assert reply["uid"] == uid
    assert reply["result"]["services"] == {}
    assert list(reply["result"]["clients"]) == [watcher.name]


# ------------------------------------------------------------------------------------------
# h. a slow consumer does not stall the others (reference 6.16)

@on_both_managers("one client that stops reading stalls a service's notifications to every client (6.16)")
def test_h_a_client_that_does_not_read_is_dropped_not_waited_for(start):
    mgr = start("--max-queue-size", "65536")
    flood = service(mgr.port, "Flood")
    slow = client(mgr.port, "Slow", rcvbuf=4096)
    link(slow, "Flood")  # ... and never reads again
    fast = client(mgr.port, "Fast")
    link(fast, "Flood")

    payload = "x" * 65536
    line = json.dumps(notification("Flood", payload)).encode() + b"\r\n"
    count = 160  # 10 MiB: more than the kernel buffers towards the slow client hold
    t0 = time.monotonic()
    # one notification at a time, read before the next is sent: netmgr dispatches every line of
    # a received chunk before its writers run, so a burst larger than --max-queue-size would
    # overflow even the queue of a client that reads at once
    for i in range(count):
        flood.send(line)
        msg = fast.read()
        assert msg["service"] == "Flood" and msg["result"] == [[payload], {}], i
    assert time.monotonic() - t0 < 10

    assert slow.wait_closed(5), "the client that does not read was not disconnected"
    t0 = time.monotonic()
    uid = fast.request("Flood", "echo", "ping")
    assert flood.serve_one()["args"] == ["ping"]
    assert fast.read()["uid"] == uid
    assert time.monotonic() - t0 < 1.0
    assert fast.sync() == []


# ------------------------------------------------------------------------------------------
# i. handshake deadline, handshake line limit, large messages after identity (reference 6.4, 6.5)

@on_both_managers("no handshake deadline and no line limit before identity (6.4, 6.5)")
def test_i_handshake_deadline_and_line_limit(start):
    mgr = start("--handshake-timeout", "1")
    silent = Peer(mgr.port)
    assert silent.read()["attribute"] == "identity"
    t0 = time.monotonic()
    assert silent.wait_closed(4), "a peer that never sends its identity was not closed"
    assert time.monotonic() - t0 < 3

    big = Peer(mgr.port)
    assert big.read()["attribute"] == "identity"
    try:
        big.send(b"x" * (200 * 1024))  # no line end: the Manager would have to buffer it all
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed while sending: that is the expectation
    # closed at once by the line limit, well before the 1 s deadline
    assert big.wait_closed(0.5), "a 200 KiB line before identity was buffered"

    # after the identity the limit is large: 20 MB both ways
    echo = service(mgr.port, "Echo")
    cli = client(mgr.port, "Big")
    link(cli, "Echo")
    for peer in (echo, cli):
        peer.sock.settimeout(30)
    payload = "y" * 20_000_000
    uid = cli.request("Echo", "echo", payload)
    req = echo.read()
    assert req["uid"] == uid and req["args"] == [payload]
    echo.send_json({"error": False, "requester": req["requester"], "result": [req["args"], {}], "uid": uid})
    assert cli.read() == {"error": False, "requester": cli.name, "result": [[payload], {}], "uid": uid}
