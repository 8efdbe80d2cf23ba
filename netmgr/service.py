"""The blocking Service base class, and ``run_forever`` / ``run_services`` (msl-network 1.0's API).

Porting is an import change::

    from msl.network import Service, run_services   ->   from netmgr.service import Service, run_services

A Service's public attributes become its identity (``str(inspect.signature(x))`` for callables,
the value for the rest, minus 1.0's ignore list and :meth:`Service.ignore_attributes`);
private attributes are refused; requests run concurrently on a bounded pool of threads and their
replies may come back out of order; :meth:`Service.emit_notification` works from any thread and is
ordered with the replies; ``shutdown_service`` and :meth:`Service.shutdown_handler` behave as in 1.0.

Threading model: the thread that reads a request from the socket runs it itself, so a request
starts with no queue and no thread hand-off. One idle pool thread, the *watcher*, takes over
reading when a request has run for :data:`TAKEOVER_AFTER` (5 ms), and the reader hands reading
on at once when several requests arrived together; so long requests still run concurrently, on
a pool of at most ``max_workers`` threads, and their replies may come back out of order.
Non-callable attributes and refusals are answered by the reader at once. Replies and
notifications share one ordered outbox: the thread that finds no write in progress writes, with
one ``sendall`` for everything queued meanwhile, so an emitter never waits for another's write.
"""
import collections
import inspect
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time

from netmgr import _conn
from netmgr._conn import (HOSTNAME, LANGUAGE, OS_NAME, Backoff, Credentials, Lines, TooLong,
                          parse_managers, reconnect_attempts)
from netmgr.protocol import (DISCONNECT_REQUEST, NOTIFICATION_UID, PORT, SHUTDOWN_SERVICE, dumps,
                             loads)

logger = logging.getLogger("netmgr.service")

CONNECTED = "CONNECTED"
RECONNECTING = "RECONNECTING"
DISCONNECTED = "DISCONNECTED"

_START_KEYS = ("name", "host", "port", "timeout", "username", "password", "password_manager",
               "read_limit", "disable_tls", "cert_file", "assert_hostname", "auto_save")
_EXTRA_KEYS = ("reconnect", "max_delay", "on_state_change", "max_workers")
_RUN_FOREVER_KEYS = ("host", "port", "auth_hostname", "auth_login", "auth_password", "database",
                     "disable_tls", "cert_file", "key_file", "key_file_password", "log_level",
                     "log_file")

#: 1.0's attributes that never appear in a Service's identity, plus netmgr's own.
DEFAULT_IGNORE = [
    "add_tasks", "address_manager", "emit_notification", "emit_notification_threadsafe",
    "identity", "ignore_attributes", "loop_thread_id", "max_clients", "name", "port",
    "shutdown_handler", "start",
    "request", "stop_service",
]

#: A request that runs longer than this (seconds) on the reading thread hands reading on.
TAKEOVER_AFTER = 0.005
#: Seconds without requests after which the watcher thread stops checking and sleeps.
WATCH_IDLE = 1.0

#: Methods of the base class that a Client may not call remotely (they control the Service).
_NOT_REMOTE = frozenset(("start", "stop_service", "add_tasks", "ignore_attributes",
                         "shutdown_handler"))

__all__ = ["Service", "run_forever", "run_services", "filter_service_start_kwargs",
           "filter_run_forever_kwargs", "CONNECTED", "RECONNECTING", "DISCONNECTED"]


class _State:
    """The connection and pool state of one Service (kept apart from the user's attributes)."""

    def __init__(self):
        self.transport = None
        self.lines = None
        self.gen = 0
        self.stopping = False  # shutdown_service / stop_service: do not reconnect
        self.done = False
        self.running = False
        self.rejected = None
        self.received = 0
        # the reading role (see _work): one lock, a condition for the watcher and one for sleepers
        lock = threading.Lock()
        self.cond = threading.Condition(lock)  # idle threads that are not the watcher
        self.watch_cond = threading.Condition(lock)
        self.leader = None  # ident of the thread that reads the socket
        self.busy_since = 0.0  # when the leader started running a request itself (0: reading)
        self.last_activity = 0.0
        self.watcher = None  # ident of the idle thread that watches a busy leader
        self.watcher_sleeping = False
        self.sleepers = 0
        self.threads = 0
        self.max_workers = 8
        self.buffered = collections.deque()
        # outbox
        self.olock = threading.Lock()
        self.out = []
        self.writing = False
        # current request, per thread
        self.local = threading.local()


