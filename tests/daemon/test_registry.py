"""Socket-free tests of netmgr.daemon.registry (reference 1.3 identity step, 1.5, 1.11, 6.1, 6.2, 6.11,
6.12 and 6.14).

The registry is pure state: peers are registered with opaque handles (plain ``object()`` here),
and every call either returns what the caller must deliver or raises :class:`Refused` whose
``message`` is the exact wire text of 1.0. No event loop, no sockets, no sleeps.
"""
import pytest

from netmgr.daemon.registry import Refused, Registry, check_identity

MANAGER = "Manager[h:1]"


# --------------------------------------------------------------------------------------------
# helpers

@pytest.fixture
def reg():
    return Registry(MANAGER)


_ports = iter(range(1000, 100000))


def add_client(reg, name="C", port=None):
    """Register a Client ``name[h:port]`` exactly as the Manager would after the identity step."""
    port = next(_ports) if port is None else port
    kind, fields = check_identity({"type": "client", "name": name})
    return reg.add(object(), f"{name}[h:{port}]", f"h:{port}", kind, fields)


def add_service(reg, name="S", max_clients=-1, attributes=None, port=None):
    port = next(_ports) if port is None else port
    kind, fields = check_identity({"type": "service", "name": name, "max_clients": max_clients,
                                   "attributes": attributes if attributes is not None else {}})
    return reg.add(object(), f"{name}[h:{port}]", f"h:{port}", kind, fields)


def refusal(fn, *args):
    """Call ``fn(*args)``, which must refuse; return the Refused exception."""
    with pytest.raises(Refused) as info:
        fn(*args)
    return info.value


def message(fn, *args):
    return refusal(fn, *args).message


# --------------------------------------------------------------------------------------------
# check_identity (reference 1.3, identity step; 6.11, 6.21)

def test_identity_client_defaults_and_extra_keys_dropped():
    # a terminal ``client`` line parses to this (1.13); "error" is an extra key 1.0 drops
    kind, fields = check_identity({"type": "client", "name": "Client", "error": False,
                                   "extra": 1})
    assert kind == "client"
    assert fields == {"name": "Client", "language": "unknown", "os": "unknown"}


def test_identity_client_full():
    kind, fields = check_identity({"type": "client", "name": "Me", "language": "Python 3.11.7",
                                   "os": "Linux", "max_clients": "ignored for a client"})
    assert kind == "client"
    assert fields == {"name": "Me", "language": "Python 3.11.7", "os": "Linux"}


@pytest.mark.parametrize("typ, expected", [("client", "client"), ("Client", "client"),
                                           ("CLIENT", "client"), ("service", "service"),
                                           ("Service", "service"), ("SERVICE", "service")])
def test_identity_type_is_case_insensitive(typ, expected):
    kind, _ = check_identity({"type": typ, "name": "X", "attributes": {}})
    assert kind == expected


def test_identity_service_happy_path():
    attrs = {"add": "(x: int, y: int) -> int", "euler": 2.718281828459045}
    kind, fields = check_identity({"type": "service", "name": "Basic", "attributes": attrs,
                                   "max_clients": 3, "language": "LabVIEW", "os": "Windows",
                                   "extra": "dropped"})
    assert kind == "service"
    assert fields == {"name": "Basic", "attributes": attrs, "language": "LabVIEW",
                      "os": "Windows", "max_clients": 3}


def test_identity_service_defaults():
    kind, fields = check_identity({"type": "service", "name": "S", "attributes": {}})
    assert kind == "service"
    assert fields == {"name": "S", "attributes": {}, "language": "unknown", "os": "unknown",
                      "max_clients": -1}


@pytest.mark.parametrize("value, expected", [(None, -1), (0, -1), (-1, -1), (-7, -1), (1, 1),
                                             (5, 5), (10**6, 10**6)])
def test_identity_max_clients_normalised(value, expected):
    _, fields = check_identity({"type": "service", "name": "S", "attributes": {},
                                "max_clients": value})
    assert fields["max_clients"] == expected


