"""Socket-free tests of netmgr.protocol (reference sections 1.1, 1.2, 1.10 and 1.13).

The protocol module is sans-IO, so these tests feed it bytes and strings directly: no event loop,
no sockets, no sleeps. The terminal-syntax table below is the contract of reference 1.13; the
differential test holds netmgr to MSL-Network 1.0's own ``parse_terminal_input``.
"""
import json
import pathlib
import random
import subprocess
import sys
import time

import pytest
from msl.network.utils import parse_terminal_input as parse_terminal_input_1_0

from netmgr import errors, protocol
from netmgr.protocol import LineReader, LineTooLong, parse_terminal_input


# --------------------------------------------------------------------------------------------
# Terminal syntax (reference 1.13)

def req(service, attribute, args=(), kwargs=None):
    """A terminal request, keys in 1.0's order."""
    return {"service": service, "attribute": attribute, "args": list(args),
            "kwargs": dict(kwargs or {}), "uid": "", "error": False}


def client(name):
    return {"type": "client", "name": name, "language": "unknown", "os": "unknown",
            "error": False}


DISCONNECT = req("self", "__disconnect__")
IDENTITY = req("Manager", "identity")


def link(name):
    return req("Manager", "link", [name])


# input -> expected result; written literally from the example table of reference 1.13
TERMINAL_TABLE = [
    # fewer than two items: None
    ("", None),
    ("   ", None),
    ("hello", None),
    ('"hello"', None),
    ('"hello goodbye', None),
    ('"hello world today"', None),
    ("quit", None),  # 'quit' is not a disconnect keyword
    # service and attribute only
    ("hello goodbye", req("hello", "goodbye")),
    ("'hello' goodbye", req("hello", "goodbye")),
    ('hello "goodbye"', req("hello", "goodbye")),
    # kwargs
    ("hello GooDbye x =  -1   y =    4", req("hello", "GooDbye", [], {"x": -1, "y": 4})),
    ('   "hello"  "goodbye"   x = "1 2"   y   =3   ',
     req("hello", "goodbye", [], {"x": "1 2", "y": 3})),
    ('"hello world" goodbye w = .62 x=1 y=-4.2 z="test" ',
     req("hello world", "goodbye", [], {"w": 0.62, "x": 1, "y": -4.2, "z": "test"})),
    ('"hello world today" good_bye x=None y=true z=test w=false',
     req("hello world today", "good_bye", [], {"x": None, "y": True, "z": "test", "w": False})),
    ('"String Editor" concat "first string" 1  s1=" the second string" ',
     req("String Editor", "concat", ["first string", 1], {"s1": " the second string"})),
    ("Vector cross_product x=[1,2,3] y=[4,5,6]",
     req("Vector", "cross_product", [], {"x": [1, 2, 3], "y": [4, 5, 6]})),
    ("Math is_null w=none x=None y=NULL z=null",
     req("Math", "is_null", [], {"w": None, "x": None, "y": None, "z": None})),
    ('ServiceName method 1.1 2.2 "another arg" x  = 3   y="4"',
     req("ServiceName", "method", [1.1, 2.2, "another arg"], {"x": 3, "y": "4"})),
    # value conversion and tokenising quirks
    ("Echo echo 1 2.5 -3 1e3 0x10 true False none NULL nan inf",
     req("Echo", "echo", [1, 2.5, -3, 1000.0, 16, True, False, None, None, "nan", "inf"])),
    ("Echo echo [1, 2, 3]", req("Echo", "echo", ["[1,", (2,), "3]"])),
    ('Echo echo {"a": 1}', req("Echo", "echo", ["{", "a", ":", "1}"])),
    ("Echo echo x=1 2", req("Echo", "echo", [], {"x": 1})),
    ("Echo echo 1 x=1 2 y=2", req("Echo", "echo", [1], {"x": 1, "y": 2})),
    ("Echo echo ax x=1", req("Echo", "echo", ["a"], {"x": 1})),
    ('Echo echo "x=1"', req("Echo", "echo", [], {"x": 1})),
    ("Echo echo it's", req("Echo", "echo", ["it", "s"])),
    ('Echo echo "1"', req("Echo", "echo", ["1"])),
    # client identity
    ("client", client("Client")),
    ("CliEnt", client("Client")),
    ("Client The Client today", client("The Client today")),
    ('client "The Client"', client("The Client")),
    ("clientele foo", client("foo")),
    ("ClientService add 1 2", client("add 1 2")),
    # disconnect
    ("disconnect", DISCONNECT),
    ("__disconnect__", DISCONNECT),
    ("exit", DISCONNECT),
    ("EXIT", DISCONNECT),
    # identity
    ("identity", IDENTITY),
    (" IDENTITY ", IDENTITY),
    ("identity x", req("identity", "x")),
    ("Manager identity", req("Manager", "identity")),
    # admin request
    ("Manager users_table.is_user_registered n.bohr",
     req("Manager", "users_table.is_user_registered", ["n.bohr"])),
    # link
    ("linkBasic Math", link("Basic Math")),
    ('link "Basic Math"', link("Basic Math")),
    ("link", link("")),
    ("linker foo", link("er foo")),
]


