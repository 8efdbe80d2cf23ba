"""The ``load`` role of ``python -m bench.peers``: N raw Clients in one process (``selectors``).

Each Client links with the Echo Service and keeps W requests in flight, each with a unique uid.
The process prints ``READY`` once every Client is linked, then waits for ``GO <t_start> <t_ms> <t_me>``
on stdin (absolute ``time.monotonic()`` values, so several load processes share one window). Replies
that arrive inside [t_ms, t_me] are counted and their round trip recorded; sending stops at t_me and
the requests still in flight are drained. Results go to ``--out`` as JSON, then ``DONE`` is printed.
"""
import selectors
import time

import orjson

from bench.wire import (CLIENT_IDENTITY, RECV_SIZE, TLS_WOULD_BLOCK, BlockingPeer, client_tls_context,
                        drain_tls, read_go, write_result)

MAX_ERROR_SAMPLES = 5


class LoadClient:
    __slots__ = ("idx", "sock", "framer", "pending", "fresh", "out", "seq", "prefix", "writing")

    def __init__(self, idx, sock, framer, prefix):
        self.idx = idx
        self.sock = sock
        self.framer = framer
        self.pending = {}  # uid (str) -> send time (ns)
        self.fresh = []  # uids queued in out, stamped when flushed
        self.out = []
        self.seq = 0
        self.prefix = prefix  # request bytes up to the uid value
        self.writing = False

    def enqueue(self):
        """Queue one more request; its round trip starts when it is flushed."""
        self.seq += 1
        uid = f"{self.idx}-{self.seq}"
        self.fresh.append(uid)
        self.out.append(self.prefix + uid.encode() + b'"}\r\n')


def connect_load_client(port, idx, prefix, tls=None):
    peer = BlockingPeer(port, CLIENT_IDENTITY, tls=tls)
    peer.link_echo()
    peer.sock.setblocking(False)
    return LoadClient(idx, peer.sock, peer.framer, prefix)


def request_prefix(payload_size):
    # Equivalent to orjson.dumps of {"args":[payload],"attribute":"echo","error":false,"kwargs":{},
    # "service":"Echo","uid":UID}; built once so the generator does not pay a dumps per request.
    payload = b"x" * payload_size
    return b'{"args":["' + payload + b'"],"attribute":"echo","error":false,"kwargs":{},"service":"Echo","uid":"'


def run_load(args):
    prefix = request_prefix(args.payload)
    assert orjson.loads(prefix + b'u"}')["args"][0] == "x" * args.payload
    tls = client_tls_context(args.tls_cert)
    clients = [connect_load_client(args.port, args.first_client + i, prefix, tls) for i in range(args.clients)]
    print("READY", flush=True)
    times = read_go()
    if times is None:
        return 2
    result = drive(clients, args, *times)
    for c in clients:
        try:
            c.sock.close()
        except OSError:
            pass
    write_result(args.out, result)
    return 0


def drive(clients, args, t_start, t_ms, t_me):
    """Keep every Client's window full from ``t_start`` until ``t_me``, then drain; the result dict."""
    driver = LoadDriver(clients, args, t_ms, t_me)
    delay = (t_start - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)
    driver.start()
    return driver.run()


