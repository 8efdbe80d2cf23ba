"""The MSL-Network 1.0 wire protocol, sans-IO.

This module performs no I/O: it turns bytes into lines and lines into messages, and messages
into bytes. It imports neither gevent nor sockets (STYLE.md rule 1), so its tests feed it bytes
in every chunking without an event loop.

Reference: ``msl-network-1.0-protocol.md`` sections 1.1 (framing), 1.2 (message shapes),
1.10 (errors) and 1.13 (terminal syntax, parsed by :mod:`netmgr.terminal`, re-exported here).

Nothing here recurses on a peer's input or takes more than linear time on it: JSON nested deeper
than :data:`MAX_NESTING` raises :class:`NestingTooDeep` (a ValueError), never RecursionError.
"""
import json
import re
import sys

import orjson

from netmgr import terminal
from netmgr.nesting import _CHECK_ABOVE, MAX_NESTING, _room_to_nest, check_nesting  # noqa: F401
from netmgr.errors import LineTooLong

CRLF = b"\r\n"
NOTIFICATION_UID = "notification"
DISCONNECT_REQUEST = "__disconnect__"
SHUTDOWN_MANAGER = "shutdown_manager"
SHUTDOWN_SERVICE = "shutdown_service"
PORT = 1875

#: Keys of a reply or error that a peer may forward unchanged (reference 1.2).
REPLY_KEYS = frozenset(("error", "message", "requester", "result", "traceback", "uid"))

#: Terminal syntax (reference 1.13): the longest line parsed, in bytes, and 1.0's parser.
MAX_TERMINAL_LINE = terminal.MAX_TERMINAL_LINE
parse_terminal_input = terminal.parse_terminal_input


#: an unfinished line longer than this is kept in one growing buffer
GROW_IN_PLACE = 1 << 20


class LineReader:
    """Split a byte stream into lines.

    Lines end with LF; a CR before the LF is dropped (1.0 writes CRLF, LabVIEW and terminal users
    may send LF only). A lone CR is not a terminator. Each chunk is scanned once, so a 110 MB
    message that arrives in 64 KiB chunks costs linear time. A line is ``bytes``, or, longer
    than :data:`GROW_IN_PLACE`, the ``bytearray`` it was gathered in (never copied again).
    """

    __slots__ = ("limit", "_parts", "_size")

    def __init__(self, limit):
        self.limit = limit
        self._parts = []  # the pieces of an incomplete line
        self._size = 0

    def feed(self, data):
        """Return the complete lines in ``data`` (without terminators), keeping the remainder.

        Raises :class:`LineTooLong` when a line, complete or not, exceeds the limit.
        """
        start = 0
        lines = []
        find = data.find
        while True:
            end = find(b"\n", start)
            if end < 0:
                break
            if self._size + end - start > self.limit:
                raise LineTooLong(self.limit)
            # the CR is left out by the slice: stripping it afterwards would copy the line again
            stop = end - 1 if end > start and data[end - 1] == 13 else end
            parts = self._parts
            if parts and type(parts[0]) is bytearray:  # a large line: it IS the buffer, no join
                line = parts[0]
                line += memoryview(data)[start:stop]
                parts.clear()
                self._size = 0
                if stop == end and line.endswith(b"\r"):
                    del line[-1]
            elif parts:
                parts.append(data[start:stop])
                line = b"".join(parts)
                parts.clear()
                self._size = 0
                if stop == end and line.endswith(b"\r"):  # the CR ended the previous chunk
                    line = line[:-1]
            else:
                line = data[start:stop]
            lines.append(line)
            start = end + 1
        if start < len(data):
            self._size += len(data) - start
            if self._size > self.limit:
                raise LineTooLong(self.limit)
            parts = self._parts
            if self._size > GROW_IN_PLACE and parts:
                # a large line: one growing buffer (realloc'd in place) rather than its chunks; it
                # becomes the line itself, so the line is held once (test_overload: 100 MB lines)
                if type(parts[0]) is not bytearray:
                    parts[:] = [bytearray().join(parts)]
                parts[0] += memoryview(data)[start:] if start else data
            else:
                parts.append(data[start:] if start else data)
        return lines

    def close(self):
        """At EOF: the trailing partial line, if any (1.0 delivers it as a line)."""
        if not self._parts:
            return None
        line = b"".join(self._parts).rstrip(b"\r")
        self._parts.clear()
        self._size = 0
        return line

    def discard(self):
        """Forget the incomplete line, if any (at EOF, when it is not worth parsing)."""
        self._parts.clear()
        self._size = 0

    @property
    def pending(self):
        """The number of buffered bytes of an incomplete line."""
        return self._size


