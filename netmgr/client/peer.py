"""What the blocking Client and Service share above the socket.

The connection states, the request encoder, the handshake (the Manager speaks first: username,
password, identity) with its credentials, 1.0's texts and helpers, and :class:`Peer`, the base of
:class:`netmgr.client.Client` and :class:`netmgr.client.Service` with 1.0's common properties.
The handshake reads and writes through a transport (:mod:`netmgr.client.transport`); nothing
else here touches a socket. Framing, JSON and the message shapes come from :mod:`netmgr.protocol`.
"""
from __future__ import annotations

import getpass
import logging
import os
import re
import socket
import threading
import time
from typing import Any

from netmgr.hostinfo import HOSTNAME
from netmgr.client.transport import speaks_tls
from netmgr.protocol import TooLong, dumps, loads, result

logger = logging.getLogger("netmgr.client")


CONNECTED = "CONNECTED"
RECONNECTING = "RECONNECTING"
DISCONNECTED = "DISCONNECTED"


#: one line of the wire protocol (:func:`netmgr.protocol.dumps`)
encode = dumps


def request_line(service, attribute, args, kwargs, uid):
    """A Client's request as one line (1.0's key order)."""
    return encode({"args": args, "attribute": attribute, "error": False, "kwargs": kwargs,
                   "service": service, "uid": uid})


#: 1.0's client-side test of a ``password`` request: the Manager's own password, or a user's
_is_manager_regex = re.compile(r"^Manager\[\S+:\d+]$")


class ConnectionView:
    """``address_manager``, ``name`` and ``port``: of a Client, a Service and a LinkedClient."""

    _address_manager: str | None
    _name: str
    _port: int | None

    @property
    def address_manager(self) -> str | None:
        """:class:`str`: ``host:port`` of the Manager this peer is connected to."""
        return self._address_manager

    @property
    def name(self) -> str:
        """:class:`str`: The name of this Client or Service on the Manager."""
        return self._name

    @property
    def port(self) -> int | None:
        """:class:`int`: The local port of the connection to the Manager."""
        return self._port


class Peer(ConnectionView):
    """1.0's properties common to a Client and a Service connected to a Manager.

    The subclass sets ``_name``, ``_network_name``, ``_address_manager``, ``_port``,
    ``_identity`` and ``_loop_thread_id``.
    """

    _network_name: str
    _identity: Any
    _loop_thread_id: int | None

    def __str__(self) -> str:
        return self._network_name

    @property
    def loop_thread_id(self) -> int | None:
        """The identifier of the thread that reads from the Manager: a Client's background
        reader, a Service's :meth:`start` caller (1.0: of the event-loop thread); None when
        not running."""
        return self._loop_thread_id

    def identity(self) -> dict[str, Any]:
        """The identity this peer sends to the Manager."""
        return self._identity

    # not annotated: a Service's identity shows this signature, ``(level)`` as in 1.0
    @staticmethod
    def set_logging_level(level):
        """Set the level of the ``netmgr`` loggers; returns whether it succeeded."""
        return set_logging_level(level)


def _prompt(kind, name):
    """1.0's prompts on the terminal: ``input`` for a username, ``getpass`` for a password."""
    if kind == "username":
        return input(f"Enter a username for {name} > ")
    return getpass.getpass(f"Enter the password for {name} > ")


class Credentials:
    """What the handshake may be asked for; prompted once, then remembered for reconnects.

    ``prompt(kind, name)`` gives a value that was not passed: ``kind`` is ``"username"``,
    ``"password"`` or ``"password_manager"``, ``name`` who asks for it (the Manager's network
    name, or the username whose password is wanted). The default prompts as 1.0 does.
    """

    def __init__(self, username=None, password=None, password_manager=None, prompt=None):
        self.username = username
        self.password = password
        self.password_manager = password_manager
        self.prompt = prompt or _prompt


# ------------------------------------------------------------------------------------ handshake

def local_port_of(sock):
    """The port of this end of a TCP connection; this process's id on a UNIX socket, where
    the Manager names the peer ``Name[local:PID]``."""
    if sock.family == socket.AF_UNIX:
        return os.getpid()
    return int(sock.getsockname()[1])


def own_address(host, port):
    """``HOST:port`` of this end as the Manager names it, ``local:PID`` on its control socket."""
    return f"local:{port}" if host.startswith("/") else f"{HOSTNAME}:{port}"


def handshake(transport, lines, identity, credentials, host, port, timeout, disable_tls):
    """Answer the Manager's username/password/identity requests (it speaks first).

    ``lines`` is the connection's :class:`~netmgr.protocol.Lines`; complete lines that arrive
    after the identity request are returned for the caller to handle. Returns
    ``(local_port, leftover_lines)``. An error from the Manager raises ``ValueError(message)``.
    """
    reader = _HandshakeReader(transport, lines, host, port, timeout, disable_tls)
    while True:
        request = reader.next_request()
        attribute = request.get("attribute")
        if attribute == "identity":
            transport.sendall(dumps(result(identity, None, "")))
            local_port = local_port_of(transport.sock)
            return local_port, reader.pending
        if attribute in ("username", "password"):
            transport.sendall(credential_reply(request, credentials))
            continue
        raise ConnectionError(f"Manager[{host}:{port}] sent an unexpected request "
                              f"{attribute!r} during the handshake")


