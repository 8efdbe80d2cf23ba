"""What the blocking Client and Service libraries share: addresses, sockets, TLS, the handshake.

Plain blocking sockets and threads: no gevent and no asyncio, so the libraries can be imported
by any program (a Qt GUI, a Jupyter kernel, a LabVIEW-launched script) without changing how its
threads behave. Framing and JSON come from :mod:`netmgr.protocol` (orjson, CRLF).

Transports hide the two socket kinds behind one small interface (``recv``, ``sendall``,
``wait_readable``):

* plaintext: a blocking socket; one thread may block in ``recv`` while another ``sendall``\\ s;
* TLS: OpenSSL forbids concurrent ``SSL_read``/``SSL_write`` on one connection, so the socket is
  non-blocking and each SSL call is made under a lock that is never held while waiting.
"""
import errno
import getpass
import logging
import os
import platform
import random
import re
import select
import socket
import ssl
import struct
import subprocess
import textwrap
import threading
import time

from netmgr import config
from netmgr.protocol import CRLF, PORT, dumps, loads

logger = logging.getLogger("netmgr.client")

HOSTNAME = socket.gethostname()
LANGUAGE = f"Python {platform.python_version()}"
OS_NAME = f"{platform.system()} {platform.release()} {platform.machine()}"

#: 1.0's client-side test of a ``password`` request: the Manager's own password, or a user's
_is_manager_regex = re.compile(r"^Manager\[\S+:\d+]$")

RECV_SIZE = 1 << 18
#: bytes of an oversized line that are kept to find its ``uid`` and ``requester``
TAIL_SIZE = 4096

_POLLIN = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP
_POLLOUT = select.POLLOUT | select.POLLERR | select.POLLHUP

_local_aliases = None


def localhost_aliases():
    """1.0's ``LOCALHOST_ALIASES``: this host's names and IPv4 addresses (computed on first use)."""
    global _local_aliases
    if _local_aliases is None:
        aliases = {HOSTNAME, "localhost", "127.0.0.1", "::1",
                   "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
                   "1.0.0.127.in-addr.arpa"}
        try:
            out = subprocess.run(["ip", "-4", "address"], capture_output=True, text=True,
                                 timeout=5).stdout
            aliases.update(re.findall(r"inet\s+(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})", out))
        except (OSError, subprocess.SubprocessError):
            pass
        _local_aliases = aliases
    return _local_aliases


# ------------------------------------------------------------------------------------ addresses

def parse_managers(host, port=PORT):
    """The Managers to try, in order, as ``[(host, port), ...]``.

    ``host`` is a host name or address, ``"host:port"``, a ``|``-separated failover list
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
    out = []
    for entry in entries:
        if isinstance(entry, (list, tuple)):
            h, p = entry
            out.append((str(h), int(p)))
            continue
        entry = str(entry).strip()
        if entry.startswith("["):
            h, _, rest = entry[1:].partition("]")
            p = int(rest[1:]) if rest.startswith(":") else port
        elif entry.count(":") == 1:
            h, p = entry.split(":")
            p = int(p)
        else:
            h, p = entry, port
        out.append((h, int(p)))
    if not out:
        raise ValueError(f"no Manager address in host={host!r}")
    return out


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


# ------------------------------------------------------------------------------------ TLS

def cert_path(host):
    """1.0's cache of trusted certificates: ``<home>/certs/<host>.crt``."""
    return os.path.join(config.cert_dir(), f"{host}.crt")