# --------------------------------------------------------------------------------------------
# Framing for the client libraries: a per-message limit.
#
# The Manager's reader stops a stream at the first line longer than its limit; a Client or
# Service must instead fail only the message that was too long, so :class:`Lines` lets
# :class:`LineReader` split the stream (with no limit) and applies ``read_limit`` itself: an
# oversized line is discarded as its bytes arrive, the lines around it are kept, and a
# :class:`TooLong` marker takes its place so that the reader can fail the request it belonged to.
#: bytes of an oversized line that are kept to find its ``uid`` and ``requester``
TAIL_SIZE = 4096

_split = LineReader.feed


# ``"name": "value"`` in JSON text that could not be parsed. Linear: an attempt starts only at
# ``"uid"``, and its value ends at the next unescaped quote, where the next attempt may start.
_FIELDS = {name: re.compile(rb'"%s"\s*:\s*"((?:[^"\\]|\\.)*)"' % name.encode())
           for name in ("uid", "requester")}


def _field_value(found):
    """The string of a ``_FIELDS`` match, or None for a bad escape or UTF-8 cut by a window."""
    try:
        return loads(b'"' + found + b'"')
    except ValueError:
        return None


class TooLong:
    """An input line longer than ``read_limit``: its size and its last bytes (for the uid)."""

    __slots__ = ("size", "tail")

    def __init__(self, size, tail):
        self.size = size
        self.tail = tail

    def field(self, name):
        """The last ``"name": "value"`` string found in the kept tail, or None."""
        found = _FIELDS[name].findall(self.tail)
        return _field_value(found[-1]) if found else None


def _uids(part):
    return _FIELDS["uid"].findall(part.encode("utf-8", "replace") if isinstance(part, str)
                                  else bytes(part))


def find_uid(line):
    """The ``uid`` of a request that could not be parsed (bad JSON, nested too deep, a
    terminal line too long), to answer it with its uid (STYLE.md rule 5), else ``""``.

    Only the first and last :data:`TAIL_SIZE` bytes (characters of a str) are searched, so
    the cost is bounded whatever the line's size. A uid is the last key of the requests 1.0
    and netmgr send: the last one in the tail wins, else the first one in the head.
    """
    if len(line) > 2 * TAIL_SIZE:
        found = _uids(line[-TAIL_SIZE:])[-1:] or _uids(line[:TAIL_SIZE])[:1]
    else:
        found = _uids(line)[-1:]
    uid = _field_value(found[0]) if found else None
    return uid if isinstance(uid, str) else ""


class Lines(LineReader):
    """Split a byte stream into non-empty lines; a line longer than ``limit`` becomes a
    :class:`TooLong` (``limit`` None or 0: no limit). A CR before the LF is dropped."""

    __slots__ = ("max_line", "_skipping", "_tail")

    def __init__(self, limit=None):
        # sys.maxsize, not math.inf: comparing an int with a float costs ~40 ns per check
        super().__init__(sys.maxsize)  # never raises: the limit is applied here, per line
        self.max_line = limit if limit else sys.maxsize
        self._skipping = False  # inside a line already known to be too long
        self._tail = b""

    def feed(self, data):
        """The complete lines (bytes) and :class:`TooLong` markers in ``data``, in order."""
        if data.find(b"\n") == len(data) - 1 and not self._parts and not self._skipping:
            # the common case: `data` is exactly one line
            line = data[:-2] if data.endswith(b"\r\n") else data[:-1]
            if line and len(line) <= self.max_line:
                return [line]
        if self._skipping:
            return self._feed_skipping(data)
        lines = _split(self, data)
        limit = self.max_line
        if self._size > limit:  # the incomplete line is too long already: stop keeping it
            self._tail = b"".join(self._parts)[-TAIL_SIZE:]
            self._parts.clear()
            self._skipping = True
        for line in lines:
            if not line or len(line) > limit:
                return self._checked(lines)
        return lines  # the common case: every line is kept as it is

    def _checked(self, lines):
        limit = self.max_line
        return [TooLong(len(line), line[-TAIL_SIZE:]) if len(line) > limit else line
                for line in lines if line]

    def _feed_skipping(self, data):
        end = data.find(b"\n")
        if end < 0:
            self._skip(data, len(data))
            return []
        self._skip(data, end)
        marker = TooLong(self._size, self._tail)
        self._skipping, self._size, self._tail = False, 0, b""
        out = self.feed(data[end + 1:])
        out.insert(0, marker)
        return out

    def _skip(self, data, end):
        """Discard ``data[:end]``, a piece of a too-long line, counting it and keeping its tail."""
        self._size += end
        self._tail = (self._tail + data[max(0, end - TAIL_SIZE):end])[-TAIL_SIZE:]

    def close(self):
        """At EOF: the trailing partial line (1.0 delivers it), or None."""
        if self._skipping:
            self._skipping, self._size, self._tail = False, 0, b""
            return None
        line = LineReader.close(self)
        return line if line and line.strip() else None


