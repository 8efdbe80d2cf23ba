"""netmgr.client and netmgr.service: msl-network 1.0's API and texts, and what netmgr adds."""
import concurrent.futures
import os
import threading
import time

import pytest

from conftest import free_port
from lib_support import (HOST, Echo, Toolbox, beating, collect_notifications, env_home, linked,
                         start_service, until)
from netmgr.client import MessageTooLargeError, connect, filter_client_connect_kwargs
from netmgr.service import Service, filter_run_forever_kwargs, filter_service_start_kwargs


@pytest.fixture
def toolbox(netmgr):
    running = start_service(netmgr.port, Toolbox())
    yield netmgr
    running.stop()


@pytest.fixture
def cxn(toolbox):
    c = connect(host=HOST, port=toolbox.port, disable_tls=True)
    yield c
    c.disconnect()


# ------------------------------------------------------------------------------------ connect

def test_no_manager_plaintext():
    port = free_port()
    with pytest.raises(ConnectionError, match=rf"Cannot connect to {HOST}:{port}$"):
        connect(host=HOST, port=port, disable_tls=True)


def test_no_manager_tls_localhost(tmp_path, monkeypatch):
    env_home(monkeypatch, tmp_path / "home")
    with pytest.raises(ConnectionError, match=r"Make sure a Manager is running on this computer$"):
        connect(host="localhost", port=free_port())


def test_tls_client_plaintext_manager(netmgr, tmp_path, monkeypatch):
    env_home(monkeypatch, tmp_path / "home")
    with pytest.raises(ConnectionError, match=r"Try setting disable_tls=True$"):
        connect(host=HOST, port=netmgr.port)


def test_plaintext_client_tls_manager(netmgr_factory):
    mgr = netmgr_factory(tls=True)
    with pytest.raises(ConnectionError, match="You have TLS disabled"):
        connect(host=HOST, port=mgr.port, disable_tls=True, timeout=1)


def test_tls_with_cached_certificate(netmgr_factory, netmgr_home, monkeypatch):
    mgr = netmgr_factory(tls=True)
    env_home(monkeypatch, netmgr_home)  # the Manager's certs/127.0.0.1.crt is the cached one
    running = start_service(mgr.port, Echo(), disable_tls=False)
    try:
        with connect(host=HOST, port=mgr.port) as c:
            assert c.link("Echo").echo("tls") == [["tls"], {}]
    finally:
        running.stop()


def test_trust_on_first_use(netmgr_factory, tmp_path, monkeypatch, capsys):
    mgr = netmgr_factory(tls=True)
    home = tmp_path / "client-home"
    env_home(monkeypatch, home)
    cached = home / "certs" / f"{HOST}.crt"

    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    with pytest.raises(ConnectionRefusedError, match="SSL certificate required"):
        connect(host=HOST, port=mgr.port)
    out = capsys.readouterr().out
    assert f"The certificate for {HOST} is not cached in the registry." in out
    assert "SHA256: " in out and "SHA1:   " in out
    sha256 = out.split("SHA256: ")[1].split()[0]
    assert len(sha256.split(":")) == 32
    assert not cached.exists()

    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    with connect(host=HOST, port=mgr.port) as c:
        assert c.identities()["port"] == mgr.port
    assert cached.exists()
    capsys.readouterr()
    with connect(host=HOST, port=mgr.port):  # cached now: no prompt
        pass
    assert "not cached" not in capsys.readouterr().out


def test_auto_save(netmgr_factory, tmp_path, monkeypatch):
    mgr = netmgr_factory(tls=True)
    env_home(monkeypatch, tmp_path / "h")
    with connect(host=HOST, port=mgr.port, auto_save=True):
        pass
    assert (tmp_path / "h" / "certs" / f"{HOST}.crt").is_file()


def test_wrong_certificate(netmgr_factory, tmp_path, monkeypatch):
    mgr = netmgr_factory(tls=True)
    env_home(monkeypatch, tmp_path / "h")
    from netmgr import crypto

    key = tmp_path / "other.key"
    wrong = tmp_path / "wrong-certificate.crt"
    crypto.generate_key(str(key))
    crypto.generate_certificate(str(wrong), str(key))
    with pytest.raises(ConnectionError) as info:
        connect(host=HOST, port=mgr.port, cert_file=str(wrong))
    text = str(info.value)
    assert "Perhaps the Network Manager is using a new certificate" in text
    assert f"{HOST}:{mgr.port}" in text and "wrong-certificate.crt" in text


def test_manager_password(netmgr_factory):
    mgr = netmgr_factory("-P", "secret pw")
    with pytest.raises(ValueError, match="Wrong Manager password"):
        connect(host=HOST, port=mgr.port, disable_tls=True, password_manager="x")
    with connect(host=HOST, port=mgr.port, disable_tls=True, password_manager="secret pw") as c:
        assert c.is_connected()


