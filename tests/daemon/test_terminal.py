"""Terminal syntax end to end (reference 1.3, 1.6, 1.13): a LabVIEW VI or a person at a terminal
types text lines, ended with LF or CRLF, into a plaintext netmgr.

Every test connects raw sockets to a real ``netmgr start`` subprocess. The Services are raw
peers that reply ``[args, kwargs]``, so each test checks both what the Service RECEIVES and
what the terminal gets back. Every line the Manager writes must end with CRLF (reference 1.1),
also when a Service wrote LF only (reference 6.18).
"""
import json
import os
import socket
import time

import pytest

from conftest import ManagerProcess, netmgr_argv
from rawpeer import RawPeer

HOSTNAME = socket.gethostname()  # local peers are named with the Manager's hostname (1.4)
TIMEOUT = 5.0
PROMPT = 1.0  # seconds within which the Manager closes a connection it has finished with


# ------------------------------------------------------------------------------------------
# helpers

_open_peers = []  # closed after each test


class Peer(RawPeer):
    """A RawPeer with a bytearray buffer, bounded reads and a CRLF check on every line."""

    def __init__(self, port, timeout=TIMEOUT, end="\r\n"):
        super().__init__(port, timeout=timeout)
        self._buf = bytearray()
        self.end = end
        _open_peers.append(self)

    def read(self):
        """The next message; every line from the Manager must end with CRLF."""
        try:
            line = self.read_raw_line()
        except (socket.timeout, TimeoutError):
            raise AssertionError(f"no message within {self.sock.gettimeout()} s") from None
        if not line:
            raise AssertionError("the Manager closed the connection")
        assert line.endswith(b"\r\n"), f"a line from the Manager does not end with CRLF: {line[-200:]!r}"
        return json.loads(line)

    def type(self, text):
        """Type a line of terminal text with this terminal's line ending."""
        self.send(text + self.end)

    @property
    def network_name_port(self):
        return self.sock.getsockname()[1]

    def network_name(self, name):
        return f"{name}[{HOSTNAME}:{self.network_name_port}]"

    def wait_closed(self, seconds=PROMPT):
        return super().wait_closed(seconds)


def start_service(port, name, attributes=None, max_clients=-1):
    """A raw Service, registered: 1.0 never acknowledges an identity, so the Service asks the
    Manager for its identity and waits for the reply, which comes after the registration."""
    return registered(Peer(port).handshake_service(name, attributes, max_clients), name)


def registered(service, name):
    uid = service.request("Manager", "identity")
    reply = service.read()
    assert reply["uid"] == uid and name in reply["result"]["services"], reply
    return service


def serve_lf(service, fn=lambda args, kwargs: [args, kwargs]):
    """Serve one request, replying with an LF-only line (as some LabVIEW Services do)."""
    req = service.read()
    service.send(json.dumps({"error": False, "requester": req["requester"],
                             "result": fn(req["args"], req["kwargs"]), "uid": req["uid"]}) + "\n")
    return req


def terminal(port, end, identity="client"):
    """A terminal user: read the identity request and type the identity (``client [name]``)."""
    term = Peer(port, end=end)
    first = term.read()
    assert first["attribute"] == "identity" and first["uid"] == "", first
    term.type(identity)
    return term


def assert_terminal_error(msg, requester, startswith):
    assert msg["error"] is True, msg
    assert msg["message"].startswith(startswith), msg
    assert msg["requester"] == requester, msg
    assert msg["uid"] == "", msg
    assert msg["result"] is None, msg


@pytest.fixture(params=["\n", "\r\n"], ids=["LF", "CRLF"])
def end(request):
    return request.param


@pytest.fixture(autouse=True)
def _close_peers():
    yield
    while _open_peers:
        _open_peers.pop().close()


@pytest.fixture(scope="module")
def shared_netmgr(tmp_path_factory):
    """One plaintext netmgr for the tests that do not look at the whole client list; its home
    is a temporary directory, as ``netmgr_factory`` does it."""
    env = dict(os.environ, NETMGR_HOME=str(tmp_path_factory.mktemp("netmgr-home")),
               NETMGR_CONFIG=os.devnull)
    mgr = ManagerProcess(netmgr_argv("-H", "127.0.0.1", "-p", "0", "--disable-tls"), env=env)
    yield mgr
    mgr.stop()


