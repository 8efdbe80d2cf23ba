"""What a line from an identified peer means, and what must be sent because of it.

This module performs no I/O and imports neither gevent nor sockets (STYLE.md rule 1). Given
the registry, the sender's record and the received line (raw bytes, and the parsed message),
:func:`route` decides, and returns the effects the way :meth:`Registry.remove
<netmgr.daemon.registry.Registry.remove>` does: ``[(handle, bytes), …]`` for the caller to
deliver, in order. Reference: 1.6 (dispatch), 1.8 (requests), 1.9 (replies and
notifications), 1.13 (terminal syntax), and the 1.0 flaws 6.1-6.3 it closes.

The hot path never re-serialises a payload: a request gets ``,"requester":"<name>"}`` spliced
onto the received bytes, and a canonical reply or notification is forwarded as received.
"""
import codecs
import json
from typing import Union

import msgspec

from netmgr import protocol
from netmgr.daemon.registry import Client, Service
from netmgr.errors import Refused, error_text
from netmgr.protocol import (CRLF, DISCONNECT_REQUEST, NOTIFICATION_UID, REPLY_KEYS, dumps, loads,
                             loads_exact)

#: what :func:`route` tells the session to do besides delivering the effects
MANAGER = "manager"  # serve ``data`` as a Manager request (netmgr.daemon.attributes)
DISCONNECT = "disconnect"  # the peer asked to close its connection
DROPPED = "dropped"  # a reply nobody asked for (not in flight, or no requester/uid): logged

_NOTIFICATION_KEYS = frozenset(("error", "result", "service", "uid"))
_NOT_AN_OBJECT = error_text("TypeError", "a message must be a JSON object")


def _error(record, message, uid):
    return record.handle, dumps(protocol.error(message, record.name, uid))


#: what :func:`envelope` keeps of a large message's values (the rest routing never reads)
_ENVELOPE_STRINGS = ("uid", "service", "attribute", "requester")
LARGE = object()  # stands for a value :func:`envelope` left out
#: a line at least this long is forwarded as pieces (Output.send takes a tuple), not copied
LARGE_LINE = 64 * 1024


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """The keys of the 1.0 message shapes; the payload stays unparsed (``msgspec.Raw``)."""

    service: Union[str, msgspec.UnsetType] = msgspec.UNSET
    attribute: Union[str, msgspec.UnsetType] = msgspec.UNSET
    uid: Union[str, msgspec.UnsetType] = msgspec.UNSET
    requester: Union[str, msgspec.UnsetType] = msgspec.UNSET
    error: Union[bool, msgspec.UnsetType] = msgspec.UNSET
    message: Union[str, msgspec.UnsetType] = msgspec.UNSET
    traceback: Union[msgspec.Raw, msgspec.UnsetType] = msgspec.UNSET
    args: Union[msgspec.Raw, msgspec.UnsetType] = msgspec.UNSET
    kwargs: Union[msgspec.Raw, msgspec.UnsetType] = msgspec.UNSET
    result: Union[msgspec.Raw, msgspec.UnsetType] = msgspec.UNSET


_decode_envelope = msgspec.json.Decoder(_Envelope).decode


def decode_envelope(line):
    """The :func:`envelope` of a large line without building its payload's objects.

    msgspec validates the whole line but keeps the payload (``args``, ``kwargs``, ``result``) as
    unparsed slices: a 100 MB request costs ~1x its size, where a full parse holds it ~3x
    (orjson copies its input, then builds the payload). A line of another shape (unknown keys,
    a non-string uid, NaN …) is parsed in full by ``full(line)``: rare, and routed the same.
    """
    try:
        decoded = _decode_envelope(line)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None  # the full parse says what is wrong (NestingTooDeep for deep lines)
    out = {}
    for key in _Envelope.__struct_fields__:
        value = getattr(decoded, key)
        if value is msgspec.UNSET:
            continue
        if type(value) is msgspec.Raw:
            value = [] if key == "traceback" and memoryview(value)[:1] == b"[" else LARGE
        elif key == "message":
            value = ""
        out[key] = value
    return out


def decode(line):
    """What routing reads of `line`: its envelope, without the payload's objects.

    msgspec's envelope decoder first; a line of another shape (unknown keys, a non-string uid,
    not JSON …) is parsed in full and reduced the same way, so that it is routed (or refused,
    ``ValueError``) exactly as a full parse would have it.
    """
    found = decode_envelope(line)
    if found is None:
        return envelope(loads(line))
    if not line.isascii():
        check_utf8(line)  # msgspec skips a payload's string bytes unchecked; orjson refuses bad UTF-8
    return found


def check_utf8(line, piece=1 << 20):
    """UnicodeDecodeError (a ValueError) unless `line` is UTF-8; piece by piece, so a large line
    never becomes a str of its size."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(line)
    for start in range(0, len(view), piece):
        decoder.decode(view[start:start + piece])
    decoder.decode(b"", final=True)


def envelope(data):
    """What routing reads of a parsed message, without its payload.

    The Manager parses a large line in a worker thread and keeps only this, so the payload's
    Python objects never outlive the parse: the key set, the envelope strings, ``error`` and the
    types of ``message`` and ``traceback``. Paths that need more re-parse the line.
    """
    if type(data) is not dict:
        return None
    out = dict.fromkeys(data, LARGE)
    for key in _ENVELOPE_STRINGS:
        value = data.get(key)
        if type(value) is str:  # any length: a long uid is routed as a full parse routes it
            out[key] = value
    if type(data.get("error")) is bool:
        out["error"] = data["error"]
    if type(data.get("message")) is str:
        out["message"] = ""
    if type(data.get("traceback")) is list:
        out["traceback"] = []
    return out


def terminal(line):
    """Terminal text (reference 1.13) as a message: ``(data, None)``, or ``(None, error text)``."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, error_text("UnicodeDecodeError", str(exc))
    data = protocol.parse_terminal_input(text)
    if data is not None and "type" not in data:
        return data, None
    # 1.0 answers with the JSON decoder's words (and crashed on a stray ``client`` line)
    try:
        json.loads(text)
    except RecursionError:
        return None, f"ValueError: JSON nested deeper than {protocol.MAX_NESTING} levels"
    except ValueError as exc:
        return None, f"JSONDecodeError: {exc}"
    return None, _NOT_AN_OBJECT