def assert_same(actual, expected):
    """``==`` plus repr: catches 1 vs 1.0 vs True, list vs tuple and key order."""
    assert actual == expected
    assert repr(actual) == repr(expected)


@pytest.mark.parametrize("line, expected", TERMINAL_TABLE, ids=[repr(t[0]) for t in TERMINAL_TABLE])
def test_parse_terminal_input_table(line, expected):
    assert_same(parse_terminal_input(line), expected)


def test_terminal_requests_have_empty_uid_and_no_error():
    for line, expected in TERMINAL_TABLE:
        parsed = parse_terminal_input(line)
        if expected is None:
            continue
        assert parsed["error"] is False
        if "type" in expected:  # a client identity has no uid
            assert list(parsed) == ["type", "name", "language", "os", "error"]
        else:
            assert parsed["uid"] == ""
            assert list(parsed) == ["service", "attribute", "args", "kwargs", "uid", "error"]


# Differential test against MSL-Network 1.0 ---------------------------------------------------

_WORDS = ["Echo", "echo", "hello", "Math", "String Editor", "x", "y", "s1", "a", "ax", "good_bye",
          "Manager", "identity", "link", "client", "exit", "disconnect", "users_table.is_user",
          "n.bohr", "é", "ñandú", "日本語", "😀", "Ω", "x_1"]
_VALUES = ["1", "-3", "2.5", ".62", "1e3", "-4.2", "0x10", "1_000", "01", "3+4j", "1j", "true",
           "False", "none", "NULL", "nan", "inf", "[1,2,3]", "[1, 2]", "(1,2)", "(2,)", "{1,2}",
           "{}", "[]", "()", "{'a': 1}", '{"a":1}', "'single'", '"double quoted"', "it's", "[",
           "]", "{", "}", ",", ":"]
_SEPARATORS = [" ", " ", " ", "  ", "\t", " \t ", "", "=", " = ", "\u00a0"]


def _random_token(rng):
    kind = rng.random()
    if kind < 0.35:
        return rng.choice(_WORDS)
    if kind < 0.7:
        return rng.choice(_VALUES)
    if kind < 0.8:
        return rng.choice(["'", '"', "=", "x=", "=1"])
    if kind < 0.9:
        quote = rng.choice(["'", '"'])
        return quote + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(0, 3))) + quote
    return f"{rng.choice(_WORDS)}={rng.choice(_VALUES)}"


def _random_line(rng):
    parts = []
    for _ in range(rng.randint(0, 9)):
        parts.append(_random_token(rng))
        parts.append(rng.choice(_SEPARATORS))
    line = "".join(parts)
    if rng.random() < 0.2:
        line = rng.choice(["  ", "\t", " \t"]) + line
    return line


def _differential_inputs():
    rng = random.Random(20240613)
    return [line for line, _ in TERMINAL_TABLE] + [_random_line(rng) for _ in range(600)]


