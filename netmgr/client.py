"""A blocking Client for netmgr and msl-network 1.0 Managers: msl-network 1.0's API, faster.

Porting is an import change::

    from msl.network import connect      ->   from netmgr.client import connect

:func:`connect`, :class:`Client`, :class:`Link` and :class:`LinkedClient` keep 1.0's public
signatures and behaviour (error texts, ``asynchronous=True`` returning a
:class:`concurrent.futures.Future`, ``notification_handler``, locks, ``identities(as_string=True)``).
What is new is opt-in (``**netmgr_extras`` of :func:`connect`): automatic reconnection with
back-off, a failover list of Managers, state callbacks, and a finite default timeout.

Threading model (no event loop, no thread hop on the synchronous path)
------------------------------------------------------------------------
A call serialises its request and writes it itself (one ``sendall``). Then, if no other thread
is reading the socket, it becomes the *leader*: it reads the socket itself until its own reply
arrives, handing any other replies to their waiters and notifications to the dispatcher
thread, then gives up the role. A thread that finds a leader waits on a condition and takes
over the role when the leader leaves. A single-threaded caller therefore pays no thread
hand-off at all: write, read, return.

A background thread reads only when nobody else does: when asynchronous requests are pending,
and when the connection has been idle for :data:`IDLE_READ_DELAY` seconds (to deliver
notifications and to notice a Manager that went away). A caller that finds it reading writes
its request first and then asks it to step aside, so the hand-over overlaps the round trip.
Notification handlers and state callbacks run on one dispatcher thread, in order, so a slow
handler never blocks reading.
"""
import concurrent.futures
import itertools
import logging
import math
import os
import select
import threading
import time
import uuid
from concurrent.futures import Future

from netmgr import _conn
from netmgr._conn import (HOSTNAME, LANGUAGE, OS_NAME, Backoff, Credentials, Lines, TooLong,
                          error_text, get_ssl_context, parse_managers, reconnect_attempts)
from netmgr.protocol import (DISCONNECT_REQUEST, NOTIFICATION_UID, PORT, SHUTDOWN_MANAGER,
                             SHUTDOWN_SERVICE, dumps, loads)

logger = logging.getLogger("netmgr.client")

#: Default of ``request_timeout``: seconds a request waits for its reply (1.0 waited forever).
DEFAULT_REQUEST_TIMEOUT = 30.0
#: The background thread starts reading after the callers have been idle this long (seconds).
IDLE_READ_DELAY = 0.02
#: A call made this long (seconds) after the last read first checks that the Manager is still
#: there, so that a request is not written into a connection the Manager already closed.
PRECHECK_AFTER = 0.001

CONNECTED = "CONNECTED"
RECONNECTING = "RECONNECTING"
DISCONNECTED = "DISCONNECTED"

_BG = "background"  # the leader marker of the background thread
_CONNECT_KEYS = ("host", "port", "timeout", "username", "password", "password_manager",
                 "read_limit", "disable_tls", "cert_file", "assert_hostname", "auto_save")
_EXTRA_KEYS = ("reconnect", "max_delay", "on_state_change", "request_timeout", "relock")

__all__ = ["connect", "Client", "Link", "LinkedClient", "filter_client_connect_kwargs",
           "get_ssl_context", "CONNECTED", "RECONNECTING", "DISCONNECTED",
           "DEFAULT_REQUEST_TIMEOUT", "MessageTooLargeError"]


class MessageTooLargeError(RuntimeError):
    """A reply was longer than the connection's ``read_limit``; it was discarded unread."""


