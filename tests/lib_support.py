"""Helpers for the client/service library tests (tests/client/test_client_lib.py, tests/client/test_lib_*.py).

Services run in threads of the test process (netmgr's or msl-network 1.0's), or in a child
process when a test must SIGKILL them. Nothing sleeps a fixed time to wait for readiness: the
helpers poll the Manager's identity.
"""
import contextlib
import os
import subprocess
import sys
import threading
import time
import types

import msl.network

from netmgr.client import connect
from netmgr.service import Service

HOST = "127.0.0.1"


# ------------------------------------------------------------------------------------ Services
# The examples of the MSL-Network documentation, in netmgr's import form. BasicMath sleeps a
# tenth of the documented times: the synchronous sequence takes ~2.1 s, the asynchronous ~0.6 s.

class Echo(Service):

    @staticmethod
    def echo(*args, **kwargs):
        return args, kwargs


class BasicMath(Service):

    euler = 2.718281828459045

    @property
    def pi(self) -> float:
        return 3.141592653589793

    def add(self, x, y):
        time.sleep(0.1)
        return x + y

    def subtract(self, x, y):
        time.sleep(0.2)
        return x - y

    def multiply(self, x, y):
        time.sleep(0.3)
        return x * y

    def divide(self, x, y):
        time.sleep(0.4)
        return x / float(y)

    def ensure_positive(self, x):
        time.sleep(0.5)
        if x < 0:
            raise ValueError("The value is < 0")
        return True

    def power(self, x, n=2):
        time.sleep(0.6)
        return x ** n


class MyArray(Service):

    @staticmethod
    def linspace(start, stop, n=100):
        dx = (stop - start) / float(n - 1)
        return [start + i * dx for i in range(int(n))]

    @staticmethod
    def scalar_multiply(scalar, data):
        return [element * scalar for element in data]


class Heartbeat(Service):
    """The documentation's Heartbeat: emits a counter from a task added with add_tasks()."""

    def __init__(self, rate=20):
        super().__init__()
        self._sleep = 1.0 / rate
        self._counter = 0
        self._alive = True

    def kill(self) -> None:
        self._alive = False

    def reset(self) -> None:
        self._counter = 0

    def set_heart_rate(self, beats_per_second: int) -> None:
        self._sleep = 1.0 / float(beats_per_second)

    def shutdown_handler(self) -> None:
        self._alive = False

    async def emit(self) -> None:
        import asyncio

        while self._alive:
            self.emit_notification(self._counter)
            self._counter += 1
            await asyncio.sleep(self._sleep)


class Toolbox(Service):
    """Odds and ends for the library tests."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.secret = 1

    def slow(self, seconds=5.0):
        time.sleep(seconds)
        return seconds

    def kaboom(self):
        raise ValueError("kaboom")

    def complex(self):
        return 1 + 2j

    def with_to_json(self):
        return _HasToJson()

    def notify_then_reply(self, n=10):
        for i in range(n):
            self.emit_notification_threadsafe(i, index=i + 10)
        return n

    def who(self):
        request = self.request
        return [request["requester"], request["attribute"]]

    def big(self, n):
        return "x" * n

    def _private(self):
        return "private"


class _HasToJson:
    def to_json(self):
        return {"real": 1.0, "imag": -1.0}


class Shutdownable(Service):

    def __init__(self, name, **kwargs):
        super().__init__(name=name, **kwargs)

    def add(self, a, b):
        return a + b

    def shutdown_service(self, *args, **kwargs):
        return [args, kwargs]


# 1.0's Services, for the interoperability tests

class MslEcho(msl.network.Service):

    def __init__(self):
        super().__init__(name="Echo")

    @staticmethod
    def echo(*args, **kwargs):
        return args, kwargs

    def kaboom(self):
        raise ValueError("kaboom")

    def notify_then_reply(self, n=10):
        for i in range(n):
            self.emit_notification_threadsafe(i, index=i + 10)
        return n


# ------------------------------------------------------------------------------------ running

class Running:
    """A Service started in a thread of this process."""

    def __init__(self, service, port, **kwargs):
        self.service = service
        self.error = None
        kwargs.setdefault("host", HOST)
        kwargs.setdefault("disable_tls", True)
        self.thread = threading.Thread(target=self._run, args=(port, kwargs), daemon=True,
                                       name=f"test-{service.name}")
        self.thread.start()

    def _run(self, port, kwargs):
        try:
            self.service.start(port=port, **kwargs)
        except BaseException as exc:  # noqa: BLE001 -- reported by the test
            self.error = exc

    def stop(self, timeout=5):
        if isinstance(self.service, Service):
            self.service.stop_service(timeout=timeout)
        self.thread.join(timeout)


def wait_for_services(port, *names, timeout=15, **kwargs):
    """Poll the Manager's identity until every name is a registered Service."""
    kwargs.setdefault("disable_tls", True)
    deadline = time.monotonic() + timeout
    with connect(host=kwargs.pop("host", HOST), port=port, **kwargs) as cxn:
        while True:
            services = cxn.identities()["services"]
            if all(n in services for n in names):
                return services
            if time.monotonic() > deadline:
                raise TimeoutError(f"services {names} not registered; have {sorted(services)}")
            time.sleep(0.05)


