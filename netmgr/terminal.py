"""What a person or a LabVIEW VI types at a terminal, and what may be shown on one.

:func:`parse_terminal_input` is msl-network 1.0's parser of terminal syntax (reference 1.13),
quirks included, in time linear in the line's length; :func:`printable` escapes what a terminal
must not be sent raw. This module performs no I/O and imports nothing of netmgr.
"""
import ast
import re

#: The longest terminal-syntax line the Manager parses, in bytes. Terminal syntax is typed by a
#: person or a LabVIEW VI, so a few KiB is plenty; JSON lines keep the large read limit. Even
#: linear, ``ast.literal_eval`` costs ~1.4 s and ~250 MB per MB of ``[1,1,…]`` (issue 10, #3).
MAX_TERMINAL_LINE = 16 * 1024

_DISCONNECT = "__disconnect__"  # protocol.DISCONNECT_REQUEST (this module imports no netmgr)

# --------------------------------------------------------------------------------------------
# The tokens of 1.0's two regexes, found in linear time (issue 10, finding 3).
#
# 1.0 runs ``finditer`` with ``\s*([^"\s]+|"[^"]*")`` (args) and
# ``(\w+)\s*=\s*([^"\s]+|"[^"]*")`` (kwargs). Both backtrack quadratically: the kwargs regex
# retries at every character of a run of word characters (``x y `` + 65,000 × ``a``: 23-33 s),
# and the args regex rescans a run of spaces before an unclosed quote from each of its spaces.
#
# _ARG drops the leading ``\s*``: a token never starts with white space, so ``findall`` skips
# each space in O(1) and yields the same tokens. An unclosed ``"`` fails once, scanning to the
# end, and then no quote is left to scan for.
#
# _KWARG adds ``\b``. A match of 1.0's regex can only start where a run of word characters
# starts (``\w+`` is greedy and ``\w``, ``\s``, ``=`` and ``"`` are disjoint, so a key is a
# whole run), and ``finditer`` never resumes inside a run (a match ends at white space, a quote
# or after a closing quote). So the matches are the same, but inside a run ``\b`` fails at once.
# An attempt costs the length of its run (``\w+`` gives back one character at a time, each
# failing at once) and of what it scans past the key (spaces, ``=``, a value), which no other
# attempt scans. Both regexes scan an unclosed quote to the end once: no quote is left after it.
_ARG = re.compile(r'[^"\s]+|"[^"]*"')
_KWARG = re.compile(r'\b(\w+)\s*=\s*([^"\s]+|"[^"]*")')

#: results that may be shared by equal tokens of one line (a repeated token is converted once)
_IMMUTABLE = (bool, int, float, complex, str, bytes, type(None))


def _convert_value(val):
    val_ = val.lower()
    if val_ == "false":
        return False
    if val_ == "true":
        return True
    if val_ in ("null", "none"):
        return None
    try:
        return ast.literal_eval(val)
    except Exception:  # noqa: BLE001 -- 1.0 keeps the raw token on any failure
        return val


_UNSEEN = object()


def _convert(tokens, seen):
    """1.0's ``convert_value`` of each token; ``seen`` caches immutable results by token."""
    values = []
    for token in tokens:
        value = seen.get(token, _UNSEEN)
        if value is _UNSEEN:
            value = _convert_value(token)
            if type(value) in _IMMUTABLE:
                seen[token] = value
        values.append(value)
    return values


def _terminal_request(service, attribute, args, kwargs):
    return {"service": service, "attribute": attribute, "args": args, "kwargs": kwargs,
            "uid": "", "error": False}


def _parameters(rest):
    """``(args, kwargs)`` of the text after the attribute, as 1.0 computes them.

    1.0 converts every token as an arg, then, if there is a kwarg, re-tokenises the args from the
    text before the first occurrence of the first kwarg's *key* (``ax x=1`` gives ``['a']``).
    The discarded first conversion has no effect, so it is skipped.
    """
    seen = {}
    pairs = _KWARG.findall(rest)
    if pairs:
        rest = rest[:rest.find(pairs[0][0])]  # 1.0: rest.split(key)[0]
    args = _convert(_ARG.findall(rest), seen)
    kwargs = {}
    for key, value in pairs:
        kwargs[key] = _convert((value,), seen)[0]
    return args, kwargs


def parse_terminal_input(line):
    """Parse a line of terminal text into a request or identity dict, or None.

    Exactly 1.0's ``parse_terminal_input``, quirks included, because LabVIEW VIs and terminal
    users type it: the table in tests/core/test_protocol.py is the contract. Time is linear in
    ``len(line)``; the caller still caps a line at :data:`MAX_TERMINAL_LINE`.
    """
    line = line.strip()
    lower = line.lower()
    if lower == "identity":
        return _terminal_request("Manager", "identity", [], {})
    if lower.startswith("client"):
        values = line.split()
        name = "Client" if len(values) == 1 else " ".join(values[1:])
        return {"type": "client", "name": name.replace('"', ""), "language": "unknown",
                "os": "unknown", "error": False}
    if lower in (_DISCONNECT, "disconnect", "exit"):
        return _terminal_request("self", _DISCONNECT, [], {})
    if lower.startswith("link"):
        return _terminal_request("Manager", "link", [line[4:].strip().replace('"', "")], {})

    line = line.replace("'", '"')
    if line.startswith('"'):
        parts = line.split('"', maxsplit=2)
        items = [item.strip() for item in parts if item.strip()]
        if len(items) > 1:
            items = [items[0]] + items[1].split(None, maxsplit=1)
    else:
        items = line.split(None, maxsplit=2)
    if len(items) < 2:
        return None

    service = items[0].replace('"', "")
    attribute = items[1].replace('"', "")
    if len(items) == 2:
        return _terminal_request(service, attribute, [], {})
    args, kwargs = _parameters(items[2])
    return _terminal_request(service, attribute, args, kwargs)


# --------------------------------------------------------------------------------------------
# Display

def _escape(char):
    return repr(char)[1:-1]  # \x1b, \t, \x9b, \u2028, \U000e0001, \ud800


def printable(text):
    """``text`` with each non-printable character escaped as Python writes it (``\\x1b``,
    ``\\u2028``, ``\\u202e``), for a log line or a terminal (issue 10, finding 8).

    Printable text, backslashes included, is returned unchanged: this is defence in depth for
    display, not a reversible encoding.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)
