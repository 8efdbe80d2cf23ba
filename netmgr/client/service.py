"""The blocking Service base class, and ``run_forever`` / ``run_services`` (msl-network 1.0's API).

Porting is an import change (``netmgr.client`` and ``netmgr.service`` export the same names)::

    from msl.network import Service, run_services   ->   from netmgr import Service, run_services

A Service's public attributes become its identity (``str(inspect.signature(x))`` for callables,
the value for the rest, minus 1.0's ignore list and :meth:`Service.ignore_attributes`);
private attributes are refused; requests run concurrently on a bounded pool of threads and their
replies may come back out of order; :meth:`Service.emit_notification` works from any thread and is
ordered with the replies; ``shutdown_service`` and :meth:`Service.shutdown_handler` behave as in 1.0.

Threading model: the thread that reads a request from the socket runs it itself, so a request
starts with no queue and no thread hand-off; an idle thread takes over reading when a request
runs long (:mod:`netmgr.client.service_work`). Replies and notifications share one ordered outbox
(:mod:`netmgr.client.service_io`). This module holds the public API; the Manager that
:func:`run_services` starts is a child process (:mod:`netmgr.client.manager_process`).
"""
from __future__ import annotations

import inspect
import logging
import os
import sys
import threading
import time
from typing import Any, Coroutine, Iterable, Sequence

from netmgr.client.failover import (CONNECT_KEYS, RECONNECT_KEYS, Options, check_extras,
                                    pick_kwargs)
from netmgr.client.manager_process import (MANAGER_START_TIMEOUT, RUN_FOREVER_KEYS,
                                           manager_argv, run_manager, run_with_manager)
from netmgr.client.peer import CONNECTED, DISCONNECTED, RECONNECTING, Peer, run_tasks_in_thread
from netmgr.client.service_io import ServiceIO
from netmgr.client.service_work import TAKEOVER_AFTER, WATCH_IDLE, ServiceWork, _State
from netmgr.hostinfo import LANGUAGE, OS_NAME
from netmgr.protocol import PORT, dumps, notification

logger = logging.getLogger("netmgr.service")

#: netmgr's keywords of :meth:`Service.start` (``**netmgr_extras``).
EXTRA_KEYS = (*RECONNECT_KEYS, "max_workers")

#: 1.0's attributes that never appear in a Service's identity, plus netmgr's own.
DEFAULT_IGNORE = [
    "add_tasks", "address_manager", "emit_notification", "emit_notification_threadsafe",
    "identity", "ignore_attributes", "loop_thread_id", "max_clients", "name", "port",
    "shutdown_handler", "start",
    "request", "stop_service",
]

#: Methods of the base class that a Client may not call remotely (they control the Service).
_NOT_REMOTE = frozenset(("start", "stop_service", "add_tasks", "ignore_attributes",
                         "shutdown_handler"))

__all__ = ["Service", "run_forever", "run_services", "filter_service_start_kwargs",
           "filter_run_forever_kwargs", "CONNECTED", "RECONNECTING", "DISCONNECTED",
           "TAKEOVER_AFTER", "WATCH_IDLE", "MANAGER_START_TIMEOUT"]


