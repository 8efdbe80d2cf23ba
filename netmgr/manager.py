"""The Network Manager: a gevent ``StreamServer`` with a ``Pool`` and the Manager's attributes.

The server knows no protocol: it spawns :class:`netmgr.session.Session` for each connection
from a pool whose size is the connection cap. This module owns the lifecycle (``start``,
``serve_forever``, ``stop``), how peers are named (reference 1.4) and the Manager attributes
``identity``, ``link``, ``unlink``, ``acquire_lock`` and ``release_lock`` (reference 1.7),
dispatched by table.
"""
import platform
import re
import signal
import socket as _stdsocket

import gevent
from gevent import socket
from gevent.event import Event
from gevent.pool import Pool
from gevent.server import StreamServer

from netmgr import log, protocol
from netmgr.auth import NoAuth
from netmgr.protocol import error_text
from netmgr.registry import Client, Refused, Registry
from netmgr.session import Session

logger = log.get_logger("netmgr.manager")

HOSTNAME = _stdsocket.gethostname()
LANGUAGE = f"Python {platform.python_version()}"
OS_NAME = f"{platform.system()} {platform.release()} {platform.machine()}"
_numeric_address = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")


class Settings:
    """What a Manager needs to run; :mod:`netmgr.cli` fills it from the command line."""

    def __init__(self, host=None, port=protocol.PORT, auth=None, max_connections=10000,
                 handshake_timeout=30.0, handshake_line_limit=64 * 1024,
                 line_limit=256 * 1024 * 1024, queue_limit=512 * 1024 * 1024,
                 stop_timeout=3.0, backlog=1024, listener=None):
        self.host = host
        self.port = port
        self.auth = auth or NoAuth()
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.handshake_line_limit = handshake_line_limit
        self.line_limit = line_limit
        self.queue_limit = queue_limit
        self.stop_timeout = stop_timeout
        self.backlog = backlog
        self.listener = listener  # an already bound socket (socket activation, tests)


class Manager:
    """The Network Manager: lifecycle verbs ``start()``, ``serve_forever()``, ``stop()``."""

    def __init__(self, settings):
        self.settings = settings
        self.sessions = set()
        self.server = None
        self.port = None
        self.name = None
        self.registry = None
        self._stopped = Event()
        self._local = {"127.0.0.1", "::1", "localhost"}
        self._handlers = {
            "identity": self._identity,
            "link": self._link,
            "unlink": self._unlink,
            "acquire_lock": self._acquire_lock,
            "release_lock": self._release_lock,
        }

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        listener = self.settings.listener or self._bind()
        self.port = listener.getsockname()[1]
        self.name = f"Manager[{HOSTNAME}:{self.port}]"
        self.registry = Registry(self.name)
        self._local.update(_local_addresses())
        self.server = StreamServer(listener, self._handle, spawn=Pool(self.settings.max_connections))
        self.server.start()
        logger.info(self.settings.auth.description)
        return self

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
        """Run until :meth:`stop` (SIGINT/SIGTERM, or an admin ``shutdown_manager``)."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            gevent.signal_handler(signum, self.request_stop)
        self._stopped.wait()
        self.stop()

    def request_stop(self, *_):
        self._stopped.set()

    def stop(self):
        """Stop accepting, drop every peer, and wait at most ``stop_timeout`` for them."""
        if self.server is None:
            return
        logger.info("stopping", peers=len(self.sessions))
        self.server.close()
        for session in list(self.sessions):
            session.abort("the Manager is stopping")
        self.server.pool.join(timeout=self.settings.stop_timeout)
        self.server.pool.kill(block=True, timeout=1)
        self.server = None
        logger.info("stopped")

    def _handle(self, sock, address):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = Session(self, sock, address)
        self.sessions.add(session)
        try:
            session.run()
        finally:
            self.sessions.discard(session)

    # ------------------------------------------------------------------ peers
    def peer_address(self, ip, port):
        """``host:port`` as 1.0 names a peer (reference 1.4).

        Loopback and this machine's own addresses are local and carry the Manager's hostname,
        as a 1.0 client computes its own name. Other peers are named by reverse DNS, which runs
        in the hub's threadpool, never on the hub.
        """
        if ip.startswith("::ffff:"):
            ip = ip[7:]
        if ip in self._local or ip.startswith("127."):
            return f"{HOSTNAME}:{port}"
        domain = gevent.get_hub().threadpool.apply(_stdsocket.getfqdn, (ip,))
        hostname = domain if _numeric_address.search(domain) else domain.split(".")[0]
        if hostname in self._local or hostname == HOSTNAME:
            return f"{HOSTNAME}:{port}"
        return f"{hostname}:{port}"

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
        """Any other attribute needs an administrator (reference 1.7); users arrive with the
        security layer, so until then no peer is one."""
        session.reply_error(error_text("ValueError", "You must be an administrator to send this "
                                                     "request to the Manager"), uid)

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


def _local_addresses():
    """This machine's own addresses, as far as the resolver knows them."""
    addresses = set()
    for host in (HOSTNAME, "localhost"):
        try:
            for info in _stdsocket.getaddrinfo(host, None):
                addresses.add(info[4][0])
        except OSError:
            pass
    return addresses
