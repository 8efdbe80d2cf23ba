"""The Manager's HTTP endpoint (issue 13): metrics, health, status, the event stream, a status page.

``http = HOST:PORT`` (``--http``) starts a gevent ``WSGIServer`` with a pool of its own
(:data:`HTTPEndpoint.CONNECTIONS`: Server-Sent-Event readers count against it), beside the
Manager's TCP server, on the same hub. It is read-only: GET and HEAD, anything else is 405.

=================  ===============================================================================
``/metrics``       the Prometheus text format, written by ``prometheus_client``
                   (:mod:`netmgr.daemon.metrics`)
``/healthz``       200 and ``manager.health()`` as JSON: the event loop answered, so it is alive
``/readyz``        200, or 503 while not listening or the database cannot be written; the checks
``/api/status``    the JSON of ``netmgr status --json`` (:func:`netmgr.daemon.admin.status`)
``/api/events``    the event stream as Server-Sent Events: ``?types=peer,service``; the history
                   after ``Last-Event-ID`` (or ``?after=N``) first; ``: keepalive`` every 15 s
``/`` and files    the status page, from ``netmgr/daemon/web/`` (package data)
=================  ===============================================================================

Who may read (docs/security.md, "The HTTP endpoint"), decided once at start:

* bound to a loopback address, with no ``http_token_file`` and the Manager's ``auth`` none or
  hostname: anyone who can connect, plain HTTP; such readers get every event type but
  :data:`netmgr.daemon.events.AUDIT`;
* otherwise every request must authenticate: ``Authorization: Bearer <the first line of
  http_token_file>`` or HTTP Basic as an administrator of the users table. Beyond loopback the
  endpoint also speaks TLS with the Manager's certificate and key, and it refuses to start when
  the Manager runs without TLS or there is no way to authenticate.

Each event-stream reader has a bounded queue filled by its listener on the event bus; a reader
that lets it overflow is disconnected (it may come back with ``Last-Event-ID``), so no reader
holds more than :data:`HTTPEndpoint.QUEUE_EVENTS` events or :data:`HTTPEndpoint.QUEUE_BYTES`
of them, nor slows anyone else.
"""
import ipaddress
import os
import re
import urllib.parse

import gevent
import orjson
from gevent import socket
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer
from gevent.queue import Empty, Full, Queue
from gevent.ssl import SSLSocket

from netmgr.config import http_address
from netmgr.daemon import admin, log
from netmgr.daemon.events import AUDIT, check_types
from netmgr.daemon.httpauth import HTTPAuth
from netmgr.daemon.limits import normal_ip
from netmgr.errors import StartupError

logger = log.get_logger("netmgr.daemon.http")

#: the status page's files (package data: setup.cfg ``daemon/web/*``)
WEB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
    ".ico": "image/x-icon", ".json": "application/json", ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}
#: one file name of WEB_DIR: no directory, no leading dot (no ``..``, no hidden file)
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9]+)+$")
COMMON_HEADERS = [("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer")]
#: on the page's files: it loads nothing from elsewhere (no CDN, no inline script) and is never framed
PAGE_HEADERS = [
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; "
                                "style-src 'self' 'unsafe-inline'; object-src 'none'; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    ("X-Frame-Options", "DENY"), ("Cache-Control", "no-cache"),
]
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


