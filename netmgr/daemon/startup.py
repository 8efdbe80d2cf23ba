"""``netmgr start``: turn command-line options into a running Manager, in 1.0's order.

1.0's start-up prints, in this order, ``loaded certificate <path>`` (first line), one line per
database table, the authentication mode, and last ``Network Manager running on <host>:<port>
(TLS ENABLED|DISABLED)``; harnesses match the first and the last (reference section 3).
"""
import logging
import os
import time

from netmgr import crypto, hostinfo
from netmgr.config import secret_value
from netmgr.daemon import log
from netmgr.daemon import systemd
from netmgr.errors import UsageError


def parse_port(text):
    try:
        port = int(text)
    except (TypeError, ValueError):
        port = -1
    if not 0 <= port <= 65535:
        raise UsageError("ValueError: The port must be a positive integer")
    return port


def auth_mode(auth_hostname, auth_login, auth_password):
    chosen = [mode for mode, on in (("hostname", auth_hostname), ("login", auth_login),
                                    ("password", auth_password is not None)) if on]
    if len(chosen) > 1:
        raise UsageError("Cannot specify multiple authentication methods")
    return chosen[0] if chosen else "none"


def tls_context(host, cert_file, key_file, key_password, logger, home=None):
    """Choose the certificate and key as 1.0 does (reference section 3, start, step 3)."""
    default_cert, default_key = hostinfo.default_cert_and_key(host, home)
    created = False
    if cert_file is None and key_file is None:
        cert_file, key_file, created = crypto.ensure_certificate(
            default_cert, default_key, key_password, hostname=host)
    elif cert_file is None:  # a key alone: (re)make the default certificate from it
        cert_file = crypto.generate_certificate(default_cert, key_file, key_password=key_password,
                                                hostname=host)
    if key_file is not None and not crypto.is_private_key_safe(key_file):
        logger.warning("private_key_readable_by_others", key=key_file)
    try:
        context = crypto.server_context(cert_file, key_file, key_password)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the certificate {cert_file}: {exc}") from None
    logger.info(f"loaded certificate {cert_file}")  # 1.0's first start-up line: harnesses read it
    if created:
        logger.info("created_certificate", cert=cert_file, key=key_file)
    return context


#: settings a reload cannot change: they need a restart
RESTART_ONLY = ("host", "port", "database", "disable_tls", "home", "auth_hostname", "auth_login",
                "auth_password", "max_connections", "log_file")


def reloader(reread, current, logger):
    """The SIGHUP handler's work: resolve the settings again (config file, environment, the
    original flags) and apply what can change while peers stay connected."""
    def reload(mgr):
        new = reread()
        level = log.parse_level(new["log_level"])
        context = None
        if not current["disable_tls"]:
            context = tls_context(new["host"], new["cert_file"], new["key_file"],
                                  secret_value(new["key_file_password"]), logger, new["home"])
        mgr.apply(ssl_context=context, handshake_timeout=new["handshake_timeout"],
                  line_limit=new["max_line_size"], queue_limit=new["max_queue_size"],
                  bcrypt_rounds=new["bcrypt_rounds"], max_auth_failures=new["max_auth_failures"],
                  auth_lockout=new["auth_lockout"])
        log.set_level(level)
        changed = sorted(k for k in RESTART_ONLY if new.get(k) != current.get(k))
        if changed:
            logger.warning("restart_required", settings=",".join(changed))
    return reload


def run(auth_hostname, auth_login, auth_password, cert_file, database, disable_tls, host,
        key_file, key_file_password, port, log_level, log_file, max_connections,
        handshake_timeout, max_line_size, max_queue_size, bcrypt_rounds, max_auth_failures,
        auth_lockout, home=None, reread=None):
    """Run a Manager until it is stopped. `home` (:mod:`netmgr.config`) places the default files;
    `reread()` returns these keyword arguments afresh for a SIGHUP reload."""
    current = dict(locals())
    from netmgr.daemon import manager

    try:
        level = log.parse_level(log_level)
    except ValueError as exc:
        raise UsageError(f"ValueError: {exc}") from None
    port = parse_port(port)
    mode = auth_mode(auth_hostname, auth_login, auth_password)
    if log_file is None:
        log_file = os.path.join(hostinfo.log_dir(home), time.strftime("manager-%Y-%m-%d-%H-%M-%S.log"))
    os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    log.configure(level, log_file)
    logger = log.get_logger()

    context = None
    if not disable_tls:
        context = tls_context(host, cert_file, key_file, secret_value(key_file_password), logger, home)
    settings = manager.Settings(
        host=host, port=port, auth_mode=mode, password=secret_value(auth_password),
        database=database or hostinfo.database_path(home), ssl_context=context,
        max_connections=max_connections, handshake_timeout=handshake_timeout,
        line_limit=max_line_size, queue_limit=max_queue_size, bcrypt_rounds=bcrypt_rounds,
        max_auth_failures=max_auth_failures, auth_lockout=auth_lockout)
    inherited = systemd.listen_fds()
    if inherited:  # socket activation: systemd holds the port, and the backlog across restarts
        settings.listener = inherited[0]
    try:
        mgr = manager.Manager(settings).start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {host or '*'}:{port}: {exc.strerror or exc}") from None
    if reread is not None:
        mgr.reloader = reloader(reread, current, logger)
    tls = "DISABLED" if disable_tls else "ENABLED"
    running = f"Network Manager running on {host or hostinfo.HOSTNAME}:{mgr.port} (TLS {tls})"
    logger.info(running)
    if level > logging.INFO:  # harnesses wait for this line whatever the log level
        print(running, flush=True)
    mgr.serve_forever()