class Service(Peer, ServiceIO, ServiceWork):
    """Base class of all Services (msl-network 1.0's ``Service``).

    Subclass it, add methods, and call :meth:`start`.
    """

    def __init__(self, *, name: str | None = None, max_clients: int | None = None,
                 ignore_attributes: str | Iterable[str] | None = None) -> None:
        self._name = self.__class__.__name__ if name is None else name
        self._network_name = "<UNKNOWN>"
        self._address_manager = None
        self._port = None
        self._identity = None
        self._loop_thread_id = None
        self._tasks: list[Any] = []
        if max_clients is None or max_clients <= 0:
            self._max_clients = -1
        else:
            self._max_clients = int(max_clients)
        self._ignore_attributes = list(DEFAULT_IGNORE)
        if ignore_attributes is not None:
            if isinstance(ignore_attributes, str):
                self.ignore_attributes(ignore_attributes)
            else:
                self.ignore_attributes(*ignore_attributes)
        self._netmgr = _State()

    # ------------------------------------------------------------------ 1.0 API
    @property
    def max_clients(self) -> int:
        """:class:`int`: How many Clients may link with this Service (-1: no limit)."""
        return self._max_clients

    @property
    def request(self) -> dict[str, Any] | None:
        """The request being handled by the calling thread (a dict with ``requester``,
        ``uid``, ``attribute``, ``args`` and ``kwargs``), or None outside a request."""
        return getattr(self._netmgr.local, "request", None)

    def add_tasks(self, *coros_or_futures: Coroutine[Any, Any, Any]) -> None:
        """Coroutines to run while the Service runs (in a private asyncio loop, own thread)."""
        self._tasks.extend(coros_or_futures)

    def shutdown_handler(self) -> None:
        """Called once the connection to the Manager is finally lost, before :meth:`start`
        returns. Override it to clean up."""

    def ignore_attributes(self, *names: str) -> None:
        """Leave these attribute names out of the identity (call before :meth:`start`).
        Clients can still call them."""
        self._ignore_attributes.extend(names)

    def emit_notification(self, *args: Any, **kwargs: Any) -> None:
        """Send a notification to every Client linked with this Service. Any thread may call
        it; notifications and replies reach the Manager in the order they were emitted."""
        st = self._netmgr
        if not self._nm_send(dumps(notification(self._name, args, kwargs)), st.gen):
            logger.debug("%s: notification dropped, not connected", self._name)

    def emit_notification_threadsafe(self, *args: Any, **kwargs: Any) -> None:
        """The same as :meth:`emit_notification` (which is thread-safe in netmgr)."""
        self.emit_notification(*args, **kwargs)

    def stop_service(self, timeout: float | None = None) -> None:
        """Disconnect from the Manager for good (no reconnect); :meth:`start` then returns.

        netmgr; callable from any thread, not by Clients. Waits up to `timeout` seconds for
        :meth:`start` to finish when called from another thread (None: do not wait).
        """
        st = self._netmgr
        with st.cond:
            st.stopping = True
            transport = st.transport
            st.cond.notify_all()
        if transport is not None:
            self._nm_send_disconnect(st.gen)
            transport.shutdown()
        if timeout is not None and threading.get_ident() != self._loop_thread_id:
            deadline = time.monotonic() + timeout
            with st.cond:
                while st.running and time.monotonic() < deadline:
                    st.cond.wait(max(0.0, deadline - time.monotonic()))

    def start(self, *, name: str | None = None,
              host: str | Sequence[str | tuple[str, int]] = "localhost", port: int = PORT,
              timeout: float | None = 10, username: str | None = None,
              password: str | None = None, password_manager: str | None = None,
              read_limit: int | None = None, disable_tls: bool = False,
              cert_file: str | None = None, assert_hostname: bool = True,
              auto_save: bool = False, **netmgr_extras: Any) -> None:
        """Connect to the Manager and serve requests until disconnected (blocking; 1.0).

        See :func:`netmgr.client.connect` for the parameters (`host` may be a failover list).
        netmgr extras: ``reconnect`` (False; True or a number of attempts: reconnect when the
        connection drops, and keep trying to connect at start-up), ``max_delay`` (30 s, the
        longest wait between attempts), ``on_state_change`` (``callback(service, state)``,
        called on the reading thread), ``max_workers`` (threads running requests at once).
        """
        check_extras("start", netmgr_extras, EXTRA_KEYS)
        if name is not None:
            self._name = name
        if password and password_manager:
            raise ValueError(
                'Specify either "password" or "password_manager" but not both.\n'
                'A Manager cannot be started using multiple authentication methods.')
        st = self._netmgr
        if st.running:
            raise RuntimeError(f"the {self._name!r} Service is already running")
        self._identity = self._generate_identity()
        workers = netmgr_extras.pop("max_workers", None)
        self._nm_opts = Options(
            host=host, port=port, timeout=timeout, username=username, password=password,
            password_manager=password_manager, read_limit=read_limit, disable_tls=disable_tls,
            cert_file=cert_file, assert_hostname=assert_hostname, auto_save=auto_save,
            **netmgr_extras)
        st.max_workers = max(2, int(workers)) if workers else max(8, min(32, (os.cpu_count() or 1) + 4))
        st.stopping = st.done = False
        st.rejected = None
        self._loop_thread_id = threading.get_ident()
        st.running = True
        if not self._nm_serve(st):
            return None
        if st.rejected and not st.stopping:
            raise ConnectionError(f"Manager[{self._address_manager}] refused the "
                                  f"{self._name!r} Service: {st.rejected}")
        return None

    def _nm_serve(self, st):
        """Connect, then read and run requests on this thread until the end; False when no
        connection was made."""
        connected = False
        try:
            if not self._nm_connect(initial=True):
                return False
            connected = True
            if self._tasks:
                tasks, self._tasks = self._tasks, []
                run_tasks_in_thread(self._name, tasks)
            with st.cond:
                st.threads += 2  # this thread and the watcher
            self._nm_spawn_worker()
            try:
                self._nm_work()
            finally:
                with st.cond:
                    st.threads -= 1
            return True
        finally:
            self._nm_stopped(st, connected)

    def _nm_stopped(self, st, connected):
        self._nm_finish(st)
        with st.cond:
            transport, st.transport = st.transport, None
            st.gen += 1
        if transport is not None:
            transport.close()  # start() ended abnormally (e.g. KeyboardInterrupt)
        if connected:
            try:
                self.shutdown_handler()
            except Exception:  # noqa: BLE001
                logger.exception("shutdown_handler of %s raised", self._name)
        with st.cond:
            st.running = False
            st.cond.notify_all()
        self._loop_thread_id = None

    # ------------------------------------------------------------------ identity
    def _nm_controls(self, attribute):
        """Whether `attribute` is a base-class method that controls the Service (not remote)."""
        return attribute in _NOT_REMOTE and getattr(type(self), attribute, None) is getattr(
            Service, attribute, None)

    def _generate_identity(self):
        attributes = {}
        for name in dir(self):
            if name.startswith("_") or name in self._ignore_attributes:
                continue
            try:
                attrib = getattr(self, name)
            except Exception as exc:  # noqa: BLE001 -- e.g. a property that needs hardware
                logger.warning("%s [attribute=%r]", exc, name)
                continue
            try:
                value = str(inspect.signature(attrib))
            except TypeError:
                value = attrib  # not callable
            except ValueError as exc:
                logger.warning("%s [attribute=%r]", exc, name)
                continue
            try:
                dumps(value)
            except TypeError as exc:
                logger.warning("%s [attribute=%r]", exc, name)
                continue
            attributes[name] = value
        return {"type": "service", "name": self._name, "attributes": attributes,
                "max_clients": self._max_clients, "language": LANGUAGE, "os": OS_NAME}