def test_unknown_extra_keyword():
    with pytest.raises(TypeError, match="reconect"):
        connect(reconect=True)


def test_filters():
    kw = dict(name="n", host="h", port=1, auth_password="pw", reconnect=True, log_file="x")
    assert filter_client_connect_kwargs(**kw) == dict(name="n", host="h", port=1,
                                                      password_manager="pw", reconnect=True)
    assert filter_service_start_kwargs(**kw)["password_manager"] == "pw"
    assert filter_run_forever_kwargs(password_manager="pw", port=2, name="x") == \
        dict(port=2, auth_password="pw")


# ------------------------------------------------------------------------------------ requests

def test_identity_and_names(cxn, toolbox):
    assert str(cxn).startswith("Client[") and cxn.port
    assert cxn.address_manager == f"{HOST}:{toolbox.port}"
    identity = cxn.identities()
    assert str(cxn) in identity["clients"]
    text = cxn.identities(as_string=True)
    assert text.splitlines()[0] == f"Manager[{identity['hostname']}:{toolbox.port}]"
    assert "Toolbox[" in text and "slow(seconds=5.0)" in text
    attributes = identity["services"]["Toolbox"]["attributes"]
    assert attributes["secret"] == 1
    for hidden in ("request", "stop_service", "start", "emit_notification", "_private"):
        assert hidden not in attributes
    assert repr(cxn).startswith("<Client manager=")


def test_error_reply_text(cxn, toolbox):
    tb = cxn.link("Toolbox")
    with pytest.raises(RuntimeError) as info:
        tb.kaboom()
    assert str(info.value) == (f"Manager[{HOST}:{toolbox.port}] returned the following "
                               f"exception:\n\nValueError: kaboom")
    with pytest.raises(RuntimeError, match="Cannot request a private attribute"):
        tb._private()
    with pytest.raises(RuntimeError, match="controls the Service"):
        tb.stop_service()
    with pytest.raises(RuntimeError, match="is not JSON serializable"):
        tb.complex()
    assert tb.with_to_json() == {"real": 1.0, "imag": -1.0}
    assert tb.secret() == 1
    with pytest.raises(RuntimeError, match="the 'Nope' service does not exist"):
        cxn.link("Nope")
    assert tb.big(10) == "x" * 10  # still working after all those errors


def test_request_property(cxn):
    tb = cxn.link("Toolbox")
    assert tb.who() == [str(cxn), "who"]


def test_timeouts(cxn, toolbox):
    tb = cxn.link("Toolbox")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        tb.slow(1, timeout=0.2)
    assert time.monotonic() - t0 < 0.6
    assert tb.big(3) == "xxx"  # the late reply is dropped, the connection goes on
    with connect(host=HOST, port=toolbox.port, disable_tls=True, request_timeout=0.2) as c:
        with pytest.raises(TimeoutError):
            c.link("Toolbox").slow(1)
        future = c.link("Toolbox").slow(1, asynchronous=True)
        with pytest.raises(TimeoutError):
            future.result(5)  # asynchronous requests get the default timeout too


def test_asynchronous(cxn):
    tb = cxn.link("Toolbox")
    futures = [tb.slow(0.2, asynchronous=True) for _ in range(6)]
    t0 = time.monotonic()
    done, not_done = concurrent.futures.wait(futures, timeout=5)
    assert not not_done and time.monotonic() - t0 < 1.0
    assert [f.result() for f in futures] == [0.2] * 6
    failing = tb.kaboom(asynchronous=True)
    with pytest.raises(RuntimeError, match="kaboom"):
        failing.result(5)
    with pytest.raises(ValueError, match="Cannot make asynchronous requests to a Manager"):
        cxn.admin_request("port", asynchronous=True)


def test_many_threads_share_a_client(cxn):
    tb = cxn.link("Toolbox")
    errors = []

    def work(n):
        try:
            for i in range(50):
                assert tb.big(n + i % 3) == "x" * (n + i % 3)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    slow = tb.slow(0.3, asynchronous=True)
    for t in threads:
        t.join(30)
    assert errors == []
    assert slow.result(5) == 0.3


def test_notifications_arrive_before_the_reply(cxn):
    tb = cxn.link("Toolbox")
    seen = collect_notifications(tb)
    assert tb.notify_then_reply(10) == 10
    assert seen == [((i,), {"index": i + 10}) for i in range(10)]  # all handled already
    future = tb.notify_then_reply(3, asynchronous=True)
    assert future.result(5) == 3
    assert len(seen) == 13