# the four refusals whose text 1.0 defines (reference 1.3)
@pytest.mark.parametrize("identity, text", [
    ({}, "KeyError: 'name'"),
    ({"type": "client"}, "KeyError: 'name'"),
    ({"type": "robot"}, "KeyError: 'name'"),  # 1.0 reads the name before the type
    ({"name": "X"}, "KeyError: 'type'"),
    ({"name": "X", "attributes": {}}, "KeyError: 'type'"),
    ({"name": "X", "type": "service"}, "KeyError: 'attributes'"),
    ({"name": "X", "type": "SERVICE", "max_clients": 2}, "KeyError: 'attributes'"),
    ({"name": "X", "type": "robot"},
     'TypeError: Unknown connection type \'robot\'. Must be "client" or "service"'),
    ({"name": "X", "type": "Robot"},  # 1.0 lowers the type before quoting it
     'TypeError: Unknown connection type \'robot\'. Must be "client" or "service"'),
    ({"name": "X", "type": ""},
     'TypeError: Unknown connection type \'\'. Must be "client" or "service"'),
])
def test_identity_refusals_with_1_0_text(identity, text):
    assert message(check_identity, identity) == text


@pytest.mark.parametrize("identity, kind", [
    # not a JSON object at all
    (None, "TypeError"), ([], "TypeError"), ("client", "TypeError"), (5, "TypeError"),
    # a non-string type (1.0 crashed with an uncaught AttributeError, 6.21)
    ({"name": "X", "type": 5}, "TypeError"), ({"name": "X", "type": None}, "TypeError"),
    ({"name": "X", "type": ["client"]}, "TypeError"),
    # a Service may not be named Manager (6.11), whatever the case of its type
    ({"name": "Manager", "type": "service", "attributes": {}}, "ValueError"),
    ({"name": "Manager", "type": "SERVICE", "attributes": {}}, "ValueError"),
    # names that could imitate another network name (6.11)
    ({"name": "a[b", "type": "client"}, "ValueError"),
    ({"name": "a]b", "type": "client"}, "ValueError"),
    ({"name": "Alice[h:1]", "type": "client"}, "ValueError"),
    ({"name": "a\nb", "type": "client"}, "ValueError"),
    ({"name": "a\rb", "type": "client"}, "ValueError"),
    ({"name": "S[1]", "type": "service", "attributes": {}}, "ValueError"),
    ({"name": "S\n", "type": "service", "attributes": {}}, "ValueError"),
    ({"name": "", "type": "client"}, "ValueError"),
    ({"name": "", "type": "service", "attributes": {}}, "ValueError"),
    ({"name": None, "type": "client"}, "ValueError"),
    ({"name": 5, "type": "client"}, "ValueError"),
    ({"name": ["x"], "type": "service", "attributes": {}}, "ValueError"),
    # max_clients must be an integer, not a bool (6.21: 1.0 broke every later link)
    ({"name": "S", "type": "service", "attributes": {}, "max_clients": "3"}, "TypeError"),
    ({"name": "S", "type": "service", "attributes": {}, "max_clients": 2.5}, "TypeError"),
    ({"name": "S", "type": "service", "attributes": {}, "max_clients": 3.0}, "TypeError"),
    ({"name": "S", "type": "service", "attributes": {}, "max_clients": True}, "TypeError"),
    ({"name": "S", "type": "service", "attributes": {}, "max_clients": False}, "TypeError"),
    ({"name": "S", "type": "service", "attributes": {}, "max_clients": [1]}, "TypeError"),
    # attributes must be a JSON object
    ({"name": "S", "type": "service", "attributes": None}, "TypeError"),
    ({"name": "S", "type": "service", "attributes": []}, "TypeError"),
    ({"name": "S", "type": "service", "attributes": "add"}, "TypeError"),
])
def test_identity_netmgr_refusals(identity, kind):
    exc = refusal(check_identity, identity)
    assert exc.kind == kind
    assert exc.message.startswith(f"{kind}: ")


