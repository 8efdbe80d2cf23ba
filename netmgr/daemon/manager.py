"""The Network Manager: a gevent ``StreamServer`` with a ``Pool`` and the Manager's attributes.

The server knows no protocol: it spawns :class:`netmgr.daemon.session.Session` for each connection
from a pool whose size is the connection cap. This module owns the lifecycle (``start``,
``serve_forever``, ``stop``), how peers are named (reference 1.4) and the Manager attributes
``identity``, ``link``, ``unlink``, ``acquire_lock`` and ``release_lock`` (reference 1.7),
dispatched by table.
"""
import os
import re
import signal
import socket as _stdsocket

import gevent
from gevent import socket
from gevent.event import Event
from gevent.pool import Pool
from gevent.server import StreamServer

from netmgr import protocol
from netmgr import hostinfo
from netmgr.errors import Refused, StartupError, error_text
from netmgr.hostinfo import HOSTNAME, LANGUAGE, OS_NAME
from netmgr.daemon import log
from netmgr.store import models
from netmgr.daemon import systemd
from netmgr.daemon.admin import Admin
from netmgr.daemon.auth import HostnameAuth, LoginAuth, NoAuth, PasswordAuth, Throttle
from netmgr.daemon.registry import Client, Registry
from netmgr.daemon.session import Session
from netmgr.daemon.tls import TLSStream

logger = log.get_logger("netmgr.daemon.manager")

_numeric_address = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")


class Settings:
    """What a Manager needs to run; :mod:`netmgr.cli.app` fills it from the command line."""

    def __init__(self, host=None, port=protocol.PORT, auth_mode="none", password=None,
                 database=":memory:", ssl_context=None, max_connections=10000,
                 handshake_timeout=30.0, handshake_line_limit=64 * 1024,
                 line_limit=256 * 1024 * 1024, queue_limit=512 * 1024 * 1024,
                 stop_timeout=3.0, backlog=1024, listener=None, bcrypt_rounds=12,
                 max_auth_failures=5, auth_lockout=30.0, flush_interval=1.0):
        self.host = host
        self.port = port
        self.auth_mode = auth_mode  # none | password | login | hostname
        self.password = password  # the Manager password of auth_mode "password"
        self.database = database
        self.ssl_context = ssl_context  # None: plaintext
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.handshake_line_limit = handshake_line_limit
        self.line_limit = line_limit
        self.queue_limit = queue_limit
        self.stop_timeout = stop_timeout
        self.backlog = backlog
        self.listener = listener  # an already bound socket (socket activation, tests)
        self.bcrypt_rounds = bcrypt_rounds
        self.max_auth_failures = max_auth_failures
        self.auth_lockout = auth_lockout
        self.flush_interval = flush_interval
        self.auth = None  # the mode's object, built by the Manager