def route(registry, record, line, data, raw):
    """``(verdict, effects)`` for one message of the peer ``record``.

    ``data`` is the parsed message, ``raw`` whether ``line`` is its JSON text (False for
    terminal syntax). ``verdict`` is None, :data:`MANAGER`, :data:`DISCONNECT` or :data:`DROPPED`.
    """
    if type(data) is not dict:
        return None, [_error(record, _NOT_AN_OBJECT, "")]
    if "result" in data:
        effects = from_service(registry, record, line, data)
        return (DROPPED, ()) if effects is None else (None, effects)
    uid = data.get("uid", "")
    service = data.get("service")
    attribute = data.get("attribute")
    if type(uid) is not str:
        return None, [_error(record, error_text("TypeError", "'uid' must be a string"), "")]
    if type(service) is not str or type(attribute) is not str:
        missing = "service" if type(service) is not str else "attribute"
        return None, [_error(record, error_text("KeyError", missing), uid)]
    if service == "Manager":
        return MANAGER, ()
    if attribute == DISCONNECT_REQUEST:
        return DISCONNECT, ()
    return None, forward(registry, record, line if raw else None, data, service, uid)


def forward(registry, record, line, data, service_name, uid):
    """A request for a Service (reference 1.8), with ``requester`` set to the sender."""
    if type(record) is not Client:
        return [_error(record, error_text("PermissionError", "a Service cannot send requests to "
                                                             "another Service"), uid)]
    if uid == NOTIFICATION_UID:
        return [_error(record, error_text("ValueError", f"a request uid cannot be {uid!r}"), uid)]
    try:
        target = registry.route_request(record, service_name, uid)
    except Refused as exc:
        registry.emit("request_failed", "refused", service=service_name, requester=record.name,
                      uid=uid, message=exc.message)
        return [_error(record, exc.message, uid)]
    if line is not None and "requester" not in data:
        # splice the requester into the received text: no re-serialisation of the payload
        body = line.rstrip() if line[-1:].isspace() else line  # a large line is a bytearray: no copy
        tail = b"".join((b',"requester":', record.name_json, b"}\r\n"))
        if len(body) >= LARGE_LINE:  # the pieces, not a copy of the whole
            return [(target.handle, (memoryview(body)[:-1], tail))]
        return [(target.handle, body[:-1] + tail)]
    if line is not None:
        data = loads_exact(line)  # re-serialised: keep big integers exact
    data["requester"] = record.name
    try:
        out = dumps(data)
    except TypeError as exc:  # e.g. a terminal ``3+4j`` or ``{1,2}``
        registry.route_reply(target, record.name, uid)  # it will never be answered
        return [_error(record, error_text("TypeError", str(exc)), uid)]
    return [(target.handle, out)]


def from_service(registry, record, line, data):
    """A reply or notification (reference 1.9): only from a Service, only for its own.

    None when a reply is dropped: it has no requester or uid, or is not in flight (6.2).
    """
    uid = data.get("uid")
    if type(record) is not Service:
        return [_error(record, error_text("PermissionError", "a Client cannot send replies or "
                                                             "notifications"),
                       uid if type(uid) is str else "")]
    if uid == NOTIFICATION_UID:
        return _notification(registry, record, line, data)
    requester = data.get("requester")
    if type(requester) is not str or type(uid) is not str:
        return None
    client = registry.route_reply(record, requester, uid)
    if client is None:
        return None  # a forged or repeated reply
    if data.get("error") is True:
        record.stats.errors += 1
    if is_canonical_reply(data):
        return [(client.handle, _with_crlf(line))]
    return [(client.handle, dumps(rebuild_reply(loads_exact(line))))]


def _notification(registry, record, line, data):
    record.stats.notifications += 1
    clients = registry.subscribers(record)
    if not clients:
        return []
    if data.get("service") == record.name and data.keys() <= _NOTIFICATION_KEYS:
        out = _with_crlf(line)  # one object for every Client: queued, never copied
    else:  # the Manager, not the message, says who emitted it (reference 6.3)
        out = dumps({"error": False, "result": loads_exact(line).get("result"),
                     "service": record.name, "uid": NOTIFICATION_UID})
    return [(client.handle, out) for client in clients]


def _with_crlf(line):
    """The line as sent: one bytes object, or for a large line the line and CRLF as pieces."""
    return (line, CRLF) if len(line) >= LARGE_LINE else line + CRLF


def is_canonical_reply(data):
    """Whether a reply can be forwarded as received: only reply keys, a well-formed error."""
    if not data.keys() <= REPLY_KEYS:
        return False
    err = data.get("error", False)
    if err is False:
        return True
    return err is True and type(data.get("message")) is str and type(data.get("traceback", [])) is list


def rebuild_reply(data):
    """A canonical reply with the content of a reply that is not."""
    if data.get("error"):
        message = data.get("message")
        return protocol.error(message if type(message) is str else "RuntimeError: the Service "
                              "sent an error without a message", data["requester"], data["uid"])
    return protocol.result(data.get("result"), data["requester"], data["uid"])