def test_identity_keeps_the_texts_of_its_older_name_checks():
    assert message(check_identity, {"type": "client", "name": "a\nb"}) == \
        "ValueError: invalid client name 'a\\nb': it must be a non-empty string without '[', ']' " \
        "or line breaks"
    assert message(check_identity, {"type": "service", "name": "S[1]", "attributes": {}}) == \
        "ValueError: invalid service name 'S[1]': it must be a non-empty string without '[', ']' " \
        "or line breaks"


# control characters in names (issue 10, finding 8): C0, DEL, C1, U+2028/2029, bidi controls
CONTROLS = ["\x00", "\x07", "\x1b", "\t", "\x0b", "\x0c", "\x1f", "\x7f", "\x80", "\x85", "\x9b",
            "\x9f", "\u2028", "\u2029", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066",
            "\u2067", "\u2068", "\u2069"]


@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
@pytest.mark.parametrize("kind", ["client", "service"])
def test_identity_names_with_control_characters_are_refused(kind, char):
    name = f"Evil{char}c"
    exc = refusal(check_identity, {"type": kind, "name": name, "attributes": {}})
    assert exc.kind == "ValueError"
    assert exc.message == f"ValueError: invalid {kind} name {name!r}: it must not contain control " \
                          "characters"
    assert char not in exc.message  # the name is shown escaped
    assert exc.message.isprintable()


def test_identity_refusal_shows_the_name_escaped():
    assert message(check_identity, {"type": "client", "name": "a\x1bcb\u202e"}) == \
        "ValueError: invalid client name 'a\\x1bcb\\u202e': it must not contain control characters"


@pytest.mark.parametrize("kind", ["client", "service"])
def test_identity_names_with_lone_surrogates_are_refused(kind):
    # the stdlib JSON parser (netmgr's fallback) reads "\ud800"; UTF-8 cannot hold it
    exc = refusal(check_identity, {"type": kind, "name": "a\ud800", "attributes": {}})
    assert exc.message == f"ValueError: invalid {kind} name 'a\\ud800': it must not contain lone " \
                          "surrogates"


@pytest.mark.parametrize("name", ["Pi 4 é", "日本語", "Ω😀", "a\u00a0b", "x\u200by", "👩\u200d🔬",
                                  "a\\x1b", "tab-less", "\u00ff\u0100"])
def test_identity_names_without_controls_are_accepted(reg, name):
    for kind in ("client", "service"):
        assert check_identity({"type": kind, "name": name, "attributes": {}})[1]["name"] == name
    assert add_client(reg, name).name.startswith(name + "[")


def deep_list(depth):
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("identity", [
    {"type": "client", "name": deep_list(1024)},  # repr() raised RecursionError
    {"type": "service", "name": "S", "attributes": {}, "max_clients": deep_list(1024)},
    {"type": "client", "name": list(range(10 ** 6))},  # repr() made a 7.9 MB reply
    {"type": "x" * 10 ** 6, "name": "N"},
    {"type": "client", "name": "\x1b" * 10 ** 6},
])
def test_identity_refusals_show_a_bounded_repr(identity):
    exc = refusal(check_identity, identity)
    assert len(exc.message) < 400
    assert exc.message.isprintable()


def test_identity_attribute_names_are_not_checked():
    # 1.0 accepts any; netmgr never prints them, and forwards them as JSON escapes
    attributes = {"weird\x1bname": "()", "ok": "\u2028"}
    assert check_identity({"type": "service", "name": "S", "attributes": attributes})[1][
        "attributes"] == attributes


def test_identity_client_may_be_named_manager():
    # only a *Service* named Manager would be unreachable (6.11); a Client name is qualified
    assert check_identity({"type": "client", "name": "Manager"})[0] == "client"


def test_refused_message_quotes_keyerror_only():
    assert Refused("KeyError", "x 'y'").message == "KeyError: \"x 'y'\""
    assert Refused("PermissionError", "x 'y'").message == "PermissionError: x 'y'"


# --------------------------------------------------------------------------------------------
# add and identity (reference 1.3, 1.5)

def test_duplicate_service_refused(reg):
    first = add_service(reg, "Dup")
    assert message(add_service, reg, "Dup") == \
        "NameError: A 'Dup' service is already running on the Manager"
    assert refusal(add_service, reg, "Dup").kind == "NameError"
    assert reg.service("Dup") is first  # the running Service is untouched