def filter_service_start_kwargs(**kwargs: Any) -> dict[str, Any]:
    """The keyword arguments that :meth:`Service.start` accepts (1.0; netmgr extras kept)."""
    return pick_kwargs(kwargs, ("name", *CONNECT_KEYS, *EXTRA_KEYS),
                       (("auth_password", "password_manager"),))


def filter_run_forever_kwargs(**kwargs: Any) -> dict[str, Any]:
    """The keyword arguments that :func:`run_forever` accepts (1.0)."""
    return pick_kwargs(kwargs, RUN_FOREVER_KEYS, (("password_manager", "auth_password"),))


def run_forever(*, host: str | None = None, port: int = PORT, auth_hostname: bool = False,
                auth_login: bool = False, auth_password: str | Sequence[str] | None = None,
                database: str | None = None, disable_tls: bool = False,
                cert_file: str | None = None, key_file: str | None = None,
                key_file_password: str | Sequence[str] | None = None, log_level: str | int = "INFO",
                log_file: str | None = None) -> int:
    """Run a netmgr Manager (``netmgr start`` in a child process) until it stops (1.0).

    Blocking; Ctrl+C stops the Manager. Returns the Manager's exit status.
    """
    return run_manager(manager_argv(host, port, auth_hostname, auth_login, auth_password,
                                    database, disable_tls, cert_file, key_file,
                                    key_file_password, log_level, log_file))


def run_services(*services: Service, **kwargs: Any) -> None:
    """Start a netmgr Manager and then the `services`; return when the last Service has left.

    `kwargs` go to :func:`run_forever` (the Manager) and :meth:`Service.start`, each taking the
    ones it accepts (1.0). ``port=0`` lets the Manager choose a free port. The Manager runs as a
    child process (``netmgr start``), its output logged by ``netmgr.manager.process``, and is
    stopped when every Service has disconnected (e.g. after each got ``shutdown_service``).
    """
    if not services:
        msg = "Warning... no services have been specified"
        logger.error(msg)
        print(msg, file=sys.stderr)
        return None
    for service in services:
        if not isinstance(service, Service):
            raise TypeError(f"All services must be of type {Service}")
    service_kwargs = filter_service_start_kwargs(**kwargs)
    service_kwargs.pop("name", None)
    run_with_manager(services, manager_argv(**filter_run_forever_kwargs(**kwargs)),
                     service_kwargs)
    return None
