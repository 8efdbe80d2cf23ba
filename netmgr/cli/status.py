"""Talk to a running Manager as an administrator: ``status``, ``stop``, ``reload``, ``disconnect``.

The connection is the client library's (:func:`netmgr.client.connect`, a Client named
``netmgr-status``), by one of two ways:

* the **control socket** (:mod:`netmgr.daemon.control`): a UNIX socket on the Manager's host,
  where the socket's file permissions are the authorisation and nothing is asked;
* **TCP**: the library answers the handshake, and the username and password a Manager asks for
  inline when the connection is not logged in as an administrator (reference 1.7).
  Credentials come from `ask(kind)` (``"username"``, ``"password"``, ``"manager_password"``),
  called only for what the Manager asks for, so the caller decides whether to use options or
  to prompt. TLS trusts only the given certificate file: a missing one is reported before
  connecting, and there is no trust-on-first-use prompt.

The library's errors become :class:`StatusError`, one line worded for this command's options.
The status connection itself is left out of what :func:`snapshot` reports.
"""
import contextlib
import os
import re
import time

from netmgr.errors import Failed
from netmgr.terminal import printable

IDENTITY_NAME = "netmgr-status"

#: The library's hints (1.0's, in Python keywords) -> the same advice in this command's options.
HINTS = (
    ("Try setting disable_tls=True", "the Manager does not use TLS: pass --disable-tls"),
    ("speaks TLS and this connection is plaintext", "leave out --disable-tls"),
    ("You have TLS disabled", "if the Manager uses TLS, leave out --disable-tls"),
    ("To disable hostname checking", "{cert_file} is not for the host {host}: pass -H with its name"),
    ("CERTIFICATE_VERIFY_FAILED", "is {cert_file} its certificate?"),
    ("[X509", "is {cert_file} a PEM certificate?"),
)


#: the Manager's words when a TCP login is not an administrator's (1.0's, kept on the wire)
NOT_AN_ADMIN = ("Unregistered user", "You must be an administrator to send this request to the Manager")
ADMIN_HINT = ("an administrator's login is needed over TCP: `sudo netmgr user add NAME --admin` makes "
              "one; on the Manager's host, `netmgr status` uses the control socket and needs none")


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


@contextlib.contextmanager
def over_socket(path, timeout=10.0, name=IDENTITY_NAME, **extras):
    """A library Client named `name` connected through the control socket at `path`; `extras`
    are more keywords of ``connect()`` (``reconnect``, ``on_state_change``: ``netmgr events``)."""
    from netmgr.client import connect  # only these commands need the library

    try:
        client = connect(name=name, host=path, timeout=timeout, auto_save=False,
                         request_timeout=timeout, prompt=_nothing_asked, **extras)
    except PermissionError:
        raise StatusError(f"cannot use the control socket {path}: permission denied; run the command "
                          f"as root (sudo) or as a member of the socket's group, or log in over TCP "
                          f"with -H HOST -u USER") from None
    except ValueError as exc:
        raise StatusError(_first_line(exc) or "the Manager refused the connection") from None
    except OSError as exc:
        raise StatusError(f"no Manager answers on the control socket {path}: {_first_line(exc)}; "
                          f"is it running?") from None
    try:
        yield client
    finally:
        client.disconnect(timeout=timeout)


@contextlib.contextmanager
def over_tcp(host, port, ask, cert_file=None, disable_tls=False, timeout=10.0, name=IDENTITY_NAME,
             **extras):
    """A library Client at host:port, logged in as an administrator when the Manager asks;
    `extras` as for :func:`over_socket`."""
    if not disable_tls and not (cert_file and os.path.isfile(cert_file)):
        raise StatusError(f"Cannot find the Manager's certificate {cert_file}; "
                          "pass --cert-file, or --disable-tls for a plaintext Manager")
    from netmgr.client import connect  # only these commands need the library

    prompt = _Prompt(ask)
    try:
        try:
            client = connect(name=name, host=host, port=port, timeout=timeout,
                             disable_tls=disable_tls, cert_file=cert_file, auto_save=False,
                             request_timeout=timeout, prompt=prompt, **extras)
        except ValueError as exc:  # the Manager refused the handshake: its message
            raise StatusError(_first_line(exc) or "the Manager refused the connection") from None
        except OSError as exc:
            raise StatusError(_connect_error(exc, host, port, cert_file)) from None
        try:
            yield client
        finally:
            client.disconnect(timeout=timeout)
    except StatusError:
        if prompt.error is not None:  # the user gave up at a prompt: that, not the refusal
            raise prompt.error from None
        raise


def _nothing_asked(kind, _name):
    raise StatusError(f"the Manager asked for a {kind} on its control socket")


def fetch(host, port, ask, cert_file=None, disable_tls=False, timeout=10.0):
    """:func:`snapshot` of the Manager at host:port over TCP."""
    with over_tcp(host, port, ask, cert_file, disable_tls, timeout) as client:
        return snapshot(client)


