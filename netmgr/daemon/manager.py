"""The Network Manager: a gevent ``StreamServer`` with a ``Pool``, its lifecycle and its state.

The server knows no protocol: it spawns :class:`netmgr.daemon.session.Session` for each connection
from a pool whose size is the connection cap. This module owns the lifecycle (``start``,
``serve_forever``, ``stop``, ``reload``), the settings (one :class:`netmgr.config.Config`), the
database and authentication mode, the per-turn flush of queued output, and how peers are named
(reference 1.4). The Manager attributes are served by :mod:`netmgr.daemon.attributes` and
:mod:`netmgr.daemon.admin`.
"""
import os
import re
import signal
import socket as _stdsocket
import time

import gevent
from gevent import socket
from gevent.event import Event
from gevent.pool import Pool
from gevent.server import StreamServer
from gevent.threadpool import ThreadPool

from netmgr import hostinfo, protocol
from netmgr.config import secret_value
from netmgr.daemon import control, log, systemd
from netmgr.daemon.admin import Admin
from netmgr.daemon.attributes import Attributes
from netmgr.daemon.limits import Limits, normal_ip
from netmgr.daemon.auth import HostnameAuth, LoginAuth, NoAuth, PasswordAuth, Throttle
from netmgr.daemon.events import EventBus
from netmgr.daemon.registry import Registry
from netmgr.daemon.session import Session
from netmgr.daemon.tls import TLSStream
from netmgr.errors import StartupError
from netmgr.hostinfo import HOSTNAME
from netmgr.store import models

logger = log.get_logger("netmgr.daemon.manager")

_numeric_address = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")


