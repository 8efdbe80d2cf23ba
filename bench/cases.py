"""What the benchmark runs and shows: the cases, and the rows of their tables. Pure data, no I/O."""
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadCase:
    name: str
    clients: int
    window: int
    payload: int
    tls: bool = False

    @property
    def title(self):
        size = f"{self.payload // 1000} kB" if self.payload >= 1000 else f"{self.payload} B"
        return (f"{self.clients} client(s) x {self.window} request(s) in flight, {size} payload, "
                f"via the Echo Service" + (", every peer over TLS" if self.tls else ""))


@dataclass(frozen=True)
class IdleCase:
    name: str
    count: int
    tls: bool = False

    @property
    def title(self):
        what = "the TLS and identity handshakes" if self.tls else "the identity handshake"
        return f"{self.count} connections, each completing {what} as a client, kept open"


@dataclass(frozen=True)
class LibSeqCase:
    """The blocking libraries, one call in flight: netmgr, msl-network 1.0 and the raw floor
    interleaved in one process (``bench/libpeers.py seq``)."""
    name: str
    rounds: int
    burst: int
    payload: int = 10
    tls: bool = False  # plain TCP only

    @property
    def title(self):
        return (f"blocking echo({self.payload} B) round trips, 1 call in flight, {self.rounds} rounds x "
                f"{self.burst} calls per path, the paths interleaved; each Service in its own process")


@dataclass(frozen=True)
class LibThreadsCase:
    """``threads`` client threads sharing ONE connection of a library (``bench/libpeers.py threads``)."""
    name: str
    threads: int
    payload: int = 10
    tls: bool = False  # plain TCP only

    @property
    def title(self):
        return (f"{self.threads} threads sharing ONE library connection, each making sequential blocking "
                f"echo({self.payload} B) calls; the library's own Service in its own process")


@dataclass(frozen=True)
class OverloadAttack:
    """One attack of ``python -m bench.attacks`` (issue 10), run alone against a fresh Manager.

    ``duration``: flood length, or how long the attacker waits for an answer; ``bound_mb``: how far
    netmgr's RSS may rise over its baseline with the default limits (100 MB of slack plus what the
    attack may legitimately fill: a queue limit, or twice a line's size).
    """
    name: str
    finding: str
    duration: float
    bound_mb: float = 100.0
    size: int = None
    count: int = None
    tls: bool = False

    @property
    def label(self):
        return self.name + ("_tls" if self.tls else "")

    def argv(self):
        """The attack's options of ``python -m bench.attacks``."""
        out = ["--duration", self.duration]
        if self.size is not None:
            out += ["--size", self.size]
        if self.count is not None:
            out += ["--count", self.count]
        return [str(a) for a in out]


@dataclass(frozen=True)
class OverloadCase:
    """Each attack alone against a fresh Manager, the canary (``bench.canary``) running throughout."""
    name: str
    attacks: tuple
    alone: float  # seconds the canary runs alone before each attack
    settle: float  # seconds after an attack before the "after" RSS is read

    @property
    def tls(self):
        return any(a.tls for a in self.attacks)

    @property
    def title(self):
        return (f"each attack alone against a fresh Manager, a canary (raw Echo Service + Client, one echo "
                f"call every 0.2 s) running throughout; {self.alone:g} s alone first; one run per Manager")


@dataclass(frozen=True)
class BigCase:
    """Issue 12: one raw Client, sequential echo calls of ``size`` bytes through the raw Echo Service
    (``python -m bench.bigecho``), one payload of each kind per round. ``columns``: the Managers
    and/or ``floor`` (the non-parsing relay of ``bench/relay.py`` in place of a Manager)."""
    name: str
    size: int
    rounds: int
    warmup_rounds: int
    payloads: tuple = ("array", "string")
    columns: tuple = ("netmgr", "msl", "floor")
    tls: bool = False  # plain TCP only

    @property
    def title(self):
        mb = f"{self.size / 1e6:g} MB"
        return (f"1 raw client, sequential echo of {mb} through the raw Echo Service, as a numeric JSON array "
                f"and as a string, {self.warmup_rounds} warm-up + {self.rounds} measured round trips per "
                f"payload; floor = the non-parsing relay (bench/relay.py) in place of a Manager")


