"""The HTTP endpoint (``--http``) of real Managers: metrics, health, status, the event stream as
Server-Sent Events, the status page's files, read-only, and who may read it (issue 13).

The endpoint's port is read from the ``http_listening host=… port=…`` start-up event, as the
Manager's own from its ``Network Manager running on …`` line. Every wait is on a line, an event or
a closed connection, never on a sleep.
"""
import base64
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import netmgr_argv
from rawpeer import RawPeer, wait_until

pytestmark = pytest.mark.usefixtures("watchdog")
TEST_DEADLINE = 300

LISTENING = re.compile(r"http_listening host=(\S+) port=(\d+)")
TOKEN = "0123456789abcdef0123456789abcdef"
ADMIN_PW, USER_PW = "admin-secret", "user-secret"


def http_port(mgr):
    return int(LISTENING.search(mgr.output).group(2))


def start_http(netmgr_factory, *args, bind="127.0.0.1:0", **kwargs):
    """A Manager with ``--http bind`` and its HTTP port."""
    mgr = netmgr_factory("--http", bind, *args, **kwargs)
    return mgr, http_port(mgr)


def get(port, path, method="GET", headers=None, context=None):
    """``(status, headers, body)`` of one request (HTTPS with ``context``)."""
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def raw_get(port, target):
    """The status code of a request line sent as it is (no client normalises ``/../``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split()[1])


class EventStream:
    """An ``/api/events`` reader: :meth:`next` returns ``(id, type, data)`` of each event."""

    def __init__(self, port, query="", headers=None, context=None):
        cls = http.client.HTTPConnection if context is None else http.client.HTTPSConnection
        kwargs = {} if context is None else {"context": context}
        self.conn = cls("127.0.0.1", port, timeout=10, **kwargs)
        self.conn.request("GET", "/api/events" + query, headers=headers or {})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        if self.status == 200:
            assert self.resp.headers["Content-Type"].startswith("text/event-stream")
            assert self._block() == {"retry": "2000"}  # sent once subscribed: ready

    def _block(self):
        fields = {}
        while True:
            line = self.resp.readline()
            assert line, "the stream ended"
            line = line.decode().rstrip("\n")
            if not line:
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                continue  # a comment (keepalive)
            name, _, value = line.partition(": ")
            fields[name] = value

    def next(self):
        fields = self._block()
        return int(fields["id"]), fields["event"], json.loads(fields["data"])

    def until(self, predicate):
        """The events up to and including the first for which ``predicate(type, data)`` holds."""
        seen = []
        while True:
            seen.append(self.next())
            if predicate(seen[-1][1], seen[-1][2]):
                return seen

    def close(self):
        self.conn.close()


# ---------------------------------------------------------------------------- loopback, no auth

def test_health_readiness_and_status(netmgr_factory):
    mgr, port = start_http(netmgr_factory)
    status, headers, body = get(port, "/healthz")
    assert status == 200 and headers["Content-Type"] == "application/json"
    health = json.loads(body)
    assert health["status"] == "ok" and set(health["checks"]) >= {"event_loop", "database", "listening"}
    status, _, body = get(port, "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    service = RawPeer(mgr.port).handshake_service("Echo", attributes={"echo": "(x)"}, max_clients=3)
    wait_until(lambda: "Echo" in json.loads(get(port, "/api/status")[2])["services"], what="Echo in status")
    report = json.loads(get(port, "/api/status")[2])
    assert report["manager"].startswith("Manager[")
    assert report["services"]["Echo"]["attributes"] == {"echo": "(x)"}
    assert report["services"]["Echo"]["max_clients"] == 3
    assert "totals" in report and "clients" in report
    service.close()


def test_metrics_parse_with_prometheus_clients_own_parser(netmgr_factory):
    mgr, port = start_http(netmgr_factory)
    service = RawPeer(mgr.port).handshake_service("Echo")
    client = RawPeer(mgr.port).handshake_client()
    assert client.call("Manager", "link", "Echo")["error"] is False
    for i in range(3):
        uid = client.request("Echo", "echo", i)
        service.serve_one()
        assert client.read()["uid"] == uid
    status, headers, body = get(port, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert samples[("netmgr_requests_total", (("service", "Echo"),))] == 3
    assert samples[("netmgr_request_duration_seconds_count", (("service", "Echo"),))] == 3
    assert samples[("netmgr_request_duration_seconds_bucket", (("le", "+Inf"), ("service", "Echo")))] == 3
    assert samples[("netmgr_connections", (("kind", "service"),))] == 1
    assert samples[("netmgr_connections", (("kind", "client"),))] == 1
    client.close()
    service.close()


def test_read_only_unknown_paths_and_traversal(netmgr_factory):
    _, port = start_http(netmgr_factory)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _ = get(port, "/api/status", method=method)
        assert status == 405 and headers["Allow"] == "GET, HEAD", method
    status, headers, body = get(port, "/healthz", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    assert get(port, "/nope")[0] == 404
    assert get(port, "/api/nope")[0] == 404
    for target in ("/../http.py", "/%2e%2e/http.py", "/..%2fhttp.py", "/web/../http.py",
                   "/../../../../etc/passwd", "/%2e%2e%2f%2e%2e%2fsetup.cfg", "/.hidden.js",
                   "//etc/passwd", "/http.py", "/__init__.py"):
        assert raw_get(port, target) == 404, target


def test_a_service_connecting_and_leaving_is_seen_on_the_stream(netmgr_factory):
    mgr, port = start_http(netmgr_factory)
    stream = EventStream(port, "?types=peer,service")
    service = RawPeer(mgr.port).handshake_service("Ev", attributes={"ping": "()"}, max_clients=2)
    seen = stream.until(lambda kind, data: kind == "service")
    (_, k1, peer), (_, k2, registered) = seen[-2:]
    assert (k1, peer["event"], peer["kind"]) == ("peer", "connected", "service")
    assert (registered["event"], registered["name"]) == ("registered", "Ev")
    assert registered["attributes"] == {"ping": "()"} and registered["max_clients"] == 2
    assert registered["network_name"] == peer["name"]
    service.close()
    left = stream.until(lambda kind, data: kind == "service")
    assert left[-1][2]["event"] == "gone" and left[-1][2]["name"] == "Ev"
    assert [e[0] for e in seen + left] == sorted(e[0] for e in seen + left)  # ids rise
    stream.close()


def test_the_types_filter(netmgr_factory):
    mgr, port = start_http(netmgr_factory)
    services = EventStream(port, "?types=service")
    service = RawPeer(mgr.port).handshake_service("Filtered")
    _, kind, data = services.next()  # the peer event, published first, is not sent
    assert (kind, data["event"], data["name"]) == ("service", "registered", "Filtered")
    assert get(port, "/api/events?types=nope")[0] == 400
    status, _, body = get(port, "/api/events?types=peer,auth")  # audit: authenticated readers only
    assert status == 403 and b"'auth'" in body
    assert get(port, "/api/events?after=x")[0] == 400
    service.close()
    services.close()


def test_last_event_id_replays_the_history(netmgr_factory):
    mgr, port = start_http(netmgr_factory)
    live = EventStream(port, "?types=peer,service")
    services = [RawPeer(mgr.port).handshake_service(f"S{i}") for i in range(3)]
    seen = live.until(lambda kind, data: kind == "service" and data["name"] == "S2")
    first_id = seen[0][0]
    for query, headers in (("?types=peer,service", {"Last-Event-ID": str(first_id)}),
                           (f"?types=peer,service&after={first_id}", None)):
        again = EventStream(port, query, headers=headers)
        replayed = [again.next() for _ in seen[1:]]
        assert replayed == seen[1:]
        again.close()
    # an id from a Manager's earlier run (above this run's numbering): this run's history
    again = EventStream(port, "?types=peer,service", headers={"Last-Event-ID": "999999"})
    assert again.next()[0] <= first_id
    again.close()
    for service in services:
        service.close()
    live.close()


def test_a_reader_that_never_reads_is_dropped_and_another_is_not_hurt(netmgr_factory):
    # a write timeout longer than the test: the slow reader is dropped for its queue, not its socket
    mgr, port = start_http(netmgr_factory, "--write-timeout", "3600")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # little room in the kernel
    slow.settimeout(30)
    slow.connect(("127.0.0.1", port))
    slow.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
    fast = EventStream(port, "?types=service")
    # each Service's identity carries ~50 KB of attributes, so its events fill the slow reader's
    # queue (4 MiB) and socket buffers within a few hundred; the fast reader reads each at once
    attributes = {f"a{i}": "x" * 1000 for i in range(50)}
    ids, cycles = [], 0
    while "http_events_reader_dropped" not in mgr.output:
        cycles += 1
        assert cycles < 2000, "the slow reader was never dropped"
        with RawPeer(mgr.port) as service:
            service.handshake_service(f"Big{cycles}", attributes=attributes)
            registered = fast.next()
            assert registered[2]["event"] == "registered" and registered[2]["name"] == f"Big{cycles}"
        gone = fast.next()
        assert gone[2]["event"] == "gone" and gone[2]["name"] == f"Big{cycles}"
        ids += [registered[0], gone[0]]
    assert ids == sorted(ids) and len(ids) == 2 * cycles  # nothing lost, nothing out of order
    assert "reason='queue overflow'" in mgr.output
    received = 0
    while True:  # the server closed the slow reader: what it had sent, then the end
        chunk = slow.recv(1 << 20)
        if not chunk:
            break
        received += len(chunk)
    slow.close()
    assert received > 0
    # the stream still works for the reader that kept up
    with RawPeer(mgr.port) as service:
        service.handshake_service("After")
        assert fast.next()[2]["name"] == "After"
    fast.close()


def test_the_page_files_are_served_by_name_only(tmp_path, monkeypatch):
    """The WSGI application itself (no socket): files of the web directory by bare name, with
    their content types; anything else, including the way out of the directory, is 404."""
    from netmgr.daemon import http as endpoint

    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<!doctype html><title>netmgr</title>")
    (web / "app.js").write_text("'use strict';")
    (web / "style.css").write_text("body{}")
    (web / "notes.unknown").write_text("?")
    (tmp_path / "secret.js").write_text("nope")
    monkeypatch.setattr(endpoint, "WEB_DIR", str(web))

    class Anyone:
        @staticmethod
        def check(environ):
            return None, None

    app = endpoint.HTTPEndpoint.__new__(endpoint.HTTPEndpoint)
    app.auth = Anyone

    def call(path, method="GET"):
        answer = {}

        def start_response(status, headers):
            answer["status"], answer["headers"] = status, dict(headers)
        body = b"".join(app.application({"REQUEST_METHOD": method, "PATH_INFO": path}, start_response))
        return answer["status"], answer["headers"], body

    status, headers, body = call("/")
    assert status == "200 OK" and headers["Content-Type"] == "text/html; charset=utf-8"
    assert body.startswith(b"<!doctype html>") and "default-src 'self'" in headers["Content-Security-Policy"]
    assert call("/app.js")[1]["Content-Type"] == "text/javascript; charset=utf-8"
    assert call("/style.css")[1]["Content-Type"] == "text/css; charset=utf-8"
    assert call("/index.html")[2] == body
    for path in ("/../secret.js", "/web/../secret.js", "/notes.unknown", "/missing.js", "/.js",
                 "/app.js/", "/%2e%2e/secret.js", "/" + str(tmp_path / "secret.js")):
        assert call(path)[0] == "404 Not Found", path
    (web / "index.html").unlink()
    status, _, body = call("/")
    assert status == "404 Not Found" and b"status page is not installed" in body


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_an_ipv6_loopback_address_in_brackets(netmgr_factory):
    mgr = netmgr_factory("--http", "[::1]:0")
    match = LISTENING.search(mgr.output)
    assert match.group(1) == "::1"
    conn = http.client.HTTPConnection("::1", int(match.group(2)), timeout=10)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
    conn.close()


def test_the_http_settings():
    from netmgr import config

    parse = config.KEYS["http"][0]
    assert parse("127.0.0.1:1876") == "127.0.0.1:1876" and parse("none") == parse("None") == ""
    assert config.http_address("[::1]:1876") == ("::1", 1876)
    assert config.http_address("localhost:0") == ("localhost", 0)
    for bad, why in (("1876", "HOST:PORT"), ("::1:1876", "in brackets"), ("[nope]:1", "not an IPv6"),
                     ("h:65536", "HOST:PORT"), ("a b:1", "HOST:PORT"), (":1876", "HOST:PORT")):
        with pytest.raises(ValueError, match=why):
            parse(bad)
    settings = config.load(os.devnull, environ={"NETMGR_HTTP": "[::1]:9", "NETMGR_HTTP_TOKEN_FILE": "t",
                                                "NETMGR_HEARTBEAT_INTERVAL": "0.5"})
    assert (settings.http, settings.http_token_file, settings.heartbeat_interval) == (
        "[::1]:9", os.path.abspath("t"), 0.5)
    assert config.load(os.devnull, environ={}).http is None  # off unless asked
    assert {"http", "http_token_file"} <= set(config.RESTART_ONLY)


# ---------------------------------------------------------------------------- refusing to start

def start_fails(netmgr_home, *args, env=None):
    environ = dict(os.environ, NETMGR_HOME=str(netmgr_home), NETMGR_CONFIG=os.devnull, **(env or {}))
    proc = subprocess.run(netmgr_argv("-H", "127.0.0.1", "-p", "0", *args), env=environ,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_beyond_loopback_without_authentication_it_refuses_to_start(netmgr_home):
    line = start_fails(netmgr_home, "--http", "0.0.0.0:0")
    assert "the HTTP endpoint on 0.0.0.0:0 needs authentication" in line
    assert "http_token_file" in line and "netmgr user add NAME --admin" in line
    line = start_fails(netmgr_home, "--disable-tls", "--http", "0.0.0.0:0")
    assert "not a loopback address, so the HTTP endpoint needs TLS" in line
    assert list(netmgr_home.iterdir()) == []  # a start that fails leaves nothing behind (issue 11)


def test_a_manager_password_makes_loopback_need_authentication_too(netmgr_factory):
    """With no way to authenticate yet the Manager still serves its peers: the endpoint says 401
    and the log says what to add."""
    mgr, port = start_http(netmgr_factory, "-P", "pw")
    status, _, _ = get(port, "/api/status")
    assert status == 401
    assert "http_unreadable" in mgr.output and "netmgr user add NAME --admin" in mgr.output


def test_a_bad_token_file_refuses_to_start(netmgr_home, tmp_path):
    short = tmp_path / "short"
    short.write_text("abc\n")
    assert "is 3 characters long" in start_fails(
        netmgr_home, "--http", "0.0.0.0:0", env={"NETMGR_HTTP_TOKEN_FILE": str(short)})
    assert "cannot read the HTTP token file" in start_fails(
        netmgr_home, "--http", "0.0.0.0:0", env={"NETMGR_HTTP_TOKEN_FILE": str(tmp_path / "none")})


def test_a_bad_http_value_is_a_usage_error(netmgr_home):
    assert "an IPv6 address goes in brackets" in start_fails(netmgr_home, "--http", "::1:80")


# ---------------------------------------------------------------------------- TLS and authentication

def tls_context(netmgr_home):
    """Trust the Manager's certificate (made for -H 127.0.0.1), checking the name."""
    return ssl.create_default_context(cafile=str(netmgr_home / "certs" / "127.0.0.1.crt"))


