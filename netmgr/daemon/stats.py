"""Per-Service request figures: counts, and request->reply latency bucketed lazily (issue 13).

The hot path only bumps integers and appends a float (:meth:`ServiceStats.observe`); the floats
are sorted into buckets :data:`FOLD` at a time, or when someone reads (a scrape of /metrics, a
heartbeat). Two sets of buckets come out of one fold: Prometheus's cumulative histogram
(:data:`BUCKETS`, for all time) and fine logarithmic buckets for the current window, from which
a heartbeat reports p50 and p99 within about 9 %.

This module performs no I/O and imports neither gevent nor sockets.
"""
import bisect
import math

#: upper bounds (seconds) of the Prometheus histogram; +Inf is implied
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
           1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: latencies kept unsorted before a fold
FOLD = 4096
#: the window's fine buckets: 8 per doubling from 1 us, up to ~2**30 us (18 minutes)
_STEPS_PER_DOUBLING = 8
_FINE = 30 * _STEPS_PER_DOUBLING + 1
_BASE = 1e-6


def _fine_upper(index):
    return _BASE * 2 ** (index / _STEPS_PER_DOUBLING)


#: the fine buckets' upper bounds; the last one holds everything above
_FINE_BOUNDS = tuple(_fine_upper(i) for i in range(_FINE - 1)) + (math.inf,)


def _count_into(counts, bounds, ordered):
    """Add to ``counts[i]`` how many of the sorted ``ordered`` fall in ``(bounds[i-1], bounds[i]]``:
    one bisection per bucket between the smallest and the largest value, none per value."""
    locate, n = bisect.bisect_right, len(ordered)
    first = bisect.bisect_left(bounds, ordered[0])
    below = 0
    for i in range(first, len(bounds)):
        upto = n if bounds[i] == math.inf else locate(ordered, bounds[i], below)
        counts[i] += upto - below
        below = upto
        if below == n:
            break


class ServiceStats:
    """What a Service's requests did, kept under its name across reconnects."""

    __slots__ = ("requests", "errors", "notifications", "pending", "_buckets", "sum", "count",
                 "_fine", "_window_count", "_window_requests", "_window_errors", "window")

    def __init__(self):
        self.requests = 0  # forwarded to the Service
        self.errors = 0  # answered with an error by the Service, or failed by the Manager
        self.notifications = 0  # emitted by the Service
        self.pending = []
        self._buckets = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0
        self._fine = [0] * _FINE
        self._window_count = 0
        self._window_requests = 0
        self._window_errors = 0
        #: the last closed window: {"rate", "error_rate", "p50", "p99"}
        self.window = {"rate": 0.0, "error_rate": 0.0, "p50": None, "p99": None}

    def observe(self, seconds):
        """One reply came ``seconds`` after its request (the registry inlines this)."""
        pending = self.pending
        pending.append(seconds)
        if len(pending) >= FOLD:
            self.fold()

    def fold(self):
        """Sort the pending latencies into both sets of buckets."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        pending.sort()  # in C; then one bisection per bucket, not per value
        _count_into(self._buckets, BUCKETS + (math.inf,), pending)
        _count_into(self._fine, _FINE_BOUNDS, pending)
        self.sum += math.fsum(pending)
        self.count += len(pending)
        self._window_count += len(pending)

    def histogram(self):
        """``([(upper bound, cumulative count), …, (inf, count)], sum, count)``."""
        self.fold()
        out, total = [], 0
        for bound, n in zip(BUCKETS + (math.inf,), self._buckets):
            total += n
            out.append((bound, total))
        return out, self.sum, self.count

    def close_window(self, seconds):
        """End the current window (``seconds`` long) and return its figures (:attr:`window`)."""
        self.fold()
        quantiles = _quantiles(self._fine, self._window_count, (0.5, 0.99))
        self.window = {"rate": round((self.requests - self._window_requests) / seconds, 3) if seconds > 0 else 0.0,
                       "error_rate": round((self.errors - self._window_errors) / seconds, 3) if seconds > 0 else 0.0,
                       "p50": quantiles[0], "p99": quantiles[1]}
        self._fine = [0] * _FINE
        self._window_count = 0
        self._window_requests, self._window_errors = self.requests, self.errors
        return self.window


def _quantiles(fine, count, qs):
    """The upper bound of the fine bucket holding each quantile, or None without data."""
    if not count:
        return [None] * len(qs)
    out, total, index = [], 0, 0
    for q in qs:
        rank = max(1, math.ceil(q * count))
        while total + fine[index] < rank:
            total += fine[index]
            index += 1
        out.append(round(_fine_upper(index), 6))
    return out


class StatsTable:
    """Stats by Service name, at most ``limit`` names: gone Services' figures are forgotten
    oldest first when a new name needs room (a peer inventing names cannot grow it)."""

    def __init__(self, limit=1024):
        self.limit = limit
        self._by_name = {}

    def get(self, name, connected):
        """The stats of ``name`` (made if new); ``connected(name)`` says which are in use."""
        stats = self._by_name.get(name)
        if stats is None:
            if len(self._by_name) >= self.limit:
                for old in list(self._by_name):
                    if not connected(old):
                        del self._by_name[old]
                        if len(self._by_name) < self.limit:
                            break
            stats = self._by_name[name] = ServiceStats()
        return stats

    def items(self):
        return self._by_name.items()

    def __getitem__(self, name):
        return self._by_name[name]

    def __contains__(self, name):
        return name in self._by_name
