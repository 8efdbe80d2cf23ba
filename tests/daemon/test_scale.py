"""Many connections (issue 12): the open-files limit ``netmgr start`` raises itself, and the
identity served from a cache that every change of the peers invalidates."""
import os
import resource
import time

import pytest
from msl.network import connect

from conftest import ManagerProcess, netmgr_argv

WAIT = 30
TEST_DEADLINE = 120
pytestmark = pytest.mark.usefixtures("watchdog", "clean_env")


def test_start_raises_its_open_files_limit_to_the_hard_one(netmgr_home):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    low = 256

    def lower():
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    argv = netmgr_argv("-H", "127.0.0.1", "-p", "0", "--disable-tls")
    env = dict(os.environ, NETMGR_HOME=str(netmgr_home), NETMGR_CONFIG=os.devnull)
    mgr = ManagerProcess(argv, env=env, preexec_fn=lower)
    try:
        assert f"open_files_limit soft={hard} was={low}" in mgr.output
        with open(f"/proc/{mgr.proc.pid}/limits") as f:
            row = next(line for line in f if line.startswith("Max open files"))
        assert row.split()[3:5] == [str(hard), str(hard)]
    finally:
        mgr.stop()


def test_identity_follows_every_change_of_the_peers(netmgr):
    kwargs = dict(host="127.0.0.1", port=netmgr.port, disable_tls=True, timeout=WAIT)
    watcher = connect(name="Watcher", **kwargs)
    try:
        first = watcher.identities(timeout=WAIT)
        assert first["clients"] == {str(watcher): first["clients"][str(watcher)]}
        assert watcher.identities(timeout=WAIT) == first  # from the cache: the same answer
        others = [connect(name=f"Other{n}", **kwargs) for n in range(3)]
        names = set(watcher.identities(timeout=WAIT)["clients"])
        assert names == {str(watcher), *map(str, others)}
        for other in others:
            other.disconnect()
        wait_until(lambda: set(watcher.identities(timeout=WAIT)["clients"]) == {str(watcher)},
                   "the Manager to forget the peers that left")
    finally:
        watcher.disconnect()



def wait_until(condition, what):
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