@pytest.fixture
def mgr(shared_netmgr):
    """The shared netmgr; afterwards the test's peers are closed and must all be gone (so the
    next test can register the same Service names)."""
    yield shared_netmgr
    while _open_peers:
        _open_peers.pop().close()
    watcher = RawPeer(shared_netmgr.port, timeout=TIMEOUT).handshake_client("Watcher")
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            identity = watcher.call("Manager", "identity")["result"]
            others = [name for name in identity["clients"] if not name.startswith("Watcher[")]
            if not identity["services"] and not others:
                break
            assert time.monotonic() < deadline, f"peers of the test are still registered: {identity}"
            time.sleep(0.02)
    finally:
        watcher.close()


# ------------------------------------------------------------------------------------------
# identity (reference 1.3 identity step, 1.5)

@pytest.mark.parametrize("typed, name", [
    ("client", "Client"),
    ("CliEnt", "Client"),
    ("client My Name", "My Name"),
    ("Client The Client today", "The Client today"),
    ('client "The Client"', "The Client"),
])
def test_client_identity_then_identity_request(netmgr, end, typed, name):
    term = terminal(netmgr.port, end, typed)
    term.type("identity")
    reply = term.read()
    me = term.network_name(name)
    assert reply["error"] is False and reply["uid"] == "" and reply["requester"] == me, reply
    identity = reply["result"]
    assert set(identity) == {"hostname", "port", "attributes", "language", "os", "clients", "services"}
    assert identity["port"] == netmgr.port
    assert identity["clients"] == {me: {"name": name, "address": f"{HOSTNAME}:{term.network_name_port}",
                                        "language": "unknown", "os": "unknown"}}
    assert identity["services"] == {}
    # the case-insensitive and padded keyword works too
    term.type("  IDENTITY ")
    assert term.read()["result"]["clients"] == {me: identity["clients"][me]}


def test_identity_shows_the_services(netmgr, end):
    service = start_service(netmgr.port, "Echo", {"echo": "(*args, **kwargs)", "pi": 3.14}, max_clients=3)
    term = terminal(netmgr.port, end, "client My Name")
    term.type("identity")
    services = term.read()["result"]["services"]
    assert services == {"Echo": {"attributes": {"echo": "(*args, **kwargs)", "pi": 3.14},
                                 "address": f"{HOSTNAME}:{service.network_name_port}",
                                 "language": "unknown", "os": "unknown", "max_clients": 3}}


# ------------------------------------------------------------------------------------------
# link (reference 1.7, 1.11, 1.13 step 4)

@pytest.mark.parametrize("typed, name", [
    ("link Echo", "Echo"),
    ("LINK Echo", "Echo"),
    ('link "String Editor"', "String Editor"),
    ("link String Editor", "String Editor"),
])
def test_link_reply_has_the_attributes(mgr, end, typed, name):
    attributes = {"concat": "(s1: str, s2: str) -> str", "version": "1.2"}
    start_service(mgr.port, name, attributes)
    term = terminal(mgr.port, end, "client")
    term.type(typed)
    reply = term.read()
    assert reply["error"] is False and reply["uid"] == "" and reply["requester"] == term.network_name("Client")
    assert reply["result"]["attributes"] == attributes
    assert set(reply["result"]) == {"attributes", "address", "language", "os", "max_clients"}
    assert reply["result"]["max_clients"] == -1


def test_link_to_an_unknown_service(mgr, end):
    term = terminal(mgr.port, end, "client")
    term.type("link Nope")
    me = term.network_name("Client")
    assert_terminal_error(term.read(), me,
                          f"KeyError: \"the 'Nope' service does not exist, cannot link with {me}\"")
    term.type("identity")  # the session lives on
    assert term.read()["error"] is False


# ------------------------------------------------------------------------------------------
# requests typed as text (reference 1.13 examples, end to end through a raw Service)

