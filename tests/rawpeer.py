"""A raw TCP peer that speaks the JSON-lines protocol by hand, as a LabVIEW VI or a terminal would."""
import json
import socket
import time
import uuid


def wait_until(condition, timeout=10.0, what="condition", interval=0.02):
    """Poll ``condition`` until it is truthy (a readiness wait, bounded), and return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class RawPeer:
    def __init__(self, port, host="127.0.0.1", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self._buf = bytearray()

    # ------------------------------------------------------------------ bytes
    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def send_line(self, text, end="\r\n"):
        self.send(text + end)

    def send_json(self, obj, end="\r\n"):
        self.send(json.dumps(obj) + end)

    def read_raw_line(self):
        """The next line with its terminator; b'' at EOF. Linear in the line's size."""
        start = 0
        while True:
            index = self._buf.find(b"\n", start)
            if index >= 0:
                break
            start = len(self._buf)
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                rest = bytes(self._buf)
                self._buf.clear()
                return rest
            self._buf += chunk
        line = bytes(self._buf[:index + 1])
        del self._buf[:index + 1]
        return line

    def read(self):
        """The next message, decoded; raises EOFError when the Manager closed."""
        line = self.read_raw_line()
        if not line:
            raise EOFError("the Manager closed the connection")
        return json.loads(line)

    def closed_by_peer(self):
        """True when the Manager closed the connection (EOF or reset)."""
        try:
            return self.read_raw_line() == b""
        except ConnectionResetError:
            return True

    def wait_closed(self, seconds=10.0):
        """True when the Manager closes the connection within ``seconds`` (unread data is dropped)."""
        deadline = time.monotonic() + seconds
        old = self.sock.gettimeout()
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.sock.settimeout(remaining)
                if not self.sock.recv(1 << 20):
                    return True
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionError:
            return True
        finally:
            self.sock.settimeout(old)

    def close(self):
        self.sock.close()

    # ------------------------------------------------------------------ protocol
    def handshake_client(self, name="Raw"):
        first = self.read()
        assert first["attribute"] == "identity", first
        self.send_json({"error": False, "requester": None, "uid": "",
                        "result": {"type": "client", "name": name, "language": "raw", "os": "raw"}})
        return self

    def handshake_service(self, name, attributes=None, max_clients=-1):
        first = self.read()
        assert first["attribute"] == "identity", first
        self.send_json({"error": False, "requester": None, "uid": "",
                        "result": {"type": "service", "name": name, "max_clients": max_clients,
                                   "attributes": attributes or {"echo": "(*args, **kwargs)"}}})
        return self

    def request(self, service, attribute, *args, uid=None, **kwargs):
        uid = uuid.uuid4().hex if uid is None else uid
        self.send_json({"args": list(args), "attribute": attribute, "error": False,
                        "kwargs": kwargs, "service": service, "uid": uid})
        return uid

    def call(self, service, attribute, *args, **kwargs):
        """Send a request and return the next message (the reply, for a quiet connection)."""
        uid = self.request(service, attribute, *args, **kwargs)
        reply = self.read()
        assert reply.get("uid") == uid, reply
        return reply

    def serve_one(self, fn=lambda args, kwargs: [args, kwargs]):
        """As a Service: read one forwarded request and reply with ``fn(args, kwargs)``."""
        req = self.read()
        self.send_json({"error": False, "requester": req["requester"],
                        "result": fn(req["args"], req["kwargs"]), "uid": req["uid"]})
        return req

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
