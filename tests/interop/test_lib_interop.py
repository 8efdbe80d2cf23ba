"""Interoperability both ways: netmgr's library with msl-network 1.0's Manager, Client and Service.

Matrix (client -> Manager -> Service), plaintext, plus TLS where both ends support it here
(the 1.0 Manager fixture runs plaintext only):

    netmgr -> 1.0    -> netmgr        netmgr -> 1.0    -> 1.0
    1.0    -> 1.0    -> netmgr        1.0    -> netmgr -> netmgr   (+TLS)
    netmgr -> netmgr -> 1.0 (+TLS)
"""
import time
import types

import msl.network
import pytest

from lib_support import HOST, MslEcho, Running, Toolbox, env_home, until, wait_for_services
from netmgr.client import connect


class EchoTools(Toolbox):
    """The netmgr side of the matrix: Toolbox named Echo, with echo()."""

    def __init__(self):
        super().__init__(name="Echo")

    @staticmethod
    def echo(*args, **kwargs):
        return args, kwargs


CASES = [
    # (client library, Manager, Service library, tls)
    ("netmgr", "msl", "netmgr", False),
    ("netmgr", "msl", "msl", False),
    ("msl", "msl", "netmgr", False),
    ("msl", "netmgr", "netmgr", False),
    ("msl", "netmgr", "netmgr", True),
    ("netmgr", "netmgr", "msl", False),
    ("netmgr", "netmgr", "msl", True),
]


@pytest.mark.parametrize("client_lib,manager,service_lib,tls", CASES,
                         ids=[f"{c}-client_{m}-manager_{s}-service{'_tls' if t else ''}"
                              for c, m, s, t in CASES])
def test_matrix(client_lib, manager, service_lib, tls, netmgr_factory, msl_factory,
                netmgr_home, monkeypatch):
    if manager == "msl":
        mgr = msl_factory()
    else:
        mgr = netmgr_factory(tls=tls)
    env_home(monkeypatch, netmgr_home)  # netmgr's TLS clients find the Manager's certificate
    cert = str(netmgr_home / "certs" / f"{HOST}.crt") if tls else None
    kw = dict(host=HOST, port=mgr.port, disable_tls=not tls)
    if tls:
        kw["cert_file"] = cert

    service = EchoTools() if service_lib == "netmgr" else MslEcho()
    running = Running(service, mgr.port, **{k: v for k, v in kw.items() if k != "port"})
    wait_for_services(mgr.port, "Echo", **{k: v for k, v in kw.items() if k != "port"})

    lib = connect if client_lib == "netmgr" else msl.network.connect
    cxn = lib(**kw)
    try:
        echo = cxn.link("Echo")
        assert echo.echo(1, 2, x="y") == [[1, 2], {"x": "y"}]
        assert echo.echo("é", [1.5, None], nested={"a": [True]}) == \
            [["é", [1.5, None]], {"nested": {"a": [True]}}]

        with pytest.raises(RuntimeError) as info:
            echo.kaboom()
        assert str(info.value).startswith(f"Manager[{HOST}:{mgr.port}] returned the following "
                                          f"exception:")
        assert str(info.value).endswith("ValueError: kaboom")

        seen = []

        def handler(self, *args, **kwargs):
            seen.append((args, kwargs))
        echo.notification_handler = types.MethodType(handler, echo)
        assert echo.notify_then_reply(5) == 5
        assert seen == [((i,), {"index": i + 10}) for i in range(5)]  # handled before the reply

        futures = [echo.echo(i, asynchronous=True) for i in range(20)]
        assert [f.result(10) for f in futures] == [[[i], {}] for i in range(20)]

        identity = cxn.identities()
        assert "Echo" in identity["services"] and str(cxn) in identity["clients"]
        t0 = time.perf_counter()
        for i in range(100):
            echo.echo(i)
        assert time.perf_counter() - t0 < 10
    finally:
        cxn.disconnect()
        if isinstance(running.service, msl.network.Service):
            running.thread.join(0)  # ends when its Manager stops (fixture teardown)
        else:
            running.stop()


def test_netmgr_client_with_msl_manager_errors_without_uid(msl_factory):
    """The 1.0 Manager answers some errors with uid "": they still reach the right caller."""
    mgr = msl_factory()
    with connect(host=HOST, port=mgr.port, disable_tls=True) as cxn:
        with pytest.raises(RuntimeError, match="the 'Nope' service does not exist"):
            cxn.link("Nope")
        assert "hostname" in cxn.identities()


def test_netmgr_service_shutdown_through_msl_manager(msl_factory):
    from lib_support import Shutdownable

    mgr = msl_factory()
    running = Running(Shutdownable("Stopper"), mgr.port)
    wait_for_services(mgr.port, "Stopper")
    cxn = msl.network.connect(host=HOST, port=mgr.port, disable_tls=True)
    try:
        link = cxn.link("Stopper")
        assert link.add(1, 2) == 3
        assert link.shutdown_service("bye") == [["bye"], {}]
        running.thread.join(5)
        assert not running.thread.is_alive()
        assert until(lambda: "Stopper" not in cxn.identities()["services"])
    finally:
        cxn.disconnect()