# (typed line, service, attribute, args the Service receives, kwargs); written from the table
# of reference 1.13, with JSON's view of the values (a tuple arrives as a list)
ROWS = [
    ("Echo echo 1 2.5 -3 1e3 0x10 true False none NULL nan inf", "Echo", "echo",
     [1, 2.5, -3, 1000.0, 16, True, False, None, None, "nan", "inf"], {}),
    ("Echo echo", "Echo", "echo", [], {}),
    ("Echo echo [1, 2, 3]", "Echo", "echo", ["[1,", [2], "3]"], {}),
    ('Echo echo {"a": 1}', "Echo", "echo", ["{", "a", ":", "1}"], {}),
    ("Echo echo x=1 2", "Echo", "echo", [], {"x": 1}),
    ("Echo echo 1 x=1 2 y=2", "Echo", "echo", [1], {"x": 1, "y": 2}),
    ("Echo echo ax x=1", "Echo", "echo", ["a"], {"x": 1}),
    ('Echo echo "x=1"', "Echo", "echo", [], {"x": 1}),
    ("Echo echo it's", "Echo", "echo", ["it", "s"], {}),
    ('Echo echo "1"', "Echo", "echo", ["1"], {}),
    ('Echo echo "a b" c="d e"', "Echo", "echo", ["a b"], {"c": "d e"}),
    ("Echo echo .62 1_000 01 é (1,2) [1,2,3] -0.5e-3", "Echo", "echo",
     [0.62, 1000, "01", "é", [1, 2], [1, 2, 3], -0.0005], {}),
    ("Echo echo 99999999999999999999999", "Echo", "echo", [99999999999999999999999], {}),
    ("Echo echo 1e400 -1e400 x=-99999999999999999999999", "Echo", "echo",
     [float("inf"), float("-inf")], {"x": -99999999999999999999999}),
    ("'Echo' echo 'single quotes'", "Echo", "echo", ["single quotes"], {}),
    ('"String Editor" concat "first string" 1  s1=" the second string" ', "String Editor", "concat",
     ["first string", 1], {"s1": " the second string"}),
    ("Vector cross_product x=[1,2,3] y=[4,5,6]", "Vector", "cross_product",
     [], {"x": [1, 2, 3], "y": [4, 5, 6]}),
    ("Math is_null w=none x=None y=NULL z=null", "Math", "is_null",
     [], {"w": None, "x": None, "y": None, "z": None}),
    ('ServiceName method 1.1 2.2 "another arg" x  = 3   y="4"', "ServiceName", "method",
     [1.1, 2.2, "another arg"], {"x": 3, "y": "4"}),
    ("hello GooDbye x =  -1   y =    4", "hello", "GooDbye", [], {"x": -1, "y": 4}),
    ("'hello' goodbye", "hello", "goodbye", [], {}),
    ('hello "goodbye"', "hello", "goodbye", [], {}),
    ('"hello world" goodbye w = .62 x=1 y=-4.2 z="test" ', "hello world", "goodbye",
     [], {"w": 0.62, "x": 1, "y": -4.2, "z": "test"}),
    ('"hello world today" good_bye x=None y=true z=test w=false', "hello world today", "good_bye",
     [], {"x": None, "y": True, "z": "test", "w": False}),
]


@pytest.mark.parametrize("typed, service_name, attribute, args, kwargs", ROWS,
                         ids=[row[0].strip() for row in ROWS])
def test_typed_request(mgr, end, typed, service_name, attribute, args, kwargs):
    service = start_service(mgr.port, service_name)
    term = terminal(mgr.port, end, "client Term")
    me = term.network_name("Term")
    term.type(f'link "{service_name}"')
    assert term.read()["error"] is False
    term.type(typed)
    req = serve_lf(service)
    assert req["service"] == service_name and req["attribute"] == attribute, req
    assert req["args"] == args and req["kwargs"] == kwargs, req
    assert req["uid"] == "" and req["requester"] == me and req["error"] is False, req
    reply = term.read()  # the Service replied with LF only; the terminal still gets CRLF
    assert reply == {"error": False, "requester": me, "result": [args, kwargs], "uid": ""}