def test_a_token_over_tls_beyond_loopback(netmgr_factory, netmgr_home, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    mgr, port = start_http(netmgr_factory, bind="0.0.0.0:0", tls=True,
                           env={"NETMGR_HTTP_TOKEN_FILE": str(token)})
    assert re.search(r"http_listening host=0\.0\.0\.0 port=\d+ tls=True auth='bearer token, basic", mgr.output)
    context = tls_context(netmgr_home)
    status, headers, _ = get(port, "/api/status", context=context)
    assert status == 401 and headers.get_all("WWW-Authenticate") == [
        'Basic realm="netmgr", charset="UTF-8"', 'Bearer realm="netmgr"']
    assert get(port, "/metrics", headers={"Authorization": "Bearer wrong"}, context=context)[0] == 401
    good = {"Authorization": f"Bearer {TOKEN}"}
    status, _, body = get(port, "/api/status", headers=good, context=context)
    assert status == 200 and json.loads(body)["manager"].startswith("Manager[")
    assert get(port, "/metrics", headers=good, context=context)[0] == 200
    # an authenticated reader may have the audit types: the failed attempt above is one
    stream = EventStream(port, "?types=auth&after=0", headers=good, context=context)
    _, kind, data = stream.next()
    assert (kind, data["event"], data["mode"], data["reason"]) == ("auth", "failed", "http", "wrong token")
    assert TOKEN not in json.dumps(data)
    stream.close()
    # plain HTTP to a TLS endpoint gets nothing
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        get(port, "/healthz")
    # the token file is read again when it changes
    token.write_text("fedcba9876543210fedcba9876543210\n")
    assert get(port, "/healthz", headers=good, context=context)[0] == 401
    assert get(port, "/healthz", context=context,
               headers={"Authorization": "Bearer fedcba9876543210fedcba9876543210"})[0] == 200


@pytest.fixture
def users_db(tmp_path, netmgr_home):
    """``boss`` (an administrator) and ``worker`` (not one), at a low bcrypt cost."""
    db = tmp_path / "users.sqlite3"
    env = dict(os.environ, NETMGR_HOME=str(netmgr_home), NETMGR_CONFIG=os.devnull)
    for user, pw, admin in (("boss", ADMIN_PW, ["-a"]), ("worker", USER_PW, [])):
        subprocess.run([sys.executable, "-m", "netmgr.launcher", "user", "add", user, "-p", pw,
                        "-d", str(db), "--bcrypt-rounds", "4", *admin],
                       env=env, check=True, capture_output=True, timeout=60)
    return db


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_as_an_administrator(netmgr_factory, netmgr_home, users_db):
    mgr, port = start_http(netmgr_factory, "-d", str(users_db), bind="0.0.0.0:0", tls=True)
    context = tls_context(netmgr_home)
    status, headers, _ = get(port, "/healthz", context=context)
    assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="netmgr", charset="UTF-8"'
    assert get(port, "/healthz", headers=basic("boss", "Tr0ub4dor"), context=context)[0] == 401
    assert get(port, "/healthz", headers=basic("nobody", "x"), context=context)[0] == 401
    assert get(port, "/healthz", headers={"Authorization": "Basic !!"}, context=context)[0] == 401
    status, _, body = get(port, "/api/status", headers=basic("worker", USER_PW), context=context)
    assert status == 403 and b"administrators" in body
    for _ in range(2):  # the second time from the remembered login
        assert get(port, "/api/status", headers=basic("boss", ADMIN_PW), context=context)[0] == 200
    stream = EventStream(port, "?types=auth&after=0", headers=basic("boss", ADMIN_PW), context=context)
    seen = stream.until(lambda kind, data: data["event"] == "ok")
    reasons = [(d["event"], d.get("user"), d.get("reason")) for _, _, d in seen]
    assert reasons == [("failed", "boss", "wrong login password"), ("failed", "nobody", "unregistered user"),
                       ("failed", None, "unregistered user"), ("failed", "worker", "not an administrator"),
                       ("ok", "boss", None)]
    assert not any(pw in json.dumps(d) for _, _, d in seen for pw in (ADMIN_PW, USER_PW, "Tr0ub4dor"))
    stream.close()
    assert ADMIN_PW not in mgr.output and USER_PW not in mgr.output


def test_failed_logins_are_throttled(netmgr_factory, netmgr_home, users_db):
    _, port = start_http(netmgr_factory, "-d", str(users_db), "--max-auth-failures", "2",
                         "--auth-lockout", "600", bind="0.0.0.0:0", tls=True)
    context = tls_context(netmgr_home)
    for _ in range(2):
        assert get(port, "/healthz", headers=basic("boss", "wrong"), context=context)[0] == 401
    status, headers, _ = get(port, "/healthz", headers=basic("boss", ADMIN_PW), context=context)
    assert status == 429 and int(headers["Retry-After"]) > 0
