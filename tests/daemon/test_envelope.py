"""Property tests: the envelope decoder routes exactly as a full parse would (issue 12).

The Manager decodes a line of :data:`ENVELOPE_BYTES` or more for its envelope only
(:func:`netmgr.daemon.routing.decode`: msgspec, the payload validated but never built). Routing
reads ``service``, ``attribute``, ``uid``, ``requester``, ``error``, the key set and the types of
``message`` and ``traceback``; these must be what a full parse (orjson) gives, for every message,
and a line must be refused (ValueError) exactly when the full parse refuses it.

The messages are random, from fixed seeds, with adversarial payloads: strings and keys that look
like ``"requester":"victim"`` or ``"uid":"x"`` at every depth, escaped quotes and backslashes,
unicode and escapes, numbers of every form, deep nesting, duplicate keys, odd key orders; and
invalid lines made by cutting, inserting and replacing bytes.
"""
import json
import random

import orjson
import pytest

from netmgr.daemon import routing
from netmgr.errors import NestingTooDeep
from netmgr.protocol import loads

ROUTED = ("service", "attribute", "uid", "requester", "error")
SEEDS = range(40)
PER_SEED = 100

SPOOFS = ['"requester":"victim[h:1]"', '"uid":"stolen"', '{"requester":"victim[h:1]","uid":"1"}',
          '\\"requester\\":\\"victim\\"', '"error":true', '"result":', "}\r\n{", "\n",
          '","requester":"victim', "\\", '\\"', "\u2028", "é", "\U0001f600", "\\u0000", '"service":"Manager"']


def projection(data):
    """What routing reads of a message (a full parse, or the envelope of :func:`routing.decode`)."""
    if type(data) is not dict:
        return ("not an object", type(data).__name__)
    out = {"keys": frozenset(data)}
    for key in ROUTED:  # strings are read, and of ``error`` only True and False
        value = data.get(key, "<missing>")
        out[key] = value if type(value) is (bool if key == "error" else str) or value == "<missing>" \
            else "<other>"
    for key, kind in (("message", str), ("traceback", list)):
        if key in data:
            out[key] = type(data[key]) is kind
    return out


def outcome(decode, line):
    try:
        return projection(decode(line))
    except NestingTooDeep:
        return "too deep"
    except ValueError:
        return "refused"


def full(line):
    return loads(line)


# ------------------------------------------------------------------------------ random messages

def text(rng):
    pieces = [rng.choice(SPOOFS) if rng.random() < 0.5 else "".join(
        rng.choice("abcXYZ \t:,{}[]\"'\\/") for _ in range(rng.randrange(8))) for _ in range(rng.randrange(4))]
    return "".join(pieces)


def value(rng, depth=0):
    kind = rng.randrange(10 if depth < 6 else 6)
    if kind == 0:
        return text(rng)
    if kind == 1:
        return rng.choice([0, -1, 2 ** 63, -(2 ** 64), 10 ** 30, 1.5, -0.0, 1e300, 3.14159e-200])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return "x" * rng.choice([0, 1, 5000, 70_000])
    if kind == 4:
        return [rng.random() for _ in range(rng.randrange(2000))]
    if kind == 5:
        return {text(rng): text(rng) for _ in range(rng.randrange(3))}
    if kind in (6, 7):
        return [value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice([text(rng), "requester", "uid", "service", "error", "result"]): value(rng, depth + 1)
            for _ in range(rng.randrange(4))}


def message(rng):
    """A request, reply, notification or something else, serialised with odd choices."""
    shape = rng.randrange(5)
    uid = rng.choice(["1", "notification", "", text(rng), "u" * 5000, 7, None, ["1"]])
    if shape == 0:
        msg = {"service": rng.choice(["Echo", "Manager", text(rng), 3]), "attribute": rng.choice(["echo", text(rng)]),
               "args": [value(rng)], "kwargs": {"k": value(rng)}, "uid": uid, "error": False}
    elif shape == 1:
        msg = {"result": value(rng), "requester": rng.choice(["C[h:1]", text(rng), None]), "uid": uid,
               "error": False}
    elif shape == 2:
        msg = {"error": True, "message": rng.choice([text(rng), None, 3]), "requester": "C[h:1]",
               "uid": uid, "result": None, "traceback": rng.choice([[], [text(rng)], "tb", None])}
    elif shape == 3:
        msg = {"result": [[value(rng)], {}], "service": text(rng), "uid": "notification", "error": False}
    else:
        msg = {text(rng): value(rng) for _ in range(rng.randrange(1, 4))}
    for key in list(msg):
        if rng.random() < 0.1:
            del msg[key]
    if rng.random() < 0.2:
        msg[rng.choice(["extra", "requester", text(rng)])] = value(rng)
    items = list(msg.items())
    rng.shuffle(items)
    return encode(rng, items)