def test_typed_request_without_link_is_served(mgr, end):
    """netmgr links an unlinked Client implicitly when the Service is free (reference 6.1)."""
    service = start_service(mgr.port, "Echo")
    term = terminal(mgr.port, end)
    term.type("Echo echo 1 x=2")
    req = serve_lf(service)
    assert (req["args"], req["kwargs"]) == ([1], {"x": 2})
    assert term.read()["result"] == [[1], {"x": 2}]


def test_several_requests_in_one_packet(mgr, end):
    service = start_service(mgr.port, "Echo")
    term = terminal(mgr.port, end)
    term.type("link Echo")
    assert term.read()["error"] is False
    term.send(end.join(["Echo echo 1", "Echo echo 2", "identity", "Echo echo 3 x=3", ""]))
    received = [serve_lf(service) for _ in range(3)]
    assert [(r["args"], r["kwargs"]) for r in received] == [([1], {}), ([2], {}), ([3], {"x": 3})]
    replies = [term.read() for _ in range(4)]
    echoes = [r["result"] for r in replies if "clients" not in (r["result"] or {})]
    assert echoes == [[[1], {}], [[2], {}], [[3], {"x": 3}]]  # in order
    assert sum(1 for r in replies if "clients" in (r["result"] or {})) == 1
    assert all(r["error"] is False and r["uid"] == "" for r in replies)


def test_whole_session_in_one_packet(mgr, end):
    """A VI that sends its identity, a link and a request at once, without waiting."""
    service = start_service(mgr.port, "Echo")
    term = Peer(mgr.port, end=end)
    assert term.read()["attribute"] == "identity"
    term.send(end.join(["client VI", "link Echo", "Echo echo 5 y=6", ""]))
    link = term.read()
    assert link["error"] is False and link["result"]["attributes"] == {"echo": "(*args, **kwargs)"}
    req = serve_lf(service)
    assert req["requester"] == term.network_name("VI") and (req["args"], req["kwargs"]) == ([5], {"y": 6})
    assert term.read()["result"] == [[5], {"y": 6}]


def test_request_split_over_many_packets(mgr, end):
    service = start_service(mgr.port, "Echo")
    term = terminal(mgr.port, end)
    for piece in ["Ec", "ho ec", "ho 1", " 2", end]:
        term.send(piece)
        time.sleep(0.02)
    req = serve_lf(service)
    assert req["args"] == [1, 2]
    assert term.read()["result"] == [[1, 2], {}]


# ------------------------------------------------------------------------------------------
# every line from the Manager ends with CRLF (reference 1.1, 6.18)

def test_crlf_even_when_the_service_writes_lf(mgr, end):
    service = start_service(mgr.port, "Echo")
    term = terminal(mgr.port, end)
    me = term.network_name("Client")
    term.type("link Echo")
    term.read()
    # a reply with extra spaces and LF only
    term.type("Echo echo 1")
    req = service.read()
    service.send('{"error": false, "requester": %s, "result": 7, "uid": ""}\n' % json.dumps(req["requester"]))
    assert term.read() == {"error": False, "requester": me, "result": 7, "uid": ""}
    # an error reply written LF-only
    term.type("Echo echo 2")
    req = service.read()
    service.send(json.dumps({"error": True, "message": "ValueError: kaboom", "requester": req["requester"],
                             "result": None, "traceback": [], "uid": ""}) + "\n")
    error = term.read()
    assert error["error"] is True and error["message"] == "ValueError: kaboom" and error["uid"] == ""
    # a notification written LF-only, and one written compact
    service.send('{"error": false, "result": [[1], {"a": 2}], "service": "Echo", "uid": "notification"}\n')
    service.send('{"error":false,"result":[[3],{}],"service":"Echo","uid":"notification"}\n')
    assert term.read() == {"error": False, "result": [[1], {"a": 2}], "service": "Echo", "uid": "notification"}
    assert term.read() == {"error": False, "result": [[3], {}], "service": "Echo", "uid": "notification"}