class Service:
    """Base class of all Services (msl-network 1.0's ``Service``).

    Subclass it, add methods, and call :meth:`start`.
    """

    def __init__(self, *, name=None, max_clients=None, ignore_attributes=None):
        self._name = self.__class__.__name__ if name is None else name
        self._network_name = "<UNKNOWN>"
        self._address_manager = None
        self._port = None
        self._identity = None
        self._loop_thread_id = None
        self._tasks = []
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

    def __str__(self):
        return self._network_name

    # ------------------------------------------------------------------ 1.0 API
    @property
    def address_manager(self):
        """:class:`str`: ``host:port`` of the Manager this Service is connected to."""
        return self._address_manager

    @property
    def name(self):
        """:class:`str`: The name of this Service on the Manager."""
        return self._name

    @property
    def port(self):
        """:class:`int`: The local port of the connection to the Manager."""
        return self._port

    @property
    def loop_thread_id(self):
        """The identifier of the thread that called :meth:`start` (None when not running)."""
        return self._loop_thread_id

    @property
    def max_clients(self):
        """:class:`int`: How many Clients may link with this Service (-1: no limit)."""
        return self._max_clients

    @property
    def request(self):
        """The request being handled by the calling thread (a dict with ``requester``,
        ``uid``, ``attribute``, ``args`` and ``kwargs``), or None outside a request."""
        return getattr(self._netmgr.local, "request", None)

    def identity(self):
        """The identity this Service sends to the Manager."""
        return self._identity

    @staticmethod
    def set_logging_level(level):
        """Set the level of the ``netmgr`` loggers; returns whether it succeeded."""
        return _conn.set_logging_level(level)

    def add_tasks(self, *coros_or_futures):
        """Coroutines to run while the Service runs (in a private asyncio loop, own thread)."""
        self._tasks.extend(coros_or_futures)

    def shutdown_handler(self):
        """Called once the connection to the Manager is finally lost, before :meth:`start`
        returns. Override it to clean up."""

    def ignore_attributes(self, *names):
        """Leave these attribute names out of the identity (call before :meth:`start`).
        Clients can still call them."""
        self._ignore_attributes.extend(names)

    def emit_notification(self, *args, **kwargs):
        """Send a notification to every Client linked with this Service. Any thread may call
        it; notifications and replies reach the Manager in the order they were emitted."""
        st = self._netmgr
        data = dumps({"error": False, "result": [args, kwargs], "service": self._name,
                      "uid": NOTIFICATION_UID})
        if not self._nm_send(data, st.gen):
            logger.debug("%s: notification dropped, not connected", self._name)

    def emit_notification_threadsafe(self, *args, **kwargs):
        """The same as :meth:`emit_notification` (which is thread-safe in netmgr)."""
        self.emit_notification(*args, **kwargs)

    def stop_service(self, timeout=None):
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
            self._nm_send(dumps({"service": self._network_name, "attribute": DISCONNECT_REQUEST}),
                       st.gen)
            transport.shutdown()
        if timeout is not None and threading.get_ident() != self._loop_thread_id:
            deadline = time.monotonic() + timeout
            with st.cond:
                while st.running and time.monotonic() < deadline:
                    st.cond.wait(max(0.0, deadline - time.monotonic()))

    def start(self, *, name=None, host="localhost", port=PORT, timeout=10, username=None,
              password=None, password_manager=None, read_limit=None, disable_tls=False,
              cert_file=None, assert_hostname=True, auto_save=False, **netmgr_extras):
        """Connect to the Manager and serve requests until disconnected (blocking; 1.0).

        See :func:`netmgr.client.connect` for the parameters (`host` may be a failover list).
        netmgr extras: ``reconnect`` (False; True or a number of attempts: reconnect when the
        connection drops, and keep trying to connect at start-up), ``max_delay`` (30 s, the
        longest wait between attempts), ``on_state_change`` (``callback(service, state)``,
        called on the reading thread), ``max_workers`` (threads running requests at once).
        """
        unknown = set(netmgr_extras) - set(_EXTRA_KEYS)
        if unknown:
            raise TypeError(f"start() got unexpected keyword argument(s) {sorted(unknown)}")
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
        self._nm_opts = dict(
            managers=parse_managers(host, port), timeout=timeout, read_limit=read_limit,
            tls=dict(disable_tls=disable_tls, cert_file=cert_file,
                     assert_hostname=assert_hostname, auto_save=auto_save),
            credentials=Credentials(username, password, password_manager),
            attempts=reconnect_attempts(netmgr_extras.get("reconnect", False)),
            max_delay=netmgr_extras.get("max_delay", 30.0),
            on_state_change=netmgr_extras.get("on_state_change"))
        workers = netmgr_extras.get("max_workers")
        st.max_workers = max(2, int(workers)) if workers else max(8, min(32, (os.cpu_count() or 1) + 4))
        st.stopping = st.done = False
        st.rejected = None
        self._loop_thread_id = threading.get_ident()
        st.running = True
        connected = False
        try:
            if not self._nm_connect(initial=True):
                return None
            connected = True
            if self._tasks:
                tasks, self._tasks = self._tasks, []
                _conn.run_tasks_in_thread(self._name, tasks)
            with st.cond:
                st.threads += 2  # this thread and the watcher
            self._nm_spawn_worker()
            try:
                self._nm_work()
            finally:
                with st.cond:
                    st.threads -= 1
        finally:
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
        if st.rejected and not st.stopping:
            raise ConnectionError(f"Manager[{self._address_manager}] refused the "
                                  f"{self._name!r} Service: {st.rejected}")
        return None

    # ------------------------------------------------------------------ connection
    def _nm_connect(self, initial=False):
        """Connect (trying each Manager, with back-off when reconnecting). False: stop."""
        st = self._netmgr
        opts = self._nm_opts
        backoff = Backoff(opts["max_delay"])
        rounds = 0
        retry = opts["attempts"] != 0
        while True:
            errors = []
            for host, h_port in opts["managers"]:
                if st.stopping:
                    return False
                try:
                    transport = _conn.open_connection(host, h_port, timeout=opts["timeout"],
                                                      **opts["tls"])
                except ConnectionRefusedError as exc:
                    if str(exc) == "SSL certificate required":
                        return False  # 1.0: the user refused the certificate
                    errors.append(exc)
                    continue
                except (OSError, TimeoutError) as exc:
                    errors.append(exc)
                    continue
                lines = Lines(opts["read_limit"])
                try:
                    local_port, leftover = _conn.handshake(
                        transport, lines, self._identity, opts["credentials"], host, h_port,
                        opts["timeout"], opts["tls"]["disable_tls"])
                except ValueError:
                    transport.close()
                    if initial:
                        raise  # wrong credentials
                    errors.append(sys.exc_info()[1])
                    continue
                except (OSError, TimeoutError) as exc:
                    transport.close()
                    errors.append(exc)
                    continue
                with st.cond:
                    if st.stopping:
                        transport.close()
                        return False
                    st.transport = transport
                    st.lines = lines
                    st.gen += 1
                    st.buffered.clear()
                    st.buffered.extend(leftover)
                    st.received = 0
                    st.rejected = None
                with st.olock:
                    st.out.clear()
                    st.writing = False
                self._port = local_port
                self._network_name = f"{self._name}[{HOSTNAME}:{local_port}]"
                self._address_manager = f"{host}:{h_port}"
                logger.info("connected to Manager[%s] as %s", self._address_manager,
                            self._network_name)
                self._nm_state_changed(CONNECTED)
                return True
            rounds += 1
            if initial and not retry:
                if len(errors) == 1:
                    raise errors[0]
                raise ConnectionError("Cannot connect to any of the Managers:\n" + "\n".join(
                    f"  {str(e).splitlines()[0] if str(e) else type(e).__name__}" for e in errors))
            if 0 < opts["attempts"] <= rounds:
                logger.error("%s gave up connecting after %d attempt(s)", self._name, rounds)
                return False
            delay = backoff.next()
            logger.info("%s: connecting again in %.2f s (%s)", self._name, delay,
                        str(errors[-1]).splitlines()[0] if errors and str(errors[-1]) else "")
            with st.cond:
                if st.stopping:
                    return False
                st.cond.wait(delay)

    def _nm_state_changed(self, state):
        callback = self._nm_opts.get("on_state_change")
        if callback is not None:
            try:
                callback(self, state)
            except Exception:  # noqa: BLE001
                logger.exception("on_state_change of %s raised", self._name)

    def _nm_connection_lost(self):
        """EOF or an error on the socket: reconnect, or finish. Called by the leader."""
        st = self._netmgr
        with st.cond:
            transport, st.transport = st.transport, None
            st.gen += 1
        if transport is not None:
            transport.close()
        reconnect = (self._nm_opts["attempts"] != 0 and not st.stopping)
        if st.rejected and st.received == 0 and not reconnect:
            logger.error("%s", st.rejected)
        if not reconnect:
            logger.info("%s disconnected from Manager[%s]", self._network_name, self._address_manager)
            self._nm_state_changed(DISCONNECTED)
            return False
        logger.warning("%s lost the connection to Manager[%s]; reconnecting", self._network_name,
                       self._address_manager)
        self._nm_state_changed(RECONNECTING)
        if self._nm_connect():
            return True
        self._nm_state_changed(DISCONNECTED)
        return False

    # ------------------------------------------------------------------ output
    def _nm_send(self, data, gen):
        """Queue `data` on the ordered outbox; the first thread to find no writer writes."""
        st = self._netmgr
        with st.olock:
            if gen != st.gen or st.transport is None:
                return False
            if st.writing:
                st.out.append(data)
                return True
            st.writing = True
            transport = st.transport
        while True:
            try:
                transport.sendall(data)
            except OSError as exc:
                logger.debug("%s: write failed: %s", self._name, exc)
                transport.shutdown()  # the leader sees EOF and reconnects or stops
                with st.olock:
                    st.out.clear()
                    st.writing = False
                return False
            with st.olock:
                if st.out and gen == st.gen:
                    data = b"".join(st.out) if len(st.out) > 1 else st.out[0]
                    st.out.clear()
                    continue
                st.out.clear()
                st.writing = False
                return True

    def _nm_reply(self, request, value, gen):
        requester = request.get("requester")
        uid = request.get("uid", "")
        try:
            data = dumps({"error": False, "requester": requester, "result": value, "uid": uid})
        except TypeError as error:
            to_json = getattr(value, "to_json", None)
            try:
                if to_json is None:
                    raise error
                data = dumps({"error": False, "requester": requester, "result": to_json(),
                              "uid": uid})
            except Exception as exc:  # noqa: BLE001 -- the Client gets it as an error reply
                logger.error("%s: %s", type(exc).__name__, exc)
                self._nm_reply_error(request, exc, gen)
                return
        self._nm_send(data, gen)

    def _nm_reply_error(self, request, exc, gen):
        message = exc if isinstance(exc, str) else f"{exc.__class__.__name__}: {exc}"
        self._nm_send(dumps({"error": True, "message": message, "requester": request.get("requester"),
                          "result": None, "traceback": [], "uid": request.get("uid", "")}), gen)

    # ------------------------------------------------------------------ threads
    # The thread that reads a request runs it itself: no hand-off, no wake-up on the request's
    # path. One idle thread, the *watcher*, checks every TAKEOVER_AFTER seconds while requests
    # are flowing; when the reader has been running one request that long, the watcher takes
    # over reading, so long requests still run concurrently. When several requests arrive
    # together the reader hands reading on at once. After WATCH_IDLE seconds without requests
    # the watcher sleeps until the next request wakes it.

    def _nm_spawn_worker(self):
        thread = threading.Thread(target=self._nm_worker_main, name=f"{self._name}-worker",
                                  daemon=True)
        thread.start()

    def _nm_worker_main(self):
        try:
            self._nm_work()
        finally:
            with self._netmgr.cond:
                self._netmgr.threads -= 1

    def _nm_work(self):
        st = self._netmgr
        me = threading.get_ident()
        lead = False
        while True:
            if not lead and not self._nm_await_role(st, me):
                return
            try:
                item = self._nm_lead(st, me)
            except BaseException:
                self._nm_finish(st)
                raise
            if item is None:
                self._nm_finish(st)
                return
            self._nm_execute(item)
            with st.cond:
                lead = st.leader == me
                if lead:
                    st.busy_since = 0.0

    def _nm_finish(self, st):
        with st.cond:
            st.leader = None
            st.busy_since = 0.0
            st.done = True
            st.cond.notify_all()
            st.watch_cond.notify_all()

    def _nm_await_role(self, st, me):
        """Wait (as the watcher, or asleep) until this thread reads. False: the Service ended."""
        spawn = False
        with st.cond:
            while True:
                if st.done:
                    if st.watcher == me:
                        st.watcher = None
                    return False
                if st.leader is None:
                    st.leader = me
                    if st.watcher == me:
                        st.watcher = None
                        st.cond.notify()  # a sleeper becomes the watcher
                    return True
                if st.watcher is None:
                    st.watcher = me
                if st.watcher != me:
                    st.sleepers += 1
                    st.cond.wait()
                    st.sleepers -= 1
                    continue
                now = time.monotonic()
                if st.busy_since and now - st.busy_since >= TAKEOVER_AFTER:
                    # the reader is running a long request: read in its place
                    st.leader = me
                    st.busy_since = 0.0
                    st.watcher = None
                    if st.sleepers:
                        st.cond.notify()
                    elif st.threads < st.max_workers:
                        st.threads += 1
                        spawn = True
                    break
                if st.busy_since:
                    wait = max(0.0005, TAKEOVER_AFTER - (now - st.busy_since))
                elif now - st.last_activity < WATCH_IDLE:
                    wait = TAKEOVER_AFTER
                else:
                    wait = None
                    st.watcher_sleeping = True
                st.watch_cond.wait(wait)
                st.watcher_sleeping = False
        if spawn:
            self._nm_spawn_worker()
        return True

    def _nm_lead(self, st, me):
        """Read until a request must run; return it (still the reader unless handed on)."""
        buffered = st.buffered
        while True:
            while buffered:
                item = self._nm_handle(buffered.popleft())
                if item is None:
                    continue
                spawn = False
                with st.cond:
                    now = time.monotonic()
                    st.last_activity = now
                    if buffered and (st.watcher is not None or st.sleepers
                                     or st.threads < st.max_workers):
                        # more requests are waiting: let another thread read them now
                        st.leader = None
                        if st.watcher is not None:
                            st.watch_cond.notify()
                        elif st.sleepers:
                            st.cond.notify()
                        else:
                            st.threads += 1
                            spawn = True
                    else:
                        st.busy_since = now
                        if st.watcher_sleeping:
                            st.watcher_sleeping = False
                            st.watch_cond.notify()
                        elif st.watcher is None and not st.sleepers and \
                                st.threads < st.max_workers:
                            st.threads += 1
                            spawn = True
                if spawn:
                    self._nm_spawn_worker()
                return item
            transport = st.transport
            if transport is None:
                if not self._nm_connection_lost():
                    return None
                continue
            try:
                data = transport.recv(None)
            except OSError as exc:
                logger.debug("%s: read failed: %s", self._name, exc)
                data = b""
            if not data:
                tail = st.lines.close()
                if tail:
                    buffered.append(tail)
                    continue
                if not self._nm_connection_lost():
                    return None
                continue
            buffered.extend(st.lines.feed(data))

    def _nm_handle(self, line):
        """One line from the Manager: answer it now, or return ``(method, request, gen)``."""
        st = self._netmgr
        gen = st.gen
        if line.__class__ is TooLong:
            uid, requester = line.field("uid"), line.field("requester")
            text = (f"ValueError: the request is {line.size} bytes, more than the "
                    f"read_limit={self._nm_opts['read_limit']} bytes of the {self._name!r} Service")
            logger.error("%s (uid=%r, requester=%r)", text, uid, requester)
            if uid is not None and requester is not None:
                self._nm_reply_error({"uid": uid, "requester": requester}, text, gen)
            return None
        try:
            request = loads(line)
        except ValueError as exc:
            logger.critical("%s: invalid JSON from the Manager: %s", self._name, exc)
            return None
        if request.__class__ is not dict:
            logger.error("%s: unexpected message %r", self._name, line[:200])
            return None
        if request.pop("error", False):
            msg = "\n".join(request.get("traceback") or []) or request.get("message") or \
                "UnknownError: No error message has been provided"
            logger.error("%s sent an error: %s", request.get("requester"), msg)
            if st.received == 0 and request.get("uid", "") == "":
                st.rejected = msg
            return None
        st.received += 1
        attribute = request.get("attribute")
        if attribute.__class__ is not str:
            logger.error("%s: a request without an attribute: %r", self._name, line[:200])
            return None
        if attribute.startswith("_"):
            logger.warning("%s requested private attribute %r", request.get("requester"), attribute)
            self._nm_reply_error(request, PermissionError("Cannot request a private attribute"), gen)
            return None
        try:
            attr = getattr(self, attribute)
        except AttributeError as exc:
            self._nm_reply_error(request, exc, gen)
            return None
        if attribute in _NOT_REMOTE and getattr(type(self), attribute, None) is getattr(
                Service, attribute, None):
            self._nm_reply_error(request, PermissionError(
                f"Cannot request {attribute!r}: it controls the Service"), gen)
            return None
        if attribute == SHUTDOWN_SERVICE:
            self._nm_shutdown_service(attr, request, gen)
            return None
        if callable(attr):
            return attr, request, gen
        self._nm_reply(request, attr, gen)
        return None

    def _nm_shutdown_service(self, attr, request, gen):
        st = self._netmgr
        try:
            value = attr(*request.get("args", ()), **request.get("kwargs", {}))
        except Exception as exc:  # noqa: BLE001
            self._nm_reply_error(request, exc, gen)
            return
        st.stopping = True
        self._nm_reply(request, value, gen)
        # the Manager, which knows the Service's links, then closes the connection
        self._nm_send(dumps({"service": self._network_name, "attribute": DISCONNECT_REQUEST}), gen)

    def _nm_execute(self, item):
        method, request, gen = item
        local = self._netmgr.local
        local.request = request
        try:
            value = method(*request.get("args", ()), **request.get("kwargs", {}))
        except Exception as exc:  # noqa: BLE001 -- becomes the Client's RuntimeError
            logger.error("%s: %s", exc.__class__.__name__, exc)
            self._nm_reply_error(request, exc, gen)
        else:
            self._nm_reply(request, value, gen)
        finally:
            local.request = None

    # ------------------------------------------------------------------ identity
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