def get_ssl_context(*, cert_file=None, host=None, port=None, auto_save=False, **kwargs):
    """Return ``(path, ssl.SSLContext)`` as 1.0's ``msl.network.cryptography.get_ssl_context``.

    The CA file is ``cert_file``, or the cached ``<home>/certs/<host>.crt``. When neither exists
    the server's certificate is fetched (trust on first use): unless ``auto_save``, its SHA-256
    and SHA-1 fingerprints are shown and the user is asked ``Continue? y/n``; a "no" returns
    ``('', None)``. The accepted certificate is saved to the cache and loaded.
    ``kwargs`` go to :func:`ssl.get_server_certificate` (e.g. ``timeout``).
    """
    ca_file = cert_file or cert_path(host)
    try:
        return ca_file, _client_context(ca_file)
    except FileNotFoundError:
        if cert_file is not None:
            raise

    if host is None or port is None:
        raise ValueError("Must specify the host and port or the cert_file")

    cert_data = ssl.get_server_certificate((host, port), **kwargs).encode()

    if not auto_save:
        from netmgr import crypto  # cryptography is imported only for a first-use prompt

        cert = crypto.load_certificate(cert_data)
        name = cert.signature_algorithm_oid._name  # noqa: SLF001 -- 1.0 shows this name
        p1 = (f"The certificate for {host} is not cached in the registry. You have no "
              f"guarantee that the server is the computer that you think it is.")
        p2 = (f"\nThe server's {name} key fingerprint is\n"
              f"SHA256: {crypto.fingerprint(cert, 'SHA256')}\n"
              f"SHA1:   {crypto.fingerprint(cert, 'SHA1')}\n")
        p3 = ("If you trust this host you can save the certificate in the registry "
              "and continue to connect, otherwise this is your final chance to abort.")
        print("\n".join(textwrap.wrap(p1, width=60)))
        print(p2)
        print("\n".join(textwrap.wrap(p3, width=60)))
        print("")
        while True:
            r = input("Continue? y/n: ").lower()
            if r.startswith("n"):
                return "", None
            if r.startswith("y"):
                break

    os.makedirs(os.path.dirname(os.path.abspath(ca_file)), exist_ok=True)
    with open(ca_file, mode="wb") as f:
        f.write(cert_data)
    return ca_file, _client_context(ca_file)


def _client_context(ca_file):
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# ------------------------------------------------------------------------------------ framing

class TooLong:
    """An input line longer than ``read_limit``: its size and its last bytes (for the uid)."""

    __slots__ = ("size", "tail")

    def __init__(self, size, tail):
        self.size = size
        self.tail = tail

    _uid = re.compile(rb'"uid"\s*:\s*"((?:[^"\\]|\\.)*)"')
    _requester = re.compile(rb'"requester"\s*:\s*"((?:[^"\\]|\\.)*)"')

    def field(self, name):
        """The last ``"name": "value"`` string found in the kept tail, or None."""
        found = (self._uid if name == "uid" else self._requester).findall(self.tail)
        if not found:
            return None
        try:
            return loads(b'"' + found[-1] + b'"')
        except ValueError:
            return None


class Lines:
    """Split a byte stream into lines (LF, a CR before it is left to the JSON parser).

    Unlike :class:`netmgr.protocol.LineReader`, a line longer than ``limit`` does not stop the
    stream: its bytes are discarded as they arrive, the lines around it are kept, and a
    :class:`TooLong` marker takes its place so the reader can fail the request it belonged to.
    """

    __slots__ = ("limit", "_parts", "_size", "_skipping", "_tail")

    def __init__(self, limit=None):
        self.limit = limit if limit else float("inf")
        self._parts = []
        self._size = 0
        self._skipping = False
        self._tail = b""

    def feed(self, data):
        out = []
        start = 0
        find = data.find
        if self._skipping:
            end = find(b"\n")
            if end < 0:
                self._size += len(data)
                self._tail = (self._tail + data[-TAIL_SIZE:])[-TAIL_SIZE:]
                return out
            self._size += end
            self._tail = (self._tail + data[max(0, end - TAIL_SIZE):end])[-TAIL_SIZE:]
            out.append(TooLong(self._size, self._tail))
            self._skipping, self._size, self._tail = False, 0, b""
            start = end + 1
        limit = self.limit
        while True:
            end = find(b"\n", start)
            if end < 0:
                break
            if self._parts:
                self._parts.append(data[start:end])
                line = b"".join(self._parts)
                self._parts.clear()
                self._size = 0
            else:
                line = data[start:end] if start or end != len(data) - 1 else data[:-1]
            if len(line) > limit:
                out.append(TooLong(len(line), line[-TAIL_SIZE:]))
            elif line and line != b"\r":
                out.append(line)
            start = end + 1
        if start < len(data):
            rest = data[start:] if start else data
            self._size += len(rest)
            if self._size > limit:
                self._parts.append(rest)
                self._tail = b"".join(self._parts)[-TAIL_SIZE:]
                self._parts.clear()
                self._skipping = True
            else:
                self._parts.append(rest)
        return out

    def close(self):
        """At EOF: the trailing partial line (1.0 delivers it), or None."""
        if self._skipping or not self._parts:
            return None
        line = b"".join(self._parts)
        self._parts.clear()
        return line if line.strip() else None