def test_duplicate_client_network_name_refused(reg):
    first = add_client(reg, "C", port=7)
    exc = refusal(add_client, reg, "C", 7)
    assert exc.kind == "NameError"
    assert "C[h:7]" in exc.message
    # the same bare name from another port is a different Client (1.0: client names may repeat)
    other = add_client(reg, "C", port=8)
    assert other.name == "C[h:8]"
    assert set(reg.identity("h", 1, "L", "O")["clients"]) == {"C[h:7]", "C[h:8]"}
    reg.remove(first)  # the running Client held the name, untouched: now it is free
    assert add_client(reg, "C", port=7).name == "C[h:7]"


def test_identity_exact_shape(reg):
    ident = reg.identity("host", 1875, "Python 3.11.7", "Linux 6 x86_64")
    assert list(ident) == ["hostname", "port", "attributes", "language", "os", "clients",
                           "services"]
    assert ident["hostname"] == "host"
    assert ident["port"] == 1875
    assert ident["attributes"] == {"identity": "() -> dict", "link": "(service: str) -> bool"}
    assert ident["language"] == "Python 3.11.7"
    assert ident["os"] == "Linux 6 x86_64"
    assert ident["clients"] == {} and ident["services"] == {}

    # the dicts are live: entries added after the call show up in it
    kind, fields = check_identity({"type": "client", "name": "C", "language": "LabVIEW",
                                   "os": "Win", "extra": 1})
    reg.add(object(), "C[h:5]", "h:5", kind, fields)
    kind, fields = check_identity({"type": "service", "name": "S", "attributes": {"f": "()"},
                                   "max_clients": 0, "extra": 2})
    reg.add(object(), "S[h:6]", "h:6", kind, fields)

    assert ident["clients"] == {"C[h:5]": {"name": "C", "address": "h:5", "language": "LabVIEW",
                                           "os": "Win"}}
    assert list(ident["clients"]["C[h:5]"]) == ["name", "address", "language", "os"]
    # services are keyed by bare name
    assert ident["services"] == {"S": {"attributes": {"f": "()"}, "address": "h:6",
                                       "language": "unknown", "os": "unknown",
                                       "max_clients": -1}}
    assert list(ident["services"]["S"]) == ["attributes", "address", "language", "os",
                                            "max_clients"]


def test_link_returns_the_service_identity_entry(reg):
    c = add_client(reg)
    add_service(reg, "S", max_clients=4, attributes={"f": "(x)"}, port=9)
    assert reg.link(c, "S") == {"attributes": {"f": "(x)"}, "address": "h:9",
                                "language": "unknown", "os": "unknown", "max_clients": 4}


# --------------------------------------------------------------------------------------------
# link (reference 1.11, in order)

def test_link_unknown_service(reg):
    c = add_client(reg, "C", port=1)
    assert message(reg.link, c, "S") == \
        "KeyError: \"the 'S' service does not exist, cannot link with C[h:1]\""


def test_link_and_relink(reg):
    c = add_client(reg)
    s = add_service(reg, "S", max_clients=1)
    reg.link(c, "S")
    reg.link(c, "S")  # a re-link succeeds and does not count twice
    assert reg.subscribers(s) == {c}


def test_relink_allowed_while_locked_or_full(reg):
    a = add_client(reg, "A")
    s = add_service(reg, "S", max_clients=1)
    reg.link(a, "S")
    reg.acquire_lock(a, "S", False)
    # locked and full at once: the re-link still succeeds (step 2 precedes 3 and 5)
    assert reg.link(a, "S") == reg.identity("h", 1, "L", "O")["services"]["S"]
    assert reg.subscribers(s) == {a}


def test_link_locked_is_checked_before_max_clients(reg):
    a = add_client(reg, "A", port=1)
    b = add_client(reg, "B", port=2)
    add_service(reg, "S", max_clients=1)
    reg.link(a, "S")
    reg.acquire_lock(a, "S", True)
    assert message(reg.link, b, "S") == "PermissionError: 'S' service is locked"
    assert refusal(reg.link, b, "S").kind == "PermissionError"


