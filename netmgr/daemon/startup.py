"""``netmgr start``: turn resolved settings into a running Manager, in 1.0's order.

The command line reaches the daemon only through :func:`run` (and :func:`patch`).

1.0's start-up prints, in this order, ``loaded certificate <path>`` (first line), one line per
database table, the authentication mode, and last ``Network Manager running on <host>:<port>
(TLS ENABLED|DISABLED)``; harnesses match the first and the last (reference section 3).
"""
import logging
import os
import sys
import time

from netmgr import crypto, hostinfo, protocol
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
    try:
        context = crypto.server_context(cert_file, key_file, key_password)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the certificate {cert_file}: {exc}") from None
    logger.info(f"loaded certificate {cert_file}")  # 1.0's first start-up line: harnesses read it
    if key_file is not None and not crypto.is_private_key_safe(key_file):
        logger.warning("private_key_readable_by_others", key=key_file)
    if created:
        logger.info("created_certificate", cert=cert_file, key=key_file)
    return context


def tls_context_of(cfg, logger):
    """The server's TLS context for `cfg`, or None with ``disable_tls``."""
    if cfg.disable_tls:
        return None
    return tls_context(cfg.host, cfg.cert_file, cfg.key_file, secret_value(cfg.key_file_password),
                       logger, cfg.home)


def reloader(reread, logger):
    """The SIGHUP handler's work: resolve the settings again (config file, environment, the
    original flags) and apply what can change while peers stay connected."""
    def reload(mgr):
        cfg, changed = mgr.cfg.for_reload(reread())
        level = log.parse_level(cfg.log_level)
        mgr.apply(cfg, tls_context_of(cfg, logger))
        log.set_level(level)
        if changed:
            logger.warning("restart_required", settings=",".join(changed))
    return reload


def _log_file(cfg):
    if cfg.log_file is not None:
        return cfg.log_file
    return os.path.join(hostinfo.log_dir(cfg.home), time.strftime("manager-%Y-%m-%d-%H-%M-%S.log"))


def run(cfg, reread=None):
    """Run a Manager with the settings `cfg` (:class:`netmgr.config.Config`) until it is stopped.

    ``reread()`` returns the settings afresh for a SIGHUP reload.
    """
    from netmgr.daemon import manager

    # the stdlib JSON codec recurses once per level: room for protocol.MAX_NESTING and more
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 4 * protocol.MAX_NESTING))

    try:
        level = log.parse_level(cfg.log_level)
    except ValueError as exc:
        raise UsageError(f"ValueError: {exc}") from None
    cfg = cfg.replace(port=parse_port(cfg.port))
    log_file = _log_file(cfg)
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    log.configure(level, log_file)
    logger = log.get_logger()

    context = tls_context_of(cfg, logger)
    inherited = systemd.listen_fds()  # socket activation: systemd holds the port and the backlog
    try:
        mgr = manager.Manager(cfg, ssl_context=context,
                              listener=inherited[0] if inherited else None).start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {cfg.host or '*'}:{cfg.port}: "
                         f"{exc.strerror or exc}") from None
    if reread is not None:
        mgr.reloader = reloader(reread, logger)
    tls = "DISABLED" if cfg.disable_tls else "ENABLED"
    running = f"Network Manager running on {cfg.host or hostinfo.HOSTNAME}:{mgr.port} (TLS {tls})"
    logger.info(running)  # 1.0's last start-up line: harnesses wait for it
    if level > logging.INFO:  # harnesses wait for this line whatever the log level
        print(running, flush=True)
    mgr.serve_forever()
