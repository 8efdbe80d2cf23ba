"""The local control socket: administration by the socket's file permissions, no password.

As Docker's ``/var/run/docker.sock``, HAProxy's stats socket and gunicorn's control socket, a
UNIX socket beside the Manager lets local administrators in with no password: whoever may
``connect()`` to it is an administrator. Under systemd it is ``/run/netmgr/netmgr.sock``
(``RuntimeDirectory=netmgr``, mode 0660, the service's user and group ``netmgr``: root and the
members of group ``netmgr``); otherwise ``HOME/netmgr.sock``, mode 0600 (the Manager's owner
and root). ``control_socket = none`` turns it off. docs/security.md states the trust model.

The peer speaks the usual protocol over it (the Manager asks for its identity, no TLS, no
login); it may only be a Client, and is named ``Name[local:PID]`` with the process id from
``SO_PEERCRED``, whose user id is logged and kept in the connection log for the audit.
"""
import errno
import os
import stat
import struct

from gevent import socket

from netmgr import hostinfo

#: administrators' connections at once (a pool apart from the peers', so a full Manager can
#: still be administered)
CONNECTIONS = 64
BACKLOG = 64
#: ``sun_path`` holds 108 bytes with the terminating NUL
MAX_PATH = 107
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def path_of(cfg, environ=None):
    """The control socket of `cfg`, or None when ``control_socket = none``."""
    if cfg.control_socket == "":
        return None
    return cfg.control_socket or hostinfo.control_socket_path(cfg.home, environ)


def mode(environ=None):
    """0660 under systemd (the group ``netmgr`` administers), else 0600 (the owner alone)."""
    return 0o660 if (os.environ if environ is None else environ).get("RUNTIME_DIRECTORY") else 0o600


def listen(path, file_mode):
    """A listening UNIX socket at `path` with `file_mode`; OSError with a reason otherwise.

    A socket file left by a Manager that was killed is replaced; one that a running Manager
    answers on is not (two Managers with one HOME: the first keeps it).
    """
    if len(os.fsencode(path)) > MAX_PATH:
        raise OSError(errno.ENAMETOOLONG, f"a UNIX socket path has at most {MAX_PATH} bytes")
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o777 & ~file_mode)  # never a moment with wider permissions
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(umask)
    os.chmod(path, file_mode)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def _clear_stale(path):
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise OSError(errno.EEXIST, "the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: left by a Manager that did not stop cleanly
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "another Manager is listening on it")


def inode(path):
    return os.stat(path).st_ino


def remove(path, bound_inode):
    """Remove the socket file if it is still the one this Manager bound (`bound_inode`)."""
    try:
        if os.lstat(path).st_ino == bound_inode:
            os.unlink(path)
    except OSError:
        pass


def credentials(sock):
    """``(pid, uid, gid)`` of the process at the other end (``SO_PEERCRED``)."""
    return _CREDENTIALS.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                               _CREDENTIALS.size))