def test_link_max_clients_lists_sorted_names(reg):
    z = add_client(reg, "Zed", port=1)
    a = add_client(reg, "Amy", port=2)
    m = add_client(reg, "Max", port=3)
    s = add_service(reg, "S", max_clients=2)
    reg.link(z, "S")
    reg.link(a, "S")
    assert message(reg.link, m, "S") == (
        "PermissionError: The maximum number of Clients are already linked with 'S'\n"
        "The linked Clients are:\n  Amy[h:2]\n  Zed[h:1]")
    assert reg.subscribers(s) == {z, a}
    # a freed slot can be taken
    reg.unlink(z, "S")
    reg.link(m, "S")
    assert reg.subscribers(s) == {a, m}


@pytest.mark.parametrize("max_clients", [-1, 0, None])
def test_link_unlimited(reg, max_clients):
    s = add_service(reg, "S", max_clients=max_clients)
    clients = [add_client(reg, f"C{i}") for i in range(20)]
    for c in clients:
        reg.link(c, "S")
    assert reg.subscribers(s) == set(clients)


# --------------------------------------------------------------------------------------------
# unlink

def test_unlink_unknown_service_is_success(reg):
    c = add_client(reg)
    assert reg.unlink(c, "Gone") is True


def test_unlink_not_linked(reg):
    c = add_client(reg, "C", port=1)
    add_service(reg, "S")
    assert message(reg.unlink, c, "S") == \
        "KeyError: \"cannot unlink C[h:1], it was not linked with 'S'\""


def test_unlink_removes_link_and_lock(reg):
    a = add_client(reg, "A")
    b = add_client(reg, "B")
    s = add_service(reg, "S")
    reg.link(a, "S")
    reg.acquire_lock(a, "S", False)
    assert reg.unlink(a, "S") is True
    assert reg.subscribers(s) == set()
    assert reg.release_lock(b, "S") == []  # the lock went with the link
    reg.link(b, "S")  # no longer locked
    assert reg.subscribers(s) == {b}
    # unlinking again is now the "not linked" KeyError
    assert refusal(reg.unlink, a, "S").kind == "KeyError"


# --------------------------------------------------------------------------------------------
# acquire_lock / release_lock

def test_acquire_lock_unknown_service(reg):
    c = add_client(reg, "C", port=1)
    assert message(reg.acquire_lock, c, "S", False) == \
        "KeyError: \"'S' service does not exist, C[h:1] cannot acquire a lock\""
    assert message(reg.acquire_lock, c, "S", True) == \
        "KeyError: \"'S' service does not exist, C[h:1] cannot acquire a lock\""


def test_acquire_lock_not_linked_is_checked_before_exclusive(reg):
    a = add_client(reg, "A", port=1)
    b = add_client(reg, "B", port=2)
    c = add_client(reg, "C", port=3)
    add_service(reg, "S")
    reg.link(a, "S")
    reg.link(b, "S")
    text = ("PermissionError: C[h:3] cannot acquire a lock because it is not linked with "
            "the 'S' service")
    assert message(reg.acquire_lock, c, "S", False) == text
    assert message(reg.acquire_lock, c, "S", True) == text


def test_exclusive_lock_refused_with_other_links(reg):
    b = add_client(reg, "Bob", port=2)
    a = add_client(reg, "Ann", port=1)
    add_service(reg, "S")
    reg.link(b, "S")
    reg.link(a, "S")
    assert message(reg.acquire_lock, b, "S", False) == (
        "PermissionError: Bob[h:2] cannot acquire an exclusive lock, there are 2 links with "
        "the 'S' service\nThe linked Clients are:\n  Ann[h:1]\n  Bob[h:2]")
    assert reg.release_lock(b, "S") == []  # nothing was locked


