"""Framing for the client libraries: :class:`netmgr.protocol.LineReader` with a per-message limit.

This module performs no I/O. The Manager's reader stops a stream at the first line longer than
its limit; a Client or Service must instead fail only the message that was too long, so
:class:`Lines` lets :class:`~netmgr.protocol.LineReader` split the stream (with no limit) and
applies ``read_limit`` itself: an oversized line is discarded as its bytes arrive, the lines
around it are kept, and a :class:`TooLong` marker takes its place so that the reader can fail
the request it belonged to.
"""
import re
import sys

from netmgr.protocol import LineReader, loads

#: bytes of an oversized line that are kept to find its ``uid`` and ``requester``
TAIL_SIZE = 4096

_split = LineReader.feed


class TooLong:
    """An input line longer than ``read_limit``: its size and its last bytes (for the uid)."""

    __slots__ = ("size", "tail")

    def __init__(self, size, tail):
        self.size = size
        self.tail = tail

    _uid = re.compile(rb'"uid"\s*:\s*"((?:[^"\\]|\\.)*)"')
    _requester = re.compile(rb'"requester"\s*:\s*"((?:[^"\\]|\\.)*)"')

    def field(self, name):
        """The last ``"name": "value"`` string found in the kept tail, or None."""
        found = (self._uid if name == "uid" else self._requester).findall(self.tail)
        if not found:
            return None
        try:
            return loads(b'"' + found[-1] + b'"')
        except ValueError:
            return None


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
