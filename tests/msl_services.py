"""Services built on the real msl-network 1.0 ``Service`` class, for the interop tests.

They follow the 1.0 examples (Echo, BasicMath, Heartbeat) with short sleeps. Every sleep
waits on an Event that ``shutdown_handler`` sets, so no worker thread outlives its
connection (the executor's threads are joined when the interpreter exits).
"""
import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from msl.network import Service

#: a 1.0 Echo Service as a program: ``python -c ECHO_1_0 PORT`` (a process a test can kill -9)
ECHO_1_0 = """
import sys
from msl.network import Service

class Echo(Service):
    def echo(self, *args, **kwargs):
        return args, kwargs

Echo().start(host="127.0.0.1", port=int(sys.argv[1]), disable_tls=True)
"""


class Echo(Service):
    """The 1.0 Echo example: replies with the positional and keyword arguments."""

    def echo(self, *args, **kwargs):
        return args, kwargs


class Single(Echo):
    """An Echo that accepts one linked Client at a time."""

    def __init__(self, name="Single"):
        super().__init__(name=name, max_clients=1)


class Stoppable(Echo):
    """An Echo with a ``shutdown_service`` method (1.0's run_services examples)."""

    def __init__(self, name="Stoppable"):
        super().__init__(name=name)
        self.stopped = threading.Event()

    def shutdown_service(self, *args, **kwargs):
        return args, kwargs

    def shutdown_handler(self):
        self.stopped.set()


class Complex:
    """Not JSON serialisable, and no ``to_json()``."""


class BasicMath(Service):
    """The 1.0 BasicMath example with sub-second sleeps, plus a few probes."""

    euler = 2.718281828459045

    def __init__(self, name="BasicMath", workers=16):
        super().__init__(name=name)
        # 1.0's default pool has min(32, cpus + 4) threads: 6 on a 2-core machine. The
        # concurrency tests send 8 calls, so give the pool room for all of them at once.
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._closing = threading.Event()
        self.running = threading.Event()  # set once a slow() call has started
        self._password = "secret"

    @property
    def pi(self):
        return 3.141592653589793

    def _nap(self, seconds):
        self._closing.wait(seconds)

    def add(self, x, y, delay=0.0):
        self._nap(delay)
        return x + y

    def subtract(self, x, y, delay=0.0):
        self._nap(delay)
        return x - y

    def slow(self, seconds, value=None):
        """Sleep, then answer (wall-clock time stamps let tests check overlap)."""
        start = time.monotonic()
        self.running.set()
        self._nap(seconds)
        return {"value": value, "start": start, "end": time.monotonic()}

    def ensure_positive(self, x):
        if x < 0:
            raise ValueError("The value is < 0")
        return True

    def complex_result(self):
        return 1 + 2j

    def not_serialisable(self):
        return Complex()

    def drop_connection(self):
        """Close this Service's socket abruptly (from a worker thread): a crash, as the
        Manager sees it. Requests in flight, including this one, are never answered."""
        self._loop.call_soon_threadsafe(self._writer.transport.abort)
        self._nap(30)
        return "unreachable"

    def shutdown_service(self):
        return "bye"

    def shutdown_handler(self):
        self._closing.set()

    def _execute_request(self, attr, request):
        # 1.0's Service.start() never returns when a worker queues a reply after the connection
        # is lost: its final ``queue.join()`` waits for an item no consumer will take. Tests
        # that cut a connection under a running call would hang in 1.0 code, so a reply that
        # is finished after EOF is dropped here (it has nowhere to go anyway).
        try:
            response = attr(*request["args"], **request["kwargs"])
        except Exception as e:  # noqa: BLE001 -- as 1.0: the exception is the reply
            response = e
        if not self._closing.is_set():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (request, response))


class Heartbeat(Service):
    """The 1.0 Heartbeat example: ``emit_notification`` from the event loop every interval,
    and ``emit_notification_threadsafe`` from the worker thread that runs ``burst``."""

    def __init__(self, name="Heartbeat", interval=0.05):
        super().__init__(name=name)
        self._alive = True
        self._counter = 0
        self._interval = interval
        self.add_tasks(self._beat())

    async def _beat(self):
        while self._alive:
            self.emit_notification(self._counter)  # runs in the event-loop thread
            self._counter += 1
            await asyncio.sleep(self._interval)

    def reset(self):
        self._counter = 0

    def burst(self, n):
        """Emit ``n`` notifications from this worker thread, then reply."""
        for i in range(n):
            self.emit_notification_threadsafe(i, index=i + 10)
        return n

    def shutdown_service(self):
        # shutdown_service runs in the event-loop thread: a plain emit_notification is safe
        # and is queued before the reply
        self._alive = False
        self.emit_notification("goodbye")
        return "stopped"

    def shutdown_handler(self):
        self._alive = False