def start_service(port, service, wait=True, **kwargs):
    running = Running(service, port, **kwargs)
    if wait:
        try:
            wait_for_services(port, service.name, **{k: v for k, v in kwargs.items()
                                                     if k in ("disable_tls", "host")})
        except TimeoutError:
            if running.error is not None:
                raise running.error
            raise
    return running


@contextlib.contextmanager
def serving(port, *services, **kwargs):
    """The `services` running (each started with :func:`start_service`) inside the block."""
    running = []
    try:
        for service in services:
            running.append(start_service(port, service, **kwargs))
        yield running
    finally:
        for r in running:
            r.stop()


@contextlib.contextmanager
def linked(port, service):
    """Run `service`, connect a plaintext Client and link with the Service: yields the Link."""
    with serving(port, service), connect(host=HOST, port=port, disable_tls=True) as cxn:
        yield cxn.link(service.name)


def beating(rate):
    """A Heartbeat whose emitting task is added (it runs once the Service starts)."""
    heartbeat = Heartbeat(rate=rate)
    heartbeat.add_tasks(heartbeat.emit())
    return heartbeat


SERVICE_PROCESS = r"""
import sys, time
from netmgr.service import Service

class Sleeper(Service):
    def slow(self, seconds=30):
        time.sleep(seconds)
        return seconds
    def ping(self):
        return 'pong'

Sleeper().start(host=sys.argv[1], port=int(sys.argv[2]), disable_tls=True)
"""


def service_process(port):
    """A netmgr Service ('Sleeper') in a child process, for tests that kill it."""
    return subprocess.Popen([sys.executable, "-c", SERVICE_PROCESS, HOST, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def collect_notifications(link):
    """Assign a handler that appends (args, kwargs) to a list; return the list."""
    seen = []

    def handler(self, *args, **kwargs):
        seen.append((args, kwargs))
    link.notification_handler = types.MethodType(handler, link)
    return seen


def until(predicate, timeout=10, interval=0.02):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def env_home(monkeypatch, path):
    """Point the client library's certificate cache at ``path`` (NETMGR_HOME)."""
    monkeypatch.setenv("NETMGR_HOME", str(path))
    monkeypatch.delenv("MSL_NETWORK_HOME", raising=False)
    os.makedirs(path, exist_ok=True)


# ------------------------------------------------------------------------------------ latency

ECHO_SERVICE_PROCESS = {
    "netmgr": r"""
import sys
from netmgr.service import Service
class Echo(Service):
    def echo(self, *args, **kwargs):
        return args, kwargs
Echo().start(host=sys.argv[1], port=int(sys.argv[2]), disable_tls=True)
""",
    "msl": r"""
import sys
from msl.network import Service
class Echo(Service):
    def echo(self, *args, **kwargs):
        return args, kwargs
Echo().start(host=sys.argv[1], port=int(sys.argv[2]), disable_tls=True)
""",
    # the floor: a single-threaded raw-socket Echo Service with orjson
    "raw": r"""
import socket, sys, orjson
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
buf = b''
while b'\n' not in buf:
    buf += s.recv(65536)
buf = buf.split(b'\n', 1)[1]
s.sendall(orjson.dumps({"error": False, "requester": None, "uid": "", "result": {
    "type": "service", "name": "Echo", "attributes": {"echo": "(*args, **kwargs)"},
    "max_clients": -1}}) + b'\r\n')
while True:
    while b'\n' not in buf:
        data = s.recv(65536)
        if not data:
            sys.exit(0)
        buf += data
    *lines, buf = buf.split(b'\n')
    out = []
    for line in lines:
        if line.strip():
            m = orjson.loads(line)
            out.append(orjson.dumps({"error": False, "requester": m.get("requester"),
                                     "result": [m["args"], m["kwargs"]], "uid": m["uid"]}) + b'\r\n')
    s.sendall(b''.join(out))
""",
}


def echo_service_process(kind, port):
    return subprocess.Popen([sys.executable, "-c", ECHO_SERVICE_PROCESS[kind], HOST, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def raw_echo_client(port):
    """A minimal single-threaded raw-socket Client linked with Echo; returns call(i)."""
    import socket

    import orjson

    s = socket.create_connection((HOST, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    state = {"buf": b""}

    def read_line():
        while b"\n" not in state["buf"]:
            state["buf"] += s.recv(65536)
        line, state["buf"] = state["buf"].split(b"\n", 1)
        return line

    read_line()  # the identity request
    s.sendall(orjson.dumps({"error": False, "requester": None, "uid": "",
                            "result": {"type": "client", "name": "raw"}}) + b"\r\n")

    def call(attribute, args, service="Manager", uid="x"):
        s.sendall(orjson.dumps({"args": args, "attribute": attribute, "error": False,
                                "kwargs": {}, "service": service, "uid": uid}) + b"\r\n")
        while True:
            m = orjson.loads(read_line())
            if m.get("uid") == uid:
                return m

    call("link", ["Echo"])
    return lambda i: call("echo", [i], "Echo", str(i)), s
