"""The Manager's admission and memory limits: who may connect, and who is dropped to stay bounded.

* **Admission** (:meth:`Limits.admit`), before a session starts: connections per address
  (``max_connections_per_address``), and connections still in their handshake, in total with
  random early refusal as OpenSSH's ``MaxStartups START:RATE:FULL`` and per address
  (``max_startups_per_address``, OpenSSH's ``PerSourceMaxStartups``). A refused peer gets one
  error line and is closed; refusals are logged once per address per :data:`LOG_EVERY` seconds.
* **The global output budget** (:meth:`Limits.over_budget`): when all peers' queued bytes exceed
  ``max_queue_total``, the peer with the largest queue is dropped (Redis's ``maxmemory`` for
  client buffers).
* **The sweep** (:meth:`Limits.sweep_once`, about once a second): a peer whose writer made no
  progress for ``write_timeout`` seconds is a slow consumer (NATS's ``write_deadline``); an
  identified peer whose unfinished line got no new byte for ``partial_line_timeout`` seconds is
  dropped. Only the sessions in those two states are visited, never all of them.
"""
import random
import time

from netmgr.daemon import log
from netmgr.errors import error_text

logger = log.get_logger("netmgr.daemon.limits")

#: seconds between two log lines about refusals of one address
LOG_EVERY = 10.0


def normal_ip(ip):
    return ip[7:] if ip.startswith("::ffff:") else ip


class Limits:
    def __init__(self, manager, rng=random.random):
        self.manager = manager
        self.per_address = {}  # ip -> connections
        self.startups = {}  # ip -> connections before identity
        self.startups_total = 0
        self._rng = rng
        self._refused = {}  # ip -> (count since the last log line, time of that line)

    # ------------------------------------------------------------------ admission
    def admit(self, ip):
        """None when a connection from ``ip`` may start (it is then counted), else why not."""
        cfg = self.manager.cfg
        connections = self.per_address.get(ip, 0)
        if connections >= cfg.max_connections_per_address:
            return self._refuse(ip, f"too many connections from {ip} (the limit is "
                                    f"{cfg.max_connections_per_address} per address)")
        start, rate, full = cfg.max_startups
        total = self.startups_total
        if self.startups.get(ip, 0) >= cfg.max_startups_per_address or total >= full or (
                total >= start and self._rng() * 100 < rate + (100 - rate) * (total - start) / max(1, full - start)):
            return self._refuse(ip, "too many connections in progress, try again later")
        self.per_address[ip] = connections + 1
        self.startups[ip] = self.startups.get(ip, 0) + 1
        self.startups_total += 1
        return None

    def identified(self, ip):
        """The connection from ``ip`` finished its handshake (or failed it)."""
        count = self.startups.get(ip, 0)
        if count <= 0:
            return
        self.startups_total -= 1
        if count == 1:
            del self.startups[ip]
        else:
            self.startups[ip] = count - 1

    def closed(self, ip, identified):
        if not identified:
            self.identified(ip)
        count = self.per_address.get(ip, 0)
        if count <= 1:
            self.per_address.pop(ip, None)
        else:
            self.per_address[ip] = count - 1

    def _refuse(self, ip, text):
        now = time.monotonic()
        count, last = self._refused.get(ip, (0, 0.0))
        count += 1
        if now - last >= LOG_EVERY:
            logger.warning("connections_refused", ip=ip, count=count, reason=text)
            count, last = 0, now
        self._refused[ip] = (count, last)
        if len(self._refused) > 10_000:  # bounded under a spray of addresses
            self._refused.clear()
        return error_text("ConnectionRefusedError", text)

    # ------------------------------------------------------------------ output budget
    def over_budget(self):
        """All queued bytes exceed ``max_queue_total``: drop the peer with the largest queue."""
        manager = self.manager
        while manager.queued_total > manager.cfg.max_queue_total:
            live = [s for s in manager.sessions if not s.closed and s.queued]
            if not live:
                return
            largest = max(live, key=lambda s: s.queued)
            largest.abort(f"the Manager's output budget is exhausted ({manager.cfg.max_queue_total} "
                          f"bytes); this peer had the largest queue ({largest.queued} bytes)")
            largest.drop_queue()

    # ------------------------------------------------------------------ the sweep
    def interval(self):
        cfg = self.manager.cfg
        return max(0.05, min(1.0, cfg.write_timeout / 4, cfg.partial_line_timeout / 4))

    def sweep_once(self, now=None):
        manager, cfg = self.manager, self.manager.cfg
        now = time.monotonic() if now is None else now
        for session in list(manager.writing):
            if now - session.write_progress > cfg.write_timeout:
                session.abort(f"slow consumer: it accepted no bytes for {cfg.write_timeout} s "
                              f"({session.queued} bytes queued)")
        for session in list(manager.partial):
            if session.record is not None and now - session.input_progress > cfg.partial_line_timeout:
                session.abort(f"an unfinished line got no new bytes for {cfg.partial_line_timeout} s")
