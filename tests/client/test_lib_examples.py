"""The MSL-Network documentation's examples, ported by changing the imports, against netmgr."""
import threading
import time

import pytest

from lib_support import (HOST, BasicMath, Echo, MyArray, Shutdownable, beating,
                         collect_notifications, linked, serving, until, wait_for_services)
from netmgr.client import LinkedClient, connect
from netmgr.service import run_services


def test_echo(netmgr):
    with linked(netmgr.port, Echo()) as e:
        args, kwargs = e.echo(1, 2, x="hello", y="world")
        assert args == [1, 2]
        assert kwargs == {"x": "hello", "y": "world"}
        assert e.echo() == [[], {}]
        assert e.service_attributes == {"echo": "(*args, **kwargs)",
                                        "set_logging_level": "(level)"}
        with pytest.raises(TypeError, match="not JSON serializable"):
            e.echo(1 + 4j)


def test_basic_math_synchronous(netmgr):
    """Each request waits for its reply: the total is the sum of the sleeps (2.1 s)."""
    with linked(netmgr.port, BasicMath()) as bm:
        t0 = time.perf_counter()
        assert bm.add(1, 2) == 3
        assert bm.subtract(1, 2) == -1
        assert bm.multiply(1, 2) == 2
        assert bm.divide(1, 2) == 0.5
        assert bm.ensure_positive(1) is True
        assert bm.power(2, 4) == 16
        dt = time.perf_counter() - t0
        assert 2.1 <= dt < 3.5
        assert bm.euler() == 2.718281828459045
        assert bm.pi() == 3.141592653589793
        with pytest.raises(RuntimeError, match=r"ValueError: The value is < 0"):
            bm.ensure_positive(-1)
        with pytest.raises(RuntimeError, match="Cannot request a private attribute"):
            bm._password()


def test_basic_math_asynchronous(netmgr):
    """Futures: the total is the longest sleep (0.6 s), about 3.5 times faster than 2.1 s."""
    with linked(netmgr.port, BasicMath()) as bm:
        t0 = time.perf_counter()
        add = bm.add(1, 2, asynchronous=True)
        subtract = bm.subtract(1, 2, asynchronous=True)
        multiply = bm.multiply(1, 2, asynchronous=True)
        divide = bm.divide(1, 2, asynchronous=True)
        is_positive = bm.ensure_positive(1, asynchronous=True)
        power = bm.power(2, 4, asynchronous=True)
        assert add.request == "BasicMath.add"
        assert [add.result(), subtract.result(), multiply.result(), divide.result(),
                is_positive.result(), power.result()] == [3, -1, 2, 0.5, True, 16]
        dt = time.perf_counter() - t0
        assert 0.6 <= dt < 1.3


def test_basic_math_sync_and_async_on_one_link(netmgr):
    with linked(netmgr.port, BasicMath()) as bm:
        t0 = time.perf_counter()
        future = bm.subtract(5, 3, asynchronous=True)
        assert bm.add(1, 2) == 3  # runs while subtract sleeps
        assert future.result() == 2
        assert time.perf_counter() - t0 < 0.45


def test_my_array(netmgr):
    with linked(netmgr.port, MyArray()) as my_array:
        linspace = my_array.linspace(0, 1)
        assert len(linspace) == 100
        assert linspace[0] == 0 and linspace[-1] == pytest.approx(1)
        assert my_array.scalar_multiply(2, linspace) == [2 * x for x in linspace]
        big = my_array.linspace(0, 1, n=1_000_000, asynchronous=True)
        assert len(big.result(30)) == 1_000_000


