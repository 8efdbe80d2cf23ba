"""``netmgr start``: turn resolved settings into a running Manager, in 1.0's order.

The command line reaches the daemon only through :func:`run` (and :func:`patch`).

1.0's start-up prints, in this order, ``loaded certificate <path>`` (first line), one line per
database table, the authentication mode, and last ``Network Manager running on <host>:<port>
(TLS ENABLED|DISABLED)``; harnesses match the first and the last (reference section 3).

A start that fails leaves no new file behind (issue 11): the port is bound before anything is
created, the log file is opened only once the Manager runs (its events are held until then), and
what else the start created (HOME, the database, the key and certificate, their directories) is
removed again; files that existed before are left as they were.
"""
import contextlib
import logging
import os
import resource
import signal
import sys
import time

from netmgr import crypto, hostinfo, protocol
from netmgr.config import secret_value
from netmgr.daemon import log
from netmgr.daemon import systemd
from netmgr.errors import NetmgrError, PathError, UsageError
from netmgr.store import models

#: the exit status after Ctrl-C (SIGINT), as the shell's 128 + 2
INTERRUPTED = 130


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
    try:
        if cert_file is None and key_file is None:
            models.make_dirs(os.path.dirname(default_cert))
            models.make_dirs(os.path.dirname(default_key))
            cert_file, key_file, created = crypto.ensure_certificate(
                default_cert, default_key, key_password, hostname=host)
        elif cert_file is None:  # a key alone: (re)make the default certificate from it
            models.make_dirs(os.path.dirname(default_cert))
            cert_file = crypto.generate_certificate(default_cert, key_file, key_password=key_password,
                                                    hostname=host)
    except OSError as exc:
        raise PathError(f"cannot create {exc.filename or default_cert}: {exc.strerror or exc}") from exc
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
    """The SIGHUP handler's work: open the log file again (logrotate), resolve the settings again
    (config file, environment, the original flags) and apply what can change while peers stay
    connected."""
    def reload(mgr):
        log.reopen()  # first: a settings error must not keep the Manager writing a rotated file
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


def _check_log_file(cfg):
    """A log file that was given (``-l``, the environment, the config) must be in a directory that
    exists: a typo is a usage error, not a new directory tree. HOME/logs is made as needed."""
    if cfg.log_file:
        directory = os.path.dirname(os.path.abspath(cfg.log_file))
        if not os.path.isdir(directory):
            problem = "is not a directory" if os.path.exists(directory) else "does not exist"
            raise UsageError(f"the log file's directory {directory} {problem}")


class NewPaths:
    """Which of `paths`, and of their parent directories, do not exist yet; :meth:`remove`
    deletes those that exist by then (a directory only when it is empty), deepest first."""

    def __init__(self, paths):
        self.paths = set()
        for path in map(os.path.abspath, paths):
            while not os.path.lexists(path) and path not in self.paths:
                self.paths.add(path)
                path = os.path.dirname(path)

    def remove(self):
        for path in sorted(self.paths, key=len, reverse=True):
            with contextlib.suppress(OSError):
                if os.path.isdir(path) and not os.path.islink(path):
                    os.rmdir(path)
                elif os.path.lexists(path):
                    os.remove(path)


def _made_by_start(cfg, log_file):
    """The files a start may create: the log file, the database, the default key and certificate."""
    paths = [log_file] if log_file else []
    if cfg.database != ":memory:":
        paths += [cfg.database + suffix for suffix in ("", "-wal", "-shm", "-journal")]
    if not cfg.disable_tls:
        paths += hostinfo.default_cert_and_key(cfg.host, cfg.home)
    return paths


def _listen(cfg, manager):
    """The listening socket, bound before anything is created: a busy port leaves nothing behind."""
    inherited = systemd.listen_fds()  # socket activation: systemd holds the port and the backlog
    if inherited:
        return inherited[0]
    try:
        return manager.bind(cfg, manager.Manager.BACKLOG)
    except OSError as exc:
        raise UsageError(f"cannot listen on {cfg.host or '*'}:{cfg.port}: "
                         f"{exc.strerror or exc}") from None


