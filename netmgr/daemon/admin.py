"""Admin requests: any Manager attribute other than identity/link/unlink/locks (reference 1.7).

1.0 resolves such an attribute with a dotted ``getattr`` walk from the Manager object, so any
peer that logs in as an admin can reach private state and raw SQL (reference 6.7). netmgr
serves an explicit table of operations under the names 1.0 clients and scripts use, plus a
few netmgr verbs; anything else is an error that carries the request's uid.

A peer that is not an admin is challenged inline for a username and password, in every auth
mode (reference 1.7). Unlike 1.0, the challenge does not swallow the peer's other requests:
while it waits for the answers, other lines are dispatched as usual (reference 6.15), and a
failed login answers the request instead of closing the connection.
"""

import gevent

from netmgr.daemon import log
from netmgr.errors import error_text
from netmgr.protocol import SHUTDOWN_MANAGER
from netmgr.store.models import CONNECTION_FIELDS

logger = log.get_logger("netmgr.daemon.admin")

NOT_ADMIN = error_text("ValueError", "You must be an administrator to send this request to the Manager")
#: rows of the connection log in the ``status`` reply
RECENT = 8


def peers(manager):
    """Every connected peer (the ``peers`` admin request)."""
    return sorted(({"name": s.name, "address": s.address, "ip": s.ip, "port": s.port,
                    "type": type(s.record).__name__.lower() if s.record else "unidentified",
                    "admin": s.is_admin} for s in manager.sessions if s.name),
                  key=lambda p: p["name"])

def status(manager):
    """Services with their links, locks, requests in flight and figures, Clients, totals and the
    newest connection-log rows (the ``status`` request, ``netmgr status --json``, /api/status)."""
    registry, services = manager.registry, {}
    for name in sorted(registry.services):
        record, entry = registry.service(name), registry.services[name]
        stats = record.stats
        services[name] = {"address": entry["address"], "network_name": record.network_name,
                          "max_clients": record.max_clients,
                          "links": sorted(c.name for c in record.links),
                          "locks": sorted(c.name for c in record.locks),
                          "shared": record.shared if record.locks else None,
                          "in_flight": record.in_flight(),
                          "attributes": entry["attributes"], "language": entry["language"],
                          "os": entry["os"],
                          "stats": {"requests": stats.requests, "errors": stats.errors,
                                    **stats.window}}
    client_info = {name: {"address": entry["address"], "language": entry["language"],
                          "os": entry["os"], "links": registry.links_of(name)}
                   for name, entry in sorted(registry.clients.items())}
    # "seq": the last event this view includes (a reader of the stream applies only later ones)
    cluster = {"cluster": manager.cluster.describe()} if manager.cluster is not None else {}
    return {"manager": manager.name, "seq": manager.events.seq, "health": manager.health()["status"], **cluster,
            "clients": sorted(registry.clients), "client_info": client_info,
            "services": services, "totals": manager.totals(), "recent": recent_connections(manager)}


def recent_connections(manager, n=RECENT):
    """The newest `n` rows of the connection log, oldest first."""
    manager.flush_connection_log()
    return [dict(zip(CONNECTION_FIELDS, row)) for row in manager.connections_table.recent(n)]


def disconnect_peer(manager, name):
    """Drop the peer with this network name (the ``disconnect_peer`` request)."""
    for session in list(manager.sessions):
        if session.name == name:
            session.abort("disconnected by an administrator")
            return True
    raise ValueError(f"no peer named {name!r} is connected")


def reload(manager):
    """Re-read the settings, certificate and key, as SIGHUP does (the ``reload`` request)."""
    failure = manager.reload()
    if failure:
        raise RuntimeError(f"the reload failed, the running settings stay: {failure}")
    return True


def connections(manager, start=None, end=None):
    """The ``connections`` table (the ``connections_table.connections`` request).

    Writes are batched once a second (STYLE.md rule 4), but 1.0 writes each row at once and its
    own test_admin_requests reads its two rows right after connecting: a read flushes first.
    """
    manager.flush_connection_log()
    return manager.connections_table.connections(start, end)