def encode(rng, items):
    """JSON text of `items` (pairs; repeated keys stay repeated), with random spacing and escapes."""
    sep = rng.choice([(",", ":"), (", ", ": "), (" ,\t", " :\n")])
    ascii_ = rng.random() < 0.3
    body = sep[0].join(json.dumps(k, ensure_ascii=ascii_) + sep[1] + json.dumps(v, ensure_ascii=ascii_)
                       for k, v in items)
    if rng.random() < 0.1 and items:  # a repeated key: the last one wins, for both decoders
        k, v = rng.choice(items)
        body += sep[0] + json.dumps(k) + sep[1] + json.dumps(value(rng))
    return ("{" + body + "}").encode()


def broken(rng, line):
    """`line` damaged: cut, a byte inserted or replaced, or a value made invalid."""
    kind = rng.randrange(5)
    at = rng.randrange(len(line))
    if kind == 0:
        return line[:at]
    if kind == 1:
        return line[:at] + bytes([rng.choice(b'{}[]",:\\x\x00\xff')]) + line[at:]
    if kind == 2:
        return line[:at] + bytes([rng.choice(b'{}[]",:\\x\x00\xff')]) + line[at + 1:]
    if kind == 3:
        return line.replace(b"false", b"flase", 1) if b"false" in line else line + b"}"
    return line[:-1] + b',"a":NaN}'


# ------------------------------------------------------------------------------------- the tests

@pytest.mark.parametrize("seed", SEEDS)
def test_the_envelope_routes_as_the_full_parse(seed):
    rng = random.Random(seed)
    for _ in range(PER_SEED):
        line = message(rng)
        assert outcome(routing.decode, line) == outcome(full, line), line[:300]


@pytest.mark.parametrize("seed", SEEDS)
def test_the_envelope_refuses_what_the_full_parse_refuses(seed):
    rng = random.Random(1000 + seed)
    for _ in range(PER_SEED):
        line = broken(rng, message(rng))
        assert outcome(routing.decode, line) == outcome(full, line), line[:300]


@pytest.mark.parametrize("line", [
    b'{"result":"\\"requester\\":\\"victim\\"","requester":"me[h:1]","uid":"1","error":false}',
    b'{"result":{"requester":"victim[h:1]","uid":"2"},"requester":"me[h:1]","uid":"1","error":false}',
    b'{"requester":"victim[h:1]","result":1,"uid":"1","requester":"me[h:1]","error":false}',
    b'{"service":"Echo","attribute":"echo","args":["\\"service\\":\\"Manager\\""],"uid":"1"}',
    b'{"service":"Echo","attribute":"echo","args":[{"service":"Manager","attribute":"x"}],"uid":"1"}',
    b'{"result":"\\ud800","requester":"me[h:1]","uid":"1","error":false}',
    b'{"result":"\xff","requester":"me[h:1]","uid":"1","error":false}',
    b'{"result":1e999,"requester":"me[h:1]","uid":"1","error":false}',
    b'{"result":[' + b"[" * 2000 + b"]" * 2000 + b'],"requester":"me[h:1]","uid":"1"}',
    b'{"service":"Echo","attribute":"echo","uid":"1"} trailing',
    b'  {"service":"Echo","attribute":"echo","uid":"1"}  ',
])
def test_spoofs_and_corner_cases(line):
    assert outcome(routing.decode, line) == outcome(full, line)


def test_the_threshold_path_is_the_one_tested():
    """The session decodes lines of ENVELOPE_BYTES and more with routing.decode."""
    from netmgr.daemon import session

    assert 0 < session.ENVELOPE_BYTES <= 64 * 1024
    big = b'{"service":"Echo","attribute":"echo","args":["' + b"x" * session.ENVELOPE_BYTES + b'"],"uid":"1"}'
    assert routing.decode_envelope(big) is not None  # the fast path, not the fallback
    assert orjson.loads(big)["uid"] == routing.decode(big)["uid"] == "1"