def test_slow_handler_does_not_block_reading(cxn):
    tb = cxn.link("Toolbox")
    release = threading.Event()
    tb.notification_handler = lambda *a, **k: release.wait(5)
    other = connect(host=HOST, port=cxn.address_manager.split(":")[1] and int(
        cxn.address_manager.split(":")[1]), disable_tls=True)
    try:
        future = tb.notify_then_reply(1, asynchronous=True)
        assert cxn.identities()["services"]  # replies keep flowing while the handler blocks
        assert not future.done()  # the reply waits for the handler of the notification
        release.set()
        assert future.result(5) == 1
    finally:
        other.disconnect()


def test_read_limit_on_the_client(toolbox):
    with connect(host=HOST, port=toolbox.port, disable_tls=True, read_limit=1024) as c:
        tb = c.link("Toolbox")
        t0 = time.monotonic()
        with pytest.raises(MessageTooLargeError, match=r"exceeds read_limit=1024 bytes"):
            tb.big(5000)
        assert time.monotonic() - t0 < 2
        assert tb.big(500) == "x" * 500


def test_read_limit_on_the_service(netmgr):
    running = start_service(netmgr.port, Echo(), read_limit=1024)
    try:
        with connect(host=HOST, port=netmgr.port, disable_tls=True) as c:
            e = c.link("Echo")
            t0 = time.monotonic()
            with pytest.raises(RuntimeError, match=r"more than the read_limit=1024 bytes"):
                e.echo("x" * 2000)
            assert time.monotonic() - t0 < 2
            assert e.echo(z="z" * 512) == [[], {"z": "z" * 512}]
    finally:
        running.stop()


def test_large_messages(cxn):
    tb = cxn.link("Toolbox")
    n = 20_000_000
    future = tb.big(n, asynchronous=True)
    assert tb.big(5) == "xxxxx"
    assert len(future.result(60)) == n


def test_context_managers(toolbox):
    with connect(host=HOST, port=toolbox.port, disable_tls=True) as c:
        with c.link("Toolbox") as tb:
            assert tb.secret() == 1
        assert repr(tb).startswith("<Un-Linked from Toolbox[")
        with pytest.raises(AttributeError, match="the link has been broken"):
            tb.secret()
        assert str(c) not in [] and c.is_connected()
    assert not c.is_connected()
    with pytest.raises(ConnectionError, match="Disconnected from Manager"):
        c.identities()
    c.disconnect()  # a second disconnect is a no-op


def test_spawn(cxn):
    other = cxn.spawn("Other")
    try:
        assert str(other).startswith("Other[")
        assert str(other) in cxn.identities()["clients"]
    finally:
        other.disconnect()


def test_locks_and_max_clients(netmgr):
    running = start_service(netmgr.port, Echo(max_clients=1))
    try:
        c1 = connect(host=HOST, port=netmgr.port, disable_tls=True)
        c2 = connect(host=HOST, port=netmgr.port, disable_tls=True)
        e1 = c1.link("Echo")
        assert e1.service_max_clients == 1
        with pytest.raises(RuntimeError, match="The maximum number of Clients"):
            c2.link("Echo")
        assert e1.acquire_lock() == [str(c1)]
        assert e1.release_lock() == []
        e1.unlink()
        e2 = c2.link("Echo")
        assert e2.echo(1) == [[1], {}]
        c1.disconnect()
        c2.disconnect()
    finally:
        running.stop()


def test_service_start_arguments():
    with pytest.raises(ValueError, match="Specify either"):
        Echo().start(password="abc", password_manager="xyz")
    with pytest.raises(TypeError, match="unexpected"):
        Echo().start(recnnect=True)


def test_service_identity_and_ignore_attributes():
    class S(Service):
        constant = 5

        def method(self, x: int, y=2) -> int:
            return x

        def hidden(self):
            pass

    s = S(name="Named", max_clients=0, ignore_attributes="hidden")
    identity = s._generate_identity()
    assert identity["name"] == "Named" and identity["max_clients"] == -1
    assert identity["attributes"] == {"constant": 5, "method": "(x: int, y=2) -> int",
                                      "set_logging_level": "(level)"}
    assert identity["type"] == "service"


def test_duplicate_service_name_is_reported(netmgr):
    running = start_service(netmgr.port, Echo())
    try:
        with pytest.raises(ConnectionError, match="already running"):
            Echo().start(host=HOST, port=netmgr.port, disable_tls=True)
    finally:
        running.stop()