class Manager:
    """The Network Manager: lifecycle verbs ``start()``, ``serve_forever()``, ``stop()``."""

    def __init__(self, settings):
        self.settings = settings
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
        self._reloading = False
        self._local = set()
        self._handlers = {
            "identity": self._identity,
            "link": self._link,
            "unlink": self._unlink,
            "acquire_lock": self._acquire_lock,
            "release_lock": self._release_lock,
        }

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        """Open the database, choose the auth mode, bind and start accepting."""
        settings = self.settings
        self._open_database()
        self._choose_auth()
        listener = settings.listener or self._bind()
        if not isinstance(listener, socket.socket):  # inherited from systemd (netmgr.socket)
            listener = socket.socket(fileno=listener.detach())
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self.name = f"Manager[{HOSTNAME}:{self.port}]"
        self.registry = Registry(self.name)
        self._local = hostinfo.local_addresses()
        self.server = StreamServer(listener, self._handle, spawn=Pool(settings.max_connections))
        self.server.start()
        # handlers before anyone can see the start-up line: a signal right after it must not kill us
        for signum in (signal.SIGINT, signal.SIGTERM):
            gevent.signal_handler(signum, self.request_stop)
        gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(self.reload))
        self._background = [gevent.spawn(self._flush_events)]
        interval = systemd.watchdog_interval()
        if interval:
            # pinged from the hub: a hub blocked by bad code misses pings and is restarted
            self._background.append(gevent.spawn(self._watchdog, interval))
        logger.info(settings.auth.description)
        return self

    def _open_database(self):
        database = self.settings.database
        if database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
        models.open_db(database)
        self.users = models.UsersTable(run=self.offload, rounds=self.settings.bcrypt_rounds)
        self.hostnames_table = models.hostnames
        self.connections_table = models.connections
        self._events = models.ConnectionLog(self.connections_table)
        for table in ("connections", "auth_hostnames", "auth_users"):
            logger.info(f"loaded the {table!r} table from {database}")

    def _choose_auth(self):
        settings = self.settings
        self.throttle = throttle = Throttle(settings.max_auth_failures, lockout=settings.auth_lockout)
        self.login = LoginAuth(self.users, throttle, settings.bcrypt_rounds)
        self.admin = Admin(self)
        if settings.auth_mode == "login" and not self.users.usernames():
            raise StartupError("The 'auth_users' table is empty, no one could log in\n"
                               'To add a user to the \'auth_users\' table run the "netmgr user" command')
        settings.auth = {
            "none": NoAuth,
            "password": lambda: PasswordAuth(settings.password, throttle),
            "login": lambda: self.login,
            "hostname": lambda: HostnameAuth(self.trusted_hostnames),
        }[settings.auth_mode]()

    def _bind(self):
        host, port = self.settings.host, self.settings.port
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
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(self.settings.backlog)
        sock.setblocking(False)
        return sock

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

        Trusted hostnames are read afresh for every connection and need nothing here.
        """
        if self._reloading:
            return
        self._reloading = True
        try:
            self._reload()
        finally:
            self._reloading = False

    def apply(self, ssl_context=None, handshake_timeout=None, line_limit=None, queue_limit=None,
              bcrypt_rounds=None, max_auth_failures=None, auth_lockout=None):
        """Settings that may change while peers stay connected (new connections use them)."""
        settings = self.settings
        if ssl_context is not None:
            settings.ssl_context = ssl_context
        for name, value in (("handshake_timeout", handshake_timeout), ("line_limit", line_limit),
                            ("queue_limit", queue_limit), ("bcrypt_rounds", bcrypt_rounds)):
            if value is not None:
                setattr(settings, name, value)
        if bcrypt_rounds is not None:
            self.users.rounds = self.login.rounds = bcrypt_rounds
        if max_auth_failures is not None:
            self.throttle.max_failures = max_auth_failures
        if auth_lockout is not None:
            self.throttle.lockout = auth_lockout

    def _reload(self):
        systemd.reloading()
        logger.info("reloading")
        try:
            if self.reloader is not None:
                self.reloader(self)
        except Exception as exc:  # noqa: BLE001 -- a bad edit keeps the running configuration
            logger.error("reload_failed", error=f"{type(exc).__name__}: {exc}")
        else:
            logger.info("reloaded")
        systemd.ready(self.describe())

    def request_stop(self, *_):
        self._stopped.set()

    def stop(self):
        """Stop accepting, drop every peer, and wait at most ``stop_timeout`` for them."""
        if self.server is None:
            return
        logger.info("stopping", peers=len(self.sessions))
        systemd.stopping()
        self.server.close()
        for session in list(self.sessions):
            session.abort("the Manager is stopping")
        self.server.pool.join(timeout=self.settings.stop_timeout)
        self.server.pool.kill(block=True, timeout=1)
        self.server = None
        gevent.killall(self._background)
        self._flush_once()
        models.close_db()
        logger.info("stopped")

    def _handle(self, sock, address):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = Session(self, sock, address)
        self.sessions.add(session)
        try:
            session.run()
        finally:
            self.sessions.discard(session)

    def wrap_tls(self, sock):
        """The TLS handshake, in the session's greenlet under its handshake deadline."""
        context = self.settings.ssl_context
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
        """Run CPU-bound work (bcrypt, PBKDF2) in the hub's threadpool (STYLE.md rule 4)."""
        return gevent.get_hub().threadpool.apply(function, args)

    def record(self, session, message):
        """A row for the ``connections`` table; written in batches by one greenlet."""
        self._events.log(session.ip, session.domain or session.ip, session.port, message)

    def _flush_events(self):
        shown = None
        while True:
            gevent.sleep(self.settings.flush_interval)
            self._flush_once()
            text = self.describe()
            if text != shown:
                shown = text
                systemd.status(text)

    def _watchdog(self, interval):
        while True:
            systemd.watchdog()
            gevent.sleep(interval)

    def _flush_once(self):
        try:
            self._events.flush()
        except Exception as exc:  # noqa: BLE001 -- kept for the next try; never kill the Manager
            logger.warning("connections_flush_failed", error=str(exc))

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

    def peers(self):
        """Every connected peer (the ``peers`` admin request)."""
        return sorted(({"name": s.name, "address": s.address, "ip": s.ip, "port": s.port,
                        "type": type(s.record).__name__.lower() if s.record else "unidentified",
                        "admin": s.is_admin} for s in self.sessions if s.name),
                      key=lambda p: p["name"])

    def status(self):
        """Services with their links, locks and requests in flight (the ``status`` request)."""
        services = {}
        for name in sorted(self.registry.services):
            record = self.registry.service(name)
            services[name] = {"address": self.registry.services[name]["address"],
                              "max_clients": record.max_clients,
                              "links": sorted(c.name for c in record.links),
                              "locks": sorted(c.name for c in record.locks),
                              "in_flight": sum(sum(u.values()) for u in record.inflight.values())}
        return {"manager": self.name, "clients": sorted(self.registry.clients), "services": services}

    def disconnect_peer(self, name):
        """Drop the peer with this network name (the ``disconnect_peer`` request)."""
        for session in list(self.sessions):
            if session.name == name:
                session.abort("disconnected by an administrator")
                return True
        raise ValueError(f"no peer named {name!r} is connected")

    # ------------------------------------------------------------------ Manager attributes (1.7)
    def manager_request(self, session, data, attribute, uid):
        handler = self._handlers.get(attribute)
        if handler is None:
            self.admin_request(session, data, attribute, uid)
            return
        try:
            value = handler(session, data)
        except Refused as exc:
            session.reply_error(exc.message, uid)
            return
        except KeyError as exc:  # malformed arguments keep 1.0's texts, e.g. KeyError: 'shared'
            session.reply_error(error_text("KeyError", exc.args[0] if exc.args else ""), uid)
            return
        except Exception as exc:  # noqa: BLE001 -- IndexError, TypeError … as 1.0 words them
            session.reply_error(f"{type(exc).__name__}: {exc}", uid)
            return
        session.reply(value, uid)

    def admin_request(self, session, data, attribute, uid):
        """Any other attribute needs an administrator (reference 1.7; :mod:`netmgr.daemon.admin`)."""
        self.admin.handle(session, data, attribute, uid)

    def _identity(self, session, data):
        return self.registry.identity(HOSTNAME, self.port, LANGUAGE, OS_NAME)

    @staticmethod
    def _client(session):
        if type(session.record) is not Client:
            raise Refused("PermissionError", "only a Client can link with a Service")
        return session.record

    def _link(self, session, data):
        return self.registry.link(self._client(session), data["args"][0])

    def _unlink(self, session, data):
        return self.registry.unlink(self._client(session), data["args"][0])

    def _acquire_lock(self, session, data):
        return self.registry.acquire_lock(self._client(session), data["args"][0],
                                          bool(data["kwargs"]["shared"]))

    def _release_lock(self, session, data):
        return self.registry.release_lock(self._client(session), data["args"][0])
