"""SIGHUP re-reads the configuration and keeps peers; signals right after start-up are handled."""
import os
import signal
import sys
import time

from conftest import ManagerProcess
from rawpeer import RawPeer, wait_until


def _start(tmp_path, netmgr_home, conf_text):
    conf = tmp_path / "netmgr.conf"
    conf.write_text(conf_text)
    argv = [sys.executable, "-m", "netmgr.launcher", "start", "--config", str(conf),
            "-H", "127.0.0.1", "-p", "0", "--disable-tls"]
    return conf, ManagerProcess(argv, env=dict(os.environ, NETMGR_HOME=str(netmgr_home)))


def test_sighup_applies_config_edits_and_keeps_peers(tmp_path, netmgr_home):
    conf, mgr = _start(tmp_path, netmgr_home, "[netmgr]\nhandshake_timeout = 30\n")
    try:
        service = RawPeer(mgr.port).handshake_service("Echo")
        client = RawPeer(mgr.port).handshake_client()
        conf.write_text(f"[netmgr]\nhandshake_timeout = 1\ndatabase = {tmp_path / 'other.sqlite3'}\n")
        mgr.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reloaded" in mgr.output, what="the reload")
        assert "restart_required settings=database" in mgr.output  # a new database needs a restart

        silent = RawPeer(mgr.port, timeout=10)
        assert silent.read()["attribute"] == "identity"
        started = time.monotonic()
        assert silent.closed_by_peer()  # the new 1 s handshake deadline applies
        assert time.monotonic() - started < 5

        uid = client.request("Echo", "echo", 1)  # the peers from before the reload still work
        service.serve_one()
        assert client.read()["uid"] == uid
    finally:
        assert mgr.stop() == 0


def test_a_bad_edit_keeps_the_running_configuration(tmp_path, netmgr_home):
    conf, mgr = _start(tmp_path, netmgr_home, "[netmgr]\n")
    try:
        conf.write_text("[netmgr]\nno_such_key = 1\n")
        mgr.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload_failed" in mgr.output, what="the failed reload")
        assert RawPeer(mgr.port).read()["attribute"] == "identity"
    finally:
        assert mgr.stop() == 0


def test_sigterm_at_the_start_up_line_exits_cleanly(netmgr_factory):
    for _ in range(5):
        mgr = netmgr_factory()
        assert mgr.stop(signal.SIGTERM) == 0
    mgr = netmgr_factory()
    mgr.proc.send_signal(signal.SIGHUP)  # handled (a reload), not the default action
    wait_until(lambda: "reloaded" in mgr.output, what="the reload")
    assert mgr.proc.poll() is None
