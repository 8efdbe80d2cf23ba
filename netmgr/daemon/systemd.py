"""The systemd service protocol: ``sd_notify`` and socket activation, no-ops outside systemd.

No dependency is needed: a notification is one datagram to ``$NOTIFY_SOCKET`` (a path, or an
abstract socket when it starts with ``@``), and inherited listeners are the file descriptors
from 3 up to 3 + ``$LISTEN_FDS`` when ``$LISTEN_PID`` is this process (sd_notify(3),
sd_listen_fds(3)). Like gunicorn's ``systemd.py``, this module holds no state.
"""
import os
import socket
import time

SD_LISTEN_FDS_START = 3


def notify(*fields, environ=None):
    """Send ``fields`` (``"READY=1"``, ``"STATUS=…"``) to systemd; False outside systemd."""
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET")
    if not address or not fields:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
    except OSError:
        return False
    return True


def ready(status=None, **kw):
    return notify("READY=1", *((f"STATUS={status}",) if status else ()), **kw)


def status(text, **kw):
    return notify(f"STATUS={text}", **kw)


def stopping(**kw):
    return notify("STOPPING=1", **kw)


def reloading(**kw):
    """RELOADING=1 with the monotonic time, as ``Type=notify-reload`` expects."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", **kw)


def watchdog(**kw):
    return notify("WATCHDOG=1", **kw)


def watchdog_interval(environ=None):
    """Seconds between watchdog pings (half of ``WatchdogSec=``), or None when not asked for."""
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6


def listen_fds(unset_environment=True, environ=None):
    """The listening sockets systemd passed to this process (``netmgr.socket``), as sockets."""
    environ = os.environ if environ is None else environ
    try:
        if int(environ.get("LISTEN_PID", "0")) != os.getpid():
            return []
        count = int(environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    if unset_environment:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            environ.pop(name, None)
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets
