"""The Manager's figures in the Prometheus text format, for ``/metrics`` (issue 13).

Nothing here runs on the hot path: the Manager bumps plain integers as it routes
(:mod:`netmgr.daemon.stats`, ``Manager.counts``), and :class:`ManagerCollector` reads them when
Prometheus scrapes. ``prometheus_client`` writes the exposition format; this module only says
what the figures are. Per-Service series are labelled ``service``; a Service that left keeps its
counters under its name (at most :class:`netmgr.daemon.stats.StatsTable` ``limit`` names).
"""
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from netmgr import __version__
from netmgr.daemon.registry import Client


class ManagerCollector:
    """A custom collector (prometheus_client's ``collect()`` protocol) over one Manager."""

    def __init__(self, manager):
        self.manager = manager

    def describe(self):
        return []  # no description up front: the collector is only read when scraped

    def collect(self):
        manager = self.manager
        registry = manager.registry
        counts = manager.counts

        info = GaugeMetricFamily("netmgr_info", "The Manager's name and netmgr's version",
                                 labels=["manager", "version"])
        info.add_metric([manager.name or "", __version__], 1)
        yield info
        yield GaugeMetricFamily("netmgr_start_time_seconds", "When the Manager started (Unix time)",
                                value=manager.started)

        kinds = {"client": 0, "service": 0, "unidentified": 0}
        for session in manager.sessions:
            kinds["unidentified" if session.record is None else
                  "client" if type(session.record) is Client else "service"] += 1
        connections = GaugeMetricFamily("netmgr_connections", "Connected peers by kind", labels=["kind"])
        for kind, n in kinds.items():
            connections.add_metric([kind], n)
        yield connections
        yield GaugeMetricFamily("netmgr_services", "Services connected", value=len(registry.services))
        yield CounterMetricFamily("netmgr_connections_accepted", "Connections accepted since the start",
                                  value=counts["connections"])
        handshakes = CounterMetricFamily("netmgr_handshakes", "Handshakes by result", labels=["result"])
        handshakes.add_metric(["ok"], counts["handshakes"])
        handshakes.add_metric(["failed"], counts["handshakes_failed"])
        yield handshakes
        yield CounterMetricFamily("netmgr_auth_failures", "Failed logins and wrong passwords",
                                  value=counts["auth_failures"])
        yield CounterMetricFamily("netmgr_auth_throttled", "Logins refused because the address is "
                                  "locked out", value=counts["auth_throttled"])
        drops = CounterMetricFamily("netmgr_peers_dropped", "Peers the Manager disconnected, by why",
                                    labels=["reason"])
        for reason, n in manager.drops.items():
            drops.add_metric([reason], n)
        yield drops
        yield GaugeMetricFamily("netmgr_queued_bytes", "Bytes queued for peers that have not read "
                                "them yet", value=manager.queued_total)
        yield GaugeMetricFamily("netmgr_event_loop_lag_seconds", "How late the last 0.25 s timer "
                                "fired", value=manager.loop_lag)
        yield CounterMetricFamily("netmgr_events_published", "Events published on the event stream",
                                  value=manager.events.seq)

        requests = CounterMetricFamily("netmgr_requests", "Requests forwarded to a Service",
                                       labels=["service"])
        errors = CounterMetricFamily("netmgr_request_errors", "Requests answered with an error by "
                                     "the Service, or failed because it left", labels=["service"])
        notifications = CounterMetricFamily("netmgr_notifications", "Notifications a Service emitted",
                                            labels=["service"])
        in_flight = GaugeMetricFamily("netmgr_requests_in_flight", "Requests forwarded and not yet "
                                      "answered", labels=["service"])
        latency = HistogramMetricFamily("netmgr_request_duration_seconds", "Request to reply, as the "
                                        "Manager measures it", labels=["service"])
        for name, stats in sorted(registry.stats.items()):
            requests.add_metric([name], stats.requests)
            errors.add_metric([name], stats.errors)
            notifications.add_metric([name], stats.notifications)
            buckets, total, _count = stats.histogram()
            latency.add_metric([name], [(_le(bound), n) for bound, n in buckets], total)
            record = registry.service(name)
            if record is not None:
                in_flight.add_metric([name], record.in_flight())
        yield from (requests, errors, notifications, in_flight, latency)


def _le(bound):
    return "+Inf" if bound == float("inf") else repr(float(bound))


def collector_registry(manager):
    """A registry with the Manager's figures and the process's (CPU, memory, open files)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ManagerCollector(manager))
    ProcessCollector(registry=registry)
    return registry