class HTTPEndpoint:
    """``start()``, ``close()``, ``address``: the HTTP server of one Manager."""

    #: connections served at once, event streams included
    CONNECTIONS = 64
    #: connections an event stream may never take: /metrics and /healthz always get in
    RESERVED = 8
    #: events, and bytes of them, queued for one event-stream reader before it is disconnected
    QUEUE_EVENTS = 1024
    QUEUE_BYTES = 4 * 1024 * 1024
    #: seconds between two ``: keepalive`` comments of a quiet event stream
    KEEPALIVE = 15.0
    #: SSE ``retry:`` (ms): how soon a browser reconnects
    RETRY_MS = 2000

    def __init__(self, manager):
        self.manager = manager
        self.text = manager.cfg.http
        self.server = None
        self.auth = None
        self.tls = False
        self.readers = set()
        self._registry = None
        self._address = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def address(self):
        """``(host, port)`` actually bound (the port chosen for ``:0``); None before the start."""
        return self._address

    def start(self):
        """Bind, check that the endpoint is safe where it listens, and serve; StartupError when
        it cannot bind, or beyond loopback without TLS or without a way to authenticate."""
        from netmgr.daemon.metrics import collector_registry  # prometheus_client: only with --http

        listener = self._bind()
        try:
            loopback = is_loopback(listener.getsockname()[0])
            self.tls = not loopback
            if self.tls and self.manager.ssl_context is None:
                raise StartupError(
                    f"http = {self.text} is not a loopback address, so the HTTP endpoint needs TLS "
                    f"with the Manager's certificate, and this Manager runs without TLS "
                    f"(disable_tls): bind it to 127.0.0.1:PORT, or start the Manager with TLS")
            self.auth = HTTPAuth.configure(self.manager, self.text, loopback)
            self._registry = collector_registry(self.manager)
        except BaseException:
            listener.close()
            raise
        self.server = _Server(self, listener, self.application, spawn=Pool(self.CONNECTIONS),
                              log=None, error_log=_ErrorLog(),
                              environ={"SERVER_NAME": "netmgr"})  # no reverse DNS of the address
        self.server.start()
        self._address = host, port = listener.getsockname()[:2]
        logger.info("http_listening", host=host, port=port, tls=self.tls, auth=self.auth.describe())

    def _bind(self):
        host, port = http_address(self.text)
        try:
            family, _, _, _, address = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            raise StartupError(f"cannot listen on {self.text} (http): {exc.strerror or exc}") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise StartupError(f"cannot listen on {self.text} (http): {exc.strerror or exc}") from None
        return sock

    def close(self):
        """Stop accepting and end every connection, event streams included."""
        if self.server is None:
            return
        server, self.server = self.server, None
        server.close()
        server.pool.kill(block=True, timeout=1)

    # ------------------------------------------------------------------ requests
    def application(self, environ, start_response):
        """The WSGI application: method, then authentication, then the path."""
        method = environ["REQUEST_METHOD"]
        if method not in ("GET", "HEAD"):
            return reply(start_response, "405 Method Not Allowed", b"read-only: GET and HEAD only\n",
                         headers=[("Allow", "GET, HEAD")])
        who, denial = self.auth.check(environ)
        if denial is not None:
            status, body, headers = denial
            return reply(start_response, status, body, headers=headers, head=method == "HEAD")
        path = environ.get("PATH_INFO", "")
        route = ROUTES.get(path)
        if route is not None:
            return route(self, environ, start_response, who)
        return self.static(environ, start_response, "index.html" if path == "/" else path[1:])

    def metrics(self, environ, start_response, _who):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return reply(start_response, "200 OK", generate_latest(self._registry), CONTENT_TYPE_LATEST,
                     head=environ["REQUEST_METHOD"] == "HEAD")

    def healthz(self, environ, start_response, _who):
        return json_reply(environ, start_response, "200 OK", self.manager.health())

    def readyz(self, environ, start_response, _who):
        ready, checks = self.manager.readiness()
        return json_reply(environ, start_response, "200 OK" if ready else "503 Service Unavailable",
                          {"ready": ready, "checks": checks})

    def status(self, environ, start_response, _who):
        return json_reply(environ, start_response, "200 OK", admin.status(self.manager))

    def static(self, environ, start_response, name):
        """A file of :data:`WEB_DIR` by its bare name; anything else is 404."""
        kind = CONTENT_TYPES.get(os.path.splitext(name)[1].lower())
        path = os.path.join(WEB_DIR, name)
        body = None
        if kind is not None and _FILE_NAME.match(name) and os.path.isfile(path):
            try:
                with open(path, "rb") as f:
                    body = f.read()
            except OSError:
                body = None
        head = environ["REQUEST_METHOD"] == "HEAD"
        if body is None:
            text = ("not found: the status page is not installed (netmgr/daemon/web/index.html)\n"
                    if name == "index.html" else "not found\n")
            return reply(start_response, "404 Not Found", text.encode(), head=head)
        return reply(start_response, "200 OK", body, kind, headers=PAGE_HEADERS, head=head)

    def events(self, environ, start_response, who):
        """``/api/events``: Server-Sent Events (a generator pywsgi sends chunk by chunk)."""
        head = environ["REQUEST_METHOD"] == "HEAD"
        try:
            types, after = stream_query(environ, who is not None)
        except PermissionError as exc:
            return reply(start_response, "403 Forbidden", f"{exc}\n".encode(), head=head)
        except ValueError as exc:
            return reply(start_response, "400 Bad Request", f"{exc}\n".encode(), head=head)
        if len(self.readers) >= self.CONNECTIONS - self.RESERVED:
            return reply(start_response, "503 Service Unavailable", b"too many event streams\n",
                         headers=[("Retry-After", "5")], head=head)
        start_response("200 OK", [("Content-Type", "text/event-stream; charset=utf-8"),
                                  ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no"),
                                  *COMMON_HEADERS])
        if head:
            return []
        return self._stream(types, after, environ.get("REMOTE_ADDR"))

    def _stream(self, types, after, peer):
        bus = self.manager.events
        reader = Reader(self.QUEUE_EVENTS, self.QUEUE_BYTES)
        # subscribe, then read the history, with no yield between: nothing is lost or doubled
        bus.subscribe(reader, types)
        self.readers.add(reader)
        try:
            if after is not None and after > bus.seq:
                after = 0  # a Last-Event-ID of an earlier run: this run's numbering began again
            backlog = bus.recent(types=types, after=after) if after is not None else []
            yield b"retry: %d\n\n" % self.RETRY_MS
            for start in range(0, len(backlog), 64):  # in pieces: never the whole history at once
                yield b"".join(map(frame, backlog[start:start + 64]))
            while True:
                batch = reader.take(self.KEEPALIVE)
                yield b"".join(map(frame, batch)) if batch else b": keepalive\n\n"
        finally:
            bus.unsubscribe(reader)
            self.readers.discard(reader)
            if reader.overflowed:
                logger.info("http_events_reader_dropped", peer=peer, reason="queue overflow")


