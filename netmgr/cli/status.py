"""``netmgr status``: ask a running Manager, as an administrator, for its peers and services.

A small blocking client of the msl-network 1.0 wire protocol (reference 1.3) on plain sockets
and :mod:`ssl`: it answers the Manager's handshake requests (``password`` for the Manager
password, ``username``/``password`` for a login, ``identity``), then sends the admin requests
``status`` and ``peers``. A Manager that has not logged the peer in as an administrator asks
for a username and password inline (reference 1.7); they are answered the same way.
Credentials come from `ask(kind)` (``"username"``, ``"password"``, ``"manager_password"``), so
the caller decides whether to use options or to prompt, and nothing is asked unless needed.
"""
import json
import os
import platform
import re
import socket
import ssl
import uuid

from netmgr.errors import Failed

MANAGER_NAME = re.compile(r"^Manager\[\S+:\d+]$")  # 1.0's client test for the Manager password
IDENTITY_NAME = "netmgr-status"


class StatusError(Failed):
    """Connecting, logging in or a request failed; the text is printed as it is."""


class AdminConnection:
    """One connection to a Manager, identified as a Client named ``netmgr-status``."""

    def __init__(self, host, port, ask, cert_file=None, disable_tls=False, timeout=10.0):
        self.host, self.port, self._ask = host, port, ask
        self.name = None  # the Manager's network name, from its first request
        self._buf = b""
        self.sock = self._connect(cert_file, disable_tls, timeout)
        self.local_port = self.sock.getsockname()[1]

    def _connect(self, cert_file, disable_tls, timeout):
        where = f"{self.host}:{self.port}"
        context = None
        if not disable_tls:
            if not cert_file or not os.path.isfile(cert_file):
                raise StatusError(f"Cannot find the Manager's certificate {cert_file}; "
                                  "pass --cert-file, or --disable-tls for a plaintext Manager")
            context = ssl.create_default_context(cafile=cert_file)
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError as exc:
            raise StatusError(f"Cannot connect to {where}: {exc.strerror or exc}") from None
        if context is None:
            return sock
        try:
            return context.wrap_socket(sock, server_hostname=self.host)
        except ssl.SSLError as exc:
            sock.close()
            hint = ("the Manager does not use TLS: pass --disable-tls"
                    if "WRONG_VERSION_NUMBER" in str(exc) else f"is {cert_file} its certificate?")
            raise StatusError(f"TLS with {where} failed ({exc.reason or exc}); {hint}") from None
        except OSError as exc:
            sock.close()
            raise StatusError(f"TLS with {where} failed: {exc}") from None

    # -------------------------------------------------------------------------------- lines
    def _send(self, obj):
        self.sock.sendall(json.dumps(obj).encode() + b"\r\n")

    def _read(self):
        while b"\n" not in self._buf:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise StatusError(f"{self.host}:{self.port} did not answer in time") from None
            except OSError as exc:
                raise StatusError(f"The connection to {self.host}:{self.port} failed: {exc}") from None
            if not chunk:
                raise StatusError(f"{self.name or 'The Manager'} closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError:
            raise StatusError(f"not a Manager's message: {line[:80]!r}") from None

    # ---------------------------------------------------------------------------- handshake
    def _answer(self, msg):
        """Answer a Manager request; True once the identity has been sent."""
        attribute, args = msg.get("attribute"), msg.get("args") or []
        self.name = self.name or msg.get("requester")
        if attribute == "identity":
            value = {"type": "client", "name": IDENTITY_NAME,
                     "language": f"Python {platform.python_version()}",
                     "os": f"{platform.system()} {platform.release()} {platform.machine()}"}
        elif attribute == "username":
            value = self._ask("username")
        elif attribute == "password":
            manager = bool(args) and isinstance(args[0], str) and MANAGER_NAME.match(args[0])
            value = self._ask("manager_password" if manager else "password")
        else:
            raise StatusError(f"unexpected request from the Manager: {attribute!r}")
        self._send({"error": False, "requester": msg.get("requester"), "result": value, "uid": ""})
        return attribute == "identity"

    def handshake(self):
        while True:
            msg = self._read()
            if msg.get("error"):
                raise StatusError(msg.get("message") or "the Manager refused the connection")
            if self._answer(msg):
                return self

    def request(self, attribute, *args, **kwargs):
        """An admin request to the Manager; its result, or StatusError with the Manager's message."""
        uid = str(uuid.uuid4())
        self._send({"args": list(args), "attribute": attribute, "error": False, "kwargs": kwargs,
                    "service": "Manager", "uid": uid})
        while True:
            msg = self._read()
            if "result" not in msg and "attribute" in msg:  # the inline admin login
                self._answer(msg)
            elif msg.get("uid") in (uid, ""):  # 1.0 answers admin requests with uid ""
                if msg.get("error"):
                    raise StatusError(msg.get("message") or "the request failed")
                return msg.get("result")

    def close(self):
        try:
            self._send({"args": [], "attribute": "__disconnect__", "error": False, "kwargs": {},
                        "service": "self", "uid": ""})
        except OSError:
            pass
        self.sock.close()


def fetch(host, port, ask, cert_file=None, disable_tls=False, timeout=10.0):
    """``{"manager", "peers": [...], "services": {...}}`` of the Manager at host:port.

    The status connection itself is left out of the peers and clients it reports.
    """
    conn = AdminConnection(host, port, ask, cert_file, disable_tls, timeout).handshake()
    try:
        status = conn.request("status")
        peers = conn.request("peers")
    finally:
        conn.close()
    me = lambda name, port_: name.startswith(IDENTITY_NAME + "[") and port_ == conn.local_port  # noqa: E731
    peers = [p for p in peers if not me(p.get("name", ""), p.get("port"))]
    clients = [c for c in status.get("clients", []) if not me(c, _port_of(c))]
    return {"manager": status.get("manager"), "peers": peers, "clients": clients,
            "services": status.get("services", {})}


def _port_of(name):
    match = re.search(r":(\d+)]$", name)
    return int(match.group(1)) if match else None


def format_status(status, table):
    """The status as text tables (`table(headers, rows)` lays them out)."""
    out = [f"Manager: {status['manager']}", ""]
    peers = status["peers"]
    out.append(f"Peers ({len(peers)})")
    if peers:
        out.append(table(["Name", "Type", "Address", "Admin"],
                         [(p["name"], p["type"], p["address"], p["admin"]) for p in peers]))
    services = status["services"]
    out += ["", f"Services ({len(services)})"]
    if services:
        rows = [(name, s["address"], s["max_clients"], s["in_flight"], ", ".join(s["links"]) or "-",
                 ", ".join(s["locks"]) or "-") for name, s in services.items()]
        out.append(table(["Service", "Address", "Max clients", "In flight", "Linked clients", "Locks"],
                         rows))
    return "\n".join(out)
