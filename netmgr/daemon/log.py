"""structlog configuration, and the journal's native protocol for it under systemd.

Events are ``snake_case`` names with key=value fields (STYLE.md rule 8), rendered as
``<time> [<level>] <event> k=v …`` on a terminal or in a file, and as one JSON object per line
when ``json=True``. The start-up line keeps 1.0's text because harnesses match its suffix:
``Network Manager running on <host>:<port> (TLS ENABLED|DISABLED)``.

Under systemd (``$JOURNAL_STREAM`` names the very stream stdout is) events go to the journal
by its native protocol, one field per key, so ``journalctl -u netmgr -o json`` shows ``EVENT=``,
``PEER=`` …; when the journal's socket is missing they fall back to JSON lines on stdout.
The log file keeps the text format. ``netmgr start`` holds the file's events until the Manager
is running (:func:`open_file`: a start that fails creates no log file and appends nothing to an
existing one), and SIGHUP opens it again by its name (:func:`reopen`, after logrotate renamed it).

What would reach stderr raw, a traceback, becomes one WARNING event with the error and, at DEBUG,
the traceback: :func:`log_exception`, and :func:`log_hub_errors` for greenlets that die of one.

A peer chooses some of what is logged (a name, an error text), so no rendering writes a
non-printable character raw (issue 10, finding 8): the text format and the journal's MESSAGE=
escape it as Python does (``\x1b``, ``\u2028``), JSON lines as ``\u001b`` (the same value to
a JSON reader). The journal's own fields keep the exact value: journald stores any bytes, and
``journalctl`` shows a field that is not printable as a blob.
"""
import errno
import fcntl
import logging
import os
import re
import socket
import struct
import sys
import traceback
from json import dumps as _ascii_json, loads as _stdlib_loads

import orjson
import structlog

from netmgr.config import parse_level
from netmgr.terminal import printable

LOGGER_NAME = "netmgr"


def _render_text(_, __, event_dict):
    timestamp = event_dict.pop("timestamp", "")
    level = event_dict.pop("level", "info").upper()
    return f"{timestamp} [{level:<7}] " + _message(event_dict)


def _field(key, value):
    # repr() of a string already escapes what is not printable
    text = repr(value) if isinstance(value, str) and " " in value else printable(str(value))
    return f"{printable(str(key))}={text}"


def _message(event_dict):
    """``<event> k=v …`` of an event without its time and level, non-printables escaped."""
    event = printable(str(event_dict.pop("event", "")))
    fields = " ".join(_field(k, v) for k, v in event_dict.items())
    return event + (f" {fields}" if fields else "")


def _json_escape(char):
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xd800 + (code >> 10):04x}\\u{0xdc00 + (code & 0x3ff):04x}"


def json_line(event_dict):
    """One event as a JSON line. orjson escapes only C0 controls: what else is not printable
    (DEL, C1, U+2028, bidi controls) can appear only inside strings, where ``\\uXXXX`` is the
    same value to a JSON reader."""
    try:
        text = orjson.dumps(event_dict, default=str).decode()
    except TypeError:  # a lone surrogate: UTF-8 cannot hold it, an ASCII escape can
        return _ascii_json(event_dict, default=str)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _json_escape(c) for c in text)


def _render_json(_, __, event_dict):
    return json_line(event_dict)


# ------------------------------------------------------------------------------------ journal
JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_IDENTIFIER = "netmgr"
#: syslog priorities of the log levels (sd-journal's PRIORITY=)
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3,
              "critical": 2, "fatal": 2}
#: fields this module sets itself; an event key of the same name is sent as NETMGR_<KEY>
_OWN_FIELDS = {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "EVENT", "TIMESTAMP", "LEVEL"}
_NOT_FIELD = re.compile(r"[^A-Z0-9_]")


def journal_stream_is_stdout(environ=None, stream=None):
    """True when systemd connected ``stream`` (stdout) to the journal (systemd.exec(5)).

    ``$JOURNAL_STREAM`` is ``<device>:<inode>`` of that stream; a child whose stdout was
    redirected inherits the variable but not the stream, so both are compared.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat((stream or sys.stdout).fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def journal_field_name(key):
    """A journal field name for an event key: ``peer`` -> ``PEER``, ``tls-version`` -> ``TLS_VERSION``."""
    name = _NOT_FIELD.sub("_", str(key).upper()).lstrip("_0123456789")[:64] or "FIELD"
    return f"NETMGR_{name}"[:64] if name in _OWN_FIELDS else name


def journal_fields(event_dict, message):
    """``[(NAME, value), …]`` of one event: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, EVENT, its keys."""
    fields = dict(event_dict)
    fields.pop("timestamp", None)  # the journal stamps every entry itself
    level = str(fields.pop("level", "info")).lower()
    event = fields.pop("event", "")
    out = [("MESSAGE", message), ("PRIORITY", str(PRIORITIES.get(level, 6))),
           ("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER), ("EVENT", str(event))]
    for key, value in fields.items():
        if not isinstance(value, str):
            value = orjson.dumps(value, default=str).decode() if isinstance(value, (dict, list)) \
                else str(value)
        out.append((journal_field_name(key), value))
    return out


def journal_payload(fields):
    """The native protocol: ``NAME=value\\n``, or ``NAME\\n<le64 size><value>\\n`` for a
    value with a newline (systemd's JOURNAL_NATIVE_PROTOCOL)."""
    parts = []
    for name, value in fields:
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            parts.append(name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(name.encode() + b"=" + data + b"\n")
    return b"".join(parts)


def _event_of(line):
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:  # a lone surrogate, escaped by json_line's fallback
        return _stdlib_loads(line)


class JournalHandler(logging.Handler):
    """Sends each event to journald as one datagram; JSON lines on ``fallback`` without it."""

    def __init__(self, address=None, fallback=None):
        super().__init__()
        self.address = address or JOURNAL_SOCKET
        self.fallback = fallback or sys.stdout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def emit(self, record):
        try:
            event_dict = _event_of(self.format(record))  # the JSON renderer's event
            message = _message({k: v for k, v in event_dict.items()
                                if k not in ("timestamp", "level")})
            self.send(journal_payload(journal_fields(event_dict, message)), event_dict)
        except Exception:  # noqa: BLE001 -- logging must never take the Manager down
            self.handleError(record)

    def send(self, payload, event_dict):
        try:
            self._sock.sendto(payload, self.address)
        except OSError as exc:
            if exc.errno in (errno.EMSGSIZE, errno.ENOBUFS):
                self._send_memfd(payload)
            else:  # no journal (a container without journald, a test): keep the event on stdout
                self.fallback.write(json_line(event_dict) + "\n")
                self.fallback.flush()

    def _send_memfd(self, payload):
        """A large entry goes as a sealed memfd passed with SCM_RIGHTS, as sd_journal_sendv()."""
        fd = os.memfd_create("netmgr-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, payload)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                        | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
            self._sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))],
                               0, self.address)
        finally:
            os.close(fd)

    def close(self):
        self._sock.close()
        super().close()