@dataclass(frozen=True)
class ManyCase:
    """Issue 12: ``count`` connections doing the identity handshake as clients, opened by ``procs``
    processes (``parallel`` handshakes in progress in all), then ``identity()`` timed."""
    name: str
    count: int
    procs: int
    identity_calls: int
    parallel: int = 64  # as idle2000
    tls: bool = False  # plain TCP only

    @property
    def title(self):
        return (f"{self.count} connections, each completing the identity handshake as a client, kept open "
                f"({self.procs} opener process(es), {self.parallel} handshakes in progress at most); then "
                f"{self.identity_calls} identity() requests")


CASE_NAMES = ("seq", "c8w16", "c8w16_100k", "idle2000", "seq_tls", "c8w16_tls", "idle_tls",
              "lib_seq", "lib_threads16", "big10m", "floor_relay", "idle20000", "overload")
# what ``--cases`` runs by default: the issue 12 cases and overload are asked for by name
DEFAULT_CASES = CASE_NAMES[:9]
QUEUE_MB = 512 * 1024 * 1024 / 1e6  # netmgr's default --max-queue-size
# netmgr's admission limits that a benchmark of N connections from 127.0.0.1 must lift: (option,
# its default); the idle cases open all their connections from one address (see bench/README.md)
NETMGR_CONN_LIMITS = (("--max-connections", 10_000), ("--max-connections-per-address", 1024))


def overload_attacks(quick):
    """The single-attacker attacks of the overload case; ``quick``: short floods, small sizes."""
    flood, wait = (1.0, 10.0) if quick else (5.0, 40.0)
    line = 10_000_000 if quick else 100_000_000
    literal = 200_000 if quick else 2_000_000
    return (
        OverloadAttack("flood_notify", "1: a Service floods notifications nobody subscribed to", flood),
        OverloadAttack("flood_requests", "1: a Client floods requests to a Service", flood, 100 + 2 * QUEUE_MB),
        OverloadAttack("flood_requests", "1: a Client floods requests to a Service, over TLS", flood,
                       100 + 2 * QUEUE_MB, tls=True),
        OverloadAttack("identity_flood", "2: `client H`, then identity requests, never reading", flood,
                       100 + QUEUE_MB),
        OverloadAttack("terminal_64k", "3: `x y ` + a x N before identifying", wait,
                       size=20_000 if quick else 65_000),
        OverloadAttack("terminal_2mb", "3: a terminal literal `Nope echo [1,1,...]` after identifying", wait,
                       100 + 2 * literal / 1e6, size=literal),
        OverloadAttack("line_100mb", "5: one JSON line of N bytes", wait, 100 + 2 * line / 1e6, size=line),
        OverloadAttack("nesting", "6: `[` x 1100 + `]` x 1100 before and after identifying", wait),
        OverloadAttack("inflight", "7: N requests in flight to a Service that never answers, then it leaves",
                       wait, count=20_000 if quick else 500_000),
    )
# TLS case -> the plain case it is compared with in the overhead block
PLAIN_OF = {"seq_tls": "seq", "c8w16_tls": "c8w16", "idle_tls": "idle2000"}


def build_cases(opts):
    """The cases named in ``opts.case_list``, in that order, with the counts of ``opts``."""
    table = {
        "seq": LoadCase("seq", 1, 1, 10),
        "c8w16": LoadCase("c8w16", 8, 16, 10),
        "c8w16_100k": LoadCase("c8w16_100k", 8, 16, 100_000),
        "idle2000": IdleCase("idle2000", opts.idle_count),
        "seq_tls": LoadCase("seq_tls", 1, 1, 10, tls=True),
        "c8w16_tls": LoadCase("c8w16_tls", 8, 16, 10, tls=True),
        "idle_tls": IdleCase("idle_tls", opts.idle_tls_count, tls=True),
        "lib_seq": LibSeqCase("lib_seq", opts.lib_rounds, opts.lib_burst),
        "lib_threads16": LibThreadsCase("lib_threads16", 16),
        "big10m": BigCase("big10m", opts.big_size, opts.big_rounds, 1 if opts.quick else 2),
        # the relay alone (big10m has it as its floor column already)
        "floor_relay": BigCase("floor_relay", opts.big_size, opts.big_rounds, 1 if opts.quick else 2,
                               columns=("floor",)),
        "idle20000": ManyCase("idle20000", opts.many_count, opts.many_procs, 2 if opts.quick else 5),
        "overload": OverloadCase("overload", tuple(a for a in overload_attacks(opts.quick)
                                                   if not opts.attack_list or a.label in opts.attack_list),
                                 alone=1.0 if opts.quick else 3.0, settle=1.0 if opts.quick else 2.0),
    }
    return [table[n] for n in opts.case_list]