def test_each_typed_request_is_answered_once(mgr, end):
    """Typed requests all have uid "": each one is answered once, in order, never twice."""
    service = start_service(mgr.port, "Echo")
    term = terminal(mgr.port, end)
    me = term.network_name("Client")
    term.type("Echo echo 1")
    term.type("Echo echo 2")
    first, second = service.read(), service.read()
    for req in (first, second, first):  # the third reply is one too many
        service.send(json.dumps({"error": False, "requester": req["requester"], "result": req["args"],
                                 "uid": ""}) + "\n")
    registered(service, "Echo")  # the Service's lines have all been handled
    assert term.read() == {"error": False, "requester": me, "result": [1], "uid": ""}
    assert term.read() == {"error": False, "requester": me, "result": [2], "uid": ""}
    term.type("identity")
    assert "clients" in term.read()["result"], "the extra reply reached the terminal"


def test_typed_requests_in_flight_when_the_service_disconnects(mgr, end):
    """Each typed request in flight gets its own error (uid "") when the Service goes away."""
    service = start_service(mgr.port, "Echo")
    term = terminal(mgr.port, end)
    me = term.network_name("Client")
    term.type("Echo echo 1")
    term.type("Echo echo 2")
    service.read()
    service.read()
    service.close()
    for _ in range(2):
        error = term.read()
        assert error["error"] is True and error["uid"] == "" and error["requester"] == me, error
        assert "Echo" in error["message"], error
    term.type("identity")
    assert term.read()["result"]["services"] == {}


# ------------------------------------------------------------------------------------------
# disconnect (reference 1.12, 1.13 step 3)

@pytest.mark.parametrize("word", ["disconnect", "EXIT", "  __disconnect__  "])
def test_disconnect_closes_the_connection(netmgr, end, word):
    service = start_service(netmgr.port, "Echo")
    term = terminal(netmgr.port, end, "client Bye")
    term.type("link Echo")
    term.read()
    term.type(word)
    assert term.wait_closed(), "the Manager did not close the connection"
    # the Client is gone and its link released
    other = terminal(netmgr.port, end, "client Other")
    deadline = time.monotonic() + TIMEOUT
    while True:
        other.type("identity")
        clients = other.read()["result"]["clients"]
        if list(clients) == [other.network_name("Other")]:
            break
        assert time.monotonic() < deadline, clients
        time.sleep(0.05)
    other.type("Echo echo 1")
    assert serve_lf(service)["requester"] == other.network_name("Other")
    assert other.read()["result"] == [[1], {}]


def test_pending_replies_are_flushed_then_the_connection_closes_promptly(mgr, end):
    """``identity`` and ``exit`` in one packet: the reply arrives, then the close, at once."""
    term = terminal(mgr.port, end)
    term.send(end.join(["identity", "link Nope", "exit", ""]))
    t0 = time.monotonic()
    assert term.read()["result"]["clients"]
    assert term.read()["message"].startswith("KeyError:")
    assert term.wait_closed(), "the connection stayed open after exit"
    assert time.monotonic() - t0 < PROMPT


def test_quit_is_not_a_disconnect_word(mgr, end):
    term = terminal(mgr.port, end)
    term.type("quit")
    assert_terminal_error(term.read(), term.network_name("Client"), "JSONDecodeError: Expecting value")
    term.type("identity")
    assert term.read()["error"] is False


# ------------------------------------------------------------------------------------------
# unparseable text (reference 1.6 step 2)

@pytest.mark.parametrize("typed, message", [
    ("hello", "JSONDecodeError: Expecting value: line 1 column 1 (char 0)"),
    ("Hello!", "JSONDecodeError: Expecting value: line 1 column 1 (char 0)"),
    ("   ", "JSONDecodeError: Expecting value"),
    ("", "JSONDecodeError: Expecting value"),
    ('"hello goodbye', "JSONDecodeError: "),
])
def test_unparseable_text_gets_an_error_and_the_session_lives_on(mgr, end, typed, message):
    service = start_service(mgr.port, "Echo")
    term = terminal(mgr.port, end, "client")
    me = term.network_name("Client")
    term.type(typed)
    assert_terminal_error(term.read(), me, message)
    term.type("Echo echo 1")
    serve_lf(service)
    assert term.read()["result"] == [[1], {}]


