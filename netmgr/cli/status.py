"""``netmgr status``: ask a running Manager, as an administrator, for its peers and services.

The connection is the client library's (:func:`netmgr.client.connect`, a Client named
``netmgr-status``): it answers the Manager's handshake, and the username and password a Manager
asks for inline when the connection is not logged in as an administrator (reference 1.7). This
module sends the admin requests ``status`` and ``peers``, disconnects, and leaves the status
connection itself out of what it reports.

Credentials come from `ask(kind)` (``"username"``, ``"password"``, ``"manager_password"``), called
only for what the Manager asks for, so the caller decides whether to use options or to prompt.
TLS trusts only the given certificate file: a missing one is reported before connecting, and
there is no trust-on-first-use prompt. The library's errors become :class:`StatusError`, one line
worded for this command's options.
"""
import os
import re

from netmgr.errors import Failed
from netmgr.terminal import printable

IDENTITY_NAME = "netmgr-status"

#: The library's hints (1.0's, in Python keywords) -> the same advice in this command's options.
HINTS = (
    ("Try setting disable_tls=True", "the Manager does not use TLS: pass --disable-tls"),
    ("You have TLS disabled", "if the Manager uses TLS, leave out --disable-tls"),
    ("To disable hostname checking", "{cert_file} is not for the host {host}: pass -H with its name"),
    ("CERTIFICATE_VERIFY_FAILED", "is {cert_file} its certificate?"),
    ("[X509", "is {cert_file} a PEM certificate?"),
)


class StatusError(Failed):
    """Connecting, logging in or a request failed; the text is printed as it is."""


class _Prompt:
    """The library's ``prompt(kind, name)`` on top of ``ask(kind)``.

    The library may call it on its reader thread (the inline login), so an error of `ask` (the
    user gave up at a prompt) is kept in ``error`` and answered with an empty credential, which
    the Manager refuses; :func:`fetch` then raises the kept error instead of the refusal.
    """

    KINDS = {"username": "username", "password": "password", "password_manager": "manager_password"}

    def __init__(self, ask):
        self.ask = ask
        self.error = None

    def __call__(self, kind, _name):
        try:
            return self.ask(self.KINDS[kind])
        except Exception as exc:  # noqa: BLE001 -- raised again by fetch(), on the caller's thread
            self.error = self.error or exc
            return ""


def fetch(host, port, ask, cert_file=None, disable_tls=False, timeout=10.0):
    """``{"manager", "peers": [...], "clients": [...], "services": {...}}`` of the Manager at host:port.

    The status connection itself is left out of the peers and clients it reports.
    """
    if not disable_tls and not (cert_file and os.path.isfile(cert_file)):
        raise StatusError(f"Cannot find the Manager's certificate {cert_file}; "
                          "pass --cert-file, or --disable-tls for a plaintext Manager")
    prompt = _Prompt(ask)
    try:
        status, peers, local_port = _ask_manager(host, port, prompt, cert_file, disable_tls, timeout)
    except StatusError:
        if prompt.error is not None:
            raise prompt.error from None
        raise
    me = lambda name, port_: name.startswith(IDENTITY_NAME + "[") and port_ == local_port  # noqa: E731
    peers = [p for p in peers if not me(p.get("name", ""), p.get("port"))]
    clients = [c for c in status.get("clients", []) if not me(c, _port_of(c))]
    return {"manager": status.get("manager"), "peers": peers, "clients": clients,
            "services": status.get("services", {})}


def _ask_manager(host, port, prompt, cert_file, disable_tls, timeout):
    """``(status, peers, local port)`` over one library connection."""
    from netmgr.client import connect  # only this command needs the library

    try:
        client = connect(name=IDENTITY_NAME, host=host, port=port, timeout=timeout,
                         disable_tls=disable_tls, cert_file=cert_file, auto_save=False,
                         request_timeout=timeout, prompt=prompt)
    except ValueError as exc:  # the Manager refused the handshake: its message
        raise StatusError(_first_line(exc) or "the Manager refused the connection") from None
    except OSError as exc:
        raise StatusError(_connect_error(exc, host, port, cert_file)) from None
    try:
        return _request(client, "status"), _request(client, "peers"), client.port
    finally:
        client.disconnect(timeout=timeout)


def _request(client, attribute):
    """An admin request's result; an error reply or a lost connection is a StatusError."""
    try:
        return client.admin_request(attribute)
    except RuntimeError as exc:  # "Manager[...] returned the following exception: ... <message>"
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise StatusError(lines[-1] if lines else "the request failed") from None
    except OSError as exc:  # TimeoutError, ConnectionError
        raise StatusError(_first_line(exc)) from None


def _connect_error(exc, host, port, cert_file):
    """One line for an error of ``connect()``, with a hint in this command's options."""
    where = f"{host}:{port}"
    line = _first_line(exc) or type(exc).__name__
    if line.startswith(("[SSL", "[X509")):
        line = f"TLS with {where} failed: {line}"
    elif not line.startswith(("Cannot connect", "The connection", "Manager[")):
        line = f"Cannot connect to {where}: {line}"
    hint = next((hint for marker, hint in HINTS if marker in str(exc)), None)
    return line if hint is None else f"{line}; {hint.format(cert_file=cert_file, host=host)}"


def _first_line(exc):
    """The first line of an error's text without Python's ``[Errno N]`` and OpenSSL's source line."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return re.sub(r" \(_ssl\.c:\d+\)", "", re.sub(r"^\[Errno -?\d+\] ", "", line)).strip()


def _port_of(name):
    match = re.search(r":(\d+)]$", name)
    return int(match.group(1)) if match else None


def _shown(rows):
    """Every cell as text with its non-printable characters escaped (``\\x1b``): names come
    from peers, and a raw ``\\x1bc`` would reset the admin's terminal (issue 10, finding 8)."""
    return [[printable(str(cell)) for cell in row] for row in rows]


def format_status(status, table):
    """The status as text tables (`table(headers, rows)` lays them out)."""
    out = [f"Manager: {printable(str(status['manager']))}", ""]
    peers = status["peers"]
    out.append(f"Peers ({len(peers)})")
    if peers:
        out.append(table(["Name", "Type", "Address", "Admin"],
                         _shown((p["name"], p["type"], p["address"], p["admin"]) for p in peers)))
    services = status["services"]
    out += ["", f"Services ({len(services)})"]
    if services:
        rows = [(name, s["address"], s["max_clients"], s["in_flight"], ", ".join(s["links"]) or "-",
                 ", ".join(s["locks"]) or "-") for name, s in services.items()]
        out.append(table(["Service", "Address", "Max clients", "In flight", "Linked clients", "Locks"],
                         _shown(rows)))
    return "\n".join(out)
