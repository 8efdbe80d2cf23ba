"""A blocking Client for netmgr and msl-network 1.0 Managers: msl-network 1.0's API, faster.

Porting is an import change::

    from msl.network import connect      ->   from netmgr import connect

:func:`connect` and :class:`Client` keep 1.0's public signatures and behaviour (error texts,
``asynchronous=True`` returning a :class:`concurrent.futures.Future`, ``notification_handler``,
locks, ``identities(as_string=True)``); :class:`~netmgr.client.link.Link` and
:class:`~netmgr.client.link.LinkedClient` are in :mod:`netmgr.client.link`. What is new is
opt-in (``**netmgr_extras`` of :func:`connect`): automatic reconnection with back-off, a failover
list of Managers, state callbacks, a credential prompt, and a finite default timeout.

Threading model: no event loop, and no thread hop on the synchronous path. A call writes its
request and reads its own reply on the calling thread unless another thread is reading
(:mod:`netmgr.client.calls`); a background thread reads only when nobody else does
(:mod:`netmgr.client.reader`); notification handlers, event handlers and state callbacks run on
one dispatcher thread (:mod:`netmgr.client.dispatch`); event subscriptions are in
:mod:`netmgr.client.events`. This module holds the public entry points; the Client's
machinery is in those mixins and :mod:`netmgr.client.reconnect`. The Client meets its Links only
through a :class:`~netmgr.client.proxy.LinkEnd` per link (:mod:`netmgr.client.proxy`).
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import uuid
import weakref
from typing import Any, Coroutine, Iterable, Literal, Sequence, overload

from netmgr.client.calls import PRECHECK_AFTER, Calls
from netmgr.client.dispatch import Dispatch, MessageTooLargeError
from netmgr.client.events import (DEFAULT_MAXSIZE, EventHandler, Events, EventStream,
                                  EventSubscription)
from netmgr.client.failover import (CONNECT_KEYS, RECONNECT_KEYS, Failover, Options,
                                    check_extras, pick_kwargs)
from netmgr.client.peer import CONNECTED, DISCONNECTED, RECONNECTING, Peer, run_tasks_in_thread
from netmgr.client.proxy import Link, LinkEnd
from netmgr.client.reader import IDLE_READ_DELAY, Background
from netmgr.client.reconnect import Reconnect
from netmgr.client.tofu import get_ssl_context
from netmgr.errors import CertificateRefused
from netmgr.hostinfo import LANGUAGE, OS_NAME
from netmgr.protocol import DISCONNECT_REQUEST, PORT, SHUTDOWN_MANAGER

logger = logging.getLogger("netmgr.client")

#: Default of ``request_timeout``: seconds a request waits for its reply (1.0 waited forever).
DEFAULT_REQUEST_TIMEOUT = 30.0

#: netmgr's keywords of :func:`connect` (``**netmgr_extras``).
EXTRA_KEYS = (*RECONNECT_KEYS, "request_timeout", "relock", "prompt")

__all__ = ["connect", "Client", "filter_client_connect_kwargs", "get_ssl_context", "CONNECTED",
           "RECONNECTING", "DISCONNECTED", "DEFAULT_REQUEST_TIMEOUT", "MessageTooLargeError",
           "IDLE_READ_DELAY", "PRECHECK_AFTER"]


def connect(*, name: str = "Client",
            host: str | Sequence[str | tuple[str, int]] = "localhost", port: int = PORT,
            timeout: float | None = 10, username: str | None = None,
            password: str | None = None, password_manager: str | None = None,
            read_limit: int | None = None, disable_tls: bool = False,
            cert_file: str | None = None, assert_hostname: bool = True,
            auto_save: bool = False, **netmgr_extras: Any) -> Client:
    """Connect to a Network Manager as a :class:`Client` (msl-network 1.0's ``connect``).

    The 1.0 parameters keep their meaning: `timeout` bounds connecting and the handshake,
    missing credentials are prompted for, `read_limit` is the longest reply accepted (None: no
    limit), `cert_file`/`assert_hostname`/`auto_save` control TLS (trust on first use of
    ``<home>/certs/<host>.crt``, home being ``$NETMGR_HOME``, ``$MSL_NETWORK_HOME`` or
    ``~/.msl/network``).

    `host` may also be a failover list: ``"a:1875|b:1875"`` or a list of ``"host:port"``
    strings or ``(host, port)`` pairs, tried in order.

    netmgr extras (keyword-only):

    * ``reconnect`` (False): True to reconnect without limit after the connection drops, or
      the number of attempts (rounds over the failover list). Links are restored.
    * ``max_delay`` (30.0): the longest wait, in seconds, between reconnect rounds (the wait
      starts at 0.1 s and doubles).
    * ``relock`` (False): after a reconnect also re-acquire the locks this Client held.
    * ``on_state_change`` (None): ``callback(client, state)`` with ``CONNECTED``,
      ``RECONNECTING`` or ``DISCONNECTED``, called on the dispatcher thread.
    * ``prompt`` (None): ``prompt(kind, name)`` returns a credential the Manager asks for and
      that was not passed (``kind``: ``"username"``, ``"password"`` or ``"password_manager"``;
      ``name``: the Manager's network name, or the user whose password is wanted); the default
      prompts on the terminal as 1.0 does.
    * ``request_timeout`` (:data:`DEFAULT_REQUEST_TIMEOUT`): seconds a request waits when it
      is given no ``timeout``; None waits forever, as 1.0 did.
    """
    check_extras("connect", netmgr_extras, EXTRA_KEYS)
    client = Client(name)
    client._start(dict(host=host, port=port, timeout=timeout, username=username,
                       password=password, password_manager=password_manager,
                       read_limit=read_limit, disable_tls=disable_tls, cert_file=cert_file,
                       assert_hostname=assert_hostname, auto_save=auto_save, **netmgr_extras))
    return client


def filter_client_connect_kwargs(**kwargs: Any) -> dict[str, Any]:
    """The keyword arguments that :func:`connect` accepts (1.0's helper, netmgr extras kept)."""
    return pick_kwargs(kwargs, ("name", *CONNECT_KEYS, *EXTRA_KEYS),
                       (("auth_password", "password_manager"),))


class Client(Peer, Calls, Dispatch, Background, Reconnect, Events):
    """A connection to a Network Manager. Create it with :func:`connect`.

    Also a context manager: ``with connect() as cxn:`` disconnects on leaving the block.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._identity = {"type": "client", "name": name, "language": LANGUAGE, "os": OS_NAME}
        self._network_name = "<UNKNOWN>"
        self._address_manager = None
        self._port = None
        self._links: list[LinkEnd] = []  # of each Link made on this Client and not unlinked
        self._link_ends: weakref.WeakKeyDictionary[Link, LinkEnd] = weakref.WeakKeyDictionary()
        self._start_kwargs: dict[str, Any] = {}
        self._tasks: list[Any] = []
        # connection state, guarded by _lock
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._wlock = threading.Lock()
        self._pending = {}
        self._leader = None
        self._fg_waiting = 0
        self._kicked = False
        self._state = DISCONNECTED
        self._gen = 0
        self._transport = None
        self._lines = None
        self._closing = False
        self._no_reconnect = False
        self._last_fg = 0.0
        self._last_read = 0.0
        self._uid_prefix = uuid.uuid4().hex[:12] + "-"
        self._uid_count = itertools.count(1)
        self._bg = None
        self._loop_thread_id = None  # the background reader's
        self._wake_r = self._wake_w = None
        self._dispatch_q = None
        self._dispatcher = None
        # notifications queued for / handled by the dispatcher thread, per Service: a reply
        # from a Service is returned after the handlers of the notifications it sent before it
        self._posted: dict[str, int] = {}
        self._handled: dict[str, int] = {}
        self._handled_cond = threading.Condition(threading.Lock())
        self._manager_index = 0
        # event subscriptions (netmgr.client.events): replaced, never mutated, so the reading
        # thread iterates without a lock; subscribing and unsubscribing hold _events_lock
        self._event_subs: tuple[EventSubscription, ...] = ()
        self._events_lock = threading.Lock()
        self._admin = False  # an admin request succeeded: this Client may log in as one

    # ------------------------------------------------------------------ 1.0 API
    def __repr__(self) -> str:
        if self._state == CONNECTED:
            return f"<{self._name} manager={self._address_manager} port={self._port}>"
        return f"<{self._name} disconnected>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    @property
    def state(self) -> str:
        """``CONNECTED``, ``RECONNECTING`` or ``DISCONNECTED`` (netmgr)."""
        return self._state

    def add_tasks(self, *coros_or_futures: Coroutine[Any, Any, Any]) -> None:
        """Coroutines to run; netmgr runs them in a private asyncio loop on their own thread."""
        self._tasks.extend(coros_or_futures)
        if self._state == CONNECTED:
            tasks, self._tasks = self._tasks, []
            run_tasks_in_thread(self._network_name, tasks)

    def shutdown_handler(self) -> None:
        """Called once the connection is finally lost (not between reconnect attempts)."""

    def is_connected(self) -> bool:
        """Whether the connection to the Manager is up (False while reconnecting)."""
        return self._state == CONNECTED

    def admin_request(self, attrib: str, *args: Any, **kwargs: Any) -> Any:
        """Send a request to the Manager as an administrator (1.0). Accepts ``timeout=``."""
        if "asynchronous" in kwargs:
            raise ValueError("Cannot make asynchronous requests to a Manager")
        timeout = kwargs.pop("timeout", None)
        if attrib == SHUTDOWN_MANAGER:
            self._no_reconnect = True
        value = self._request("Manager", attrib, args, kwargs, timeout)
        self._admin = True  # logged in as an administrator: again after a reconnect (events)
        return value

    def disconnect(self, timeout: float | None = None) -> None:
        """Disconnect from the Manager (1.0). Waits at most `timeout` seconds (default 10)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            state = self._state
            self._cond.notify_all()
        if state == CONNECTED:
            try:
                self._request(self._network_name, DISCONNECT_REQUEST, (), {},
                              10 if timeout is None else timeout)
            except (OSError, RuntimeError) as exc:
                logger.debug("disconnect: %s", exc)
        self._close(reason="disconnected")

    def link(self, service: str, *, timeout: float | None = None) -> Link:
        """Link with a Service on the Manager; returns a :class:`Link`."""
        logger.debug("linking with %r", service)
        gen = self._gen  # a reconnect during the request: the link is restored on first use
        identity = self._request("Manager", "link", (service,), {}, timeout)
        end = LinkEnd(self, service, identity, gen, self._request, self._forget_link)
        link = Link(end, service, identity)
        self._link_ends[link] = end
        self._links.append(end)
        return link

    def unlink(self, link: Link, *, timeout: float | None = None) -> None:
        """Unlink from a Service (1.0); the :class:`Link` is forgotten when the Manager agrees."""
        if not isinstance(link, Link):
            raise TypeError(f"Must pass in a Link object, received {type(link)}")
        end = self._link_ends.get(link)
        success = True
        if end is None or end.gen == self._gen:
            success = self._request("Manager", "unlink", (link.service_name,), {}, timeout)
        if success and end in self._links:
            self._links.remove(end)

    @overload
    def identities(self, *, as_string: Literal[False] = False, indent: int = 2,
                   timeout: float | None = None) -> dict[str, Any]: ...

    @overload
    def identities(self, *, as_string: Literal[True], indent: int = 2,
                   timeout: float | None = None) -> str: ...

    def identities(self, *, as_string: bool = False, indent: int = 2,
                   timeout: float | None = None) -> dict[str, Any] | str:
        """The identities of the Manager, its Clients and its Services (1.0's text layout)."""
        identity = self._request("Manager", "identity", (), {}, timeout)
        if not as_string:
            return identity
        space = " " * indent
        return "\n".join(_manager_text(identity, space) + _clients_text(identity, space)
                         + _services_text(identity, space))

    @overload
    def events(self, types: str | Iterable[str] | None = None, handler: None = None, *,
               timeout: float | None = None, maxsize: int = DEFAULT_MAXSIZE) -> EventStream: ...

    @overload
    def events(self, types: str | Iterable[str] | None, handler: EventHandler, *,
               timeout: float | None = None, maxsize: int = DEFAULT_MAXSIZE) -> EventSubscription: ...

    @overload
    def events(self, types: str | Iterable[str] | None = None, *, handler: EventHandler,
               timeout: float | None = None, maxsize: int = DEFAULT_MAXSIZE) -> EventSubscription: ...

    def events(self, types: str | Iterable[str] | None = None, handler: EventHandler | None = None,
               *, timeout: float | None = None,
               maxsize: int = DEFAULT_MAXSIZE) -> EventSubscription | EventStream:
        """Subscribe to the Manager's events (netmgr; docs/protocol.md, "Events on the wire").

        `types` is a list of event types (``"peer"``, ``"service"``, ``"link"``, ...), one type
        as a str, or None for every type this connection may have (a Client that is not an
        administrator: ``peer``, ``service``, ``health``). Each event is the dict the Manager
        sent: ``{"type", "event", "seq", "time", ...}``.

        With `handler`, ``handler(event)`` is called for each event on the dispatcher thread
        (where notification handlers run) and an :class:`EventSubscription` is returned.
        Without, an :class:`EventStream` is returned: iterate over it (``for ev in
        cxn.events(["service"])``); `timeout` bounds each wait (TimeoutError), and at most
        `maxsize` events wait, the oldest being dropped and counted beyond that. Both close
        with ``close()`` or a ``with`` block, and both are subscribed again after a reconnect.

        The Manager's refusal (an unknown type, an administrator's type asked for by a Client
        that is not one, a Manager without events) raises RuntimeError here, as any request.
        """
        return self._subscribe_events(types, handler, maxsize, timeout)

    def spawn(self, name: str = "Client") -> Client:
        """A new connection to the same Manager(s) with the same options."""
        return connect(name=name, **self._start_kwargs)

    def _forget_link(self, end):
        """A LinkEnd's Service shut down: do not restore that link after a reconnect."""
        if end in self._links:
            self._links.remove(end)

    # ------------------------------------------------------------------ connecting
    def _start(self, kwargs):
        self._start_kwargs = dict(kwargs)
        self._relock = bool(kwargs.pop("relock", False))
        self._request_timeout = kwargs.pop("request_timeout", DEFAULT_REQUEST_TIMEOUT)
        self._options = Options(**kwargs)
        if self._request_timeout is not None and self._request_timeout <= 0:
            raise ValueError("request_timeout must be positive or None")
        failover = Failover(self._options, self._identity)
        # one round, no retry; a refused certificate or wrong credentials: no failover
        found = failover.run(fatal=lambda e: isinstance(e, (ValueError, CertificateRefused)))
        host, port, transport, local_port, leftover, lines = found
        self._manager_index = failover.index
        self._install(transport, local_port, lines, host, port)
        self._wake_r, self._wake_w = os.pipe()
        self._bg = threading.Thread(target=self._background, name=f"{self._network_name}-reader",
                                    daemon=True)
        self._bg.start()
        for line in leftover:
            self._dispatch(line)
        if self._tasks:
            tasks, self._tasks = self._tasks, []
            run_tasks_in_thread(self._network_name, tasks)
        return True


# ------------------------------------------------------------------------------------ identities

def _manager_text(identity, space):
    s = [f'Manager[{identity["hostname"]}:{identity["port"]}]']
    for key in sorted(identity):
        if key in ("clients", "services", "hostname", "port"):
            pass
        elif key == "attributes":
            s.append(space + "attributes:")
            for item in sorted(identity[key]):
                s.append(2 * space + f"{item}{identity[key][item]}")
        else:
            s.append(space + f"{key}: {identity[key]}")
    return s


def _clients_text(identity, space):
    s = [f'Clients [{len(identity["clients"])}]:']
    for network_name in sorted(identity["clients"]):
        s.append(space + network_name)
        keys = identity["clients"][network_name]
        for key in sorted(keys):
            if key in ("name", "address"):
                continue
            s.append(2 * space + f"{key}: {keys[key]}")
    return s


def _services_text(identity, space):
    s = [f'Services [{len(identity["services"])}]:']
    for name in sorted(identity["services"]):
        s.append(space + f'{name}[{identity["services"][name]["address"]}]')
        service = identity["services"][name]
        for key in sorted(service):
            if key == "attributes":
                s.append(2 * space + "attributes:")
                for item in sorted(service[key]):
                    signature = service[key][item]
                    if not isinstance(signature, str) or not signature.startswith("("):
                        signature = f"() -> {signature}"
                    s.append(3 * space + f"{item}{signature}")
            elif key == "address":
                continue
            else:
                s.append(2 * space + f"{key}: {service[key]}")
    return s
