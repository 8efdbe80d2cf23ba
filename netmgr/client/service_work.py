"""A Service's threads: who reads the socket, and running each request on the thread that read it.

The thread that reads a request runs it itself: no queue, no hand-off and no wake-up on the
request's path. One idle thread, the *watcher*, checks every :data:`TAKEOVER_AFTER` seconds
while requests are flowing; when the reader has been running one request that long, the
watcher takes over reading, so long requests still run concurrently, on at most
``max_workers`` threads, and their replies may come back out of order. When several requests
arrived together the reader hands reading on at once. After :data:`WATCH_IDLE` seconds without
requests the watcher sleeps until the next request wakes it. Non-callable attributes and
refusals are answered by the reader at once.

:class:`_State` holds the reading role (its methods are called with ``cond`` held and do no
I/O); :class:`ServiceWork` is a mixin of :class:`netmgr.client.Service`.
"""
import collections
import logging
import threading
import time

from orjson import loads as _orjson_loads

from netmgr.protocol import SHUTDOWN_SERVICE, TooLong, loads

logger = logging.getLogger("netmgr.service")

#: A request that runs longer than this (seconds) on the reading thread hands reading on.
TAKEOVER_AFTER = 0.005
#: Seconds without requests after which the watcher thread stops checking and sleeps.
WATCH_IDLE = 1.0


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
        # the reading role: one lock, a condition for the watcher and one for sleepers
        self.lock = lock = threading.Lock()  # ``with lock`` where ``cond`` is not waited on
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

    def await_role(self, me):
        """Wait, as the watcher or asleep, until thread `me` reads: ``(reads, spawn)``, reads
        False when the Service ended, spawn True when another thread must be started."""
        while True:
            if self.done:
                if self.watcher == me:
                    self.watcher = None
                return False, False
            if self.leader is None:
                self.leader = me
                if self.watcher == me:
                    self.watcher = None
                    self.cond.notify()  # a sleeper becomes the watcher
                return True, False
            if self.watcher is None:
                self.watcher = me
            if self.watcher != me:
                self.sleepers += 1
                self.cond.wait()
                self.sleepers -= 1
                continue
            spawn = self._watch(me)
            if spawn is not None:
                return True, spawn

    def _watch(self, me):
        """The watcher's look at the reader: None after waiting, or, having taken over from a
        reader busy for :data:`TAKEOVER_AFTER`, whether to spawn a thread."""
        now = time.monotonic()
        if self.busy_since and now - self.busy_since >= TAKEOVER_AFTER:
            # the reader is running a long request: read in its place
            self.leader = me
            self.busy_since = 0.0
            self.watcher = None
            if self.sleepers:
                self.cond.notify()
            elif self.threads < self.max_workers:
                self.threads += 1
                return True
            return False
        if self.busy_since:
            wait = max(0.0005, TAKEOVER_AFTER - (now - self.busy_since))
        elif now - self.last_activity < WATCH_IDLE:
            wait = TAKEOVER_AFTER
        else:
            wait = None
            self.watcher_sleeping = True
        self.watch_cond.wait(wait)
        self.watcher_sleeping = False
        return None

    def before_running(self, more):
        """The reader will run a request itself: hand reading on at once when `more` requests
        are buffered, else let the watcher watch. Whether a thread must be spawned."""
        now = time.monotonic()
        self.last_activity = now
        if more and (self.watcher is not None or self.sleepers
                     or self.threads < self.max_workers):
            # more requests are waiting: let another thread read them now
            self.leader = None
            if self.watcher is not None:
                self.watch_cond.notify()
            elif self.sleepers:
                self.cond.notify()
            else:
                self.threads += 1
                return True
            return False
        self.busy_since = now
        if self.watcher_sleeping:
            self.watcher_sleeping = False
            self.watch_cond.notify()
        elif self.watcher is None and not self.sleepers and self.threads < self.max_workers:
            self.threads += 1
            return True
        return False

    def finish(self):
        self.leader = None
        self.busy_since = 0.0
        self.done = True
        self.cond.notify_all()
        self.watch_cond.notify_all()


class ServiceWork:
    """The threads of a Service and what they do with a request (a mixin; see the module
    docstring). Its state is the Service's ``_netmgr`` (a :class:`_State`)."""

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
            with st.lock:
                lead = st.leader == me
                if lead:
                    st.busy_since = 0.0

    def _nm_finish(self, st):
        with st.cond:
            st.finish()

    def _nm_await_role(self, st, me):
        """Wait (as the watcher, or asleep) until this thread reads. False: the Service ended."""
        with st.cond:
            reads, spawn = st.await_role(me)
        if spawn:
            self._nm_spawn_worker()
        return reads

    def _nm_lead(self, st, me):
        """Read until a request must run; return it (still the reader unless handed on)."""
        buffered = st.buffered
        while True:
            while buffered:
                item = self._nm_handle(buffered.popleft())
                if item is None:
                    continue
                with st.lock:
                    spawn = st.before_running(bool(buffered))
                if spawn:
                    self._nm_spawn_worker()
                return item
            if not self._nm_read(st):
                return None

    def _nm_read(self, st):
        """Read more lines into ``st.buffered``; False when the Service ends."""
        transport = st.transport
        if transport is None:
            return self._nm_connection_lost()
        try:
            data = transport.recv(None)
        except OSError as exc:
            logger.debug("%s: read failed: %s", self._name, exc)
            data = b""
        if not data:
            tail = st.lines.close()
            if tail:
                st.buffered.append(tail)
                return True
            return self._nm_connection_lost()
        st.buffered.extend(st.lines.feed(data))
        return True

    # ------------------------------------------------------------------ requests
    def _nm_handle(self, line):
        """One line from the Manager: answer it now, or return ``(method, request, gen)``."""
        gen = self._netmgr.gen
        if line.__class__ is TooLong:
            self._nm_too_long(line, gen)
            return None
        request = self._nm_parse(line)
        if request is None:
            return None
        attribute = request["attribute"]
        if attribute.startswith("_"):
            logger.warning("%s requested private attribute %r", request.get("requester"), attribute)
            self._nm_reply_error(request, PermissionError("Cannot request a private attribute"), gen)
            return None
        try:
            attr = getattr(self, attribute)
        except AttributeError as exc:
            self._nm_reply_error(request, exc, gen)
            return None
        if self._nm_controls(attribute):
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

    def _nm_parse(self, line):
        """The request (a dict with a str ``attribute``) in `line`, or None."""
        st = self._netmgr
        try:
            request = _orjson_loads(line)
        except ValueError:
            try:
                request = loads(line)  # NaN, Infinity
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
        if request.get("attribute").__class__ is not str:
            logger.error("%s: a request without an attribute: %r", self._name, line[:200])
            return None
        return request

    def _nm_too_long(self, line, gen):
        uid, requester = line.field("uid"), line.field("requester")
        text = (f"ValueError: the request is {line.size} bytes, more than the "
                f"read_limit={self._nm_opts.read_limit} bytes of the {self._name!r} Service")
        logger.error("%s (uid=%r, requester=%r)", text, uid, requester)
        if uid is not None and requester is not None:
            self._nm_reply_error({"uid": uid, "requester": requester}, text, gen)

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
        self._nm_send_disconnect(gen)

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