def snapshot(client):
    """``{"manager", "peers": [...], "clients": [...], "services": {...}, "totals", "recent"}``
    (and ``"cluster"`` for a node of a cluster), the status connection itself left out of the
    peers and clients."""
    status, peers = request(client, "status"), request(client, "peers")
    me = lambda name, port_: name.startswith(IDENTITY_NAME + "[") and port_ == client.port  # noqa: E731
    peers = [p for p in peers if not me(p.get("name", ""), p.get("port"))]
    clients = [c for c in status.get("clients", []) if not me(c, _port_of(c))]
    totals = {**status.get("totals", {}), "peers": len(peers), "clients": len(clients)}
    cluster = {"cluster": status["cluster"]} if status.get("cluster") else {}
    return {"manager": status.get("manager"), "peers": peers, "clients": clients,
            "services": status.get("services", {}), "totals": totals,
            "recent": status.get("recent", []), **cluster}


def request(client, attribute, *args, **kwargs):
    """An admin request's result; an error reply or a lost connection is a StatusError."""
    try:
        return client.admin_request(attribute, *args, **kwargs)
    except RuntimeError as exc:  # "Manager[...] returned the following exception: ... <message>"
        lines = [line for line in str(exc).splitlines() if line.strip()]
        message = lines[-1] if lines else "the request failed"
        if message.endswith(NOT_AN_ADMIN):
            message += f"; {ADMIN_HINT}"
        raise StatusError(message) from None
    except OSError as exc:  # TimeoutError, ConnectionError
        raise StatusError(_first_line(exc)) from None


def _connect_error(exc, host, port, cert_file):
    """One line for an error of ``connect()``, with a hint in this command's options."""
    where = f"{host}:{port}"
    line = _first_line(exc) or type(exc).__name__
    if line.startswith(("[SSL", "[X509")):
        line = f"TLS with {where} failed: {line}"
    elif not line.startswith(("Cannot connect", "The connection", "The Manager", "Manager[")):
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
    cluster = status.get("cluster")
    if cluster:
        nodes = cluster["nodes"]
        out += ["", f"Cluster: node {printable(cluster['node'])}, NATS {cluster['nats']}, "
                    f"{len(nodes)} node(s)"]
        rows = [(name, n.get("manager") or "-", "this node" if name == cluster["node"] else f"{n['age']:.1f} s ago",
                 ", ".join(n["services"]) or "-") for name, n in sorted(nodes.items())]
        out.append(table(["Node", "Manager", "Heard", "Services"], _shown(rows)))
    return "\n".join(out)


# ------------------------------------------------------------------------------ the live view

def _size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _uptime(seconds):
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{seconds:02d}"


def _clip(line, width):
    return line if len(line) <= width else line[:max(width - 1, 0)] + "…"


def format_watch(status, table, width=80, now=None, source=""):
    """One screen of ``netmgr status --watch``: totals, Services with their Clients, locks and
    requests in flight, Clients, and the newest rows of the connection log. Every line fits in
    `width` columns; names are escaped as in :func:`format_status`."""
    totals = status.get("totals", {})
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    out = [f"{printable(str(status['manager']))}  up {_uptime(totals.get('uptime', 0))}  {clock}  {source}",
           f"Peers {len(status['peers'])}  Clients {len(status['clients'])}  "
           f"Services {len(status['services'])}  In flight {totals.get('in_flight', 0)}  "
           f"Queued {_size(totals.get('queued_bytes', 0))}",
           f"Since the start: {totals.get('connections', 0)} connections, "
           f"{totals.get('dropped', 0)} dropped by the Manager", ""]
    services = status["services"]
    out.append(f"Services ({len(services)})")
    if services:
        rows = [(name, s["address"], "∞" if s["max_clients"] < 0 else s["max_clients"], s["in_flight"],
                 ", ".join(_short(c) for c in s["links"]) or "-",
                 ", ".join(_short(c) for c in s["locks"]) or "-") for name, s in services.items()]
        out += table(["Service", "Address", "Max", "Busy", "Clients", "Lock"], _shown(rows)).split("\n")
    out += ["", f"Clients ({len(status['clients'])})"]
    if status["clients"]:
        out += ["  " + ", ".join(printable(c) for c in status["clients"])]
    recent = status.get("recent", [])
    if recent:
        out += ["", "Recent connections"]
        out += table(["Time", "Address", "Message"],
                     _shown((r["datetime"][11:19], f"{r['ip_address']}:{r['port']}", r["message"])
                            for r in recent)).split("\n")
    return "\n".join(_clip(line, width) for line in out)


def _short(network_name):
    """``Name[host:port]`` -> ``Name``, to keep a row within 80 columns."""
    return network_name.split("[", 1)[0] if "[" in network_name else network_name