def test_exclusive_lock_when_alone(reg):
    a = add_client(reg, "A", port=1)
    b = add_client(reg, "B", port=2)
    s = add_service(reg, "S")
    reg.link(a, "S")
    assert reg.acquire_lock(a, "S", False) == ["A[h:1]"]
    assert reg.acquire_lock(a, "S", False) == ["A[h:1]"]  # re-lock is fine
    assert message(reg.link, b, "S") == "PermissionError: 'S' service is locked"
    assert message(reg.acquire_lock, b, "S", True) == (
        "PermissionError: B[h:2] cannot acquire a lock because it is not linked with "
        "the 'S' service")
    assert reg.subscribers(s) == {a}
    assert reg.release_lock(a, "S") == []
    reg.link(b, "S")
    assert reg.subscribers(s) == {a, b}


def test_shared_lock_freezes_the_link_set(reg):
    a = add_client(reg, "A", port=1)
    b = add_client(reg, "B", port=2)
    c = add_client(reg, "C", port=3)
    add_service(reg, "S")
    reg.link(a, "S")
    reg.link(b, "S")
    assert sorted(reg.acquire_lock(a, "S", True)) == ["A[h:1]", "B[h:2]"]
    assert sorted(reg.acquire_lock(b, "S", True)) == ["A[h:1]", "B[h:2]"]
    # nobody new gets in; existing links keep working (re-link)
    assert message(reg.link, c, "S") == "PermissionError: 'S' service is locked"
    reg.link(b, "S")
    # release returns the remaining lockers
    assert reg.release_lock(a, "S") == ["B[h:2]"]
    assert reg.release_lock(a, "S") == ["B[h:2]"]  # no lock held: no error
    assert message(reg.link, c, "S") == "PermissionError: 'S' service is locked"
    assert reg.release_lock(b, "S") == []
    reg.link(c, "S")


def test_release_lock_without_link_is_no_error(reg):
    a = add_client(reg, "A", port=1)
    c = add_client(reg, "C", port=3)
    add_service(reg, "S")
    reg.link(a, "S")
    reg.acquire_lock(a, "S", False)
    assert reg.release_lock(c, "S") == ["A[h:1]"]


def test_release_lock_unknown_service(reg):
    c = add_client(reg, "C", port=1)
    assert message(reg.release_lock, c, "S") == \
        "KeyError: \"'S' service does not exist, C[h:1] cannot release the lock\""


# --------------------------------------------------------------------------------------------
# route_request / route_reply (reference 1.8, 1.9, 6.1, 6.2)

def test_route_request_unknown_service(reg):
    c = add_client(reg)
    assert message(reg.route_request, c, "Nope", "u1") == \
        "KeyError: \"the 'Nope' Service is not connected to Manager[h:1]\""


def test_route_request_links_implicitly(reg):
    c = add_client(reg)
    s = add_service(reg, "S")
    assert reg.route_request(c, "S", "u1") is s
    assert reg.subscribers(s) == {c}
    assert reg.route_reply(s, c.name, "u1") is c


def test_route_request_refused_when_locked(reg):
    a = add_client(reg, "A")
    b = add_client(reg, "B")
    s = add_service(reg, "S")
    reg.link(a, "S")
    reg.acquire_lock(a, "S", False)
    assert message(reg.route_request, b, "S", "u1") == "PermissionError: 'S' service is locked"
    assert reg.subscribers(s) == {a}
    assert s.inflight == {}  # nothing was forwarded
    assert reg.route_reply(s, b.name, "u1") is None
    # the lock holder and any linked client still get through
    assert reg.route_request(a, "S", "u2") is s


def test_route_request_refused_when_full(reg):
    a = add_client(reg, "A", port=1)
    b = add_client(reg, "B", port=2)
    s = add_service(reg, "S", max_clients=1)
    reg.route_request(a, "S", "u1")  # takes the only slot
    assert message(reg.route_request, b, "S", "u1") == (
        "PermissionError: The maximum number of Clients are already linked with 'S'\n"
        "The linked Clients are:\n  A[h:1]")
    assert reg.subscribers(s) == {a}
    assert reg.route_reply(s, b.name, "u1") is None
    assert reg.route_reply(s, a.name, "u1") is a