ROUTES = {"/metrics": HTTPEndpoint.metrics, "/healthz": HTTPEndpoint.healthz,
          "/readyz": HTTPEndpoint.readyz, "/api/status": HTTPEndpoint.status,
          "/api/events": HTTPEndpoint.events}


class Reader:
    """One event-stream reader: a bounded queue, and the listener the event bus calls.

    The listener runs on the hub inside ``publish``: it only enqueues. A reader behind by
    ``events`` events or ``max_bytes`` bytes of them (its socket does not take them) overflows:
    its greenlet is killed, which closes the connection and unsubscribes it. The queue holds the
    bus's own event objects, shared with the history and every other reader.
    """

    __slots__ = ("queue", "greenlet", "overflowed", "queued", "max_bytes")

    def __init__(self, events, max_bytes):
        self.queue = Queue(events)
        self.greenlet = gevent.getcurrent()
        self.overflowed = False
        self.queued = 0  # bytes of the queued events' JSON
        self.max_bytes = max_bytes

    def __call__(self, event):
        size = len(event.json)
        if self.overflowed:
            return
        if self.queued + size <= self.max_bytes or not self.queued:  # one event of any size fits
            try:
                self.queue.put_nowait(event)
                self.queued += size
                return
            except Full:
                pass
        self.overflowed = True
        if self.greenlet is not gevent.getcurrent():
            self.greenlet.kill(block=False)

    def take(self, timeout, most=64):
        """The queued events (at least one, at most ``most``), or [] after ``timeout`` seconds."""
        try:
            batch = [self.queue.get(timeout=timeout)]
        except Empty:
            return []
        while len(batch) < most and not self.queue.empty():
            batch.append(self.queue.get_nowait())
        self.queued -= sum(len(event.json) for event in batch)
        return batch