# ------------------------------------------------------------------------------------ transports

class PlainTransport:
    """A blocking TCP socket: ``recv`` in one thread while others ``sendall``."""

    tls = False

    def __init__(self, sock):
        self.sock = sock
        self.fd = sock.fileno()
        self._poll = select.poll()
        self._poll.register(self.fd, _POLLIN)
        # One reader at a time (the caller holds the reading role): a reused buffer avoids
        # allocating (and, in a thread's malloc arena, mapping) RECV_SIZE bytes per read.
        self._buf = bytearray(RECV_SIZE)
        self._view = memoryview(self._buf)
        self._recv_into = sock.recv_into
        self._rcvtimeo = None

    def recv(self, timeout=None):
        """Bytes, ``b''`` at EOF, or None when ``timeout`` (seconds) passed without data."""
        if timeout is not None:
            if not self._poll.poll(max(0, int(timeout * 1000 + 0.999))):
                return None
        n = self._recv_into(self._buf)
        return self._view[:n].tobytes() if n else b""

    def recv_by(self, timeout):
        """:meth:`recv` for the reader waiting for a reply: a blocking read bounded by the
        socket's receive timeout (``SO_RCVTIMEO``), which is reset only when `timeout` asks
        for an earlier wake-up or is much longer: one system call per read, not two."""
        if timeout is None:
            if self._rcvtimeo is not None:
                self._set_rcvtimeo(None)
        elif (self._rcvtimeo is None or timeout < self._rcvtimeo - 0.002
              or timeout > 2 * self._rcvtimeo + 1):
            self._set_rcvtimeo(timeout)
        try:
            n = self._recv_into(self._buf)
        except BlockingIOError:
            return None  # the receive timeout passed
        return self._view[:n].tobytes() if n else b""

    def _set_rcvtimeo(self, timeout):
        if timeout is None:
            sec = usec = 0
        else:
            timeout = max(timeout, 0.001)
            sec = int(timeout)
            usec = int((timeout - sec) * 1e6)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", sec, usec))
        self._rcvtimeo = timeout

    def readable_now(self):
        return bool(self._poll.poll(0))

    def sendall(self, data):
        self.sock.sendall(data)

    def shutdown(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self):
        self.shutdown()
        try:
            self.sock.close()
        except OSError:
            pass


