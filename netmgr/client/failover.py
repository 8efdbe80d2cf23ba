"""Reaching a Manager, for the Client and the Service alike: keywords, options, failover, back-off.

:class:`Options` holds what ``connect()`` and ``Service.start()`` were told about the Managers
(:data:`CONNECT_KEYS` and :data:`RECONNECT_KEYS`; :func:`pick_kwargs` is 1.0's ``filter_*_kwargs``)
and opens one connection with its handshake. :class:`Failover` makes rounds over the failover
list; :meth:`Failover.run` is the one connect-and-reconnect loop of the Client and the Service,
with :class:`Backoff` between the rounds and the caller's ``stop``, ``wait`` and ``fatal``. What
a connection is then used for, and what happens to the state of a Client or Service, is the
caller's.
"""
import random

from netmgr.client.peer import Credentials, handshake
from netmgr.client.transport import open_connection
from netmgr.protocol import PORT, Lines

#: 1.0's keywords of ``connect()`` and ``Service.start()`` that say how to reach the Manager.
CONNECT_KEYS = ("host", "port", "timeout", "username", "password", "password_manager",
                "read_limit", "disable_tls", "cert_file", "assert_hostname", "auto_save")
#: netmgr's keywords of both: reconnecting after the connection drops.
RECONNECT_KEYS = ("reconnect", "max_delay", "on_state_change")


def pick_kwargs(kwargs, keys, renames=()):
    """The items of `kwargs` whose key is in `keys`, plus, for each ``(alias, key)`` of `renames`
    whose key was not given, ``key: kwargs[alias]`` (1.0's ``filter_*_kwargs``)."""
    picked = {key: kwargs[key] for key in keys if key in kwargs}
    for alias, key in renames:
        if alias in kwargs and key not in picked:
            picked[key] = kwargs[alias]
    return picked


def check_extras(function, extras, allowed):
    """Raise Python's TypeError for keywords of `extras` that `function` does not take."""
    unknown = set(extras) - set(allowed)
    if unknown:
        raise TypeError(f"{function}() got unexpected keyword argument(s) {sorted(unknown)}")


def parse_managers(host, port=PORT):
    """The Managers to try, in order, as ``[(host, port), ...]``.

    ``host`` is a host name or address, ``"host:port"``, the path of a Manager's control socket
    (``"/run/netmgr/netmgr.sock"``, port 0), a ``|``-separated failover list
    (``"a:1875|b:1876"``), or a list/tuple of such strings or of ``(host, port)`` pairs. An entry
    without a port uses ``port``. IPv6 addresses with a port are written ``[::1]:1875``.
    """
    if isinstance(host, (list, tuple)):
        if len(host) == 2 and isinstance(host[0], str) and isinstance(host[1], int):
            entries = [tuple(host)]
        else:
            entries = list(host)
    else:
        entries = [h.strip() for h in str(host).split("|") if h.strip()]
    out = [_parse_entry(entry, port) for entry in entries]
    if not out:
        raise ValueError(f"no Manager address in host={host!r}")
    return out


def _parse_entry(entry, port):
    if isinstance(entry, (list, tuple)):
        h, p = entry
        return str(h), int(p)
    entry = str(entry).strip()
    if entry.startswith("/"):  # a Manager's local control socket (a UNIX socket path)
        return entry, 0
    if entry.startswith("["):
        h, _, rest = entry[1:].partition("]")
        p = int(rest[1:]) if rest.startswith(":") else port
    elif entry.count(":") == 1:
        h, p = entry.split(":")
        p = int(p)
    else:
        h, p = entry, port
    return h, int(p)