def operations(manager):
    """The allow-list: attribute name -> callable(*args, **kwargs)."""
    users, hostnames = manager.users, manager.hostnames_table
    return {
        # values 1.0 clients read (reference 1.7)
        "port": lambda: manager.port,
        "login": lambda: True if manager.cfg.auth == "login" else None,
        "password": lambda: getattr(manager.auth, "password", None),
        "hostnames": lambda: sorted(manager.trusted_hostnames()) if manager.cfg.auth == "hostname" else None,
        "set_logging_level": log.set_level,
        # the tables, by their 1.0 attribute names
        "users_table.is_user_registered": users.is_user_registered,
        # the table runs bcrypt/PBKDF2 in the threadpool itself; queries stay on the hub
        "users_table.is_password_valid": users.is_password_valid,
        "users_table.is_admin": users.is_admin,
        "users_table.usernames": users.usernames,
        "users_table.users": users.users,
        "users_table.insert": users.insert,
        "users_table.update": users.update,
        "users_table.delete": users.delete,
        "hostnames_table.hostnames": hostnames.hostnames,
        "hostnames_table.insert": hostnames.insert,
        "hostnames_table.delete": hostnames.delete,
        "connections_table.connections": lambda start=None, end=None: connections(manager, start, end),
        # netmgr verbs
        "peers": lambda: peers(manager),
        "status": lambda: status(manager),
        "disconnect_peer": lambda name: disconnect_peer(manager, name),
        "reload": lambda: reload(manager),
    }


#: admin requests that change a table: the audit event names what they changed (never a password)
_TARGETED = {"users_table.insert": "username", "users_table.update": "username",
             "users_table.delete": "username", "hostnames_table.insert": "hostname",
             "hostnames_table.delete": "hostname", "disconnect_peer": "name"}
#: read-only requests ``netmgr status --watch`` repeats: not audited, or they would flood the log
_QUIET = frozenset(("status", "peers", "port", "login", "password", "hostnames",
                    "connections_table.connections", "users_table.usernames", "users_table.users",
                    "users_table.is_user_registered", "users_table.is_admin",
                    "hostnames_table.hostnames"))


def audit(manager, by, attribute, args, kwargs, ok):
    """The ``admin`` event of one admin request (read-only ones are left out)."""
    if attribute in _QUIET:
        return
    fields = {"attribute": attribute, "by": by, "ok": ok}
    key = _TARGETED.get(attribute)
    if key is not None:
        target = args[0] if args else kwargs.get(key)
        if type(target) is str:
            fields["target"] = target
    manager.events.publish("admin", "request", **fields)


class Admin:
    def __init__(self, manager):
        self.manager = manager
        self.operations = operations(manager)

    def handle(self, session, data, attribute, uid):
        if not session.is_admin and not self._challenge(session, uid):
            return
        session.log.info("admin_request", attribute=attribute)
        if attribute == SHUTDOWN_MANAGER:
            session.reply(None, uid)
            audit(self.manager, session.name, attribute, (), {}, True)
            self.manager.request_stop()
            return
        operation = self.operations.get(attribute)
        if operation is None:
            session.reply_error(error_text("AttributeError", f"{attribute!r} is not an admin request "
                                                             "of the Manager"), uid)
            return
        args, kwargs = data.get("args", []), data.get("kwargs", {})
        if type(args) is not list or type(kwargs) is not dict:
            session.reply_error(error_text("TypeError", "'args' must be a list and 'kwargs' an object"), uid)
            return
        try:
            value = operation(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 -- the error goes to the peer, with its uid
            session.reply_error(f"{type(exc).__name__}: {exc}", uid)
            ok = False
        else:
            session.reply(value, uid)
            ok = True
        audit(self.manager, session.name, attribute, args, kwargs, ok)  # after the reply

    def _challenge(self, session, uid):
        """Log the peer in as an admin; on failure answer the request with an error."""
        if session.challenging:
            session.reply_error(error_text("ValueError", "a login is already in progress"), uid)
            return False
        session.challenging = True
        failed = []
        try:
            with gevent.Timeout(self.manager.cfg.handshake_timeout, False):
                admin = self.manager.login.login(session, ask=session.ask_inline,
                                                 reject=lambda message: failed.append(message))
                if admin is None:
                    session.reply_error(failed[0] if failed else error_text(
                        "ValueError", "the login was not completed"), uid)
                    return False
                if not admin:
                    session.reply_error(NOT_ADMIN, uid)
                    return False
                session.is_admin = True
                return True
            session.reply_error(error_text("TimeoutError", "the login was not completed in time"), uid)
            return False
        finally:
            session.challenging = False