class TLSTransport(PlainTransport):
    """A non-blocking TLS socket; each SSL call is made under a lock never held while waiting."""

    tls = True

    def __init__(self, sock):
        super().__init__(sock)
        sock.setblocking(False)
        self._ssl_lock = threading.Lock()

    def recv(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._ssl_lock:
                try:
                    n = self.sock.recv_into(self._buf)
                    return self._view[:n].tobytes() if n else b""
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    pass
                except ssl.SSLZeroReturnError:
                    return b""
            if deadline is None:
                self._poll.poll()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._poll.poll(int(remaining * 1000 + 0.999)):
                    return None

    def recv_by(self, timeout):
        return self.recv(timeout)

    def readable_now(self):
        with self._ssl_lock:
            if self.sock.pending():
                return True
        return bool(self._poll.poll(0))

    def sendall(self, data):
        view = memoryview(data)
        waiter = None
        while view:
            with self._ssl_lock:
                try:
                    n = self.sock.send(view)
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    n = 0
            if n:
                view = view[n:]
                continue
            if waiter is None:
                waiter = select.poll()
                waiter.register(self.fd, _POLLOUT)
            waiter.poll(50)

    def close(self):
        self.shutdown()
        with self._ssl_lock:
            try:
                self.sock.close()
            except OSError:
                pass


# ------------------------------------------------------------------------------------ connect

class Credentials:
    """What the handshake may be asked for; prompted once, then remembered for reconnects."""

    def __init__(self, username=None, password=None, password_manager=None):
        self.username = username
        self.password = password
        self.password_manager = password_manager


def open_connection(host, port, *, timeout=10, disable_tls=False, cert_file=None,
                    assert_hostname=True, auto_save=False):
    """Connect (and do the TLS handshake) with 1.0's error texts; returns a transport.

    Raises ``ConnectionRefusedError('SSL certificate required')`` when the user refuses a
    certificate at the trust-on-first-use prompt.
    """
    fmt = {"host": host, "port": port, "timeout": timeout, "cert_file": cert_file}
    context = None
    if not disable_tls:
        try:
            cert_file, context = get_ssl_context(cert_file=cert_file, host=host, port=port,
                                                  auto_save=auto_save, timeout=timeout)
        except OSError as error:
            e = str(error)
            if "WRONG_VERSION_NUMBER" in e or "UNKNOWN_PROTOCOL" in e or "record layer failure" in e:
                e += "\nTry setting disable_tls=True"
            elif host in localhost_aliases():
                e += "\nMake sure a Manager is running on this computer"
            else:
                e += f"\nCannot connect to {host}:{port} to get the certificate"
            raise ConnectionError(e) from None
        if context is None:
            raise ConnectionRefusedError("SSL certificate required")
        context.check_hostname = bool(assert_hostname)
        fmt["cert_file"] = cert_file
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.timeout:
        raise TimeoutError(f"Cannot connect to {host}:{port} within {timeout} seconds") from None
    except OSError as error:
        msg = str(error)
        if isinstance(error, (ConnectionRefusedError, socket.gaierror)) or error.errno in (
                errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
            msg += f"\nCannot connect to {host}:{port}"
        raise ConnectionError(msg) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if context is None:
        sock.settimeout(None)
        return PlainTransport(sock)
    try:
        tls = context.wrap_socket(sock, server_hostname=host)
    except socket.timeout:
        sock.close()
        raise TimeoutError(f"Cannot connect to {host}:{port} within {timeout} seconds") from None
    except OSError as error:
        sock.close()
        msg = str(error)
        if "mismatch" in msg or "doesn't match" in msg:
            msg += (f"\nTo disable hostname checking set assert_hostname=False\nMake sure you "
                    f"trust the connection to {host}:{port} if you decide to do this.")
        elif "CERTIFICATE_VERIFY_FAILED" in msg:
            msg += (f"\nPerhaps the Network Manager is using a new certificate.\nIf you trust "
                    f"the connection to {host}:{port}, you can delete the certificate at\n  "
                    f"{fmt['cert_file']}\nand then re-connect to create a new trusted "
                    f"certificate.")
        elif "WRONG_VERSION_NUMBER" in msg or "UNKNOWN_PROTOCOL" in msg:
            msg += "\nTry setting disable_tls=True"
        raise ConnectionError(msg) from None
    return TLSTransport(tls)


def handshake(transport, lines, identity, credentials, host, port, timeout, disable_tls):
    """Answer the Manager's username/password/identity requests (it speaks first).

    ``lines`` is the connection's :class:`Lines`; complete lines that arrive after the identity
    request are returned for the caller to handle. Returns ``(local_port, leftover_lines)``.
    An error from the Manager raises ``ValueError(message)`` (1.0).
    """
    pending = []
    deadline = None if timeout is None else time.monotonic() + timeout
    first = True
    while True:
        while not pending:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            data = transport.recv(remaining)
            if data is None:
                if first:
                    msg = (f"The connection to {host}:{port} was not established after "
                           f"{timeout} second(s)")
                    if disable_tls:
                        msg += ("\nYou have TLS disabled. Perhaps the Manager is using TLS "
                                "for the connection.")
                    raise ConnectionError(msg)
                raise ConnectionError(f"Manager[{host}:{port}] did not finish the handshake "
                                      f"within {timeout} second(s)")
            if not data:
                raise ConnectionAbortedError(f"Manager[{host}:{port}] closed the connection "
                                             f"during the handshake")
            pending.extend(x for x in lines.feed(data) if not isinstance(x, TooLong))
        first = False
        line = pending.pop(0)
        try:
            request = loads(line)
        except ValueError:
            raise ConnectionError(f"Manager[{host}:{port}] sent an invalid handshake line: "
                                  f"{line[:200]!r}") from None
        if not isinstance(request, dict):
            raise ConnectionError(f"Manager[{host}:{port}] sent an invalid handshake line: "
                                  f"{line[:200]!r}")
        if request.get("error"):
            raise ValueError(request.get("message"))
        attribute = request.get("attribute")
        if attribute == "identity":
            transport.sendall(dumps({"error": False, "requester": None, "result": identity,
                                     "uid": ""}))
            local_port = int(transport.sock.getsockname()[1])
            return local_port, pending
        if attribute in ("username", "password"):
            value = answer_credential(request, credentials)
            transport.sendall(dumps({"error": False, "requester": request.get("requester"),
                                     "result": value, "uid": request.get("uid", "")}))
            continue
        raise ConnectionError(f"Manager[{host}:{port}] sent an unexpected request "
                              f"{attribute!r} during the handshake")


def answer_credential(request, credentials):
    """The username or password the Manager asked for (prompting once if unknown)."""
    args = request.get("args") or [""]
    name = args[0] if args else ""
    if request.get("attribute") == "username":
        if credentials.username is None:
            credentials.username = input(f"Enter a username for {name} > ")
        return credentials.username
    if _is_manager_regex.search(str(name)) is not None:
        if credentials.password_manager is None:
            credentials.password_manager = getpass.getpass(f"Enter the password for {name} > ")
        return credentials.password_manager
    if credentials.password is None:
        credentials.password = getpass.getpass(f"Enter the password for {name} > ")
    return credentials.password


def error_text(address, reply):
    """1.0's RuntimeError text for an error reply."""
    message = reply.get("message")
    if not isinstance(message, str):
        message = "UnknownError: No error message has been provided"
    tb = reply.get("traceback") or []
    lines = [f"Manager[{address}] returned the following exception:\n"]
    if tb and isinstance(tb, list):
        lines.extend(str(x) for x in tb)
        if message != tb[-1]:
            lines.append(message)
    else:
        lines.append(message)
    return "\n".join(lines)


def set_logging_level(level):
    """Set the level of the ``netmgr`` library loggers; True on success (1.0's semantics)."""
    if isinstance(level, str):
        try:
            level = int(level)
        except ValueError:
            level = level.upper()
    try:
        logging.getLogger("netmgr").setLevel(level)
    except (ValueError, TypeError):
        logging.getLogger("netmgr").error("invalid logging level %r", level)
        return False
    return True


def run_tasks_in_thread(name, tasks):
    """1.0's ``add_tasks``: run coroutines in a private asyncio loop on a daemon thread."""
    if not tasks:
        return None

    def run():
        import asyncio

        async def gather():
            await asyncio.gather(*tasks)

        try:
            asyncio.run(gather())
        except Exception:  # noqa: BLE001 -- a user task failing must not kill the connection
            logger.exception("a task added with add_tasks() failed")

    thread = threading.Thread(target=run, name=f"{name}-tasks", daemon=True)
    thread.start()
    return thread


__all__ = ["CRLF", "HOSTNAME", "LANGUAGE", "OS_NAME", "Backoff", "Credentials", "Lines",
           "PlainTransport", "TLSTransport", "TooLong", "answer_credential", "error_text",
           "get_ssl_context", "handshake", "localhost_aliases", "open_connection",
           "parse_managers", "reconnect_attempts", "set_logging_level"]
