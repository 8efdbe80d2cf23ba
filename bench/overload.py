"""One run of the overload case against one Manager: every attack, each against a fresh Manager.

For each :class:`bench.cases.OverloadAttack`: start the Manager (with TLS for a TLS attack), watch its
RSS (:class:`bench.canary.RssWatch`, which SIGKILLs it above 4 GiB so the shared machine is never
exhausted), start the canary process (``python -m bench.canary``) and wait for ``READY``, let it call
alone for ``case.alone`` s, run the attacker process (``python -m bench.attacks NAME``), bounded by the
attack's duration + :data:`ATTACK_SLACK` s (then killed), wait ``case.settle`` s and read the Manager's
RSS ("after"), stop the canary and read its samples, stop the Manager. A Manager that stalls is
reported as such, never waited for: every step has a deadline.

The canary's calls are split by time: "alone" (before the attack) and "attack" (from its start to
``case.settle`` s after the attacker's exit, so that what an attack leaves behind counts too: a parse
at close, a mass failure of requests in flight; a call counts when it overlaps the window).

The attacker gets the Manager's pid and :data:`RSS_CAP_MIB`: a flood stops once the Manager's RSS
crosses it (the msl-network 1.0 Manager grows by about 0.7 GB/s under ``identity_flood``), well
before the 4 GiB kill.
"""
import contextlib
import subprocess
import sys
import time

import orjson

from bench import managers, procs
from bench.canary import RssWatch, summary
from bench.runs import CaseError, expect_line, spawn_peer
from bench.wire import ProtocolFailure

PY = sys.executable
ATTACK_SLACK = 30.0  # seconds an attacker may take beyond its duration before it is killed
STALL_MS = 1000.0  # a canary call this slow means the Manager stalled
CALL_TIMEOUT = 90.0  # a canary call is given up ("stalled") after this: longer than any attack, so a
#                      stall is measured whole (or counted with its age when the canary stops)
RSS_CAP_MIB = 2048  # a flood stops once the Manager's RSS crosses this
ERRORS = (CaseError, managers.ManagerError, OSError, ProtocolFailure, ValueError)


def run_overload_case(key, case, opts, tmp):
    """``{"attacks": {label: figures or {"error": text}}}`` for the Manager ``key``."""
    out = {}
    for attack in case.attacks:
        t0 = time.monotonic()
        try:
            out[attack.label] = run_attack(key, attack, case, opts, tmp / attack.label)
            note = status_line(out[attack.label])
        except ERRORS as exc:
            out[attack.label] = {"error": f"{type(exc).__name__}: {exc}"}
            note = "FAILED: " + out[attack.label]["error"]
        finally:
            procs.stop_all()
        print(f"    {key:11} {attack.label:18} {note}  ({time.monotonic() - t0:.1f} s)", file=sys.stderr,
              flush=True)
    return {"attacks": out}


def status_line(f):
    a = f["attack"]
    return (f"{f['status']}: canary p99={a['p99_ms']:.1f} ms max={a['max_ms']:.1f} ms, "
            f"RSS peak={f['rss_peak_mib']:.0f} MiB")


def run_attack(key, attack, case, opts, tmp):
    tmp.mkdir(parents=True)
    tls = None
    if attack.tls:
        if opts.tls is None:
            raise CaseError(f"no TLS certificate: {opts.tls_error}")
        tls = opts.tls
    tls_args = ["--tls-cert", str(tls.cert)] if tls else []
    with contextlib.ExitStack() as stack:
        mgr = start_manager(stack, key, tmp, tls)
        watch = stack.enter_context(RssWatch(mgr.pid))
        canary = spawn_peer([PY, "-m", "bench.canary", "--port", str(mgr.port), "--call-timeout",
                             str(CALL_TIMEOUT), *tls_args], tmp, "canary", stdin=subprocess.PIPE)
        expect_line(canary, "READY", 30, tmp, "canary")
        before = watch.rss_kib()
        t_alone = time.monotonic()
        time.sleep(case.alone)  # the canary's window alone
        t_attack = time.monotonic()
        result, timed_out = run_attacker(attack, mgr.port, mgr.pid, tls_args, tmp)
        t_end = time.monotonic()
        time.sleep(case.settle)  # what the attack leaves behind (a parse at close, a mass failure)
        t_after = time.monotonic()
        after, hwm = watch.rss_kib(), watch.hwm_kib()
        samples, dropped = stop_canary(canary, tmp)
        alive = mgr.alive()
    return {
        "alone": summary(samples, t_alone, t_attack),
        "alone_ms": [s[1] * 1e3 for s in samples if s[0] < t_attack and s[0] + s[1] < t_attack],
        "attack": summary(samples, t_attack, t_after),
        "attack_s": t_end - t_attack,
        "rss_before_mib": before / 1024,
        "rss_peak_mib": max(watch.peak_kib, hwm or 0) / 1024,
        "rss_after_mib": None if after is None else after / 1024,
        "bound_mb": attack.bound_mb,
        "status": status(watch, alive, mgr, timed_out, dropped, summary(samples, t_attack, t_after)),
        "attacker": result,
        "canary_dropped": dropped,
    }


def start_manager(stack, key, tmp, tls, attempts=3):
    """A fresh Manager, entered into ``stack``. A free port can be taken again before the Manager binds
    it (the canary's and attackers' many connections use ephemeral ports): then try another one."""
    for attempt in range(attempts):
        try:
            return stack.enter_context(managers.RunningManager(key, tmp / f"manager-{attempt}", tls=tls))
        except managers.ManagerError as exc:
            if "already in use" not in str(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def run_attacker(attack, port, mgr_pid, tls_args, tmp):
    """(the attacker's result, whether it had to be killed)."""
    argv = [PY, "-m", "bench.attacks", attack.name, "--port", str(port), *tls_args, *attack.argv(),
            "--mgr-pid", str(mgr_pid), "--rss-cap-mib", str(RSS_CAP_MIB)]
    proc = spawn_peer(argv, tmp, "attacker")
    line = procs.read_line(proc.stdout, attack.duration + ATTACK_SLACK, proc)
    timed_out = proc.poll() is None and not line.strip()
    procs.stop(proc)
    try:
        return (orjson.loads(line) if line.strip() else {"failure": "no result"}), timed_out
    except orjson.JSONDecodeError:
        return {"failure": f"unreadable result {line[:200]!r}"}, timed_out


def stop_canary(canary, tmp):
    """Tell the canary to stop; (its samples, why it was dropped or None)."""
    try:
        canary.stdin.write(b"\n")
        canary.stdin.flush()
    except OSError:
        pass
    line = procs.read_line(canary.stdout, 30, canary)
    procs.stop(canary)
    if not line.strip():
        raise CaseError("the canary did not report its calls" + stderr_of(tmp))
    doc = orjson.loads(line)
    return [tuple(s) for s in doc["samples"]], doc["dropped"]


def stderr_of(tmp):
    try:
        return ": " + (tmp / "canary.stderr").read_text(errors="replace").strip()[-500:]
    except OSError:
        return ""


def status(watch, alive, mgr, timed_out, dropped, during):
    """ok, or what went wrong: killed at the memory cap, died, stalled, canary dropped."""
    if watch.killed:
        return f"KILLED above {watch.kill_above_kib // (1 << 20)} GiB RSS"
    if not alive:
        return f"DIED (exit code {mgr.proc.returncode})"
    if timed_out:
        return "STALLED (the attacker was killed)"
    if dropped:
        return "canary dropped"
    if during["max_ms"] >= STALL_MS or during["stalled"]:
        return f"STALLED {during['max_ms'] / 1e3:.1f} s"
    return "ok"