# ------------------------------------------------------------------------------------ log file

class LogFile(logging.FileHandler):
    """The log file, appended to. With ``hold=True`` nothing is written, nor the file created,
    until :meth:`open`: the events are kept until then."""

    def __init__(self, path, hold=False):
        super().__init__(path, mode="a", encoding="utf-8", delay=hold)
        self.held = [] if hold else None

    def emit(self, record):
        if self.held is None:
            super().emit(record)
        else:
            self.held.append(record)

    def open(self):
        """Open the file (OSError if it cannot be) and write the events held until now."""
        with self.lock:
            if self.held is None:
                return
            self.stream = self._open()
            held, self.held = self.held, None
            for record in held:
                super().emit(record)

    def reopen(self):
        """Open the file again by its name: logrotate has renamed the one written until now."""
        if self.held is None:
            old = self.setStream(self._open())
            if old is not None:
                old.close()


def _log_files():
    return [h for h in logging.getLogger(LOGGER_NAME).handlers if isinstance(h, LogFile)]


def open_file():
    """Start writing the held log file (``configure(hold=True)``); OSError if it cannot be opened."""
    for handler in _log_files():
        handler.open()


def reopen():
    """Open the log file again by its name (SIGHUP, after logrotate renamed it): the events that
    follow go to a new file at the configured path. One that cannot be opened keeps the old one."""
    for handler in _log_files():
        try:
            handler.reopen()
        except OSError as exc:
            get_logger().warning("log_file_reopen_failed", path=handler.baseFilename,
                                 error=exc.strerror or str(exc))


# ------------------------------------------------------------------------------------ exceptions

def log_exception(event, exc_info, logger=None, **fields):
    """``exc_info`` (type, value, traceback) as one WARNING event ``event error=<Type>: <text>``
    and, at DEBUG, a ``traceback`` event: a traceback reaches the log, never raw stderr."""
    kind, value, tb = exc_info
    logger = logger or get_logger()
    logger.warning(event, error=f"{kind.__name__}: {value}" if value is not None else kind.__name__,
                   **fields)
    text = "".join(traceback.format_exception(kind, value, tb)).rstrip("\n")
    logger.debug("traceback", traceback=text)


def log_hub_errors(hub):
    """Make gevent's `hub` log what it prints on stderr: a greenlet or callback that died of an
    exception becomes ``unhandled_error error=… where=<greenlet>`` (and the traceback at DEBUG)."""
    def print_exception(context, kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            return  # thrown into the main greenlet, which reports it ("Aborted!", exit 130)
        try:
            where = context if isinstance(context, str) or context is None \
                else hub.format_context(context)
            log_exception("unhandled_error", (kind, value, tb), where=where)
        except Exception:  # noqa: BLE001 -- the hub's handler must never raise: gevent's own way
            type(hub).print_exception(hub, context, kind, value, tb)

    hub.print_exception = print_exception


def _formatter(renderer):
    return structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[structlog.stdlib.add_log_level,
                           structlog.processors.TimeStamper(fmt="iso", utc=False)],
    )


def configure(level="INFO", log_file=None, json=False, stream=None, journal=None, hold=False):
    """Send netmgr's events to ``stream`` (stdout) and, if given, ``log_file``.

    ``journal``: True sends the stream's events to journald instead, None does so when
    :func:`journal_stream_is_stdout`; the log file is unaffected. ``hold``: the log file is
    opened by :func:`open_file` only, its events kept until then.
    """
    formatter = _formatter(_render_json if json else _render_text)
    if journal is None:
        journal = stream is None and not json and journal_stream_is_stdout()
    root = logging.getLogger(LOGGER_NAME)
    for old in root.handlers:
        old.close()
    root.handlers.clear()
    root.propagate = False
    if journal:
        handler = JournalHandler(fallback=stream)
        handler.setFormatter(_formatter(_render_json))
    else:
        handler = logging.StreamHandler(stream or sys.stdout)
        handler.setFormatter(formatter)
    root.addHandler(handler)
    if log_file:
        file_handler = LogFile(log_file, hold=hold)
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    root.setLevel(parse_level(level))
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=False),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def set_level(level):
    logging.getLogger(LOGGER_NAME).setLevel(parse_level(level))
    return True


def get_logger(name=LOGGER_NAME):
    return structlog.get_logger(name)