class _HandshakeReader:
    """The Manager's handshake requests, one at a time, within the connection's timeout."""

    #: seconds of silence on a plaintext connection before it is checked for a TLS Manager
    PROBE_AFTER = 1.0

    def __init__(self, transport, lines, host, port, timeout, disable_tls):
        self.transport = transport
        self.lines = lines
        self.host, self.port = host, port
        self.where = f"{host}:{port}"
        self.timeout = timeout
        self.disable_tls = disable_tls
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.pending = []
        self.first = True
        self.probed = False

    def next_request(self):
        while not self.pending:
            self._read()
        self.first = False
        line = self.pending.pop(0)
        try:
            request = loads(line)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            raise ConnectionError(f"Manager[{self.where}] sent an invalid handshake line: "
                                  f"{line[:200]!r}")
        if request.get("error"):
            raise ValueError(request.get("message"))
        return request

    def _read(self):
        deadline = self.deadline
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        probe = (self.first and not self.probed and self.disable_tls and not self.host.startswith("/")
                 and (remaining is None or remaining > self.PROBE_AFTER))
        data = self.transport.recv(self.PROBE_AFTER if probe else remaining)
        if data is None and probe:
            self.first_silent()
            return
        if data is None:
            if self.first:
                msg = (f"The connection to {self.where} was not established after "
                       f"{self.timeout} second(s)")
                if self.disable_tls:
                    msg += ("\nYou have TLS disabled. Perhaps the Manager is using TLS "
                            "for the connection.")
                raise ConnectionError(msg)
            raise ConnectionError(f"Manager[{self.where}] did not finish the handshake "
                                  f"within {self.timeout} second(s)")
        if not data:
            raise ConnectionAbortedError(f"Manager[{self.where}] closed the connection "
                                         f"during the handshake")
        self.pending.extend(x for x in self.lines.feed(data) if not isinstance(x, TooLong))

    def first_silent(self):
        """The Manager has said nothing for :data:`PROBE_AFTER` on a plaintext connection: if
        it speaks TLS, say so now rather than after the whole timeout (1.0 waits it out)."""
        self.probed = True
        left = None if self.deadline is None else self.deadline - time.monotonic()
        if speaks_tls(self.host, self.port, 2.0 if left is None else max(0.1, min(2.0, left))):
            raise ConnectionError(f"The Manager at {self.where} speaks TLS and this connection is "
                                  f"plaintext\nYou have TLS disabled. Perhaps the Manager is using "
                                  f"TLS for the connection.")


def credential_reply(request, credentials):
    """The reply (bytes) to the Manager's ``username`` or ``password`` request."""
    value = answer_credential(request, credentials)
    return dumps(result(value, request.get("requester"), request.get("uid", "")))


def answer_credential(request, credentials):
    """The username or password the Manager asked for (prompting once if unknown)."""
    args = request.get("args") or [""]
    name = args[0] if args else ""
    if request.get("attribute") == "username":
        kind = "username"
    elif _is_manager_regex.search(str(name)) is not None:
        kind = "password_manager"
    else:
        kind = "password"
    if getattr(credentials, kind) is None:
        setattr(credentials, kind, credentials.prompt(kind, name))
    return getattr(credentials, kind)


# ------------------------------------------------------------------------------------ 1.0 helpers

def remote_error_text(address, reply):
    """1.0's RuntimeError text for an error reply from Manager[`address`] (or through it).

    Not :func:`netmgr.errors.error_text`, which writes one exception as the Manager sends it."""
    message = reply.get("message")
    if not isinstance(message, str):
        message = "UnknownError: No error message has been provided"
    tb = reply.get("traceback") or []
    lines = [f"Manager[{address}] returned the following exception:\n"]
    if tb and isinstance(tb, list):
        lines.extend(str(x) for x in tb)
        if message != tb[-1]:
            lines.append(message)
    else:
        lines.append(message)
    return "\n".join(lines)


def set_logging_level(level):
    """Set the level of the ``netmgr`` library loggers; True on success (1.0's semantics)."""
    if isinstance(level, str):
        try:
            level = int(level)
        except ValueError:
            level = level.upper()
    try:
        logging.getLogger("netmgr").setLevel(level)
    except (ValueError, TypeError):
        logging.getLogger("netmgr").error("invalid logging level %r", level)
        return False
    return True


def run_tasks_in_thread(name, tasks):
    """1.0's ``add_tasks``: run coroutines in a private asyncio loop on a daemon thread."""
    if not tasks:
        return None

    def run():
        import asyncio

        async def gather():
            await asyncio.gather(*tasks)

        try:
            asyncio.run(gather())
        except Exception:  # noqa: BLE001 -- a user task failing must not kill the connection
            logger.exception("a task added with add_tasks() failed")

    thread = threading.Thread(target=run, name=f"{name}-tasks", daemon=True)
    thread.start()
    return thread