def _configure_logging(level, log_file):
    """stdout, and the log file held until the Manager runs."""
    if log_file:
        models.make_dirs(os.path.dirname(os.path.abspath(log_file)))
        if os.path.isdir(log_file):
            raise PathError(f"cannot open the log file {log_file}: Is a directory")
    log.configure(level, log_file, hold=True)
    return log.get_logger()


def _start(cfg, listener, logger, manager):
    """The Manager, started and writing its log file; stopped again if the file cannot be opened."""
    if cfg.database != ":memory:":  # the Manager makes it too, with an error that names no path
        models.make_dirs(os.path.dirname(os.path.abspath(cfg.database)))
    context = tls_context_of(cfg, logger)
    mgr = manager.Manager(cfg, ssl_context=context, listener=listener).start()
    try:
        log.open_file()
    except OSError as exc:
        mgr.stop()
        raise PathError(f"cannot open the log file {exc.filename}: {exc.strerror or exc}") from exc
    return mgr


def raise_open_files_limit():
    """Raise the soft RLIMIT_NOFILE to the hard one (each peer is a file descriptor: 20,000 peers
    need more than the usual soft 1024); ``(before, after)`` of the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            return soft, soft
        return soft, hard
    return soft, soft


def _failed(exc, logger, new_paths):
    """A start that failed: the traceback of an unexpected error to the log (stderr gets one line
    from the command line), and the files this start created removed again."""
    if logger is not None and not isinstance(exc, (NetmgrError, KeyboardInterrupt, SystemExit)):
        log.log_exception("start_failed", (type(exc), exc, exc.__traceback__), logger)
    models.close_db()
    new_paths.remove()


def run(cfg, reread=None):
    """Run a Manager with the settings `cfg` (:class:`netmgr.config.Config`) until it is stopped;
    the exit status: 0, or :data:`INTERRUPTED` after Ctrl-C (SIGINT), as every command.

    ``reread()`` returns the settings afresh for a SIGHUP reload.
    """
    from netmgr.daemon import manager

    from gevent import get_hub

    # first: Ctrl-C while the hub resolves the host (in _listen) must not print to stderr
    log.log_hub_errors(get_hub())
    # the stdlib JSON codec recurses once per level: room for protocol.MAX_NESTING and more
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 4 * protocol.MAX_NESTING))

    try:
        level = log.parse_level(cfg.log_level)
    except ValueError as exc:
        raise UsageError(f"ValueError: {exc}") from None
    cfg = cfg.replace(port=parse_port(cfg.port))
    _check_log_file(cfg)
    log_file = _log_file(cfg)
    new_paths, logger = NewPaths(_made_by_start(cfg, log_file)), None
    try:
        listener = _listen(cfg, manager)
        logger = _configure_logging(level, log_file)
        before, after = raise_open_files_limit()
        if after != before:
            logger.info("open_files_limit", soft=after, was=before)
        mgr = _start(cfg, listener, logger, manager)
    except BaseException as exc:  # Ctrl-C during the start too: it leaves nothing behind
        _failed(exc, logger, new_paths)
        raise
    if reread is not None:
        mgr.reloader = reloader(reread, logger)
    tls = "DISABLED" if cfg.disable_tls else "ENABLED"
    running = f"Network Manager running on {cfg.host or hostinfo.HOSTNAME}:{mgr.port} (TLS {tls})"
    logger.info(running)  # 1.0's last start-up line: harnesses wait for it
    if level > logging.INFO:  # harnesses wait for this line whatever the log level
        print(running, flush=True)
    try:
        mgr.serve_forever()
    except Exception as exc:
        log.log_exception("unhandled_error", (type(exc), exc, exc.__traceback__), logger)
        raise
    return INTERRUPTED if mgr.stopped_by == signal.SIGINT else 0
