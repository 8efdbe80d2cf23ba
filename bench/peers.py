"""Raw MSL-Network 1.0 protocol peers used as load: no msl-network (or netmgr) code here.

Run as ``python -m bench.peers ROLE [options]``; every role talks to 127.0.0.1 only, over plain TCP,
or over TLS with ``--tls-cert CERT`` (the Manager's certificate, trusted as ``cafile`` and checked for
the name ``localhost``, as a 1.0 Client trusts the certificate it saved). The protocol itself (framing,
TLS reads, the blocking handshake) is :mod:`bench.wire`.

* ``service``: the Echo Service. Blocking socket; all the replies produced by one ``recv`` go out in
  one ``sendall``. Prints ``READY`` once its identity has been sent. ``--recv-size`` (default
  RECV_SIZE, 256 KiB) is the size asked of each ``recv``: above glibc's mmap threshold (128 KiB)
  every ``recv`` maps and unmaps its buffer (~14 us here), so the floor of ``lib_seq`` uses 64 KiB.
* ``load``: N raw Clients in one process, each keeping W requests in flight (:mod:`bench.loadgen`).
* ``idle``: opens ``--count`` connections that each complete the identity handshake as a client and
  stay open; measures the Manager's handshakes/s, CPU time and RSS growth (``--mgr-pid``).
* ``open``: one of the opener processes of ``idle20000`` (``bench.scale`` measures the Manager).
"""
import argparse
import errno
import os
import selectors
import signal
import select
import socket
import ssl
import sys
import time

import orjson

from bench.loadgen import run_load
from bench.procs import cpu_ticks, machine_busy_ticks, rss_kib
from bench.wire import (CLIENT_IDENTITY, CRLF, RECV_SIZE, SERVICE_IDENTITY, TLS_SERVER_NAME,
                        TLS_WOULD_BLOCK, BlockingPeer, LineFramer, ProtocolFailure,
                        check_identity_request, client_tls_context, drain_tls, drain_tls_blocking,
                        identity_reply, read_go, write_result)


# ---------------------------------------------------------------------------------------------
# Echo Service

def run_service(port, name, tls=None, recv_size=RECV_SIZE):
    """Serve until EOF or SIGTERM, then print ``SERVED <requests> <recv batches>``."""
    identity = dict(SERVICE_IDENTITY, name=name)
    peer = BlockingPeer(port, identity, tls=tls)
    peer.sock.settimeout(None)
    stats = [0, 0]
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    print("READY", flush=True)
    try:
        serve(peer.sock, peer.framer, peer.lines, stats, recv_size)
    except SystemExit:
        pass
    finally:
        peer.close()
        print(f"SERVED {stats[0]} {stats[1]}", flush=True)
    return 0


def _exit_on_sigterm(signum, frame):
    raise SystemExit(0)


def serve(sock, framer, pending, stats, recv_size=RECV_SIZE):
    """Answer echo requests; ``stats`` = [requests served, batches], updated after each sendall."""
    poller = None
    if isinstance(sock, ssl.SSLSocket):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
    while True:
        if pending:
            lines, pending = pending, None
        else:
            try:
                data = sock.recv(recv_size)
                if data and poller is not None:
                    data = drain_tls_blocking(sock, data, poller)
            except OSError:
                return
            if not data:
                return
            lines = framer.feed(data)
        out = echo_replies(lines)
        if out:
            try:
                sock.sendall(b"".join(out))
            except OSError:
                return
            stats[0] += len(out) // 2
            stats[1] += 1


def echo_replies(lines, loads=orjson.loads, dumps=orjson.dumps):
    """The replies to the requests among ``lines``: each reply, then CRLF."""
    out = []
    for line in lines:
        msg = loads(line)
        if not isinstance(msg, dict) or "result" in msg:
            continue  # replies/notifications are not for us
        if msg.get("attribute") == "echo":
            reply = {"error": False, "requester": msg.get("requester"),
                     "result": [msg.get("args", []), msg.get("kwargs", {})], "uid": msg.get("uid", "")}
        else:
            reply = {"error": True, "message": f"AttributeError: no attribute {msg.get('attribute')!r}",
                     "requester": msg.get("requester"), "result": None, "traceback": [],
                     "uid": msg.get("uid", "")}
        out.append(dumps(reply))
        out.append(CRLF)
    return out


# ---------------------------------------------------------------------------------------------
# Idle connections