# --------------------------------------------------------------------------------------------
# JSON

def _text(line):
    if isinstance(line, (bytes, bytearray, memoryview)):
        return bytes(line).decode("utf-8")  # UnicodeDecodeError is the caller's to handle
    return line


def _stdlib_loads(text):
    if sys.getrecursionlimit() > MAX_NESTING:  # then the stdlib could nest deeper than the limit
        check_nesting(text)
    try:
        return json.loads(text)
    except RecursionError:
        pass
    check_nesting(text)
    return _room_to_nest(json.loads, text)


def loads(line):
    """Decode one line on the hot path: orjson, or the stdlib parser for what 1.0's default
    backend may emit and orjson refuses (``NaN``, ``Infinity``).

    orjson returns a float for an integer beyond 64 bits (ijl/orjson#308). The Manager reads
    only the envelope (strings) of what it forwards raw, so that cannot matter there; a path
    that re-serialises a peer's values uses :func:`loads_exact`. Raises ValueError
    (:class:`NestingTooDeep` beyond :data:`MAX_NESTING`) or UnicodeDecodeError.
    """
    if len(line) > _CHECK_ABOVE:  # a line this short cannot nest too deep
        check_nesting(line)
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return _stdlib_loads(_text(line))


def loads_exact(line):
    """Decode with the stdlib parser: exact big integers, NaN and Infinity kept."""
    return _stdlib_loads(_text(line))


def _has_nonfinite(obj):
    stack = [obj]
    while stack:
        item = stack.pop()
        if type(item) is float:
            if item != item or item in (_INF, -_INF):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


_INF = float("inf")
_orjson_dumps = orjson.dumps


def _json_dumps(obj, ensure_ascii=False):
    return json.dumps(obj, ensure_ascii=ensure_ascii, separators=(",", ":"))


def _stdlib_dumps(obj):
    try:
        text = _json_dumps(obj)
    except RecursionError:  # orjson stops at 255 levels, the stdlib near the recursion limit
        text = _room_to_nest(_json_dumps, obj)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate (read by the stdlib parser): 1.0's \ud800
        return _json_dumps(obj, ensure_ascii=True).encode()


def dumps(obj):
    """Encode a message as one CRLF-terminated line.

    Raises :class:`TypeError` for values JSON cannot hold (a terminal ``3+4j`` or ``{1,2}``),
    and :class:`NestingTooDeep` (a ValueError) for an object nested far deeper than
    :data:`MAX_NESTING`, which :func:`loads` never returns.
    """
    try:
        line = _orjson_dumps(obj)
        # orjson writes NaN/Infinity as null without raising: only a line with null can hide one
        # (``find`` is ~90 ns quicker than ``in`` on a 100-byte line: this runs for every request)
        if line.find(b"null") < 0 or not _has_nonfinite(obj):
            return line + CRLF
    except TypeError:
        pass
    # big integers and NaN are valid in 1.0's dialect; sets and complex numbers are not
    return _stdlib_dumps(obj) + CRLF


def encode_str(text):
    """The JSON text of a string, for splicing into raw lines; kept for a connection's life, so
    copied to its size (orjson's result keeps a 4 KiB buffer: 4 KiB more per idle peer)."""
    return bytes(memoryview(orjson.dumps(text)))


# --------------------------------------------------------------------------------------------
# Canonical message shapes (reference 1.2); key order as 1.0 emits them

def request(attribute, args, requester, uid=""):
    """A Manager -> peer request (``identity``, ``username``, ``password``)."""
    return {"args": list(args), "attribute": attribute, "error": False, "kwargs": {},
            "requester": requester, "uid": uid}


def result(value, requester, uid):
    return {"error": False, "requester": requester, "result": value, "uid": uid}


def error(message, requester, uid):
    """An error reply. netmgr never sends server tracebacks (reference 6.9): ``traceback`` is []."""
    return {"error": True, "message": message, "requester": requester, "result": None,
            "traceback": [], "uid": uid}


def notification(service, args, kwargs):
    return {"error": False, "result": [list(args), dict(kwargs)], "service": service,
            "uid": NOTIFICATION_UID}