# Rows: (key, label, format, better); better is "high" or "low", None for informational rows.
# The rows several tables share:
P50 = ("p50_us", "latency p50 (us)", "{:,.0f}", "low")
P99 = ("p99_us", "latency p99 (us)", "{:,.0f}", "low")
MGR_CPU_PER_REQ = ("mgr_cpu_us_per_req", "Manager CPU per request (us)", "{:,.1f}", "low")
SVC_CPU_PER_REQ = ("svc_cpu_us_per_req", "Service CPU per request (us)", "{:,.1f}", "low")
CLIENT_CPU_PER_REQ = ("client_cpu_us_per_req", "client CPU per request (us)", "{:,.1f}", "low")
MGR_CPU_PCT = ("mgr_cpu_pct", "Manager CPU use (% of 1 core)", "{:.0f}", None)
SVC_CPU_PCT = ("svc_cpu_pct", "Echo Service CPU (%)", "{:.0f}", None)
OTHER_CPU_PCT = ("other_cpu_pct", "other processes' CPU, noise (%)", "{:.0f}", None)
ERRORS = ("errors", "error replies (sum of runs)", "{:.0f}", None)

LOAD_ROWS = [
    ("rps", "routed requests/s", "{:,.0f}", "high"),
    P50, P99, MGR_CPU_PER_REQ, MGR_CPU_PCT,
    ("gen_cpu_pct", "load generator CPU (%)", "{:.0f}", None),
    SVC_CPU_PCT, OTHER_CPU_PCT, ERRORS,
]
IDLE_ROWS = [
    ("handshakes_per_s", "handshakes/s", "{:,.0f}", "high"),
    ("p50_us", "connect->identity request p50 (us)", "{:,.0f}", "low"),
    ("p99_us", "connect->identity request p99 (us)", "{:,.0f}", "low"),
    ("mgr_cpu_us_per_conn", "Manager CPU per handshake (us)", "{:,.0f}", "low"),
    ("rss_kib_per_conn", "Manager RSS growth per conn (KiB)", "{:.2f}", "low"),
    ("rss_mib_after", "Manager RSS with all open (MiB)", "{:.1f}", "low"),
    OTHER_CPU_PCT,
]
# lib_seq, per path (netmgr, msl, floor)
LIB_SEQ_ROWS = [
    ("p50_us", "round trip p50 (us)", "{:,.0f}", "low"),
    ("p99_us", "round trip p99 (us)", "{:,.0f}", "low"),
    ("mean_us", "round trip mean (us)", "{:,.0f}", "low"),
    MGR_CPU_PER_REQ, SVC_CPU_PER_REQ, CLIENT_CPU_PER_REQ,
    ("calls", "calls measured per run", "{:,.0f}", None),
    OTHER_CPU_PCT, ERRORS,
]
LIB_THREADS_ROWS = [
    ("rps", "calls/s (all threads)", "{:,.0f}", "high"),
    P50, P99, MGR_CPU_PER_REQ, SVC_CPU_PER_REQ, CLIENT_CPU_PER_REQ, MGR_CPU_PCT,
    ("gen_cpu_pct", "client process CPU (%)", "{:.0f}", None),
    SVC_CPU_PCT, OTHER_CPU_PCT, ERRORS,
]
BIG_ROWS = {  # per payload kind: (key suffix, label, format, better)
    "row": [("mbps", "echo MB/s (request+reply)", "{:,.1f}", "high"),
            ("p50_ms", "round trip p50 (ms)", "{:,.1f}", "low"),
            ("mgr_ms_per_mb", "Manager CPU per MB (ms)", "{:,.2f}", "low"),
            ("svc_ms_per_mb", "Echo Service CPU per MB (ms)", "{:,.2f}", None),
            ("client_ms_per_mb", "client CPU per MB (ms)", "{:,.2f}", None),
            ("req_mb", "request size (MB)", "{:,.2f}", None)],
    "tail": [OTHER_CPU_PCT, ERRORS],
}
MANY_ROWS = IDLE_ROWS[:-1] + [
    ("identity_ms", "identity() with all open, median (ms)", "{:,.1f}", "low"),
    ("identity_max_ms", "identity() with all open, max (ms)", "{:,.1f}", "low"),
    ("identity_kb", "identity() reply size (kB)", "{:,.0f}", None),
    OTHER_CPU_PCT,
]
SUMMED = {"errors"}  # summed over the runs; every other row shows the median