class Backoff:
    """Delays between reconnect rounds: 0.1 s doubling to ``max_delay``, with 20 % jitter."""

    def __init__(self, max_delay=30.0, first=0.1):
        self.max_delay = max(0.0, float(max_delay))
        self.first = first
        self.attempt = 0

    def next(self):
        delay = min(self.max_delay, self.first * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return delay * random.uniform(0.8, 1.0)

    def reset(self):
        self.attempt = 0


def reconnect_attempts(reconnect):
    """``reconnect`` as a number of attempts: False/0/None -> 0, True -> unlimited (-1), N -> N."""
    if reconnect is True:
        return -1
    if not reconnect:
        return 0
    return int(reconnect)


def summary(exc):
    """The first line of an exception's text, or its type's name."""
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


class Options:
    """How to reach the Managers: the keywords that ``connect()`` and ``Service.start()`` share."""

    def __init__(self, *, host, port, timeout, username, password, password_manager, read_limit,
                 disable_tls, cert_file, assert_hostname, auto_save, reconnect=False,
                 max_delay=30.0, on_state_change=None, prompt=None):
        self.managers = parse_managers(host, port)
        self.timeout = timeout
        self.read_limit = read_limit
        self.tls = dict(disable_tls=disable_tls, cert_file=cert_file,
                        assert_hostname=assert_hostname, auto_save=auto_save)
        self.credentials = Credentials(username, password, password_manager, prompt)
        self.attempts = reconnect_attempts(reconnect)
        self.max_delay = max_delay
        self.on_state_change = on_state_change

    def open(self, host, port, identity):
        """Connect to one Manager and answer its handshake.

        Returns ``(transport, local_port, leftover_lines, lines)``; the transport is closed
        when the handshake fails.
        """
        transport = open_connection(host, port, timeout=self.timeout, **self.tls)
        lines = Lines(self.read_limit)
        try:
            local_port, leftover = handshake(transport, lines, identity, self.credentials, host,
                                             port, self.timeout, self.tls["disable_tls"])
        except BaseException:
            transport.close()
            raise
        return transport, local_port, leftover, lines


class Failover:
    """Rounds over the failover list, each from the Manager at ``index``, until one accepts.

    ``errors`` holds the ``(host, port, exception)`` of the last round's failures.
    """

    def __init__(self, options, identity, index=0):
        self.options = options
        self.identity = identity
        self.index = index
        self.rounds = 0
        self.errors = []
        self.stopped = False
        self._backoff = Backoff(options.max_delay)

    def round(self, fatal=None, stop=None, on_error=None):
        """Try each Manager once; ``(host, port, transport, local_port, leftover, lines)`` of the
        first that accepts, or None.

        An error for which ``fatal(exc)`` is true is raised at once, the others are passed to
        ``on_error(host, port, exc)``. When ``stop()`` is true before a Manager is tried the
        round ends: None, and ``stopped`` is set.
        """
        self.errors = []
        managers = self.options.managers
        n = len(managers)
        for i in range(n):
            index = (self.index + i) % n
            host, port = managers[index]
            if stop is not None and stop():
                self.stopped = True
                return None
            try:
                opened = self.options.open(host, port, self.identity)
            except (OSError, ValueError) as exc:
                if fatal is not None and fatal(exc):
                    raise
                self.errors.append((host, port, exc))
                if on_error is not None:
                    on_error(host, port, exc)
                continue
            self.index = index
            return (host, port, *opened)
        self.rounds += 1
        return None

    def run(self, *, fatal=None, stop=None, on_error=None, wait=None):
        """Rounds (see :meth:`round`) until a Manager accepts: the tuple of :meth:`round`.

        Between rounds ``wait(delay)`` waits, the delay growing by :class:`Backoff`; without
        ``wait`` a round that finds no Manager raises :meth:`error` (a first connect that does
        not retry). None when ``stop()`` became true (``stopped`` is set) or when the
        ``reconnect`` attempts are used up (``stopped`` is not set).
        """
        while True:
            found = self.round(fatal, stop, on_error)
            if found is not None or self.stopped:
                return found
            if wait is None:
                raise self.error()
            if self.exhausted():
                return None
            wait(self._backoff.next())

    def exhausted(self):
        """Whether the ``reconnect`` attempts are used up."""
        return 0 < self.options.attempts <= self.rounds

    def error(self):
        """What to raise when a round found no Manager: its one error, or a list of them."""
        if len(self.errors) == 1:
            return self.errors[0][2]
        text = "\n".join(f"  {h}:{p}: {summary(e)}" for h, p, e in self.errors)
        return ConnectionError(f"Cannot connect to any of the Managers:\n{text}")