@pytest.mark.parametrize("typed", ['"hello"', '"hello world today"', "5", "[1, 2]", "null"])
def test_typed_json_that_is_not_an_object_gets_an_error(mgr, end, typed):
    """Valid JSON but not a request (1.0's handler crashed on these, reference 6.12)."""
    term = terminal(mgr.port, end, "client")
    term.type(typed)
    error = term.read()
    assert error["error"] is True and error["uid"] == "" and error["requester"] == term.network_name("Client")
    term.type("identity")
    assert term.read()["error"] is False


def test_unparseable_identity_is_refused(mgr, end):
    """Text that is not ``client [name]`` as the identity: 1.0's TypeError, then close."""
    term = terminal(mgr.port, end, "hello")
    error = term.read()
    assert error["error"] is True and error["uid"] == ""
    assert error["message"] == "TypeError: 'NoneType' object is not subscriptable"
    assert term.wait_closed()


# ------------------------------------------------------------------------------------------
# password mode, typed (reference 1.3 mode "manager password")

def password_prompt(port, end):
    term = Peer(port, end=end)
    ask = term.read()
    assert ask["attribute"] == "password" and ask["uid"] == "", ask
    assert ask["args"] == [ask["requester"]] and ask["requester"].startswith("Manager[")
    return term, ask["requester"]


def use_the_session(term, service, name="Client"):
    term.type("identity")
    assert term.network_name(name) in term.read()["result"]["clients"]
    term.type("link Echo")
    assert term.read()["result"]["attributes"] == {"echo": "(*args, **kwargs)"}
    term.type("Echo echo 1 k=v")
    serve_lf(service)
    assert term.read()["result"] == [[1], {"k": "v"}]


def test_password_typed_then_client(netmgr_factory, end):
    mgr = netmgr_factory("-P", "secret")
    service = Peer(mgr.port)
    service.read()
    service.send_json({"result": "secret"})  # a JSON reply with a result is accepted too
    registered(service.handshake_service("Echo"), "Echo")
    term, _ = password_prompt(mgr.port, end)
    term.type("secret")
    assert term.read()["attribute"] == "identity"
    term.type("client")
    use_the_session(term, service)


def test_password_with_spaces_typed(netmgr_factory, end):
    mgr = netmgr_factory("-P", "my secret pass")
    term, _ = password_prompt(mgr.port, end)
    term.type("my secret pass   ")  # trailing whitespace is stripped, as 1.0 does
    assert term.read()["attribute"] == "identity"


def test_wrong_password(netmgr_factory, end):
    mgr = netmgr_factory("-P", "secret")
    for typed in ["wrong", "Secret", "secret1", "client"]:
        term, manager_name = password_prompt(mgr.port, end)
        term.type(typed)
        error = term.read()
        assert error == {"error": True, "message": "ValueError: Wrong Manager password",
                         "requester": manager_name, "result": None, "traceback": [], "uid": ""}, typed
        assert term.wait_closed(), f"the connection stayed open after the wrong password {typed!r}"


def test_blank_password_closes_without_hanging(netmgr_factory, end):
    mgr = netmgr_factory("-P", "secret")
    for typed in ["", "   "]:
        term, _ = password_prompt(mgr.port, end)
        term.type(typed)
        assert term.wait_closed(), f"a blank password ({typed!r}) must close the connection (reference 6.5)"
    term, _ = password_prompt(mgr.port, end)  # EOF instead of a password
    term.sock.shutdown(socket.SHUT_WR)
    assert term.wait_closed()


def test_password_read_from_a_file(netmgr_factory, end, tmp_path):
    path = tmp_path / "manager-password.txt"
    path.write_text("from the file\nsecond line\n", encoding="utf-8")
    mgr = netmgr_factory("-P", str(path))
    service = Peer(mgr.port)
    service.read()
    service.send_json({"error": False, "requester": None, "result": "from the file", "uid": ""})
    registered(service.handshake_service("Echo"), "Echo")

    term, _ = password_prompt(mgr.port, end)
    term.type("from the file")
    assert term.read()["attribute"] == "identity"
    term.type("client File User")
    use_the_session(term, service, "File User")

    for wrong in (str(path), "second line"):
        term, _ = password_prompt(mgr.port, end)
        term.type(wrong)
        assert term.read()["message"] == "ValueError: Wrong Manager password"
        assert term.wait_closed()
