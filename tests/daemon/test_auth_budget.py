"""The login budget per address and the global brake, without sockets (a fake clock)."""
import gevent
import pytest

from netmgr.daemon.auth import Attempt, Brake, Throttle


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


def test_running_attempts_count_against_the_address_budget(clock):
    throttle = Throttle(max_failures=3, lockout=30, clock=clock)
    for _ in range(3):
        assert not throttle.busy("a")
        throttle.reserve("a")
    assert throttle.busy("a") and not throttle.busy("b")  # another address has its own budget
    assert throttle.retry_after("a") == 0  # busy, not locked out: a new attempt waits
    throttle.succeeded("a")
    assert not throttle.busy("a")


def test_parallel_failures_lock_the_address_out_for_the_lockout(clock):
    throttle = Throttle(max_failures=3, lockout=30, clock=clock)
    attempts = [Attempt(throttle, "a").__enter__() for _ in range(3)]
    for attempt in attempts:
        attempt.failed()
    assert throttle.retry_after("a") == 30
    clock.now += 29
    assert throttle.retry_after("a") == pytest.approx(1)
    clock.now += 1.5
    assert throttle.retry_after("a") == 0 and not throttle.busy("a")


def test_an_abandoned_attempt_gives_its_place_back(clock):
    throttle = Throttle(max_failures=1, clock=clock)
    with Attempt(throttle, "a"):
        assert throttle.busy("a")
    assert not throttle.busy("a") and throttle.retry_after("a") == 0


def test_the_brake_engages_over_its_rate_and_paces_checks_one_at_a_time(clock):
    brake = Brake(rate=3, window=60, pace=0.05, clock=clock)
    for _ in range(3):
        brake.failed()
    assert not brake.engaged()
    brake.failed()
    assert brake.engaged() and not brake.engaged(("user", "alice"))
    running, most = [0], [0]

    def verify():
        running[0] += 1
        most[0] = max(most[0], running[0])
        gevent.sleep(0.01)
        running[0] -= 1
        return True

    checks = [gevent.spawn(brake.check, verify) for _ in range(4)]
    gevent.joinall(checks, timeout=10)
    assert all(g.value is True for g in checks)  # everyone still gets a verdict
    assert most[0] == 1  # one at a time while engaged
    clock.now += 61
    assert not brake.engaged()


def test_the_brake_per_username_leaves_other_users_unpaced(clock):
    brake = Brake(rate=2, clock=clock)
    for _ in range(3):
        brake.failed(("user", "alice"))
    assert brake.engaged(("user", "alice")) and not brake.engaged(("user", "bob"))