def filter_service_start_kwargs(**kwargs):
    """The keyword arguments that :meth:`Service.start` accepts (1.0; netmgr extras kept)."""
    kws = {k: kwargs[k] for k in (*_START_KEYS, *_EXTRA_KEYS) if k in kwargs}
    if "auth_password" in kwargs and "password_manager" not in kws:
        kws["password_manager"] = kwargs["auth_password"]
    return kws


def filter_run_forever_kwargs(**kwargs):
    """The keyword arguments that :func:`run_forever` accepts (1.0)."""
    kws = {k: kwargs[k] for k in _RUN_FOREVER_KEYS if k in kwargs}
    if "password_manager" in kwargs and "auth_password" not in kws:
        kws["auth_password"] = kwargs["password_manager"]
    return kws


# ------------------------------------------------------------------------------------ Manager

_READY = re.compile(r"Network Manager running on (\S+):(\d+) \(TLS (ENABLED|DISABLED)\)")
MANAGER_START_TIMEOUT = 60


def _manager_argv(host=None, port=PORT, auth_hostname=False, auth_login=False,
                  auth_password=None, database=None, disable_tls=False, cert_file=None,
                  key_file=None, key_file_password=None, log_level="INFO", log_file=None):
    argv = [sys.executable, "-m", "netmgr.launcher", "start", "-p", str(port)]
    if host is not None:
        argv += ["-H", str(host)]
    if auth_hostname:
        argv.append("--auth-hostname")
    if auth_login:
        argv.append("--auth-login")
    if auth_password is not None:
        argv += ["-P", " ".join(auth_password) if isinstance(auth_password, (list, tuple))
                 else str(auth_password)]
    if database is not None:
        argv += ["-d", str(database)]
    if disable_tls:
        argv.append("--disable-tls")
    if cert_file is not None:
        argv += ["-c", str(cert_file)]
    if key_file is not None:
        argv += ["-k", str(key_file)]
    if key_file_password is not None:
        argv += ["-D", " ".join(key_file_password) if isinstance(key_file_password, (list, tuple))
                 else str(key_file_password)]
    if log_level is not None:
        argv += ["-G", str(log_level)]
    if log_file is not None:
        argv += ["-l", str(log_file)]
    return argv