class IdleConn:
    """One idle connection: plain ``stage`` is "line" from the start; TLS goes "connect" -> "tls" -> "line"."""

    __slots__ = ("sock", "framer", "t_conn", "stage")

    def __init__(self, sock, stage):
        self.sock = sock
        self.framer = LineFramer()
        self.t_conn = time.monotonic_ns()
        self.stage = stage


class IdleOpener:
    """Opens client connections that each complete the identity handshake, and keeps them open.

    With TLS, each connection is connected, then does the TLS handshake (non-blocking), then reads
    the identity request; ``first_line_ns`` is from connect to that request, TLS included.
    """

    def __init__(self, port, tls):
        self.port = port
        self.tls = tls
        self.reply = identity_reply(CLIENT_IDENTITY)
        self.sel = selectors.DefaultSelector()
        self.open_conns = []
        self.first_line_ns = []
        self.done = 0

    def open_all(self, count, parallel, deadline, timeout, stall=None):
        """Complete ``count`` handshakes, ``parallel`` at a time; None, or why it stopped early
        (also when no handshake completed for ``stall`` s)."""
        started, last, progress = 0, 0, time.monotonic_ns()
        try:
            while self.done < count:
                while started < count and started - self.done < parallel:
                    self._start_one()
                    started += 1
                now = time.monotonic_ns()
                if now > deadline:
                    return f"only {self.done}/{count} handshakes after {timeout} s"
                if self.done > last:
                    last, progress = self.done, now
                elif stall and now - progress > stall * 1e9:
                    return f"stalled at {self.done}/{count} handshakes (none for {stall:g} s)"
                for key, _ in self.sel.select(0.5):
                    self._step(key)
        except (OSError, ProtocolFailure) as exc:
            return f"after {self.done} handshakes: {exc!r}"
        return None

    def _start_one(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        conn = IdleConn(s, "connect" if self.tls else "line")
        err = s.connect_ex(("127.0.0.1", self.port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            raise OSError(err, os.strerror(err))
        self.open_conns.append(conn)
        self.sel.register(s, selectors.EVENT_WRITE if self.tls else selectors.EVENT_READ, conn)

    def _step(self, key):
        """Advance the connection that is ready: connect -> TLS handshake -> identity request."""
        conn = key.data
        if conn.stage == "line":
            self._read_identity_request(conn)
            return
        self.sel.unregister(key.fileobj)
        if conn.stage == "connect":
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
            conn.sock = self.tls.wrap_socket(conn.sock, server_hostname=TLS_SERVER_NAME,
                                             do_handshake_on_connect=False)
            conn.stage = "tls"
        self._tls_step(conn)

    def _tls_step(self, conn):
        """Advance the TLS handshake; (re)register for what it waits for."""
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.sel.register(conn.sock, selectors.EVENT_READ, conn)
            return
        except ssl.SSLWantWriteError:
            self.sel.register(conn.sock, selectors.EVENT_WRITE, conn)
            return
        conn.stage = "line"
        self.sel.register(conn.sock, selectors.EVENT_READ, conn)

    def _read_identity_request(self, conn):
        try:
            data = conn.sock.recv(65536)
            if data and self.tls:
                data = drain_tls(conn.sock, data)
        except TLS_WOULD_BLOCK:
            return
        if not data:
            raise ProtocolFailure("the Manager closed a connection during the handshake")
        lines = conn.framer.feed(data)
        if lines:
            self.first_line_ns.append(time.monotonic_ns() - conn.t_conn)
            check_identity_request(lines[0])
            self.sel.unregister(conn.sock)
            conn.sock.sendall(self.reply)  # tiny: fits in the empty send buffer
            self.done += 1

    def close(self):
        for conn in self.open_conns:
            conn.sock.close()


def await_clients(probe, base_clients, count, deadline, timeout):
    """(registered, failure): poll the Manager's identity until it lists ``count`` more clients.

    The Manager never acknowledges an identity (1.3), so this is how the handshakes are known done.
    """
    n = 0
    while True:
        n += 1
        registered = len(probe.call_manager("identity", [], f"probe-{n}")["clients"]) - base_clients
        if registered >= count:
            return registered, None
        if time.monotonic_ns() > deadline:
            return registered, f"only {registered}/{count} clients registered after {timeout} s"
        time.sleep(0.005)


def idle_snapshot(mgr):
    """(Manager RSS KiB, Manager CPU ticks, own CPU ticks, machine busy ticks), read in that order."""
    return rss_kib(mgr), cpu_ticks(mgr), cpu_ticks(os.getpid()), machine_busy_ticks()


def run_idle(args):
    """Open ``count`` client connections, ``parallel`` handshakes at a time, and keep them open."""
    tls = client_tls_context(args.tls_cert)
    probe = BlockingPeer(args.port, CLIENT_IDENTITY, tls=tls)
    base_clients = len(probe.call_manager("identity", [], "probe-0")["clients"])
    before = idle_snapshot(args.mgr_pid)
    opener = IdleOpener(args.port, tls)
    t0 = time.monotonic_ns()
    deadline = t0 + int(args.timeout * 1e9)
    failure = opener.open_all(args.count, args.parallel, deadline, args.timeout)
    registered = 0
    if failure is None:
        registered, failure = await_clients(probe, base_clients, args.count, deadline, args.timeout)
    t1 = time.monotonic_ns()
    after = idle_snapshot(args.mgr_pid)
    probe.close()
    write_result(args.out, idle_result(args, opener, registered, failure, t1 - t0, before, after))
    sys.stdin.readline()  # keep the connections open until told (or until stdin closes)
    opener.close()
    return 0


def run_open(args):
    """An opener of ``idle20000``: ``READY``, wait for ``GO``, open ``--count`` connections, write the
    result and ``DONE``, keep them open until stdin closes."""
    opener = IdleOpener(args.port, None)
    print("READY", flush=True)
    times = read_go()
    if times is None:
        return 2
    delay = (times[0] - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)
    t0, c0 = time.monotonic_ns(), cpu_ticks(os.getpid())
    failure = opener.open_all(args.count, args.parallel, t0 + int(args.timeout * 1e9), args.timeout, args.stall)
    write_result(args.out, {"count": args.count, "handshakes": opener.done, "failure": failure,
                            "elapsed_s": (time.monotonic_ns() - t0) / 1e9,
                            "own_cpu_ticks": cpu_ticks(os.getpid()) - c0, "first_line_ns": opener.first_line_ns})
    sys.stdin.readline()
    opener.close()
    return 0


def idle_result(args, opener, registered, failure, elapsed_ns, before, after):
    (rss0, cpu0, me0, busy0), (rss1, cpu1, me1, busy1) = before, after
    return {
        "count": args.count,
        "handshakes": opener.done,
        "registered": registered,
        "elapsed_s": elapsed_ns / 1e9,
        "cpu_ticks": cpu1 - cpu0,
        "own_cpu_ticks": me1 - me0,
        "other_cpu_ticks": max(0, (busy1 - busy0) - (cpu1 - cpu0) - (me1 - me0)),
        "rss_kib_before": rss0,
        "rss_kib_after": rss1,
        "first_line_ns": opener.first_line_ns,
        "failure": failure,
    }


# ---------------------------------------------------------------------------------------------
# Command line

def _role(sub, name, *, tls=True, out=True):
    """A role's parser with the options every role has: --port, and --tls-cert and --out if asked."""
    p = sub.add_parser(name)
    p.add_argument("--port", type=int, required=True)
    if tls:
        p.add_argument("--tls-cert", help="connect over TLS, trusting this certificate")
    if out:
        p.add_argument("--out", required=True)
    return p


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.peers")
    sub = p.add_subparsers(dest="role", required=True)
    s = _role(sub, "service", out=False)
    s.add_argument("--name", default="Echo")
    s.add_argument("--recv-size", type=int, default=RECV_SIZE, help="bytes asked of each recv")
    lo = _role(sub, "load")
    lo.add_argument("--clients", type=int, required=True)
    lo.add_argument("--first-client", type=int, default=0)
    lo.add_argument("--window", type=int, required=True)
    lo.add_argument("--payload", type=int, required=True)
    lo.add_argument("--drain-timeout", type=float, default=10.0)
    lo.add_argument("--stall-timeout", type=float, default=10.0)
    i = _role(sub, "idle")
    i.add_argument("--count", type=int, required=True)
    i.add_argument("--parallel", type=int, default=64)
    i.add_argument("--mgr-pid", type=int, required=True)
    i.add_argument("--timeout", type=float, default=60.0)
    o = _role(sub, "open", tls=False)
    o.add_argument("--count", type=int, required=True)
    o.add_argument("--parallel", type=int, default=32)
    o.add_argument("--timeout", type=float, default=60.0)
    o.add_argument("--stall", type=float, default=10.0, help="fail when no handshake completes for this long")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.role == "service":
        return run_service(args.port, args.name, client_tls_context(args.tls_cert), args.recv_size)
    if args.role == "load":
        return run_load(args)
    if args.role == "open":
        return run_open(args)
    return run_idle(args)


if __name__ == "__main__":
    sys.exit(main())
