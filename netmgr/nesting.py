"""How deep a peer's JSON nests, found in linear time without parsing it (issue 10, finding 6).

Pure: bytes in, a verdict out. :func:`check_nesting` raises :class:`~netmgr.errors.NestingTooDeep`
beyond :data:`MAX_NESTING`; :func:`netmgr.protocol.loads` uses it where a parser could recurse
(the stdlib fallback, and an orjson without its own limit).
"""
import operator
import re
import sys
from itertools import accumulate, count

import orjson

from netmgr.errors import NestingTooDeep

#: The deepest nesting of arrays and objects accepted from a peer: orjson's own limit since
#: 3.9.15. Older orjson has none and overflows the C stack (a segfault) at ~1M levels, a 2 MB
#: line; the stdlib parser raises RecursionError at ~1000 (issue 10, finding 6).
MAX_NESTING = 1024

_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{}')))
_SQUARE = bytes.maketrans(b"{}", b"[]")
_STEP = bytes.maketrans(b"[]", b"\x02\x00")  # the level after k steps: their sum - k
_STRING = re.compile(rb'"[^"]*(?:"|\Z)')  # never fails, so never backtracks


def _brackets(data):
    """The brackets of JSON text outside its strings, as steps: 2 opens a level, 0 closes one.

    For text that is not JSON, at least the levels a parser opens before its first error."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    # escapes: ``\\`` pairs first (left to right, as a parser pairs them), then ``\"``
    data = bytes(data)
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # keep quotes and brackets; two adjacent quotes enclose no bracket (a string without one,
    # or the space between two strings): dropping them first leaves _STRING little to do
    structure = data.translate(_SQUARE, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in structure:
        structure = _STRING.sub(b"", structure)
    return structure.translate(_STEP)


def _deeper_than(steps, limit):
    """Whether ``steps`` open more than ``limit`` levels, in linear time. A chunk of limit/2
    steps that cannot go beyond the limit is only counted; the loop lets other threads run."""
    depth, size = 0, limit // 2
    for start in range(0, len(steps), size):
        chunk = steps[start:start + size]
        opens = chunk.count(2)
        if depth + opens > limit and \
                depth + max(map(operator.sub, accumulate(chunk), count(1))) > limit:
            return True
        depth += 2 * opens - len(chunk)
    return False


def check_nesting(data):
    """Raise :class:`NestingTooDeep` if JSON text (bytes or str) nests deeper than
    :data:`MAX_NESTING`, in linear time. Counting the opening brackets (~0.5 ms per MB) first
    keeps most lines off the slower path."""
    if len(data) <= MAX_NESTING:
        return
    if isinstance(data, memoryview):
        data = data.tobytes()
    square, curly = ("[", "{") if isinstance(data, str) else (b"[", b"{")
    if data.count(square) + data.count(curly) > MAX_NESTING and \
            _deeper_than(_brackets(data), MAX_NESTING):
        raise NestingTooDeep(MAX_NESTING)


def _orjson_limits_nesting():
    try:
        orjson.loads(b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1))
        return False
    except orjson.JSONDecodeError:
        return True


#: lines longer than this are checked before orjson reads them: all, for an orjson without a limit
_CHECK_ABOVE = sys.maxsize if _orjson_limits_nesting() else MAX_NESTING


def _room_to_nest(codec, value):
    """``codec(value)`` again after a RecursionError: the stdlib codec recurses once per level,
    and the default recursion limit (1000) is below :data:`MAX_NESTING`. The limit is raised for
    good, not restored: restoring would race with a worker thread doing the same."""
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    if depth + MAX_NESTING + 100 > sys.getrecursionlimit():
        sys.setrecursionlimit(depth + MAX_NESTING + 100)
    try:
        return codec(value)
    except RecursionError:
        raise NestingTooDeep(MAX_NESTING) from None


