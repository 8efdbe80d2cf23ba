"""Sockets for the blocking library: connecting with 1.0's error texts, and two transports.

Plain blocking sockets and threads: no gevent and no asyncio, so the libraries can be imported
by any program (a Qt GUI, a Jupyter kernel, a LabVIEW-launched script) without changing how its
threads behave. A transport hides the socket kind behind one small interface (``recv``,
``recv_by``, ``readable_now``, ``sendall``, ``shutdown``, ``close``):

* plaintext: a blocking socket; one thread may block in ``recv`` while another ``sendall``\\ s;
* TLS: OpenSSL forbids concurrent ``SSL_read``/``SSL_write`` on one connection, so the socket is
  non-blocking and each SSL call is made under a lock that is never held while waiting.

Only one thread reads at a time (the caller holds the reading role), which lets a transport
reuse one receive buffer.
"""
import errno
import select
import socket
import ssl
import struct
import threading
import time

from netmgr.client.tofu import get_ssl_context
from netmgr.errors import CertificateRefused
from netmgr.hostinfo import localhost_aliases

RECV_SIZE = 1 << 18

_POLLIN = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP
_POLLOUT = select.POLLOUT | select.POLLERR | select.POLLHUP


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

def open_connection(host, port, *, timeout=10, disable_tls=False, cert_file=None,
                    assert_hostname=True, auto_save=False):
    """Connect (and do the TLS handshake) with 1.0's error texts; returns a transport.

    Raises :class:`CertificateRefused` (``ConnectionRefusedError('SSL certificate required')``)
    when the user refuses a certificate at the trust-on-first-use prompt.
    """
    if host.startswith("/"):  # a Manager's control socket: local, no TLS, no password
        return PlainTransport(_unix_connect(host, timeout))
    context = None
    if not disable_tls:
        cert_file, context = _tls_context(host, port, timeout, cert_file, auto_save)
        context.check_hostname = bool(assert_hostname)
    sock = _tcp_connect(host, port, timeout)
    if context is None:
        sock.settimeout(None)
        return PlainTransport(sock)
    return TLSTransport(_tls_handshake(context, sock, host, port, timeout, cert_file))


def _tls_context(host, port, timeout, cert_file, auto_save):
    """``(cert_file, context)`` of :func:`get_ssl_context`, its errors given 1.0's hints."""
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
        raise CertificateRefused("SSL certificate required")
    return cert_file, context


def _tcp_connect(host, port, timeout):
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
    return sock


def speaks_tls(host, port, timeout):
    """Whether the Manager at host:port completes a TLS handshake.

    A plaintext connection to a TLS Manager only waits: the Manager speaks first, after TLS. A
    second connection that offers TLS tells the two apart without touching the first (a
    plaintext Manager answers the ClientHello with its handshake line, which is not TLS).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a probe: nothing is sent over it
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with context.wrap_socket(sock, server_hostname=host):
                return True
    except (OSError, ValueError):
        return False


def _unix_connect(path, timeout):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except socket.timeout:
        sock.close()
        raise TimeoutError(f"Cannot connect to {path} within {timeout} seconds") from None
    except OSError as error:
        sock.close()
        if isinstance(error, PermissionError):
            raise PermissionError(error.errno, f"Cannot connect to {path}: permission denied "
                                               "(the control socket serves its owner and group)") from None
        raise ConnectionError(f"{error}\nCannot connect to {path}") from None
    sock.settimeout(None)
    return sock


def _tls_handshake(context, sock, host, port, timeout, cert_file):
    try:
        return context.wrap_socket(sock, server_hostname=host)
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
                    f"{cert_file}\nand then re-connect to create a new trusted "
                    f"certificate.")
        elif "WRONG_VERSION_NUMBER" in msg or "UNKNOWN_PROTOCOL" in msg:
            msg += "\nTry setting disable_tls=True"
        raise ConnectionError(msg) from None
