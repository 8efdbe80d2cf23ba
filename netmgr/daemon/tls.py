"""Server-side TLS over a gevent socket through memory BIOs, as asyncio does it.

gevent's ``SSLSocket`` lets OpenSSL read the socket itself: two ``read`` calls per record
(header, then body) and a greenlet hop per send. Feeding an ``ssl.SSLObject`` from one large
``recv`` and writing its output with one ``send`` costs one system call each way, like a plain
socket (bench ``seq_tls``: ~9 system calls per message before, 2 after).

:class:`TLSStream` offers the calls a session makes on a socket: ``recv``, a non-blocking
``send(data, 0, 0.0)``, ``sendall`` and ``close``. Encrypted bytes the kernel did not take
stay in ``backlog`` and always leave before later ones.
"""
import ssl

RECV_SIZE = 256 * 1024


class TLSStream:
    def __init__(self, sock, context):
        self.raw = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out, server_side=True)
        self.backlog = b""  # encrypted bytes not yet accepted by the kernel

    def do_handshake(self):
        """Complete the handshake (the caller bounds it with a deadline)."""
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._push(block=True)
                if not self._feed():
                    raise ConnectionResetError("the peer closed the connection during the TLS handshake")
        self._push(block=True)  # the end of the handshake, session tickets

    def _feed(self):
        data = self.raw.recv(RECV_SIZE)
        if not data:
            self._in.write_eof()
            return False
        self._in.write(data)
        return True

    def recv(self, _size=None):
        """All plaintext available now, or wait for more; b"" at EOF."""
        chunks = []
        while True:
            try:
                chunk = self._tls.read(RECV_SIZE)
            except ssl.SSLWantReadError:
                if self._out.pending:
                    self._push(block=True)  # e.g. a key update answer
                if chunks:
                    return b"".join(chunks)
                if not self._feed():
                    return b""
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b"".join(chunks)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def send(self, data, flags=0, timeout=0.0):
        """Encrypt all of ``data`` and send what the kernel takes now; the rest waits in
        ``backlog`` for :meth:`sendall`. Returns ``len(data)``: the plaintext is consumed."""
        self._tls.write(data)
        self._push(block=False)
        return len(data)

    def sendall(self, data=b""):
        if data:
            self._tls.write(data)
        self._push(block=True)

    def _push(self, block):
        out = self.backlog + self._out.read() if self.backlog else self._out.read()
        self.backlog = b""
        if not out:
            return
        if block:
            self.raw.sendall(out)
            return
        try:
            sent = self.raw.send(out, 0, 0.0)
        except BlockingIOError:
            sent = 0
        if sent < len(out):
            self.backlog = out[sent:]

    def close(self):
        self.raw.close()

    def setsockopt(self, *args):
        self.raw.setsockopt(*args)