def test_parse_terminal_input_matches_1_0():
    inputs = _differential_inputs()
    assert len(set(inputs)) > 400  # the generator really varies
    outcomes = set()
    for line in inputs:
        ours = parse_terminal_input(line)
        theirs = parse_terminal_input_1_0(line)
        assert ours == theirs, line
        assert repr(ours) == repr(theirs), line
        if ours is None:
            outcomes.add("none")
        elif "type" in ours:
            outcomes.add("client")
        else:
            outcomes.add("kwargs" if ours["kwargs"] else "args" if ours["args"] else "bare")
    # every branch of the parser was exercised
    assert outcomes == {"none", "client", "kwargs", "args", "bare"}


# --------------------------------------------------------------------------------------------
# Framing (reference 1.1)

def read_all(chunks, limit=1 << 20):
    """Feed ``chunks`` to a fresh reader; return (lines, remainder at EOF)."""
    reader = LineReader(limit)
    lines = []
    for chunk in chunks:
        lines.extend(reader.feed(chunk))
    return lines, reader.close()


STREAM = (b'{"a": 1}\r\n'
          b"hello goodbye\n"
          b"\n"
          b"\r\n"
          b"lone\rcr stays\r\n"
          b'{"b": "\xc3\xa9"}\n'
          b"tail without terminator")
STREAM_LINES = [b'{"a": 1}', b"hello goodbye", b"", b"", b"lone\rcr stays", b'{"b": "\xc3\xa9"}']
STREAM_TAIL = b"tail without terminator"


def test_line_reader_whole_stream():
    assert read_all([STREAM]) == (STREAM_LINES, STREAM_TAIL)


def test_line_reader_one_byte_at_a_time():
    assert read_all([STREAM[i:i + 1] for i in range(len(STREAM))]) == (STREAM_LINES, STREAM_TAIL)


def test_line_reader_every_split_point():
    for i in range(len(STREAM) + 1):
        assert read_all([STREAM[:i], STREAM[i:]]) == (STREAM_LINES, STREAM_TAIL), i


def test_line_reader_every_pair_of_split_points():
    for i in range(len(STREAM) + 1):
        for j in range(i, len(STREAM) + 1):
            chunks = [STREAM[:i], STREAM[i:j], STREAM[j:]]
            assert read_all(chunks) == (STREAM_LINES, STREAM_TAIL), (i, j)


def test_line_reader_several_messages_per_chunk():
    reader = LineReader(100)
    assert reader.feed(b"one\r\ntwo\nthree\r\nfo") == [b"one", b"two", b"three"]
    assert reader.pending == 2
    assert reader.feed(b"ur\n") == [b"four"]
    assert reader.pending == 0
    assert reader.close() is None


def test_line_reader_one_message_over_many_chunks():
    reader = LineReader(100)
    for piece in (b"a", b"bc", b"def", b"\r"):
        assert reader.feed(piece) == []
    assert reader.pending == 7
    assert reader.feed(b"\nnext") == [b"abcdef"]
    assert reader.close() == b"next"


def test_line_reader_lone_cr_is_not_a_terminator():
    reader = LineReader(100)
    assert reader.feed(b"a\rb\rc") == []
    assert reader.feed(b"\r\n") == [b"a\rb\rc"]
    assert reader.feed(b"\r") == []
    assert reader.feed(b"x\n") == [b"\rx"]


def test_line_reader_empty_lines():
    assert read_all([b"\n\r\n\n"]) == ([b"", b"", b""], None)
    assert read_all([b""]) == ([], None)


def test_line_reader_close():
    reader = LineReader(100)
    assert reader.close() is None
    assert reader.feed(b"done\r\n") == [b"done"]
    assert reader.close() is None
    assert reader.feed(b"partial") == []
    assert reader.close() == b"partial"
    assert reader.pending == 0
    assert reader.close() is None  # the partial line is delivered once