class LoadDriver:
    """The event loop of the load generator; ``failure`` is set to why it stopped early."""

    def __init__(self, clients, args, t_ms, t_me):
        self.clients = clients
        self.args = args
        self.tls = bool(args.tls_cert)
        self.t_ms, self.t_me = t_ms, t_me
        self.drain_ns = int(args.drain_timeout * 1e9)
        self.stall_ns = int(args.stall_timeout * 1e9)
        self.sel = selectors.DefaultSelector()
        for c in clients:
            self.sel.register(c.sock, selectors.EVENT_READ, c)
        self.lat = []  # round trips (ns) of replies received inside the window
        self.completed_total = 0
        self.batches = 0
        self.errors = 0
        self.error_samples = []
        self.failure = None
        self.stopping = False
        self.last_progress = 0

    def start(self):
        """Fill every Client's window and send it."""
        for c in self.clients:
            for _ in range(self.args.window):
                c.enqueue()
            self.flush(c)
        self.last_progress = time.monotonic_ns()

    def run(self):
        while not self._finished(time.monotonic_ns()):
            for key, mask in self.sel.select(0.25):
                c = key.data
                if mask & selectors.EVENT_READ and not self._read(c):
                    break
                if mask & selectors.EVENT_WRITE and c.out:
                    self.flush(c)
            if self.failure:
                break
        self.sel.close()
        return self.result()

    def _finished(self, now):
        """True once every request is answered after the window, or on a drain or stall timeout."""
        if not self.stopping and now >= self.t_me:
            self.stopping = True
        in_flight = sum(len(c.pending) for c in self.clients)
        if self.stopping and in_flight == 0:
            return True
        if self.stopping and now - self.t_me > self.drain_ns:
            self.failure = (self.failure or f"{in_flight} request(s) unanswered "
                            f"{self.args.drain_timeout} s after the window")
            return True
        if now - self.last_progress > self.stall_ns:
            self.failure = (f"stalled: no reply for {self.args.stall_timeout} s with {in_flight} "
                            f"request(s) in flight")
            return True
        return False

    def flush(self, c):
        if c.fresh:  # the round trip starts when the request is handed to the kernel
            t = time.monotonic_ns()
            pending = c.pending
            for uid in c.fresh:
                pending[uid] = t
            c.fresh.clear()
        data = b"".join(c.out) if len(c.out) != 1 else c.out[0]
        c.out.clear()
        try:
            n = c.sock.send(data)
        except TLS_WOULD_BLOCK:
            # TLS: nothing was accepted; OpenSSL wants the same bytes again (a longer buffer that
            # starts with them is allowed), which the next flush sends since data stays first in out
            n = 0
        if n < len(data):
            c.out.append(data[n:])
            if not c.writing:
                c.writing = True
                self.sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        elif c.writing:
            c.writing = False
            self.sel.modify(c.sock, selectors.EVENT_READ, c)

    def _read(self, c):
        """Take what ``c`` received and answer it; False when its connection is lost (see ``failure``)."""
        try:
            data = c.sock.recv(RECV_SIZE)
            if data and self.tls:
                data = drain_tls(c.sock, data)
        except TLS_WOULD_BLOCK:  # e.g. only part of a TLS record has arrived
            return True
        except OSError as exc:
            self.failure = f"client {c.idx}: {exc!r}"
            return False
        if not data:
            self.failure = f"client {c.idx}: the Manager closed the connection"
            return False
        t = time.monotonic_ns()
        lines = c.framer.feed(data)
        if lines:
            self._replies(c, lines, t)
            if c.out:
                self.flush(c)
        return True

    def _replies(self, c, lines, t):
        """Account for the replies of one read (received at ``t``) and queue as many new requests."""
        self.last_progress = t
        self.batches += 1
        in_window = self.t_ms <= t <= self.t_me
        loads, pending, lat, payload_size = orjson.loads, c.pending, self.lat, self.args.payload
        completed = 0
        for line in lines:
            msg = loads(line)
            sent = pending.pop(msg.get("uid"), None) if type(msg) is dict else None
            if sent is None:
                # e.g. an error with uid "": the request it belongs to is unknown
                self._error(line[:300].decode("utf-8", "replace"))
                self.failure = f"client {c.idx}: reply with unknown uid: {line[:200]!r}"
                continue
            completed += 1
            if msg.get("error"):
                self._error(str(msg.get("message"))[:300])
            elif len(msg.get("result")[0][0]) != payload_size:
                self.errors += 1
            if in_window:
                lat.append(t - sent)
            if not self.stopping:
                c.enqueue()
        self.completed_total += completed

    def _error(self, sample):
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(sample)

    def result(self):
        return {
            "completed_in_window": len(self.lat),
            "completed_total": self.completed_total,
            "recv_batches": self.batches,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "failure": self.failure,
            "window_s": (self.t_me - self.t_ms) / 1e9,
            "lat_ns": self.lat,
        }