def frame(event):
    """One event as Server-Sent Events: ``id``, ``event`` (its type), ``data`` (its JSON)."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, event.type.encode(), event.json)


def stream_query(environ, authenticated):
    """``(types, after)`` of an event-stream request; ValueError for a bad value, PermissionError
    for an audit type asked for without authentication."""
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    names = [n.strip() for v in query.get("types", ()) for n in v.split(",") if n.strip()]
    allowed = check_types(None) if authenticated else check_types(None) - AUDIT
    if names:
        types = check_types(names)
        hidden = sorted(types - allowed)
        if hidden:
            raise PermissionError(f"the event types {', '.join(map(repr, hidden))} need "
                                  f"authentication; without it: {', '.join(sorted(allowed))}")
    else:
        types = allowed
    text = environ.get("HTTP_LAST_EVENT_ID") or (query.get("after") or [None])[-1]
    if text is None or text == "":
        return types, None
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"Last-Event-ID and after must be an event's seq (an integer >= 0), got {text!r}")
    return types, int(text)


def reply(start_response, status, body, content_type=TEXT, headers=(), head=False):
    """A whole answer; HEAD gets its headers only. Not cached unless ``headers`` say otherwise."""
    if not any(name == "Cache-Control" for name, _ in headers):
        headers = [("Cache-Control", "no-store"), *headers]
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                            *COMMON_HEADERS, *headers])
    return [] if head else [body]


def json_reply(environ, start_response, status, value):
    try:
        body = orjson.dumps(value, default=str, option=orjson.OPT_APPEND_NEWLINE)  # NaN: null
    except TypeError:  # an integer beyond 64 bits in a Service's attributes: strings, for browsers
        body = orjson.dumps(_big_ints_as_strings(value), default=str, option=orjson.OPT_APPEND_NEWLINE)
    return reply(start_response, status, body, JSON, head=environ["REQUEST_METHOD"] == "HEAD")


def _big_ints_as_strings(value):
    if type(value) is dict:
        return {k: _big_ints_as_strings(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return [_big_ints_as_strings(v) for v in value]
    if type(value) is int and not -2 ** 63 <= value < 2 ** 64:
        return str(value)
    return value


def is_loopback(ip):
    """Whether a bound address is a loopback one (``::ffff:127.0.0.1`` too)."""
    try:
        return ipaddress.ip_address(normal_ip(ip).split("%")[0]).is_loopback
    except ValueError:
        return False


class _Server(WSGIServer):
    """pywsgi with a deadline per blocking socket call, and TLS when beyond loopback.

    TLS uses the Manager's own ``ssl.SSLContext``, read at each connection so that a reload's
    new certificate applies: gevent's ``SSLSocket`` accepts any context through ``_context``
    (``ssl_context=`` would need a ``gevent.ssl.SSLContext`` built once from the files).
    """

    def __init__(self, endpoint, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.endpoint = endpoint

    def handle(self, sock, address):
        manager = self.endpoint.manager
        # one deadline for the TLS handshake, each read of a request and each send: a peer that
        # stalls is closed (a quiet event stream waits on its queue, not on the socket)
        sock.settimeout(manager.cfg.write_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self.endpoint.tls:
            return super().handle(sock, address)
        try:
            tls = SSLSocket(sock=sock, server_side=True, _context=manager.ssl_context)
        except OSError:  # ssl.SSLError, a timeout, a reset: nothing was served
            return None
        try:
            return super().handle(tls, address)
        finally:
            tls.close()


class _ErrorLog:
    """pywsgi's ``error_log``: a client's bad request is one event, not a line on stderr."""

    def write(self, text):
        text = text.strip()
        if text:
            logger.info("http_bad_request", error=text)

    def flush(self):
        pass