# the paths of lib_seq: key -> (label, the Manager it goes through, description)
LIB_PATHS = {
    "netmgr": ("netmgr", "netmgr",
               "netmgr.client.connect(...).link('Echo').echo -> netmgr Manager -> netmgr.service.Service"),
    "msl": ("msl-network 1.0", "msl",
            "msl.network.connect(...).link('Echo').echo -> msl-network 1.0 Manager -> msl.network.Service"),
    "floor": ("floor", "netmgr",
              "raw blocking-socket client (bench.libpeers) -> netmgr Manager -> raw Echo Service (bench.peers)"),
}
# lib_seq p50 goals: (numerator path, denominator path, at most this ratio, "target" or "aim")
LIB_TARGETS = [("netmgr", "msl", 0.5, "target"), ("netmgr", "floor", 1.3, "aim")]
# (key, label) of the overhead block of a TLS case: TLS / plain of these medians, per Manager
OVERHEAD_ROWS = {
    LoadCase: [("mgr_cpu_us_per_req", "Manager CPU per request"), ("p50_us", "latency p50")],
    IdleCase: [("mgr_cpu_us_per_conn", "Manager CPU per handshake"),
               ("p50_us", "connect->identity p50")],
}


def big_rows(case):
    """The rows of a BigCase: each payload's rows (keys ``<payload>_<suffix>``), then the tail."""
    rows = [(f"{p}_{k}", f"{p}: {label}", fmt, better)
            for p in case.payloads for k, label, fmt, better in BIG_ROWS["row"]]
    return rows + BIG_ROWS["tail"]


# BigCase "done when" of issue 12: (row key, numerator, denominator, "min" or "max", bound)
BIG_TARGETS = [
    ("array_mgr_ms_per_mb", "netmgr", "msl", "max", 1 / 8),
    ("array_mbps", "netmgr", "msl", "min", 5.0),
    ("array_mbps", "netmgr", "floor", "min", 1 / 1.5),
    ("string_mbps", "netmgr", "floor", "min", 1 / 1.5),
]
BIG_COLUMNS = {"netmgr": "netmgr", "msl": "msl-network 1.0", "floor": "floor (relay)"}


def case_rows(case):
    if isinstance(case, BigCase):
        return big_rows(case)
    if isinstance(case, ManyCase):
        return MANY_ROWS
    if isinstance(case, LibSeqCase):
        return LIB_SEQ_ROWS
    if isinstance(case, LibThreadsCase):
        return LIB_THREADS_ROWS
    return IDLE_ROWS if isinstance(case, IdleCase) else LOAD_ROWS


def lib_paths(keys, skip=()):
    """The lib_seq paths whose Manager is among ``keys``, minus those in ``skip``."""
    return [p for p, (_, mgr_key, _) in LIB_PATHS.items() if mgr_key in keys and p not in skip]


def case_keys(case, keys, opts):
    """The result columns of ``case``: the Managers, or the paths of lib_seq."""
    if isinstance(case, LibSeqCase):
        return lib_paths(keys, opts.lib_skip)
    if isinstance(case, LibThreadsCase):
        return [k for k in keys if k not in opts.lib_skip]
    if isinstance(case, BigCase):
        return [k for k in case.columns if k in keys or k == "floor"]
    return keys