def test_duplicate_uids_are_counted(reg):
    # terminal users send every request with uid "" (reference 1.8)
    c = add_client(reg)
    s = add_service(reg, "S")
    reg.route_request(c, "S", "")
    reg.route_request(c, "S", "")
    assert reg.route_reply(s, c.name, "") is c
    assert reg.route_reply(s, c.name, "") is c
    assert reg.route_reply(s, c.name, "") is None
    assert s.inflight == {}


def test_route_reply_only_once_and_only_in_flight(reg):
    c = add_client(reg)
    s = add_service(reg, "S")
    reg.route_request(c, "S", "a")
    reg.route_request(c, "S", "b")
    assert reg.route_reply(s, c.name, "zzz") is None  # never forwarded
    assert reg.route_reply(s, "Ghost[h:9]", "a") is None  # unknown requester
    assert reg.route_reply(s, c.name, "a") is c
    assert reg.route_reply(s, c.name, "a") is None  # only once
    assert reg.route_reply(s, c.name, "b") is c
    assert reg.route_reply(s, c.name, "b") is None
    assert s.inflight == {}


def test_route_reply_only_from_the_target_service(reg):
    c = add_client(reg)
    s = add_service(reg, "S")
    other = add_service(reg, "Other")
    reg.route_request(c, "S", "u1")
    assert reg.route_reply(other, c.name, "u1") is None  # 6.2: no reply injection
    assert reg.route_reply(s, c.name, "u1") is c  # the forged attempt consumed nothing


def test_route_reply_is_per_requester(reg):
    a = add_client(reg, "A")
    b = add_client(reg, "B")
    s = add_service(reg, "S")
    reg.route_request(a, "S", "1")
    assert reg.route_reply(s, b.name, "1") is None
    reg.route_request(b, "S", "1")
    assert reg.route_reply(s, b.name, "1") is b
    assert reg.route_reply(s, a.name, "1") is a


def test_reply_still_routed_after_unlink(reg):
    # the request was accepted; unlinking afterwards does not orphan its reply
    c = add_client(reg)
    s = add_service(reg, "S")
    reg.route_request(c, "S", "u1")
    reg.unlink(c, "S")
    assert reg.route_reply(s, c.name, "u1") is c


# --------------------------------------------------------------------------------------------
# remove (reference 1.12, 6.12, 6.14)

def test_remove_client_releases_links_locks_and_inflight(reg):
    c = add_client(reg, "C", port=50)
    other = add_client(reg, "O")
    s = add_service(reg, "S")
    t = add_service(reg, "T")
    reg.link(c, "S")
    reg.acquire_lock(c, "S", False)
    reg.route_request(c, "S", "1")
    reg.route_request(c, "S", "")
    reg.route_request(c, "T", "2")
    reg.route_request(other, "T", "3")

    assert reg.remove(c) == []
    assert c.name not in reg.clients
    assert c.name not in reg.identity("h", 1, "L", "O")["clients"]
    assert reg.subscribers(s) == set()
    assert reg.subscribers(t) == {other}
    assert s.inflight == {}
    assert {r: {u: (1 if isinstance(s_, float) else len(s_)) for u, s_ in uids.items()} for r, uids in t.inflight.items()} == {other.name: {"3": 1}}
    # a late reply for the gone Client goes nowhere
    assert reg.route_reply(s, c.name, "1") is None
    assert reg.route_reply(s, c.name, "") is None
    assert reg.route_reply(t, c.name, "2") is None
    # the lock is gone: another Client may link
    reg.link(other, "S")
    assert reg.release_lock(other, "S") == []
    # the other Client's request is intact
    assert reg.route_reply(t, other.name, "3") is other
    # removing twice is harmless
    assert reg.remove(c) == []
    # and the network name may be registered again
    again = add_client(reg, "C", port=50)
    assert again.name == c.name
    assert reg.route_reply(s, again.name, "1") is None


