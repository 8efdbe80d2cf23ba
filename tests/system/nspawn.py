"""A Debian bookworm container booted under systemd-nspawn, driven with nsenter.

The root file system is made once by debootstrap and cached (``$NETMGR_TEST_ROOTFS``, default
``/var/cache/netmgr-test/bookworm``), and made anew when :data:`PACKAGES` changes; every boot
mounts it read-only under a tmpfs overlay (``--volatile=overlay``), so runs never change it. The
container shares the host's network namespace: a port it listens on is reachable from the host
on ``localhost``. Every wait is bounded.
"""
import fcntl
import os
import shutil
import signal
import subprocess
import time

ROOTFS = os.environ.get("NETMGR_TEST_ROOTFS", "/var/cache/netmgr-test/bookworm")
MIRROR = os.environ.get("NETMGR_TEST_MIRROR", "http://deb.debian.org/debian")
# procps: kill(1), which ExecReload= runs; logrotate: /etc/logrotate.d/netmgr
PACKAGES = "systemd,systemd-sysv,dbus,procps,python3,python3-venv,logrotate"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STAMP = ".netmgr-test-packages"
TOOLS = ("systemd-nspawn", "debootstrap", "nsenter")


def why_not():
    """The reason the container cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn, debootstrap)"
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    if missing:
        return (f"{', '.join(missing)} not installed "
                "(Debian/Ubuntu: apt-get install systemd-container debootstrap util-linux)")
    if os.environ.get("NETMGR_SKIP_SYSTEM") == "1":
        return "NETMGR_SKIP_SYSTEM=1"
    return None


def _cached():
    """True when the cache holds a root file system made with today's package list."""
    try:
        with open(os.path.join(ROOTFS, STAMP)) as f:
            return f.read() == PACKAGES
    except OSError:
        return False


def ensure_rootfs(log):
    """The cached root file system, made by debootstrap on first use (~2-3 min, ~300 MB)."""
    if _cached():
        return ROOTFS
    os.makedirs(os.path.dirname(ROOTFS), exist_ok=True)
    with open(ROOTFS + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others reuse it
        if _cached():
            return ROOTFS
        partial = f"{ROOTFS}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        log(f"debootstrap bookworm into {ROOTFS} (first run, or the package list changed)")
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm",
                        partial, MIRROR], check=True, timeout=1800,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with open(os.path.join(partial, STAMP), "w") as f:
            f.write(PACKAGES)
        shutil.rmtree(ROOTFS, ignore_errors=True)
        os.rename(partial, ROOTFS)
    return ROOTFS


class Container:
    """``systemd-nspawn -b``; :meth:`run` executes a command inside with ``nsenter -a``."""

    def __init__(self, rootfs, name, binds=(), console_log=None):
        argv = ["systemd-nspawn", "-D", rootfs, "-b", "--register=no", "--volatile=overlay",
                "-M", name, "--console=pipe", *(f"--bind-ro={src}:{dst}" for src, dst in binds)]
        if not os.path.isdir("/run/systemd/system"):
            argv.append("--keep-unit")  # the host is not run by systemd: no scope to create
        self._log = open(console_log or os.devnull, "w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = None

    def boot(self, timeout=120):
        """Wait for the container's systemd, then for ``is-system-running`` to settle."""
        deadline = time.monotonic() + timeout
        while self.pid is None:
            self.pid = _child_named(self.proc.pid, "systemd")
            if self.pid is None:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"systemd-nspawn did not boot (exit {self.proc.poll()})")
                time.sleep(0.2)
        while True:
            left = deadline - time.monotonic()
            result = self.run("systemctl", "is-system-running", "--wait", check=False,
                              timeout=max(left, 1))
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                return state
            if left <= 0:
                raise RuntimeError(f"the container's systemd is {state or result.stderr!r}")
            time.sleep(0.5)  # its manager socket is not there yet

    def run(self, *argv, check=True, timeout=120, input=None):
        command = ["nsenter", "-t", str(self.pid), "-a", "env", "-i", f"PATH={PATH}",
                   "HOME=/root", "LANG=C.UTF-8", *argv]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                input=input)
        if check and result.returncode:
            raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n"
                                 f"{result.stdout}{result.stderr}")
        return result

    def sh(self, script, **kw):
        return self.run("sh", "-ec", script, **kw)

    def unit(self, name, prop):
        return self.run("systemctl", "show", "-p", prop, "--value", name).stdout.strip()

    def wait_for(self, what, predicate, timeout=60):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.2)

    def poweroff(self, timeout=60):
        """Stop the container whatever its state: SIGTERM (a clean poweroff), then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def _child_named(parent, name):
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == parent and comm == name:
            return int(entry)
    return None