def bind(cfg, backlog=1024):
    """The listening socket of `cfg` (host, port); all interfaces, IPv4 and IPv6, without a host.

    ``netmgr start`` binds it before it creates any file and hands it to :class:`Manager`, so
    that a busy port leaves nothing behind."""
    host, port = cfg.host, cfg.port
    if host is None:
        # all interfaces, IPv4 and IPv6 (1.0 binds both 0.0.0.0 and ::)
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            address = ("::", port)
        except OSError:
            sock, address = socket.socket(socket.AF_INET, socket.SOCK_STREAM), ("0.0.0.0", port)
    else:
        family, _, _, _, address = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class Manager:
    """The Network Manager: lifecycle verbs ``start()``, ``serve_forever()``, ``stop()``.

    ``cfg`` is the :class:`netmgr.config.Config` the command line resolved; ``ssl_context`` is
    None for plaintext; ``listener`` is an already bound socket (socket activation).
    """

    #: line limit before a peer has identified itself (reference 6.4)
    HANDSHAKE_LINE_LIMIT = 64 * 1024
    #: seconds a stopping Manager waits for its peers' queues to drain
    STOP_TIMEOUT = 3.0
    BACKLOG = 1024
    #: seconds between writes of the connection log (one transaction each)
    FLUSH_INTERVAL = 1.0
    #: seconds between two prunings of the connection log
    PRUNE_INTERVAL = 60.0
    #: seconds between two measurements of the event loop's lag
    LAG_PERIOD = 0.25
    #: a loop lag above this many seconds makes the Manager "degraded" (the health event)
    LAG_DEGRADED = 1.0

    def __init__(self, cfg, ssl_context=None, listener=None):
        self.cfg = cfg
        self.ssl_context = ssl_context
        self._listener = listener
        self.auth = None  # the authentication mode's object (netmgr.daemon.auth)
        self.sessions = set()
        self.server = None
        self.port = None
        self.name = None
        self.registry = None
        self.users = self.hostnames_table = self.connections_table = None
        self.login = self.admin = None
        self._events = None
        self._dirty = []  # sessions with output queued during this turn of the hub
        self._flush_scheduled = False
        self._background = []
        self.reloader = None  # callable(manager) that re-reads configuration (set by netmgr.daemon.startup)
        self._stopped = Event()
        self.stopped_by = None  # the signal that stopped the Manager (SIGINT: exit status 130)
        self._reloading = False
        self._local = set()
        self.attributes = None
        self.queued_total = 0  # bytes queued for all peers (netmgr.daemon.output)
        self.writing = set()  # sessions whose writer greenlet waits on a full socket
        self.partial = set()  # sessions with an unfinished line
        self.limits = Limits(self)
        self._auth_pool = None
        self.started = time.time()
        #: since the start: connections accepted, peers dropped by the Manager (by why, in
        #: ``drops``), handshakes completed and failed, logins failed and throttled
        self.counts = {"connections": 0, "dropped": 0, "handshakes": 0, "handshakes_failed": 0,
                       "auth_failures": 0, "auth_throttled": 0}
        self.drops = {"slow_consumer": 0, "overflow": 0, "other": 0}
        #: the event stream (netmgr.daemon.events): registry changes, logins, admin requests,
        #: heartbeats, health
        self.events = EventBus()
        self.http = None  # netmgr.daemon.http.HTTPEndpoint with ``http`` set
        self.cluster = None  # netmgr.daemon.cluster.node.ClusterNode with ``cluster`` set
        self.loop_lag = 0.0  # seconds late of the last lag measurement
        self._lag_max = 0.0  # the largest since the last heartbeat
        self.loop_tick = time.monotonic()
        self.database_error = None  # why the last write (or write probe) of the database failed
        self._health = None
        self.control_path = None  # the control socket's path while it listens
        self._control = None  # (StreamServer, inode of the socket file)

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        """Open the database, choose the auth mode, bind and start accepting."""
        self._open_database()
        self._choose_auth()
        listener = self._listener or bind(self.cfg, self.BACKLOG)
        if not isinstance(listener, socket.socket):  # inherited from systemd (netmgr.socket)
            listener = socket.socket(fileno=listener.detach())
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self.name = f"Manager[{HOSTNAME}:{self.port}]"
        self.registry = Registry(self.name, self.cfg.max_inflight)
        self.attributes = Attributes(self)
        self._local = hostinfo.local_addresses()
        self.server = StreamServer(listener, self._handle, spawn=Pool(self.cfg.max_connections))
        self.server.start()
        if self.cfg.http:
            from netmgr.daemon.http import HTTPEndpoint  # prometheus_client only when asked for
            self.http = HTTPEndpoint(self)
            try:
                self.http.start()
            except BaseException:
                self.server.close()
                raise
        if self.cfg.cluster:
            from netmgr.daemon.cluster.node import ClusterNode  # nats-py only in cluster mode
            self.cluster = ClusterNode(self)
            self.cluster.start()
        self._open_control()
        # handlers before anyone can see the start-up line: a signal right after it must not kill us
        for signum in (signal.SIGINT, signal.SIGTERM):
            gevent.signal_handler(signum, self.request_stop, signum)
        gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(self.reload))
        self._background = [gevent.spawn(self._flush_events), gevent.spawn(self._sweep),
                            gevent.spawn(self._prune_connection_log), gevent.spawn(self._measure_lag),
                            gevent.spawn(self._heartbeat)]
        self._check_health()
        interval = systemd.watchdog_interval()
        if interval:
            # pinged from the hub: a hub blocked by bad code misses pings and is restarted
            self._background.append(gevent.spawn(self._watchdog, interval))
        logger.info(self.auth.description)
        return self

    def _open_control(self):
        """The local control socket (:mod:`netmgr.daemon.control`); the Manager runs without
        it, with a warning, when it cannot be made."""
        path = control.path_of(self.cfg)
        if not path:
            return
        try:
            listener = control.listen(path, control.mode())
            bound = control.inode(path)
        except OSError as exc:
            logger.warning("control_socket_unavailable", path=path, error=exc.strerror or str(exc))
            return
        server = StreamServer(listener, self._handle_local, spawn=Pool(control.CONNECTIONS))
        server.start()
        self._control, self.control_path = (server, bound), path
        logger.info("control_socket", path=path)

    def _close_control(self):
        if self._control is not None:
            server, bound = self._control
            self._control = None
            server.close()
            control.remove(self.control_path, bound)
            server.pool.kill(block=True, timeout=1)

    def _open_database(self):
        database = self.cfg.database
        if database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
        models.open_db(database)
        self.users = models.UsersTable(run=self.offload, rounds=self.cfg.bcrypt_rounds)
        self.hostnames_table = models.hostnames
        self.connections_table = models.connections
        self._events = models.ConnectionLog(self.connections_table)
        for table in ("connections", "auth_hostnames", "auth_users"):
            # 1.0's start-up lines, word for word: harnesses and tests read them
            logger.info(f"loaded the {table!r} table from {database}")

    def _choose_auth(self):
        cfg = self.cfg
        self.throttle = throttle = Throttle(cfg.max_auth_failures, lockout=cfg.auth_lockout)
        self.login = LoginAuth(self.users, throttle, cfg.bcrypt_rounds)
        self.admin = Admin(self)
        if cfg.auth == "login" and not self.users.usernames():
            raise StartupError("The 'auth_users' table is empty, no one could log in\n"
                               'To add a user to the \'auth_users\' table run the "netmgr user" command')
        self.auth = {
            "none": NoAuth,
            "password": lambda: PasswordAuth(secret_value(cfg.auth_password), throttle),
            "login": lambda: self.login,
            "hostname": lambda: HostnameAuth(self.trusted_hostnames),
        }[cfg.auth]()

    def serve_forever(self):
        """Run until :meth:`stop` (SIGINT/SIGTERM, or an admin ``shutdown_manager``).

        Tells systemd READY=1 once listening; SIGHUP reloads without dropping connections.
        """
        systemd.ready(self.describe())
        self._stopped.wait()
        self.stop()

    def describe(self):
        services = len(self.registry.services)
        return f"{len(self.sessions)} peer(s), {services} service(s) on port {self.port}"

    def reload(self):
        """Re-read the configuration, TLS certificate and key, and log level; keep every peer.

        Returns None, or why the reload failed (the running settings then stay).

        Trusted hostnames are read afresh for every connection and need nothing here.
        """
        if self._reloading:
            return "a reload is already running"
        self._reloading = True
        try:
            return self._reload()
        finally:
            self._reloading = False

    def apply(self, cfg, ssl_context=None):
        """New settings while peers stay connected (the restart-only keys must be unchanged).

        New connections use them; the limits apply to every peer's next message.
        """
        self.cfg = cfg
        if ssl_context is not None:
            self.ssl_context = ssl_context
        self.users.rounds = self.login.rounds = cfg.bcrypt_rounds
        self.throttle.max_failures = cfg.max_auth_failures
        self.throttle.lockout = cfg.auth_lockout
        self.registry.max_inflight = cfg.max_inflight

    def _reload(self):
        systemd.reloading()
        logger.info("reloading")
        failure = None
        try:
            if self.reloader is not None:
                self.reloader(self)
        except Exception as exc:  # noqa: BLE001 -- a bad edit keeps the running configuration
            failure = f"{type(exc).__name__}: {exc}"
            logger.error("reload_failed", error=failure)
        else:
            logger.info("reloaded")
        systemd.ready(self.describe())
        return failure

    def request_stop(self, signum=None):
        """Stop (:meth:`serve_forever` returns); `signum` is the signal that asked, if one did."""
        if not self._stopped.is_set():
            self.stopped_by = signum
        self._stopped.set()

    def stop(self):
        """Stop accepting, drop every peer, and wait at most ``stop_timeout`` for them."""
        if self.server is None:
            return
        logger.info("stopping", peers=len(self.sessions))
        systemd.stopping()
        self.server.close()
        if self._control is not None:
            self._control[0].stop_accepting()  # no new administrators either; closed below
        for session in list(self.sessions):
            session.abort("the Manager is stopping")
        self.server.pool.join(timeout=self.STOP_TIMEOUT)
        self.server.pool.kill(block=True, timeout=1)
        self._close_control()
        if self.cluster is not None:
            self.cluster.close()
        if self.http is not None:
            self.http.close()
        self.server = None
        gevent.killall(self._background)
        self.flush_connection_log()
        models.close_db()
        logger.info("stopped")

    def _handle(self, sock, address):
        ip = normal_ip(address[0])
        refusal = self.limits.admit(ip)
        if refusal is not None:
            self._refuse(sock, refusal)
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.counts["connections"] += 1
        session = Session(self, sock, address)
        self.sessions.add(session)
        try:
            session.run()
        finally:
            self.sessions.discard(session)
            self.limits.closed(ip, session.record is not None)

    def _handle_local(self, sock, _address):
        """A connection to the control socket: an administrator by the socket's permissions."""
        pid, uid, _gid = control.credentials(sock)
        session = Session(self, sock, ("local", pid), local_uid=uid)
        self.sessions.add(session)
        try:
            session.run()
        finally:
            self.sessions.discard(session)

    def _refuse(self, sock, message):
        """One error line, without waiting for the peer (plaintext; a TLS peer sees a close)."""
        try:
            if self.ssl_context is None:
                sock.send(protocol.dumps(protocol.error(message, self.name, "")), 0, 0.0)
        except OSError:
            pass
        finally:
            sock.close()

    def wrap_tls(self, sock):
        """The TLS handshake, in the session's greenlet under its handshake deadline."""
        context = self.ssl_context
        if context is None:
            return sock
        tls = TLSStream(sock, context)
        tls.do_handshake()
        return tls

    def schedule_flush(self, session):
        """Flush ``session`` once the running greenlet yields: after a whole chunk of input
        has been dispatched, so each destination gets one ``send`` per turn of the hub."""
        self._dirty.append(session)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            gevent.get_hub().loop.run_callback(self._flush_dirty)

    def _flush_dirty(self):
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for session in dirty:
            session.flush()

    # ------------------------------------------------------------------ background work
    def offload(self, function, *args):
        """Run password hashing (bcrypt, PBKDF2) off the hub, in a pool of ``auth_workers``
        threads, so that guessing can never take every core (STYLE.md rule 4)."""
        if self._auth_pool is None:
            self._auth_pool = ThreadPool(self.cfg.auth_workers)
        return self._auth_pool.apply(function, args)

    def record(self, session, message):
        """A row for the ``connections`` table; written in batches by one greenlet."""
        self._events.log(session.ip, session.domain or session.ip, session.port, message)

    def _flush_events(self):
        shown = None
        while True:
            gevent.sleep(self.FLUSH_INTERVAL)
            if not self.flush_connection_log():
                self._probe_database()
            text = self.describe()
            if text != shown:
                shown = text
                systemd.status(text)

    def _sweep(self):
        while True:
            gevent.sleep(self.limits.interval())
            self.limits.sweep_once()

    def _prune_connection_log(self):
        """Keep the connection log within ``connections_max_rows`` and ``connections_max_age``."""
        while True:
            removed, batch = 0, 10_000
            try:
                while True:  # short transactions, the hub free between them
                    done = models.connections.prune(self.cfg.connections_max_rows,
                                                    self.cfg.connections_max_age, batch)
                    removed += done
                    if done < batch:
                        break
                    gevent.sleep(0)
            except Exception as exc:  # noqa: BLE001 -- tried again next time
                logger.warning("connections_prune_failed", error=str(exc))
            if removed:
                logger.info("connections_pruned", rows=removed)
            gevent.sleep(self.PRUNE_INTERVAL)

    def _watchdog(self, interval):
        while True:
            systemd.watchdog()
            gevent.sleep(interval)

    def flush_connection_log(self):
        """Write the buffered ``connections`` rows now. The background loop calls it once a
        second; an admin read of the table calls it first, so a peer sees its own rows (1.0
        writes each row at once, and its test_admin_requests reads them straight away)."""
        try:
            written = self._events.flush()
        except Exception as exc:  # noqa: BLE001 -- kept for the next try; never kill the Manager
            logger.warning("connections_flush_failed", error=str(exc))
            self.database_error = str(exc)
            return True
        if written:
            self.database_error = None
        return written

    def _probe_database(self):
        try:
            models.check_writable()
        except Exception as exc:  # noqa: BLE001 -- reported by /readyz and the health event
            self.database_error = str(exc)
        else:
            self.database_error = None

    # ------------------------------------------------------------------ events and figures
    def publish_pending(self):
        """Publish the events the registry queued (it stays pure: it only queues them)."""
        publish = self.events.publish
        for kind, event, fields in self.registry.take_events():
            publish(kind, event, **fields)

    def count_drop(self, reason):
        """A peer dropped by the Manager, counted by why (``reason`` is Session.abort's text)."""
        self.counts["dropped"] += 1
        kind = ("slow_consumer" if reason.startswith("slow consumer") else
                "overflow" if reason.startswith("outbound queue overflow") else "other")
        self.drops[kind] += 1

    def totals(self):
        """The figures of ``netmgr status`` and the heartbeat."""
        registry = self.registry
        requests = errors = 0
        for _, stats in registry.stats.items():
            requests += stats.requests
            errors += stats.errors
        return {"peers": sum(1 for s in self.sessions if s.name), "clients": len(registry.clients),
                "services": len(registry.services),
                "in_flight": sum(r.in_flight() for r in registry.records()),
                "queued_bytes": self.queued_total, "uptime": round(time.time() - self.started, 1),
                "requests": requests, "errors": errors, **self.counts}

    def _measure_lag(self):
        """How late a timer fires: the event loop's lag (a peer or a bug holding the hub)."""
        period = self.LAG_PERIOD
        while True:
            start = time.monotonic()
            gevent.sleep(period)
            self.loop_tick = now = time.monotonic()
            self.loop_lag = lag = max(0.0, now - start - period)
            if lag > self._lag_max:
                self._lag_max = lag
            for _, stats in self.registry.stats.items():
                if stats.pending:
                    stats.fold()  # the latencies the replies left (registry.route_reply)

    def _heartbeat(self):
        last = time.monotonic()
        while True:
            gevent.sleep(self.cfg.heartbeat_interval)
            now = time.monotonic()
            self.heartbeat(now - last)
            last = now

    def heartbeat(self, interval):
        """Close the figures' window of ``interval`` seconds and publish the heartbeat event."""
        registry, services = self.registry, {}
        for name, stats in list(registry.stats.items()):
            window = stats.close_window(interval)
            record = registry.service(name)
            if record is not None:
                services[name] = {"requests": stats.requests, "errors": stats.errors, **window,
                                  "in_flight": record.in_flight()}
        lag, self._lag_max = max(self._lag_max, self.loop_lag), 0.0
        self.events.publish("heartbeat", "tick", interval=round(interval, 3), loop_lag=round(lag, 6),
                            totals=self.totals(), services=services)
        self._check_health()

    def health(self):
        """``{"status": "ok" | "degraded", "loop_lag", "checks"}``: the event loop ran this, so it
        is alive; degraded while it lags, the database cannot be written or the port is closed."""
        checks = {
            "event_loop": {"ok": self.loop_lag < self.LAG_DEGRADED,
                           "detail": f"lag {self.loop_lag * 1000:.1f} ms"},
            "database": {"ok": self.database_error is None,
                         "detail": self.database_error or f"writable: {self.cfg.database}"},
            "listening": {"ok": self.server is not None and self.server.started,
                          "detail": f"port {self.port}"},
        }
        status = "ok" if all(c["ok"] for c in checks.values()) else "degraded"
        return {"status": status, "loop_lag": round(self.loop_lag, 6), "checks": checks}

    def readiness(self):
        """``(ready, checks)``: listening, and the database writable now."""
        self._probe_database()
        checks = self.health()["checks"]
        ready = checks["listening"]["ok"] and checks["database"]["ok"]
        return ready, {k: checks[k] for k in ("listening", "database")}

    def _check_health(self):
        """Publish a health event when the status or the failing checks change."""
        health = self.health()
        key = (health["status"], tuple(k for k, c in health["checks"].items() if not c["ok"]))
        if key != self._health:
            self._health = key
            self.events.publish("health", "changed", status=health["status"], checks=health["checks"])

    # ------------------------------------------------------------------ peers
    def name_peer(self, ip, port):
        """``(address, domain, hostname)`` of a peer as 1.0 names it (reference 1.4).

        Loopback and this machine's own addresses are local: their address carries the Manager's
        hostname, as a 1.0 client computes its own name. Other peers are named by reverse DNS,
        which runs in the hub's threadpool, never on the hub.
        """
        if ip.startswith("::ffff:"):
            ip = ip[7:]
        if ip.startswith("127.") or ip == "::1":
            return f"{HOSTNAME}:{port}", "localhost", "localhost"
        if ip in self._local:
            return f"{HOSTNAME}:{port}", HOSTNAME, HOSTNAME
        domain = self.offload(_stdsocket.getfqdn, ip)
        hostname = domain if _numeric_address.search(domain) else domain.split(".")[0]
        if hostname in self._local or hostname == HOSTNAME:
            return f"{HOSTNAME}:{port}", domain, hostname
        return f"{hostname}:{port}", domain, hostname

    def trusted_hostnames(self):
        """The ``auth_hostnames`` table, read afresh: edits apply to the next connection."""
        return set(self.hostnames_table.hostnames())