def connect(*, name="Client", host="localhost", port=PORT, timeout=10, username=None,
            password=None, password_manager=None, read_limit=None, disable_tls=False,
            cert_file=None, assert_hostname=True, auto_save=False, **netmgr_extras):
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
    * ``request_timeout`` (:data:`DEFAULT_REQUEST_TIMEOUT`): seconds a request waits when it
      is given no ``timeout``; None waits forever, as 1.0 did.
    """
    unknown = set(netmgr_extras) - set(_EXTRA_KEYS)
    if unknown:
        raise TypeError(f"connect() got unexpected keyword argument(s) {sorted(unknown)}")
    kwargs = dict(host=host, port=port, timeout=timeout, username=username, password=password,
                  password_manager=password_manager, read_limit=read_limit,
                  disable_tls=disable_tls, cert_file=cert_file, assert_hostname=assert_hostname,
                  auto_save=auto_save, **netmgr_extras)
    client = Client(name)
    client._start(**kwargs)
    return client


def filter_client_connect_kwargs(**kwargs):
    """The keyword arguments that :func:`connect` accepts (1.0's helper, netmgr extras kept)."""
    kws = {k: kwargs[k] for k in ("name", *_CONNECT_KEYS, *_EXTRA_KEYS) if k in kwargs}
    if "auth_password" in kwargs and "password_manager" not in kws:
        kws["password_manager"] = kwargs["auth_password"]
    return kws


class _Waiter:
    """A synchronous request waiting for its reply."""

    __slots__ = ("uid", "request", "done", "value", "error", "deadline", "seq")

    def __init__(self, uid, request):
        self.uid = uid
        self.request = request
        self.seq = 0
        self.done = False
        self.value = None
        self.error = None
        self.deadline = None

    def _resolve(self, value, error):
        self.value = value
        self.error = error
        self.done = True


class _Future(Future):
    """The future of an asynchronous request; ``request`` is ``"<service>.<attribute>"``."""

    def __init__(self, uid, request):
        super().__init__()
        self.uid = uid
        self.request = request
        self.deadline = None

    def _resolve(self, value, error):
        try:
            if error is not None:
                self.set_exception(error)
            else:
                self.set_result(value)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled by the user


class Client:
    """A connection to a Network Manager. Create it with :func:`connect`.

    Also a context manager: ``with connect() as cxn:`` disconnects on leaving the block.
    """

    def __init__(self, name):
        self._name = name
        self._identity = {"type": "client", "name": name, "language": LANGUAGE, "os": OS_NAME}
        self._network_name = "<UNKNOWN>"
        self._address_manager = None
        self._port = None
        self._links = []
        self._start_kwargs = {}
        self._tasks = []
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
        self._bg_ident = None
        self._wake_r = self._wake_w = None
        self._dispatch_q = None
        self._dispatcher = None
        # notifications queued for / handled by the dispatcher thread, per Service: a reply
        # from a Service is returned after the handlers of the notifications it sent before it
        self._posted = {}
        self._handled = {}
        self._handled_cond = threading.Condition(threading.Lock())
        self._managers = []
        self._manager_index = 0

    # ------------------------------------------------------------------ 1.0 API
    def __repr__(self):
        if self._state == CONNECTED:
            return f"<{self._name} manager={self._address_manager} port={self._port}>"
        return f"<{self._name} disconnected>"

    def __str__(self):
        return self._network_name

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.disconnect()

    @property
    def address_manager(self):
        """:class:`str`: ``host:port`` of the Manager this Client is connected to."""
        return self._address_manager

    @property
    def name(self):
        """:class:`str`: The name of this Client on the Manager."""
        return self._name

    @property
    def port(self):
        """:class:`int`: The local port of the connection to the Manager."""
        return self._port

    @property
    def loop_thread_id(self):
        """The identifier of the background reader thread (1.0: of the event-loop thread)."""
        return self._bg_ident

    @property
    def state(self):
        """``CONNECTED``, ``RECONNECTING`` or ``DISCONNECTED`` (netmgr)."""
        return self._state

    def identity(self):
        """The identity this Client sent to the Manager."""
        return self._identity

    @staticmethod
    def set_logging_level(level):
        """Set the level of the ``netmgr`` loggers; returns whether it succeeded."""
        return _conn.set_logging_level(level)

    def add_tasks(self, *coros_or_futures):
        """Coroutines to run; netmgr runs them in a private asyncio loop on their own thread."""
        self._tasks.extend(coros_or_futures)
        if self._state == CONNECTED:
            tasks, self._tasks = self._tasks, []
            _conn.run_tasks_in_thread(self._network_name, tasks)

    def shutdown_handler(self):
        """Called once the connection is finally lost (not between reconnect attempts)."""

    def is_connected(self):
        """Whether the connection to the Manager is up (False while reconnecting)."""
        return self._state == CONNECTED

    def admin_request(self, attrib, *args, **kwargs):
        """Send a request to the Manager as an administrator (1.0). Accepts ``timeout=``."""
        if "asynchronous" in kwargs:
            raise ValueError("Cannot make asynchronous requests to a Manager")
        timeout = kwargs.pop("timeout", None)
        if attrib == SHUTDOWN_MANAGER:
            self._no_reconnect = True
        return self._request("Manager", attrib, args, kwargs, timeout)

    def disconnect(self, timeout=None):
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

    def link(self, service, *, timeout=None):
        """Link with a Service on the Manager; returns a :class:`Link`."""
        logger.debug("linking with %r", service)
        gen = self._gen
        identity = self._request("Manager", "link", (service,), {}, timeout)
        link = Link(self, service, identity)
        link._linked_gen = gen
        self._links.append(link)
        return link

    def unlink(self, link, *, timeout=None):
        """Unlink from a Service (1.0); the :class:`Link` is forgotten when the Manager agrees."""
        if not isinstance(link, Link):
            raise TypeError(f"Must pass in a Link object, received {type(link)}")
        success = True
        if link._linked_gen == self._gen:
            success = self._request("Manager", "unlink", (link.service_name,), {}, timeout)
        if success and link in self._links:
            self._links.remove(link)

    def identities(self, *, as_string=False, indent=2, timeout=None):
        """The identities of the Manager, its Clients and its Services (1.0's text layout)."""
        identity = self._request("Manager", "identity", (), {}, timeout)
        if not as_string:
            return identity
        space = " " * indent
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
        s.append(f'Clients [{len(identity["clients"])}]:')
        for network_name in sorted(identity["clients"]):
            s.append(space + network_name)
            keys = identity["clients"][network_name]
            for key in sorted(keys):
                if key in ("name", "address"):
                    continue
                s.append(2 * space + f"{key}: {keys[key]}")
        s.append(f'Services [{len(identity["services"])}]:')
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
        return "\n".join(s)

    def spawn(self, name="Client"):
        """A new connection to the same Manager(s) with the same options."""
        return connect(name=name, **self._start_kwargs)

    # ------------------------------------------------------------------ connecting
    def _start(self, **kwargs):
        self._start_kwargs = dict(kwargs)
        self._managers = parse_managers(kwargs["host"], kwargs["port"])
        self._timeout = kwargs["timeout"]
        self._read_limit = kwargs["read_limit"]
        self._tls = dict(disable_tls=kwargs["disable_tls"], cert_file=kwargs["cert_file"],
                         assert_hostname=kwargs["assert_hostname"], auto_save=kwargs["auto_save"])
        self._credentials = Credentials(kwargs["username"], kwargs["password"],
                                        kwargs["password_manager"])
        self._attempts = reconnect_attempts(kwargs.get("reconnect", False))
        self._max_delay = kwargs.get("max_delay", 30.0)
        self._relock = bool(kwargs.get("relock", False))
        self._on_state_change = kwargs.get("on_state_change")
        self._request_timeout = kwargs.get("request_timeout", DEFAULT_REQUEST_TIMEOUT)
        if self._request_timeout is not None and self._request_timeout <= 0:
            raise ValueError("request_timeout must be positive or None")
        errors = []
        for index, (host, port) in enumerate(self._managers):
            try:
                transport, local_port, leftover, lines = self._open(host, port)
            except (ValueError, ConnectionRefusedError) as exc:
                if str(exc) == "SSL certificate required" or isinstance(exc, ValueError):
                    raise  # a refused certificate or wrong credentials: no failover
                errors.append((host, port, exc))
                continue
            except (OSError, TimeoutError) as exc:
                errors.append((host, port, exc))
                continue
            self._manager_index = index
            self._install(transport, local_port, lines, host, port)
            break
        else:
            if len(errors) == 1:
                raise errors[0][2]
            text = "\n".join(f"  {h}:{p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                             for h, p, e in errors)
            raise ConnectionError(f"Cannot connect to any of the Managers:\n{text}")
        self._wake_r, self._wake_w = os.pipe()
        self._bg = threading.Thread(target=self._background, name=f"{self._network_name}-reader",
                                    daemon=True)
        self._bg.start()
        for line in leftover:
            self._dispatch(line)
        if self._tasks:
            tasks, self._tasks = self._tasks, []
            _conn.run_tasks_in_thread(self._network_name, tasks)
        return True

    def _open(self, host, port):
        transport = _conn.open_connection(host, port, timeout=self._timeout, **self._tls)
        lines = Lines(self._read_limit)
        try:
            local_port, leftover = _conn.handshake(
                transport, lines, self._identity, self._credentials, host, port, self._timeout,
                self._tls["disable_tls"])
        except BaseException:
            transport.close()
            raise
        return transport, local_port, leftover, lines

    def _install(self, transport, local_port, lines, host, port):
        with self._lock:
            if self._closing and self._state != CONNECTED and self._gen:
                transport.close()
                return False
            self._transport = transport
            self._lines = lines
            self._port = local_port
            self._network_name = f"{self._name}[{HOSTNAME}:{local_port}]"
            self._address_manager = f"{host}:{port}"
            self._gen += 1
            self._state = CONNECTED
            self._last_fg = time.monotonic()
            self._cond.notify_all()
        logger.info("connected to Manager[%s] as %s", self._address_manager, self._network_name)
        return True

    # ------------------------------------------------------------------ requests
    def _request(self, service, attribute, args, kwargs, timeout=None, asynchronous=False,
                 link=None):
        if timeout is None:
            timeout = self._request_timeout
        deadline = None if timeout is None or timeout == math.inf else time.monotonic() + timeout
        me = threading.get_ident()
        request_name = f"{service}.{attribute}"
        while True:
            transport, gen = self._usable(deadline, service)
            if link is not None and link._linked_gen != gen:
                link._restore(deadline)
                continue
            uid = self._uid_prefix + format(next(self._uid_count), "x")
            data = dumps({"args": args, "attribute": attribute, "error": False,
                          "kwargs": kwargs, "service": service, "uid": uid})
            waiter = _Future(uid, request_name) if asynchronous else _Waiter(uid, request_name)
            waiter.deadline = deadline
            lead = False
            if not asynchronous and time.monotonic() - self._last_read > PRECHECK_AFTER:
                # idle for a while: make sure the Manager did not go away before sending
                with self._lock:
                    if gen == self._gen and self._leader is None:
                        self._leader = me
                        lead = True
                if lead and transport.readable_now() and not self._drain(transport, gen):
                    self._release(me)
                    continue  # the connection was found closed before the request went out
            with self._lock:
                if gen != self._gen:
                    if lead:
                        self._leader = None
                        self._cond.notify_all()
                    continue
                self._pending[uid] = waiter
                if not asynchronous and not lead and self._leader is None:
                    self._leader = me
                    lead = True
            try:
                with self._wlock:
                    transport.sendall(data)
            except OSError as exc:
                with self._lock:
                    unsent = self._pending.pop(uid, None) is not None
                if lead:
                    self._release(me)
                self._lost(gen, exc)
                if unsent and self._attempts != 0 and not self._closing:
                    continue  # never delivered: send it again once reconnected
                raise ConnectionAbortedError(
                    f"Manager[{self._address_manager}] closed the connection") from None
            if asynchronous:
                with self._lock:
                    if self._leader is None and not self._fg_waiting:
                        self._cond.notify_all()  # the background thread reads for it
                return waiter
            return self._wait(waiter, deadline, lead, me)

    def _usable(self, deadline, service):
        """(transport, generation) of a live connection; waits while reconnecting."""
        if self._state == CONNECTED and not self._closing:
            return self._transport, self._gen  # checked again under the lock before use
        with self._lock:
            while True:
                if self._state == CONNECTED and not (self._closing and service != self._network_name):
                    return self._transport, self._gen
                if self._state == RECONNECTING and not self._closing:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(f"Manager[{self._address_manager}] did not come back "
                                           f"before the request to {service!r} timed out")
                    self._cond.wait(remaining)
                    continue
                raise ConnectionError(f"Disconnected from Manager[{self._address_manager}], "
                                      f"cannot send request to {service!r}")

    def _release(self, me):
        with self._lock:
            if self._leader == me:
                self._leader = None
                self._last_fg = time.monotonic()
                self._cond.notify_all()

    def _wait(self, waiter, deadline, lead, me):
        while True:
            if lead:
                try:
                    self._read_until(waiter, deadline)
                finally:
                    with self._lock:
                        self._leader = None
                        self._last_fg = time.monotonic()
                        if self._fg_waiting or self._pending:
                            self._cond.notify_all()
                break
            with self._lock:
                self._fg_waiting += 1
                try:
                    while not waiter.done:
                        if self._leader is None and self._state == CONNECTED:
                            self._leader = me
                            lead = True
                            break
                        if self._leader == _BG and not self._kicked:
                            self._kicked = True
                            try:
                                os.write(self._wake_w, b"\0")
                            except (OSError, TypeError):
                                pass
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            break
                        self._cond.wait(remaining)
                finally:
                    self._fg_waiting -= 1
            if not lead:
                break
        if not waiter.done:
            with self._lock:
                self._pending.pop(waiter.uid, None)
            if not waiter.done:
                raise TimeoutError(f"No reply to {waiter.request} from "
                                   f"Manager[{self._address_manager}] within the timeout")
        if waiter.seq and threading.current_thread() is not self._dispatcher:
            # 1.0 ran the handlers of the notifications that came before a reply first
            service = waiter.request.rsplit(".", 1)[0]
            with self._handled_cond:
                while self._handled.get(service, 0) < waiter.seq and self._dispatcher.is_alive():
                    self._handled_cond.wait(0.5)
        if waiter.error is not None:
            raise waiter.error
        return waiter.value

    def _read_until(self, waiter, deadline):
        transport, gen, lines = self._transport, self._gen, self._lines
        if transport is None:
            return
        feed, dispatch = lines.feed, self._dispatch
        while not waiter.done:
            if gen != self._gen:
                return
            if deadline is None:
                remaining = None
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
            try:
                data = transport.recv_by(remaining)
            except OSError as exc:
                self._lost(gen, exc)
                return
            if data is None:
                continue
            if not data:
                tail = lines.close()
                if tail:
                    dispatch(tail)
                self._lost(gen, None)
                return
            self._last_read = time.monotonic()
            for line in feed(data):
                dispatch(line)

    def _drain(self, transport, gen):
        """Read what is already buffered (the leader, before sending). False if the peer closed."""
        try:
            data = transport.recv(0)
        except OSError as exc:
            self._lost(gen, exc)
            return False
        if data is None:
            return True
        if not data:
            self._lost(gen, None)
            return False
        for line in self._lines.feed(data):
            self._dispatch(line)
        return True

    # ------------------------------------------------------------------ incoming messages
    def _dispatch(self, line):
        if line.__class__ is TooLong:
            self._too_long(line)
            return
        try:
            msg = loads(line)
        except ValueError:
            logger.error("invalid line from Manager[%s]: %r", self._address_manager, line[:200])
            return
        if msg.__class__ is not dict:
            logger.error("unexpected message from Manager[%s]: %r", self._address_manager,
                         line[:200])
            return
        uid = msg.get("uid")
        if uid == NOTIFICATION_UID and "service" in msg:
            self._notification(msg)
            return
        if "result" not in msg and "error" not in msg:
            return
        is_error = bool(msg.get("error"))
        with self._lock:
            waiter = self._pending.pop(uid, None) if uid else None
            if waiter is None and uid == "" and not is_error and "result" not in msg:
                waiter = None
            elif waiter is None and uid == "":
                waiter = self._pop_most_recent(manager_only=not is_error)
            if waiter is not None and waiter.__class__ is _Waiter:
                if self._posted:
                    waiter.seq = self._unhandled(waiter.request)
                if is_error:
                    waiter._resolve(None, RuntimeError(error_text(self._address_manager, msg)))
                else:
                    waiter._resolve(msg.get("result"), None)
                if self._fg_waiting:
                    self._cond.notify_all()
                return
        if waiter is None:
            if uid == "" and "attribute" in msg and "result" not in msg:
                self._manager_request(msg)  # the inline admin login asks username/password
            else:
                logger.debug("dropped a reply with uid %r from Manager[%s]", uid,
                             self._address_manager)
            return
        if is_error:
            value, error = None, RuntimeError(error_text(self._address_manager, msg))
        else:
            value, error = msg.get("result"), None
        if self._posted and self._unhandled(waiter.request):
            self._post((waiter._resolve, value, error))  # after the notifications before it
        else:
            waiter._resolve(value, error)

    def _unhandled(self, request):
        """The count of notifications posted by the request's Service, if some are unhandled."""
        service = request.rsplit(".", 1)[0]
        posted = self._posted.get(service, 0)
        return posted if posted > self._handled.get(service, 0) else 0

    def _pop_most_recent(self, manager_only):
        """1.0 Managers reply to admin requests with uid "": the latest Manager request gets it."""
        for uid in reversed(list(self._pending)):
            if self._pending[uid].request.startswith("Manager."):
                return self._pending.pop(uid)
        if not manager_only and self._pending:
            return self._pending.pop(next(reversed(list(self._pending))))
        return None

    def _manager_request(self, msg):
        attribute = msg.get("attribute")
        if attribute not in ("username", "password"):
            logger.error("unexpected request %r from Manager[%s]", attribute, self._address_manager)
            return
        value = _conn.answer_credential(msg, self._credentials)
        data = dumps({"error": False, "requester": msg.get("requester"), "result": value,
                      "uid": msg.get("uid", "")})
        transport = self._transport
        if transport is not None:
            try:
                with self._wlock:
                    transport.sendall(data)
            except OSError:
                pass

    def _too_long(self, marker):
        uid = marker.field("uid")
        error = MessageTooLargeError(
            f"A message of {marker.size} bytes from Manager[{self._address_manager}] exceeds "
            f"read_limit={self._read_limit} bytes and was discarded; connect with a larger "
            f"read_limit (or None for no limit) to receive it")
        with self._lock:
            waiter = self._pending.pop(uid, None) if uid else None
            if waiter is None and len(self._pending) == 1:
                waiter = self._pending.pop(next(iter(self._pending)))
            if self._fg_waiting:
                self._cond.notify_all()
        if waiter is None:
            logger.error("%s", error)
        else:
            waiter._resolve(None, error)
            with self._lock:
                self._cond.notify_all()

    def _notification(self, msg):
        name = msg.get("service")
        links = [link for link in self._links if link._service_name == name]
        if not links:
            return
        try:
            args, kwargs = msg["result"]
        except (TypeError, ValueError, KeyError):
            logger.error("invalid notification from %r: %r", name, msg.get("result"))
            return
        self._posted[name] = self._posted.get(name, 0) + 1
        self._post((_call_handlers, links, args, kwargs, name))

    def _post(self, item):
        """Run ``item[0](*item[1:])`` on the dispatcher thread, in order."""
        if self._dispatcher is None:
            with self._lock:
                if self._dispatcher is None:
                    import queue

                    self._dispatch_q = queue.SimpleQueue()
                    self._dispatcher = threading.Thread(
                        target=self._dispatcher_loop, args=(self._dispatch_q,),
                        name=f"{self._network_name}-notifications", daemon=True)
                    self._dispatcher.start()
        self._dispatch_q.put(item)

    def _dispatcher_loop(self, q):
        while True:
            item = q.get()
            if item is None:
                return
            try:
                item[0](*item[1:])
            except Exception:  # noqa: BLE001 -- a handler's error must not stop the others
                logger.exception("a notification handler or state callback raised")
            if item[0] is _call_handlers:
                with self._handled_cond:
                    self._handled[item[4]] = self._handled.get(item[4], 0) + 1
                    self._handled_cond.notify_all()

    # ------------------------------------------------------------------ connection loss
    def _lost(self, gen, exc):
        """The connection of generation `gen` is gone: fail what waits on it, maybe reconnect."""
        with self._lock:
            if gen != self._gen or self._state != CONNECTED:
                return
            self._gen += 1
            transport, self._transport = self._transport, None
            pending, self._pending = self._pending, {}
            reconnect = self._attempts != 0 and not self._closing and not self._no_reconnect
            self._state = RECONNECTING if reconnect else DISCONNECTED
            self._cond.notify_all()
        if transport is not None:
            transport.close()
        if not self._closing and not self._no_reconnect:
            logger.warning("lost the connection to Manager[%s]: %s", self._address_manager,
                           exc or "it closed the connection")
        error = ConnectionAbortedError(f"Manager[{self._address_manager}] closed the connection")
        quiet = (f"{self._network_name}.{DISCONNECT_REQUEST}", f"Manager.{SHUTDOWN_MANAGER}")
        for waiter in pending.values():
            if waiter.request in quiet:
                waiter._resolve(None, None)
            else:
                waiter._resolve(None, error)
        with self._lock:
            self._cond.notify_all()
        self._state_changed(RECONNECTING if reconnect else DISCONNECTED)
        if not reconnect:
            self._final()

    def _final(self):
        try:
            self.shutdown_handler()
        except Exception:  # noqa: BLE001
            logger.exception("shutdown_handler raised")
        if self._dispatch_q is not None:
            self._dispatch_q.put(None)
        with self._handled_cond:
            self._handled_cond.notify_all()

    def _state_changed(self, state):
        callback = self._on_state_change
        if callback is not None:
            self._post((callback, self, state))

    def _close(self, reason):
        """Stop for good: close the socket and the background thread."""
        with self._lock:
            self._closing = True
            gen = self._gen
            self._cond.notify_all()
        if self._state == CONNECTED:
            self._lost(gen, None)
        elif self._state == RECONNECTING:
            with self._lock:
                self._state = DISCONNECTED
                self._cond.notify_all()
            self._state_changed(DISCONNECTED)
            self._final()
        if self._wake_w is not None:
            try:
                os.write(self._wake_w, b"\0")
            except OSError:
                pass
        bg = self._bg
        if bg is not None and bg is not threading.current_thread():
            bg.join(5)
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wake_r = self._wake_w = None
        self._links = []

    # ------------------------------------------------------------------ background thread
    def _background(self):
        self._bg_ident = threading.get_ident()
        try:
            while True:
                with self._lock:
                    while True:
                        if self._closing and self._state != CONNECTED:
                            return
                        if self._state == RECONNECTING:
                            break
                        if (self._state == CONNECTED and self._leader is None
                                and not self._fg_waiting):
                            idle = time.monotonic() - self._last_fg
                            if self._pending or idle >= IDLE_READ_DELAY:
                                self._leader = _BG
                                self._kicked = False
                                transport, gen, lines = self._transport, self._gen, self._lines
                                break
                            self._cond.wait(IDLE_READ_DELAY - idle)
                            continue
                        if self._state == DISCONNECTED:
                            return
                        # a caller is reading: look again soon (a caller leaving does not wake
                        # this thread, which would cost every call a wake-up)
                        self._cond.wait(IDLE_READ_DELAY)
                    state = self._state
                if state == RECONNECTING:
                    self._reconnect()
                    continue
                try:
                    self._bg_read(transport, gen, lines)
                finally:
                    with self._lock:
                        if self._leader == _BG:
                            self._leader = None
                        self._cond.notify_all()
        except Exception:  # noqa: BLE001 -- keep the reason in the log, never die silently
            logger.exception("the reader thread of %s failed", self._network_name)
            self._lost(self._gen, None)

    def _bg_read(self, transport, gen, lines):
        poller = select.poll()
        poller.register(transport.fd, select.POLLIN | select.POLLPRI)
        poller.register(self._wake_r, select.POLLIN)
        wake = self._wake_r
        while True:
            timeout = self._expire_futures()
            if transport.tls and transport.readable_now():
                events = [(transport.fd, select.POLLIN)]
            else:
                events = poller.poll(timeout)
            for fd, _ in events:
                if fd == wake:
                    try:
                        os.read(wake, 4096)
                    except OSError:
                        return
                    with self._lock:
                        self._kicked = False
                    continue
                try:
                    data = transport.recv(0)
                except OSError as exc:
                    self._lost(gen, exc)
                    return
                if data is None:
                    continue
                if not data:
                    tail = lines.close()
                    if tail:
                        self._dispatch(tail)
                    self._lost(gen, None)
                    return
                for line in lines.feed(data):
                    self._dispatch(line)
            with self._lock:
                if self._fg_waiting or gen != self._gen:
                    return
                if not self._pending and time.monotonic() - self._last_fg < IDLE_READ_DELAY:
                    return

    def _expire_futures(self):
        """Fail asynchronous requests past their deadline; the next poll timeout in ms (-1: none)."""
        now = time.monotonic()
        expired = []
        soonest = None
        with self._lock:
            for uid, waiter in list(self._pending.items()):
                if waiter.__class__ is _Future and waiter.deadline is not None:
                    if waiter.deadline <= now:
                        expired.append(self._pending.pop(uid))
                    elif soonest is None or waiter.deadline < soonest:
                        soonest = waiter.deadline
        for waiter in expired:
            waiter._resolve(None, TimeoutError(f"No reply to {waiter.request} from "
                                               f"Manager[{self._address_manager}] within the "
                                               f"timeout"))
        if soonest is None:
            return -1
        return max(1, int((soonest - now) * 1000) + 1)

    def _reconnect(self):
        backoff = Backoff(self._max_delay)
        rounds = 0
        while True:
            n = len(self._managers)
            for i in range(n):
                index = (self._manager_index + i) % n
                host, port = self._managers[index]
                if self._closing:
                    return
                try:
                    transport, local_port, leftover, lines = self._open(host, port)
                except (OSError, ValueError, TimeoutError) as exc:
                    logger.info("reconnect to %s:%s failed: %s", host, port,
                                str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                    continue
                self._manager_index = index
                if not self._install(transport, local_port, lines, host, port):
                    return
                for line in leftover:
                    self._dispatch(line)
                self._state_changed(CONNECTED)
                if self._links:
                    threading.Thread(target=self._restore_links, args=(self._gen,),
                                     name=f"{self._network_name}-relink", daemon=True).start()
                return
            rounds += 1
            if 0 < self._attempts <= rounds:
                with self._lock:
                    self._state = DISCONNECTED
                    self._cond.notify_all()
                logger.error("gave up reconnecting to %s after %d attempt(s)",
                             "|".join(f"{h}:{p}" for h, p in self._managers), rounds)
                self._state_changed(DISCONNECTED)
                self._final()
                return
            delay = backoff.next()
            with self._lock:
                if not self._closing:
                    self._cond.wait(delay)

    def _restore_links(self, gen):
        """Re-link (and re-lock) after a reconnect, retrying until each Service is back."""
        delay = 0.05
        while gen == self._gen and not self._closing:
            todo = [link for link in list(self._links) if link._linked_gen != gen]
            if not todo:
                return
            for link in todo:
                try:
                    link._restore(time.monotonic() + 5, retry=False)
                except Exception as exc:  # noqa: BLE001 -- retried below
                    logger.debug("relink with %r: %s", link._service_name, exc)
            time.sleep(delay)
            delay = min(1.0, delay * 2)


def _call_handlers(links, args, kwargs, service):
    for link in links:
        link.notification_handler(*args, **kwargs)


class Link:
    """A link between a :class:`Client` and a Service (create it with :meth:`Client.link`).

    Any attribute becomes a request to the Service: ``link.add(1, 2)``; pass
    ``asynchronous=True`` for a :class:`concurrent.futures.Future` and ``timeout=`` to bound
    the wait. Also a context manager that unlinks on leaving the block.
    """

    def __init__(self, client, service, identity):
        self._client = client
        self._service_name = service
        self._service_identity = identity
        self._linked_gen = client._gen
        self._lock_shared = None  # the ``shared`` of a lock this link holds, for relock
        self._restore_lock = threading.Lock()
        logger.debug("linked with %s[%s]", service, identity.get("address"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.unlink()

    def _request(self, service, attribute, *args, **kwargs):
        client = self._client
        if client is None:
            raise AttributeError(f"Cannot access {attribute!r} since the link has been broken")
        timeout = kwargs.pop("timeout", None)
        asynchronous = kwargs.pop("asynchronous", False)
        return client._request(service, attribute, args, kwargs, timeout, asynchronous, self)

    def _restore(self, deadline, retry=True):
        """Link again after a reconnect; retry while the Service is not back (until deadline)."""
        client = self._client
        if client is None:
            raise AttributeError(f"Cannot access {self._service_name!r} since the link has "
                                 f"been broken")
        with self._restore_lock:
            while True:
                gen = client._gen
                if self._linked_gen == gen:
                    return
                try:
                    identity = client._request("Manager", "link", (self._service_name,), {},
                                               _remaining(deadline))
                except RuntimeError as exc:
                    if not retry or "does not exist" not in str(exc) and \
                            "not connected" not in str(exc):
                        raise
                    if deadline is not None and time.monotonic() + 0.1 >= deadline:
                        raise TimeoutError(f"The {self._service_name!r} service is not "
                                           f"available after reconnecting to "
                                           f"Manager[{client._address_manager}]") from exc
                    time.sleep(0.1)
                    continue
                if gen != client._gen:
                    continue
                self._service_identity = identity
                if self._lock_shared is not None and client._relock:
                    try:
                        client._request("Manager", "acquire_lock", (self._service_name,),
                                        {"shared": self._lock_shared}, _remaining(deadline))
                    except RuntimeError as exc:
                        logger.error("could not re-acquire the lock of %r: %s",
                                     self._service_name, exc)
                        self._lock_shared = None
                self._linked_gen = gen
                logger.info("link with %r restored", self._service_name)
                return

    def acquire_lock(self, shared=False, timeout=None):
        """Acquire a lock with the linked Service (1.0); returns the linked Clients' names."""
        out = self._request("Manager", "acquire_lock", self._service_name, shared=shared,
                            timeout=timeout)
        self._lock_shared = bool(shared)
        return out

    def release_lock(self, timeout=None):
        """Release this Client's lock with the Service (1.0); returns the remaining holders."""
        out = self._request("Manager", "release_lock", self._service_name, timeout=timeout)
        self._lock_shared = None
        return out

    @property
    def service_address(self):
        """:class:`str`: The address of the Service."""
        return self._service_identity["address"]

    @property
    def service_attributes(self):
        """:class:`dict`: The attributes of the Service."""
        return self._service_identity["attributes"]

    @property
    def service_language(self):
        """:class:`str`: The programming language the Service runs on."""
        return self._service_identity["language"]

    @property
    def service_max_clients(self):
        """:class:`int`: How many Clients may link with the Service (<= 0: no limit)."""
        return self._service_identity["max_clients"]

    @property
    def service_name(self):
        """:class:`str`: The name of the Service."""
        return self._service_name

    @property
    def service_os(self):
        """:class:`str`: The operating system the Service runs on."""
        return self._service_identity["os"]

    def disconnect(self, timeout=None):
        """An alias for :meth:`unlink`."""
        self.unlink(timeout=timeout)

    def notification_handler(self, *args, **kwargs):
        """Called with each notification the Service emits; re-assign it on the instance.

        Runs on the Client's dispatcher thread, in the order the notifications arrived.
        """

    def shutdown_service(self, *args, **kwargs):
        """Ask the Service to shut down (it must implement ``shutdown_service``)."""
        out = self._request(self._service_name, SHUTDOWN_SERVICE, *args, **kwargs)
        if self._client is not None and self in self._client._links:
            self._client._links.remove(self)
        self._client = None
        return out

    def unlink(self, timeout=None):
        """Unlink from the Service."""
        if self._client is not None:
            self._client.unlink(self, timeout=timeout)
            self._client = None

    def __repr__(self):
        if self._client is None:
            return f"<Un-Linked from {self.service_name}[{self.service_address}]>"
        return (f"<Link with {self.service_name}[{self.service_address}] "
                f"at Manager[{self._client._address_manager}]>")

    def __getattr__(self, item):
        if item.startswith("__") and item.endswith("__"):
            raise AttributeError(item)
        if self._client is None:
            raise AttributeError(f"Cannot access {item!r} since the link has been broken")

        def request(*args, **kwargs):
            return self._request(self._service_name, item, *args, **kwargs)
        return request


def _remaining(deadline):
    if deadline is None:
        return math.inf
    return max(0.001, deadline - time.monotonic())


class LinkedClient:
    """A :class:`Client` with a :class:`Link` to one Service (1.0).

    ``kwargs`` go to :func:`connect`; ``timeout`` (default 10) bounds connecting *and* waiting
    for the Service to appear. A context manager that disconnects on leaving the block.
    """

    def __init__(self, service_name, **kwargs):
        self._client = None
        self._link = None
        super().__init__()
        kwargs.setdefault("name", self.__class__.__name__)
        kwargs.setdefault("timeout", 10)
        self._kwargs = filter_client_connect_kwargs(**kwargs)
        t0 = time.perf_counter()
        self._client = connect(**self._kwargs)
        try:
            while True:
                if service_name in self._client.identities()["services"]:
                    break
                if time.perf_counter() - t0 > self._kwargs["timeout"]:
                    raise TimeoutError(f"The {service_name!r} service is not available")
                time.sleep(0.1)
            self._link = self._client.link(service_name)
        except BaseException:
            self._client.disconnect()
            raise
        self._address_manager = self._client.address_manager
        self._name = self._client.name
        self._port = self._client.port
        self._service_address = self._link.service_address
        self._service_attributes = self._link.service_attributes
        self._service_language = self._link.service_language
        self._service_name = self._link.service_name
        self._service_os = self._link.service_os
        self._service_max_clients = self._link.service_max_clients

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.disconnect()

    def acquire_lock(self, shared=False, timeout=None):
        """See :meth:`Link.acquire_lock`."""
        self._check_link("acquire_lock")
        return self._link.acquire_lock(shared=shared, timeout=timeout)

    def admin_request(self, attrib, *args, **kwargs):
        """See :meth:`Client.admin_request`."""
        self._check_client()
        return self._client.admin_request(attrib, *args, **kwargs)

    def disconnect(self, timeout=None):
        """See :meth:`Client.disconnect`."""
        if self._client is not None:
            self._client.disconnect(timeout=timeout)
            self._client = None
            self._link = None

    def identity(self):
        """See :meth:`Client.identity`."""
        self._check_client()
        return self._client.identity()

    def identities(self, *, as_string=False, indent=2, timeout=None):
        """See :meth:`Client.identities`."""
        self._check_client()
        return self._client.identities(as_string=as_string, indent=indent, timeout=timeout)

    def is_connected(self):
        """See :meth:`Client.is_connected`."""
        if self._client is None:
            return False
        return self._client.is_connected()

    def notification_handler(self, *args, **kwargs):
        """See :meth:`Link.notification_handler` (assigning it sets the Link's)."""

    def service_error_handler(self):
        """Called just before a RuntimeError from the Service is raised; override to clean up."""

    def shutdown_service(self, *args, **kwargs):
        """See :meth:`Link.shutdown_service`."""
        self._check_link("shutdown_service")
        return self._link.shutdown_service(*args, **kwargs)

    def spawn(self, name="LinkedClient"):
        """A new :class:`LinkedClient` linked with the same Service."""
        kwargs = self._kwargs.copy()
        kwargs["name"] = name
        return LinkedClient(self.service_name, **kwargs)

    def unlink(self, timeout=None):
        """See :meth:`Link.unlink`."""
        if self._link is not None:
            self._link.unlink(timeout=timeout)
            self._link = None

    @property
    def address_manager(self):
        return self._address_manager

    @property
    def client(self):
        """:class:`Client`: The Client that provides the :class:`Link`."""
        return self._client

    @property
    def link(self):
        """:class:`Link`: The Link with the Service."""
        return self._link

    @property
    def name(self):
        return self._name

    @property
    def port(self):
        return self._port

    def release_lock(self, timeout=None):
        """See :meth:`Link.release_lock`."""
        self._check_link("release_lock")
        return self._link.release_lock(timeout=timeout)

    @property
    def service_address(self):
        return self._service_address

    @property
    def service_attributes(self):
        return self._service_attributes

    @property
    def service_language(self):
        return self._service_language

    @property
    def service_max_clients(self):
        return self._service_max_clients

    @property
    def service_name(self):
        return self._service_name

    @property
    def service_os(self):
        return self._service_os

    def __repr__(self):
        if self._link is None:
            return (f"<Un-Linked[name={self._name}] from "
                    f"{self._service_name}[{self._service_address}]>")
        return (f"<Link[name={self._name}] with {self._service_name}[{self._service_address}] "
                f"at Manager[{self._address_manager}]>")

    def __setattr__(self, name, value):
        if name == "notification_handler":
            self._link.notification_handler = value
        else:
            super().__setattr__(name, value)

    def __getattr__(self, item):
        if item.startswith("__") and item.endswith("__"):
            raise AttributeError(item)
        self._check_link(item)

        def request(*args, **kwargs):
            try:
                return getattr(self._link, item)(*args, **kwargs)
            except Exception:
                self.service_error_handler()
                raise
        return request

    def _check_link(self, item):
        if self.__dict__.get("_link") is None:
            raise AttributeError(f"Cannot access {item!r} since the link has been broken")

    def _check_client(self):
        if self._client is None:
            raise ConnectionError("The LinkedClient has been disconnected")
