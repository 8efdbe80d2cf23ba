"""Beyond 1.0: a lost Manager or Service fails calls at once; reconnect, failover, state callbacks."""
import signal
import threading
import time

import pytest

from conftest import free_port
from lib_support import (HOST, Echo, Toolbox, service_process, start_service, until,
                         wait_for_services)
from netmgr.client import CONNECTED, DISCONNECTED, RECONNECTING, LinkedClient, connect


def test_manager_killed_and_restarted(netmgr_factory):
    """SIGKILL the Manager under a connected Client and Service, start it again on the same
    port: both reconnect and the Client's next call succeeds without user code handling it."""
    mgr = netmgr_factory()
    port = mgr.port
    states = []
    service_states = []
    running = start_service(port, Echo(), reconnect=True, max_delay=0.3,
                            on_state_change=lambda s, state: service_states.append(state))
    cxn = connect(host=HOST, port=port, disable_tls=True, reconnect=True, max_delay=0.3,
                  on_state_change=lambda c, state: states.append(state))
    try:
        echo = cxn.link("Echo")
        assert echo.echo(1) == [[1], {}]
        old_name = str(cxn)

        mgr.stop(signal.SIGKILL)
        assert until(lambda: cxn.state == RECONNECTING, timeout=5)
        assert not cxn.is_connected()
        netmgr_factory(port=port)

        assert echo.echo(2, timeout=20) == [[2], {}]  # no reconnect code in the test
        assert cxn.is_connected() and str(cxn) != old_name
        assert until(lambda: states == [RECONNECTING, CONNECTED])
        assert until(lambda: service_states[-2:] == ["RECONNECTING", "CONNECTED"])
        identity = cxn.identities()
        assert "Echo" in identity["services"] and str(cxn) in identity["clients"]
    finally:
        cxn.disconnect()
        running.stop()
    assert running.error is None
    assert until(lambda: states[-1] == DISCONNECTED)


def test_request_in_flight_fails_at_once_when_manager_dies(netmgr_factory):
    mgr = netmgr_factory()
    running = start_service(mgr.port, Toolbox())
    cxn = connect(host=HOST, port=mgr.port, disable_tls=True)
    tb = cxn.link("Toolbox")
    future = tb.slow(10, asynchronous=True)
    errors = []

    def call():
        try:
            tb.slow(10)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    mgr.stop(signal.SIGKILL)
    with pytest.raises(ConnectionError, match=rf"Manager\[{HOST}:{mgr.port}\] closed the connection"):
        future.result(5)
    thread.join(5)
    assert time.monotonic() - t0 < 2
    assert len(errors) == 1 and isinstance(errors[0], ConnectionError)
    assert f"Manager[{HOST}:{mgr.port}]" in str(errors[0])
    assert not cxn.is_connected()
    with pytest.raises(ConnectionError, match="Disconnected from Manager"):
        tb.slow(0)
    running.stop()


def test_service_killed_under_a_pending_call(netmgr):
    proc = service_process(netmgr.port)
    try:
        wait_for_services(netmgr.port, "Sleeper")
        with connect(host=HOST, port=netmgr.port, disable_tls=True) as cxn:
            sleeper = cxn.link("Sleeper")
            assert sleeper.ping() == "pong"
            future = sleeper.slow(30, asynchronous=True)
            errors = []
            thread = threading.Thread(target=lambda: _capture(errors, sleeper.slow, 30))
            thread.start()
            time.sleep(0.3)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            with pytest.raises(RuntimeError, match="'Sleeper' Service disconnected"):
                future.result(5)
            thread.join(5)
            assert time.monotonic() - t0 < 2
            assert len(errors) == 1 and "Service disconnected" in str(errors[0])
            assert cxn.is_connected()  # the Client's connection is unaffected
    finally:
        proc.kill()
        proc.wait()


def _capture(errors, fn, *args):
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001
        errors.append(exc)


def test_failover_list_at_connect(netmgr):
    dead = free_port()
    for host in (f"{HOST}:{dead}|{HOST}:{netmgr.port}", [f"{HOST}:{dead}", (HOST, netmgr.port)]):
        with connect(host=host, disable_tls=True) as cxn:
            assert cxn.address_manager == f"{HOST}:{netmgr.port}"
            assert "hostname" in cxn.identities()
    with pytest.raises(ConnectionError, match="Cannot connect to any of the Managers"):
        connect(host=f"{HOST}:{dead}|{HOST}:{free_port()}", disable_tls=True)


def test_failover_to_another_manager(netmgr_factory):
    a = netmgr_factory()
    b = netmgr_factory()
    svc_a = start_service(a.port, Echo())
    svc_b = start_service(b.port, Echo())
    cxn = connect(host=[(HOST, a.port), (HOST, b.port)], disable_tls=True, reconnect=3,
                  max_delay=0.2)
    try:
        echo = cxn.link("Echo")
        assert echo.echo("a") == [["a"], {}]
        a.stop(signal.SIGKILL)
        assert echo.echo("b", timeout=15) == [["b"], {}]
        assert cxn.address_manager == f"{HOST}:{b.port}"
    finally:
        cxn.disconnect()
        svc_a.stop()
        svc_b.stop()


def test_reconnect_gives_up_after_attempts(netmgr_factory):
    mgr = netmgr_factory()
    states = []
    cxn = connect(host=HOST, port=mgr.port, disable_tls=True, reconnect=2, max_delay=0.1,
                  on_state_change=lambda c, s: states.append(s))
    mgr.stop(signal.SIGKILL)
    assert until(lambda: states == [RECONNECTING, DISCONNECTED], timeout=10)
    with pytest.raises(ConnectionError, match="Disconnected from Manager"):
        cxn.identities()
    cxn.disconnect()


def test_locks_reacquired_after_reconnect(netmgr_factory):
    mgr = netmgr_factory()
    port = mgr.port
    running = start_service(port, Echo(), reconnect=True, max_delay=0.2)
    cxn = connect(host=HOST, port=port, disable_tls=True, reconnect=True, max_delay=0.2,
                  relock=True)
    try:
        echo = cxn.link("Echo")
        assert echo.acquire_lock() == [str(cxn)]
        mgr.stop(signal.SIGKILL)
        netmgr_factory(port=port)
        assert echo.echo(1, timeout=20) == [[1], {}]
        with pytest.raises(RuntimeError, match="'Echo' service is locked"):
            LinkedClient("Echo", host=HOST, port=port, disable_tls=True)
        assert echo.release_lock() == []
    finally:
        cxn.disconnect()
        running.stop()


def test_service_waits_for_the_manager_at_start_up(netmgr_factory):
    """With reconnect=True a Service started before its Manager connects once it is up."""
    port = free_port()
    running = start_service(port, Echo(), wait=False, reconnect=True, max_delay=0.2)
    time.sleep(0.5)
    assert running.thread.is_alive() and running.error is None
    netmgr_factory(port=port)
    try:
        wait_for_services(port, "Echo")
    finally:
        running.stop()
