"""Child-process bookkeeping and ``/proc`` readers (the peer processes use the readers too).

Every child is started in its own session (so its process group id is its pid) with a parent-death
signal, and is recorded in :data:`REGISTRY`; :func:`stop` ends one child's group by that id and
:func:`stop_all` (called from ``finally`` and ``atexit``) ends whatever is left, so a failed case, an
exception or Ctrl-C leaves no orphan behind.
"""
import atexit
import ctypes
import os
import signal
import socket
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1

REGISTRY = []


def _die_with_parent():
    # Runs in the child between fork and exec: if the benchmark is killed outright, the kernel
    # sends SIGTERM to the child, so even SIGKILL of the benchmark leaves no Manager running.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:
        pass


def spawn(argv, **kwargs):
    proc = subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent, **kwargs)
    REGISTRY.append(proc)
    return proc


def stop(proc, timeout=5.0):
    """SIGTERM the child's process group, then SIGKILL it if it has not exited after ``timeout``."""
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream:
            try:
                stream.close()
            except OSError:
                pass
    if proc in REGISTRY:
        REGISTRY.remove(proc)
    return proc.returncode


def stop_all():
    for proc in list(REGISTRY):
        stop(proc, timeout=2.0)


atexit.register(stop_all)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid):
    """utime + stime of ``pid`` (fields 14 and 15 of /proc/PID/stat), in clock ticks."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2:].split()  # field 3 onwards; comm may contain spaces
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pid):
    """utime + stime of ``pid``, in seconds."""
    return cpu_ticks(pid) / CLK_TCK


def machine_busy_ticks():
    """Clock ticks spent in user+nice+system by every process on the machine (from /proc/stat).

    irq/softirq/steal are left out: loopback TCP work shows up as softirq, not as anyone's load.
    """
    with open("/proc/stat", "rb") as f:
        fields = f.readline().split()
    return int(fields[1]) + int(fields[2]) + int(fields[3])


def machine_busy_seconds():
    """:func:`machine_busy_ticks` in seconds."""
    return machine_busy_ticks() / CLK_TCK


def rss_kib(pid):
    """VmRSS of ``pid`` from /proc/PID/status, in KiB."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")


def read_line(stream, timeout, proc=None):
    """Read one line from a child's pipe within ``timeout`` s ('' at EOF or on timeout).

    Reads the raw fd byte by byte so nothing is buffered beyond the line (the children print a few
    short status lines only), which keeps ``select`` truthful for the next call.
    """
    import selectors

    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    buf = bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return ""
            if sel.select(min(left, 0.5)):
                b = os.read(fd, 1)
                if not b:
                    return buf.decode(errors="replace")
                buf += b
                if b == b"\n":
                    return buf.decode(errors="replace")
            elif proc is not None and proc.poll() is not None and not sel.select(0):
                return buf.decode(errors="replace")


def raise_nofile_limit():
    """Raise RLIMIT_NOFILE to the hard limit; children (the Managers) inherit it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 65536)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