def test_heartbeat_notifications(netmgr):
    heartbeat = beating(rate=50)
    with serving(netmgr.port, heartbeat, Echo()), \
            connect(host=HOST, port=netmgr.port, disable_tls=True) as cxn:
        hb = cxn.link("Heartbeat")
        e = cxn.link("Echo")
        beats = collect_notifications(hb)
        echoes = collect_notifications(e)
        assert until(lambda: len(beats) >= 5)
        hb.reset()
        assert until(lambda: len(beats) >= 10)
        values = [args[0] for args, kwargs in beats]
        assert 0 in values[1:]  # the counter restarted after reset()
        hb.kill()
        time.sleep(0.2)
        count = len(beats)
        time.sleep(0.2)
        assert len(beats) == count  # killed: no more beats
        assert echoes == []  # only Clients linked with the emitting Service are notified
        with LinkedClient("Heartbeat", host=HOST, port=netmgr.port, disable_tls=True) as lc:
            got = []
            lc.notification_handler = lambda *a, **k: got.append(a)
            lc.set_heart_rate(50)
            lc.reset()
            heartbeat._alive = True  # kill() ended the task: emit again
            threading.Thread(target=_run_coroutine, args=(heartbeat.emit(),),
                             daemon=True).start()
            assert until(lambda: len(got) >= 3)


def _run_coroutine(coro):
    import asyncio

    asyncio.run(coro)


def test_linked_client(netmgr):
    with serving(netmgr.port, Echo()):
        link = LinkedClient("Echo", name="foobar", host=HOST, port=netmgr.port, disable_tls=True)
        assert link.echo(1, x=2) == [[1], {"x": 2}]
        assert set(link.service_attributes) == {"echo", "set_logging_level"}
        assert link.name == "foobar"
        assert link.address_manager == f"{HOST}:{netmgr.port}"
        assert link.service_max_clients == -1
        assert link.service_language.startswith("Python")
        assert str(link.client) in link.identities()["clients"]
        with pytest.raises(RuntimeError, match="'Echo' object has no attribute 'nope'"):
            link.nope()
        assert repr(link).startswith("<Link[name=foobar] with Echo[")
        spawned = link.spawn()
        assert str(spawned.client).startswith("LinkedClient[")
        assert spawned.echo(3) == [[3], {}]
        spawned.disconnect()
        link.unlink()
        assert repr(link).startswith("<Un-Linked[name=foobar] from Echo[")
        with pytest.raises(AttributeError, match="the link has been broken"):
            link.echo(1)
        link.disconnect()
        assert not link.is_connected()


def test_linked_client_service_not_available(netmgr):
    with pytest.raises(TimeoutError, match="The 'Nope' service is not available"):
        LinkedClient("Nope", host=HOST, port=netmgr.port, disable_tls=True, timeout=0.5)


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_run_services_with_shutdown_service(tls, netmgr_home, monkeypatch, tmp_path):
    """run_services() starts a Manager and two Services and returns once both shut down."""
    from conftest import free_port

    monkeypatch.setenv("NETMGR_HOME", str(netmgr_home))
    port = free_port()
    done = threading.Event()
    errors = []

    def run():
        try:
            run_services(Shutdownable("AddService"), Shutdownable("SubtractService"),
                         host=HOST, port=port, disable_tls=not tls, password_manager="<hey~you>",
                         log_file=str(tmp_path / "manager.log"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    kw = dict(host=HOST, port=port, disable_tls=not tls, password_manager="<hey~you>")
    assert until(lambda: _services_up(port, kw, "AddService", "SubtractService"), timeout=30)
    a = LinkedClient("AddService", **kw)
    s = LinkedClient("SubtractService", **kw)
    assert a.add(1, 2) == 3
    assert set(a.service_attributes) == {"add", "set_logging_level", "shutdown_service"}
    assert a.shutdown_service(1, x=9) == [[1], {"x": 9}]
    assert until(lambda: "AddService" not in s.identities()["services"])
    with pytest.raises(RuntimeError):
        s.client.link("AddService")
    assert s.add(2, 2) == 4
    assert not done.is_set()
    s.shutdown_service()
    assert done.wait(15), "run_services() did not return after the last Service left"
    assert errors == []
    a.disconnect()
    s.disconnect()


def _services_up(port, kw, *names):
    try:
        wait_for_services(port, *names, timeout=0.5,
                          **{k: v for k, v in kw.items() if k != "port"})
        return True
    except (OSError, TimeoutError):
        return False