def test_line_reader_limit_is_inclusive():
    reader = LineReader(10)
    assert reader.feed(b"x" * 10 + b"\n") == [b"x" * 10]
    assert reader.feed(b"y" * 10) == []
    assert reader.feed(b"\n") == [b"y" * 10]


def test_line_too_long_complete_line():
    reader = LineReader(10)
    with pytest.raises(LineTooLong) as info:
        reader.feed(b"ok\n" + b"x" * 11 + b"\n")
    assert info.value.limit == 10
    assert isinstance(info.value, errors.ProtocolError)


def test_line_too_long_complete_line_across_chunks():
    reader = LineReader(10)
    assert reader.feed(b"x" * 6) == []
    with pytest.raises(LineTooLong):
        reader.feed(b"x" * 5 + b"\n")


def test_line_too_long_incomplete_line():
    reader = LineReader(10)
    with pytest.raises(LineTooLong):
        reader.feed(b"x" * 11)


def test_line_too_long_incomplete_line_buffered_over_chunks():
    reader = LineReader(10)
    assert reader.feed(b"x" * 5) == []
    assert reader.feed(b"x" * 5) == []  # exactly the limit is still allowed
    with pytest.raises(LineTooLong):
        reader.feed(b"x")


def test_five_megabyte_line_in_64k_chunks():
    size = 5 * 1024 * 1024
    payload = bytes(range(256)).replace(b"\n", b"-") * (size // 256)
    data = payload + b"\r\nafter\n"
    chunk = 64 * 1024
    reader = LineReader(8 * 1024 * 1024)
    lines = []
    for i in range(0, len(data), chunk):
        lines.extend(reader.feed(data[i:i + chunk]))
    assert len(lines) == 2
    assert lines[0] == payload
    assert lines[1] == b"after"
    assert reader.close() is None


# --------------------------------------------------------------------------------------------
# JSON (reference 1.1)

def test_dumps_ends_with_crlf_and_round_trips():
    message = {"args": [1, 2.5, "three", None, True, False, [1, {"a": []}]], "attribute": "echo",
               "error": False, "kwargs": {"x": -1}, "service": "Echo", "uid": "abc"}
    line = protocol.dumps(message)
    assert line.endswith(b"\r\n")
    assert line.count(b"\n") == 1
    assert protocol.loads(line) == message
    assert protocol.loads(line.rstrip(b"\r\n")) == message
    assert list(protocol.loads(line)) == list(message)  # key order preserved


def test_loads_accepts_str_and_bytes():
    assert protocol.loads('{"a": [1, 2]}') == {"a": [1, 2]}
    assert protocol.loads(b'{"a": [1, 2]}\r\n') == {"a": [1, 2]}
    assert protocol.loads(bytearray(b'{"a": 1}')) == {"a": 1}


@pytest.mark.parametrize("text", [b"[NaN, Infinity, -Infinity]", "[NaN, Infinity, -Infinity]"])
def test_nan_and_infinity_accepted_and_preserved(text):
    value = protocol.loads(text)
    assert value[0] != value[0]  # NaN
    assert value[1:] == [float("inf"), float("-inf")]
    line = protocol.dumps(value)
    assert line == b"[NaN,Infinity,-Infinity]\r\n"  # not orjson's null
    again = protocol.loads(line)
    assert again[0] != again[0] and again[1:] == value[1:]


def test_nan_inside_a_message_survives_dumps():
    message = {"args": [float("nan")], "kwargs": {"x": float("inf")}, "result": None}
    again = protocol.loads(protocol.dumps(message))
    assert again["args"][0] != again["args"][0]
    assert again["kwargs"]["x"] == float("inf")
    assert again["result"] is None


@pytest.mark.parametrize("number", [2 ** 64, 2 ** 70, -(2 ** 63) - 1, -(2 ** 100), 10 ** 40])
def test_integers_beyond_64_bits_are_exact(number):
    """``loads_exact`` (the re-serialising paths) keeps them; ``dumps`` writes them back."""
    text = json.dumps({"args": [number]})
    value = protocol.loads_exact(text.encode())
    assert value == {"args": [number]}
    assert type(value["args"][0]) is int
    assert protocol.loads_exact(text) == value
    line = protocol.dumps(value)
    assert line == b'{"args":[' + str(number).encode() + b"]}\r\n"
    assert protocol.loads_exact(line) == value


def test_64_bit_integers_and_long_digit_strings():
    for number in (2 ** 63 - 1, -(2 ** 63), 2 ** 64 - 1, 0, -1):
        assert protocol.loads(str(number).encode()) == number
    digits = "1234567890" * 5
    assert protocol.loads(json.dumps([digits, 1.5]).encode()) == [digits, 1.5]


@pytest.mark.parametrize("value", [{1, 2}, 3 + 4j, {"args": [{1, 2}]}, [3 + 4j]])
def test_dumps_rejects_what_json_cannot_hold(value):
    with pytest.raises(TypeError):
        protocol.dumps(value)


@pytest.mark.parametrize("data", [b'{"a": "\xff"}', b"\xff\xfe", b'"\xc3"', b"[1, \x80]"])
def test_loads_rejects_invalid_utf8(data):
    with pytest.raises((ValueError, UnicodeDecodeError)):
        protocol.loads(data)


@pytest.mark.parametrize("data", [b"{", b"not json", b'{"a": 1} trailing', b""])
def test_loads_rejects_invalid_json(data):
    with pytest.raises(ValueError):
        protocol.loads(data)


def test_non_ascii_is_emitted_raw_utf8():
    text = "é€ Ω 日本語 😀"
    line = protocol.dumps({"result": text})
    assert text.encode("utf-8") in line
    assert b"\\u" not in line
    assert protocol.loads(line) == {"result": text}
    # also on the stdlib path (a value orjson cannot encode forces it)
    line = protocol.dumps({"result": text, "n": 2 ** 70})
    assert text.encode("utf-8") in line
    assert protocol.loads(line) == {"result": text, "n": 2 ** 70}


def test_encode_str():
    assert protocol.encode_str('a "quoted" é') == '"a \\"quoted\\" é"'.encode()
    assert json.loads(protocol.encode_str("x\ny")) == "x\ny"


# --------------------------------------------------------------------------------------------
# Message shapes (reference 1.2) and error text (reference 1.10)

def test_request_shape():
    message = protocol.request("identity", (), "MGR")
    assert list(message) == ["args", "attribute", "error", "kwargs", "requester", "uid"]
    assert message == {"args": [], "attribute": "identity", "error": False, "kwargs": {},
                       "requester": "MGR", "uid": ""}
    message = protocol.request("username", ("Cli[h:1]",), "MGR", uid="u1")
    assert message["args"] == ["Cli[h:1]"] and type(message["args"]) is list
    assert message["uid"] == "u1"
    assert protocol.dumps(message) == (
        b'{"args":["Cli[h:1]"],"attribute":"username","error":false,"kwargs":{},'
        b'"requester":"MGR","uid":"u1"}\r\n')


def test_result_shape():
    message = protocol.result({"a": 1}, "Cli[h:1]", "u1")
    assert list(message) == ["error", "requester", "result", "uid"]
    assert message == {"error": False, "requester": "Cli[h:1]", "result": {"a": 1}, "uid": "u1"}
    assert protocol.result(None, None, "")["requester"] is None


def test_error_shape():
    message = protocol.error("ValueError: kaboom", "Cli[h:1]", "u1")
    assert list(message) == ["error", "message", "requester", "result", "traceback", "uid"]
    assert message == {"error": True, "message": "ValueError: kaboom", "requester": "Cli[h:1]",
                       "result": None, "traceback": [], "uid": "u1"}
    assert protocol.dumps(message) == (
        b'{"error":true,"message":"ValueError: kaboom","requester":"Cli[h:1]","result":null,'
        b'"traceback":[],"uid":"u1"}\r\n')


def test_notification_shape():
    message = protocol.notification("Heart", (1, 2), {"x": 3})
    assert list(message) == ["error", "result", "service", "uid"]
    assert message == {"error": False, "result": [[1, 2], {"x": 3}], "service": "Heart",
                       "uid": "notification"}
    assert message["uid"] == protocol.NOTIFICATION_UID
    assert type(message["result"][0]) is list


@pytest.mark.parametrize("text", [
    "the 'Nope' service does not exist, cannot link with Client[vm:38066]",
    "plain",
    'both \' and " quotes',
])
def test_error_text_key_error_uses_repr(text):
    assert errors.error_text("KeyError", text) == f"KeyError: {KeyError(text)}"


def test_error_text_examples():
    assert errors.error_text(
        "KeyError", "the 'Nope' service does not exist, cannot link with Client[vm:38066]"
    ) == 'KeyError: "the \'Nope\' service does not exist, cannot link with Client[vm:38066]"'
    assert errors.error_text("KeyError", "abc") == "KeyError: 'abc'"
    assert errors.error_text("ValueError", "kaboom") == "ValueError: kaboom"
    assert errors.error_text("PermissionError", "it's 'locked'") == \
        "PermissionError: it's 'locked'"


def test_protocol_module_is_sans_io():
    source = pathlib.Path(protocol.__file__).read_text(encoding="utf-8")
    for name in ("gevent", "socket", "asyncio", "select"):
        assert f"import {name}" not in source
        assert f"from {name}" not in source


# --------------------------------------------------------------------------------------------
# Nesting (issue 10, finding 6): NestingTooDeep, a ValueError, never RecursionError or a crash

def nested(depth, inner=b"1"):
    return b"[" * depth + inner + b"]" * depth


def nested_objects(depth):
    return b'{"a":' * depth + b"1" + b"}" * depth


DECODERS = [protocol.loads, protocol.loads_exact]


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize("make", [nested, nested_objects, lambda d: nested(d, b"NaN")])
def test_nesting_up_to_the_limit_is_accepted(decode, make):
    assert protocol.MAX_NESTING == 1024
    for depth in (1, 900, 1000, protocol.MAX_NESTING):
        value = decode(make(depth))
        # the stdlib encoder needs the same room to write it back (orjson stops at 255 levels)
        assert protocol.dumps(value).rstrip(b"\r\n").replace(b"NaN", b"1") == \
            make(depth).replace(b"NaN", b"1")


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize("line", [
    nested(1025), nested(1100), nested_objects(1025), nested(1025, b"NaN"),
    b"[" * 1100,  # not JSON either: no parser gets that deep
    b'[{"a":' * 600 + b"1" + b"}]" * 600,
    b'{"uid": "u1", "args": ' + nested(5000) + b"}",
    nested(1025).decode(),
])
def test_nesting_beyond_the_limit_is_a_value_error(decode, line):
    with pytest.raises(errors.NestingTooDeep) as info:
        decode(line)
    assert isinstance(info.value, ValueError)
    assert str(info.value) == "JSON nested deeper than 1024 levels"
    assert info.value.limit == protocol.MAX_NESTING


def test_nesting_is_checked_after_the_recursion_limit_was_raised():
    """Decoding 1024 levels raises the interpreter's recursion limit for good: the limit still holds."""
    protocol.loads_exact(nested(protocol.MAX_NESTING))
    for decode in DECODERS:
        with pytest.raises(errors.NestingTooDeep):
            decode(nested(1025))


def test_nesting_within_the_limit_from_a_deep_stack():
    def recurse(n):
        return recurse(n - 1) if n else [decode(nested(protocol.MAX_NESTING)) for decode in DECODERS]
    assert len(recurse(800)) == 2


@pytest.mark.parametrize("text", [
    b'["' + b"[" * 5000 + b'"]',  # brackets inside a string do not nest
    b'["\\\\", "' + b"[{" * 3000 + b'"]',  # an escaped backslash ends no string
    b'["\\"' + b"[" * 5000 + b'"]',  # an escaped quote ends no string
    b'[' + b'"[",' * 3000 + b'"]"]',
    b"[" + b"[]," * 3000 + b"[]]",  # many brackets, little depth
])
def test_brackets_in_strings_and_siblings_do_not_count(text):
    assert protocol.loads(text) == json.loads(text)
    assert protocol.loads_exact(text) == json.loads(text)
    protocol.check_nesting(text)
    protocol.check_nesting(text.decode())


def test_check_nesting_counts_exactly():
    protocol.check_nesting(b" " * 2000 + nested(1024))
    for text in (nested(1025), b"[" * 1025, b"{" * 1025, b"[{" * 513, nested(1025).decode(),
                 memoryview(nested(1025)), b'"x", ' + nested(1025)):
        with pytest.raises(errors.NestingTooDeep):
            protocol.check_nesting(text)


def test_a_million_levels_do_not_crash_the_process():
    """orjson before 3.9.15 has no limit: 2 MB of brackets overflowed the C stack (SIGSEGV)."""
    code = ("from netmgr import protocol, errors\n"
            "for decode in (protocol.loads, protocol.loads_exact):\n"
            "    for line in (b'[' * 10**6 + b']' * 10**6, b'[' * 10**6, b'{\"a\":' * 10**6):\n"
            "        try:\n"
            "            decode(line)\n"
            "        except errors.NestingTooDeep:\n"
            "            pass\n"
            "        else:\n"
            "            raise SystemExit('accepted')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 0, done


def test_dumps_never_raises_recursion_error():
    deep = 1
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(errors.NestingTooDeep):
        protocol.dumps(deep)


def test_dumps_escapes_a_lone_surrogate_as_1_0_does():
    value = protocol.loads(b'{"a": "\\ud800 \xc3\xa9"}')  # the stdlib fallback accepts it
    assert protocol.dumps(value) == b'{"a":"\\ud800 \\u00e9"}\r\n'
    assert protocol.loads_exact(protocol.dumps(value)) == value


# --------------------------------------------------------------------------------------------
# find_uid: the uid of a line that could not be parsed, read in bounded time

@pytest.mark.parametrize("line, uid", [
    (b'{"service": "S", "attribute": "a", "args": [1, 2', ""),
    (b'{"service": "S", "attribute": "a", "uid": "u-1", "args": [1, 2', "u-1"),
    (b'{"service":"S","args":[' + nested(1100) + b'],"uid":"deep"}', "deep"),
    (b'{"uid" :  "sp\\u00e9ce \\"q\\""}', 'spéce "q"'),
    ('{"uid": "text é", "x": [}', "text é"),
    (b'{"args": [{"uid": "inner"}], "uid": "outer"', "outer"),
    (b'{"uid": 5}', ""),
    (b'{"uid": "bad \\x escape"}', ""),
    (b'{"uid": "unterminated', ""),
    (b"x y " + b"a" * 70000, ""),
    (b'{"uid": "head", "args": "' + b"x" * 20000 + b'"', "head"),
    (b'{"uid": "head", "args": "' + b"x" * 20000 + b'", "uid": "tail"}', "tail"),
    (b'{"args": "' + b"x" * 20000 + b'", "uid": "mid", "kwargs": "' + b"x" * 20000 + b'"', ""),
    (memoryview(b'{"uid": "view"'), "view"),
    (b"", ""),
])
def test_find_uid(line, uid):
    assert protocol.find_uid(line) == uid


def test_find_uid_reads_only_the_ends_of_a_line():
    line = b'{"uid": "u", "args": "' + b'\\"uid\\": \\"' * (1 << 20) + b'"}'  # 12 MB
    start = time.perf_counter()
    assert protocol.find_uid(line) == "u"
    assert time.perf_counter() - start < 1.0


def test_too_long_field_shares_the_pattern():
    marker = protocol.TooLong(10 ** 9, b'x", "requester": "C[h:1]", "uid": "u\\u00e9"}')
    assert marker.field("uid") == "ué" and marker.field("requester") == "C[h:1]"
    assert protocol.TooLong(5, b"nothing").field("uid") is None