class _ManagerProcess:
    """``netmgr start`` as a child process; ready once it prints its running line."""

    def __init__(self, argv):
        self.lines = collections.deque(maxlen=200)
        self.port = None
        self.host = None
        self._ready = threading.Event()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._drain, name="netmgr-manager-output",
                                        daemon=True)
        self._reader.start()

    def _drain(self):
        out = logging.getLogger("netmgr.manager.process")
        for line in self.proc.stdout:
            self.lines.append(line)
            out.info("%s", line.rstrip())
            match = _READY.search(line)
            if match and self.port is None:
                self.host, self.port = match.group(1), int(match.group(2))
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout=MANAGER_START_TIMEOUT):
        if not self._ready.wait(timeout) or self.port is None:
            self.stop()
            raise RuntimeError("the Network Manager did not start:\n" + "".join(self.lines))
        return self.port

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


def run_forever(*, host=None, port=PORT, auth_hostname=False, auth_login=False,
                auth_password=None, database=None, disable_tls=False, cert_file=None,
                key_file=None, key_file_password=None, log_level="INFO", log_file=None):
    """Run a netmgr Manager (``netmgr start`` in a child process) until it stops (1.0).

    Blocking; Ctrl+C stops the Manager. Returns the Manager's exit status.
    """
    argv = _manager_argv(host, port, auth_hostname, auth_login, auth_password, database,
                         disable_tls, cert_file, key_file, key_file_password, log_level, log_file)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def run_services(*services, **kwargs):
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
    manager_kwargs = filter_run_forever_kwargs(**kwargs)
    service_kwargs = filter_service_start_kwargs(**kwargs)
    service_kwargs.pop("name", None)
    manager = _ManagerProcess(_manager_argv(**manager_kwargs))
    try:
        port = manager.wait_ready()
        service_kwargs["port"] = port
        if "host" not in service_kwargs or service_kwargs["host"] is None:
            service_kwargs["host"] = "localhost"
        errors = []

        def run(service):
            try:
                service.start(**service_kwargs)
            except Exception as exc:  # noqa: BLE001 -- reported, the others keep running
                logger.exception("the %r Service failed", service.name)
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(s,), name=f"run_services-{s.name}",
                                    daemon=True) for s in services]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.5)
                    if manager.proc.poll() is not None:
                        break
        except KeyboardInterrupt:
            logger.info("CTRL+C keyboard interrupt received")
            for s in services:
                s.stop_service()
    finally:
        manager.stop()
    return None