def test_shutdown_manager_disconnects_everyone(netmgr_factory, netmgr_home):
    """Admin shutdown (login challenge inline): both Clients end up disconnected."""
    import subprocess
    import sys

    db = str(netmgr_home / "manager.sqlite3")
    env = dict(os.environ, NETMGR_HOME=str(netmgr_home))
    add = subprocess.run([sys.executable, "-c",
                          "from msl.network.cli import main; main()", "user", "add", "admin",
                          "--password", "whatever", "--admin", "--database", db],
                         env=env, capture_output=True, text=True)
    if add.returncode != 0:
        pytest.skip(f"cannot create an admin user: {add.stderr}")
    mgr = netmgr_factory("-d", db)
    c1 = connect(host=HOST, port=mgr.port, disable_tls=True, username="admin",
                 password="whatever")
    c2 = connect(host=HOST, port=mgr.port, disable_tls=True)
    assert c1.admin_request("port") == mgr.port
    assert c1.admin_request("shutdown_manager") is None
    assert until(lambda: not c1.is_connected(), timeout=5)
    assert until(lambda: not c2.is_connected(), timeout=5)
    c1.disconnect()
    c2.disconnect()


# ------------------------------------------------------------------------------------ API parity

def _api_pairs():
    import msl.network
    import msl.network.client
    import msl.network.manager

    import netmgr.client
    import netmgr.service

    pairs = [(msl.network.connect, netmgr.client.connect),
             (msl.network.Service.__init__, netmgr.service.Service.__init__),
             (msl.network.Service.start, netmgr.service.Service.start),
             (msl.network.manager.run_forever, netmgr.service.run_forever),
             (msl.network.manager.run_services, netmgr.service.run_services),
             (msl.network.client.LinkedClient.__init__, netmgr.client.LinkedClient.__init__)]
    for old_cls, new_cls in ((msl.network.client.Client, netmgr.client.Client),
                             (msl.network.client.Link, netmgr.client.Link),
                             (msl.network.client.LinkedClient, netmgr.client.LinkedClient),
                             (msl.network.Service, netmgr.service.Service)):
        for name in dir(old_cls):
            if name.startswith("_"):
                continue
            pairs.append((getattr(old_cls, name), getattr(new_cls, name)))
    return pairs


@pytest.mark.parametrize("old,new", _api_pairs(),
                         ids=lambda f: getattr(f, "__qualname__", repr(f)))
def test_public_api_matches_msl_network(old, new):
    """Every public name of 1.0 exists, with 1.0's parameters (names, kinds, defaults)."""
    import inspect

    if isinstance(old, property) or not callable(old):
        assert isinstance(new, property) == isinstance(old, property)
        return
    old_params = inspect.signature(old).parameters
    new_params = inspect.signature(new).parameters
    for name, p in old_params.items():
        if p.kind is p.VAR_KEYWORD:
            assert any(q.kind is q.VAR_KEYWORD for q in new_params.values())
            continue
        assert name in new_params, f"{name} missing from {new}"
        q = new_params[name]
        assert q.kind == p.kind, name
        if name in ("port",):
            assert q.default == p.default == 1875
        else:
            assert q.default == p.default, name


def test_one_import_line_ports_a_program():
    """``from netmgr import connect, Service, ...`` (docs/client.md) gives the library's own
    objects, as do 1.0's module paths ``netmgr.client`` and ``netmgr.service``."""
    import netmgr
    import netmgr.client
    import netmgr.service

    for name in ("connect", "Client", "Link", "LinkedClient", "Service", "run_services",
                 "run_forever"):
        assert getattr(netmgr, name) is getattr(netmgr.client, name), name
    for name in ("Service", "run_services", "run_forever"):
        assert getattr(netmgr.service, name) is getattr(netmgr.client, name), name


def test_tls_concurrency_and_large_messages(netmgr_factory, netmgr_home, monkeypatch):
    """Over TLS many threads share one Client while large replies stream in."""
    mgr = netmgr_factory(tls=True)
    env_home(monkeypatch, netmgr_home)
    running = start_service(mgr.port, Toolbox(), disable_tls=False)
    errors = []
    try:
        with connect(host=HOST, port=mgr.port) as c:
            tb = c.link("Toolbox")
            big = [tb.big(3_000_000, asynchronous=True) for _ in range(3)]

            def work(n):
                try:
                    for i in range(30):
                        assert tb.big(n + i) == "x" * (n + i)
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)
            threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert errors == []
            assert [len(f.result(60)) for f in big] == [3_000_000] * 3
    finally:
        running.stop()


def test_notifications_between_calls_are_delivered_promptly(netmgr):
    with linked(netmgr.port, beating(rate=100)) as hb:
        seen = collect_notifications(hb)
        for _ in range(20):
            hb.reset()  # calls keep the reading role busy with the calling thread
        n = len(seen)
        time.sleep(0.3)  # no calls: the background reader delivers the beats
        assert len(seen) >= n + 10