def test_remove_service_answers_every_request_in_flight(reg):
    a = add_client(reg, "A", port=1)
    b = add_client(reg, "B", port=2)
    s = add_service(reg, "S")
    keep = add_service(reg, "Keep")
    reg.route_request(a, "S", "1")
    reg.route_request(a, "S", "")
    reg.route_request(a, "S", "")
    reg.route_request(b, "S", "x")
    reg.route_request(b, "Keep", "k")
    reg.link(b, "Keep")

    effects = reg.remove(s)
    assert len(effects) == 4
    got = sorted((handle is a.handle, handle is b.handle, msg["requester"], msg["uid"])
                 for handle, msg in effects)
    assert got == [(False, True, "B[h:2]", "x"), (True, False, "A[h:1]", ""),
                   (True, False, "A[h:1]", ""), (True, False, "A[h:1]", "1")]
    for handle, msg in effects:
        assert msg["error"] is True
        assert msg["message"].startswith("ConnectionError: the 'S' Service disconnected")
        assert msg["result"] is None
        assert msg["traceback"] == []
        assert list(msg) == ["error", "message", "requester", "result", "traceback", "uid"]

    # the Service is gone from every table
    assert reg.service("S") is None
    assert "S" not in reg.identity("h", 1, "L", "O")["services"]
    assert s not in a.links and s not in b.links
    assert s.inflight == {} and s.links == set() and s.locks == set()
    assert a.sent_to == set() and b.sent_to == {keep}
    assert message(reg.route_request, a, "S", "2") == \
        "KeyError: \"the 'S' Service is not connected to Manager[h:1]\""
    assert reg.route_reply(s, a.name, "1") is None
    # other Services are unaffected
    assert reg.subscribers(keep) == {b}
    assert reg.route_reply(keep, b.name, "k") is b
    # removing twice is harmless
    assert reg.remove(s) == []


def test_remove_service_releases_links_and_locks_and_frees_the_name(reg):
    a = add_client(reg, "A")
    b = add_client(reg, "B")
    s = add_service(reg, "S", max_clients=1)
    reg.link(a, "S")
    reg.acquire_lock(a, "S", False)
    assert reg.remove(s) == []  # nothing in flight, nothing to say
    assert a.links == set()
    assert reg.unlink(a, "S") is True  # gone: unlink is a success
    s2 = add_service(reg, "S", max_clients=1)
    assert s2 is not s
    reg.link(b, "S")  # not locked, not full: the old state did not survive
    assert reg.subscribers(s2) == {b}
    assert message(reg.link, a, "S").startswith(
        "PermissionError: The maximum number of Clients are already linked with 'S'")
    # a late reply through the old record reaches nobody
    assert reg.route_reply(s, a.name, "") is None


def test_remove_service_skips_clients_already_removed(reg):
    a = add_client(reg, "A")
    b = add_client(reg, "B")
    s = add_service(reg, "S")
    reg.route_request(a, "S", "1")
    reg.route_request(b, "S", "2")
    reg.remove(a)
    effects = reg.remove(s)
    assert [(handle, msg["requester"], msg["uid"]) for handle, msg in effects] == \
        [(b.handle, b.name, "2")]


def test_remove_duplicate_service_record_does_not_remove_the_running_one(reg):
    # a refused duplicate never got a record, but the Manager may call remove() on whatever
    # record it holds; a stale record must not evict the current one
    old = add_service(reg, "S")
    reg.remove(old)
    new = add_service(reg, "S")
    assert reg.remove(old) == []
    assert reg.service("S") is new
    assert "S" in reg.identity("h", 1, "L", "O")["services"]


# --------------------------------------------------------------------------------------------
# subscribers (reference 1.9, 6.3)

def test_subscribers_are_exactly_the_linked_clients(reg):
    a = add_client(reg, "A")
    b = add_client(reg, "B")
    add_client(reg, "Bystander")
    s = add_service(reg, "S")
    t = add_service(reg, "T")
    assert reg.subscribers(s) == set()
    reg.link(a, "S")
    reg.route_request(b, "S", "1")  # implicit link
    reg.link(b, "T")
    assert reg.subscribers(s) == {a, b}
    assert reg.subscribers(t) == {b}
    reg.acquire_lock(b, "T", False)
    assert reg.subscribers(t) == {b}
    reg.unlink(a, "S")
    assert reg.subscribers(s) == {b}
    reg.remove(b)
    assert reg.subscribers(s) == set()
    assert reg.subscribers(t) == set()
