"""The live status page (issue 13) in a real browser: Debian's headless ``chromium`` driven by
Selenium through Debian's ``chromium-driver`` (never a driver or browser that Selenium Manager
would download: the service is given its executable, so Selenium Manager is not run).

A real ``netmgr start --http 127.0.0.1:0`` serves the page; real msl-network 1.0 Services run as
child processes so that one can be killed with SIGKILL; a netmgr Client links and calls them.
Every wait is a WebDriverWait on the page's DOM (or on the Manager's start-up line), never a sleep.

``NETMGR_SCREENSHOTS=1`` also writes docs/img/status-page.png (a laptop, light) and
docs/img/status-page-phone.png (375x812, dark), which docs/observability.md shows; otherwise the
screenshots go to the test's temporary directory only.
"""
import math
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import free_port
from netmgr.client import connect

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"the browser test needs Debian's chromium and chromium-driver ({CHROMIUM}, "
                f"{CHROMEDRIVER}): apt-get install chromium chromium-driver (.ci/run does)",
                allow_module_level=True)

pytestmark = pytest.mark.usefixtures("watchdog")
TEST_DEADLINE = 300

LISTENING = re.compile(r"http_listening host=(\S+) port=(\d+)")
TESTS = pathlib.Path(__file__).resolve().parents[1]
DOCS_IMG = TESTS.parent / "docs" / "img"
SCREENSHOTS = os.environ.get("NETMGR_SCREENSHOTS") == "1"
WAIT = 20  # seconds a page change may take at most (a heartbeat is every 0.5 s here)
GONE_WITHIN = 2.0  # issue 13: a killed Service's row goes within 2 s

# msl-network 1.0 Services from tests/msl_services.py, each in a process of its own
SERVICE = """
import sys
sys.path.insert(0, {tests!r})
import msl_services
name, port = sys.argv[1], int(sys.argv[2])
service = getattr(msl_services, name)()
service.start(host="127.0.0.1", port=port, disable_tls=True)
"""


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--hide-scrollbars", "--force-color-profile=srgb",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-default-apps", "--disable-sync", "--lang=en-GB"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console
    driver = webdriver.Chrome(service=DriverService(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def services(netmgr_home):
    """``start(name, port)``: an msl-network 1.0 Service of tests/msl_services.py as a child
    process (killed at teardown if the test did not)."""
    started = []
    env = dict(os.environ, MSL_NETWORK_HOME=str(netmgr_home / "msl"))

    def start(name, port):
        proc = subprocess.Popen([sys.executable, "-c", SERVICE.format(tests=str(TESTS)), name, str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


class Traffic:
    """Requests from a Client thread until stopped, ``per_second`` on average, rising and
    falling over half a minute so that the charts have a shape (the pacing wait is the load's
    shape, not a synchronisation)."""

    def __init__(self, call, per_second, phase=0.0):
        self.call, self.per_second, self.phase = call, per_second, phase
        self.count = 0
        self.error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="traffic")
        self._thread.start()

    def _run(self):
        start = time.monotonic()
        try:
            while not self._stop.is_set():
                self.call(self.count)
                self.count += 1
                swing = 1 + 0.6 * math.sin((time.monotonic() - start) / 5 + self.phase)
                self._stop.wait(1.0 / (self.per_second * swing))
        except Exception as exc:  # noqa: BLE001 -- reported by the test
            self.error = exc

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        assert self.error is None, self.error


# ------------------------------------------------------------------------------ page helpers
def row(driver, selector):
    """The elements that match, [] if none (a row that was just replaced is not there)."""
    return driver.find_elements(By.CSS_SELECTOR, selector)


def cell_text(driver, selector):
    try:
        found = row(driver, selector)
        return found[0].text if found else None
    except StaleElementReferenceException:
        return None


def cell_int(driver, selector):
    text = cell_text(driver, selector)
    return int(text) if text and text.isdigit() else None


def service_row(name):
    return f'#services tr[data-service="{name}"]'


def wait_for(driver, condition, what, timeout=WAIT, poll=0.05):
    return WebDriverWait(driver, timeout, poll_frequency=poll).until(
        lambda d: condition(d), message=f"the page did not show {what} within {timeout} s")


def stream_state(driver):
    return driver.find_element(By.ID, "stream-state").get_attribute("data-state")


def charted_points(driver):
    """How many heartbeats the total rate chart holds (its ``data-points``)."""
    return int(driver.find_element(By.ID, "rate-chart").get_attribute("data-points") or 0)


def painted(driver):
    """Return after the browser painted twice (canvas redraws run in an animation frame)."""
    driver.execute_async_script(
        "const done = arguments[0];"
        "requestAnimationFrame(() => requestAnimationFrame(() => done(true)));")


def screenshot(driver, tmp_path, name, width, height, scale, scheme, full_page=False):
    """Save one screenshot in tmp_path, and in docs/img with NETMGR_SCREENSHOTS=1."""
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                           {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
    metrics = {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": width < 600}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    painted(driver)
    if full_page:
        metrics["height"] = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        painted(driver)
    path = tmp_path / name
    assert driver.save_screenshot(str(path)), path
    if SCREENSHOTS:
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / name)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return path


# ------------------------------------------------------------------------------ the test
def test_status_page_follows_services_clients_and_requests_live(netmgr_factory, services, browser,
                                                                 tmp_path):
    mgr = netmgr_factory("--http", "127.0.0.1:0", env={"NETMGR_HEARTBEAT_INTERVAL": "0.5"})
    http_port = int(LISTENING.search(mgr.output).group(2))
    driver = browser
    driver.get(f"http://127.0.0.1:{http_port}/")
    wait_for(driver, lambda d: stream_state(d) == "live", "the event stream live")
    assert driver.find_element(By.ID, "manager-name").text.startswith("Manager[")
    # a mark in this document: still there at the end, so nothing below reloaded the page
    driver.execute_script("window.netmgrTestMark = 'no reload';")

    # a Service connects: its row appears without a reload, with what it registered
    echo = services("Echo", mgr.port)
    wait_for(driver, lambda d: row(d, service_row("Echo")), "the Echo row")
    assert "echo" in cell_text(driver, service_row("Echo") + " td.attributes summary")
    assert re.fullmatch(r"\S+:\d+", cell_text(driver, service_row("Echo") + " td.address"))
    assert row(driver, '#events li[data-type="service"][data-event="registered"]')
    services("BasicMath", mgr.port)
    wait_for(driver, lambda d: row(d, service_row("BasicMath")), "the BasicMath row")

    # a Client links and calls: it appears in both tables and the request count rises
    with connect(name="lab-pc", host="127.0.0.1", port=mgr.port, disable_tls=True) as lab:
        echo_link = lab.link("Echo")
        math_link = lab.link("BasicMath")
        client = f'#clients tr[data-client="{lab}"]'
        wait_for(driver, lambda d: row(d, client), f"the Client row of {lab}")
        wait_for(driver, lambda d: str(lab) in (cell_text(d, service_row("Echo") + " td.clients") or ""),
                 "the Client in the Echo row's clients")
        for i in range(5):
            assert echo_link.echo(i) == [[i], {}]
        wait_for(driver, lambda d: (cell_int(d, service_row("Echo") + " td.requests") or 0) >= 5,
                 "Echo's request count rise to 5")
        before = cell_int(driver, service_row("Echo") + " td.requests")
        for i in range(7):
            echo_link.echo(i)
        wait_for(driver, lambda d: (cell_int(d, service_row("Echo") + " td.requests") or 0) >= before + 7,
                 "Echo's request count rise again")
        assert "echo" in cell_text(driver, client + " td.links").lower()

        # a lock, some traffic and an error, for the pictures (and the charts' data)
        math_link.acquire_lock()
        wait_for(driver, lambda d: str(lab) in (cell_text(d, service_row("BasicMath") + " td.lock") or ""),
                 "the lock holder")
        with connect(name="logger", host="127.0.0.1", port=mgr.port, disable_tls=True) as logger:
            logger_echo = logger.link("Echo")
            with pytest.raises(Exception, match="The value is < 0"):
                math_link.ensure_positive(-1)
            loads = [Traffic(lambda i: math_link.add(i, 1), 40),
                     Traffic(lambda i: logger_echo.echo(i), 15, phase=2)]
            try:
                charted = 90 if SCREENSHOTS else 4  # 45 s of heartbeats for the pictures
                wait_for(driver, lambda d: charted_points(d) >= charted, f"{charted} heartbeats charted",
                         timeout=60)
                wait_for(driver, lambda d: (cell_int(d, service_row("BasicMath") + " td.errors") or 0) >= 1,
                         "BasicMath's error")
                assert float(cell_text(driver, service_row("BasicMath") + " td.rate")) > 0
                screenshot(driver, tmp_path, "status-page.png", 1280, 900, 1, "light", full_page=True)
                screenshot(driver, tmp_path, "status-page-phone.png", 375, 812, 2, "dark")
            finally:
                for load in loads:
                    load.stop()

        # names are text, never markup: a Client named like an HTML element is shown as it is
        with connect(name="<img src=x id=injected>", host="127.0.0.1", port=mgr.port,
                     disable_tls=True) as odd:
            odd_row = f'#clients tr[data-client="{odd}"]'
            wait_for(driver, lambda d: row(d, odd_row), "the odd Client's row")
            assert row(driver, odd_row + " th")[0].text == str(odd)
            assert "<img src=x id=injected>" in driver.find_element(By.ID, "events").text
            assert not driver.find_elements(By.ID, "injected")
        wait_for(driver, lambda d: not row(d, odd_row), "the odd Client's row go")

        # the Service is killed: its row goes within 2 s of the kill
        killed = time.monotonic()
        echo.send_signal(signal.SIGKILL)
        wait_for(driver, lambda d: not row(d, service_row("Echo")), "the Echo row go",
                 timeout=GONE_WITHIN, poll=0.02)
        took = time.monotonic() - killed
        assert took <= GONE_WITHIN, took
        print(f"the killed Service's row went {took:.3f} s after the kill")
        assert row(driver, '#events li[data-type="service"][data-event="gone"]')
        assert row(driver, service_row("BasicMath")), "only the killed Service's row goes"
        wait_for(driver, lambda d: "echo" not in (cell_text(d, client + " td.links") or "").lower(),
                 "the Client's link to Echo go")

    assert driver.execute_script("return window.netmgrTestMark") == "no reload"
    # no script error, no refused resource (the endpoint's Content-Security-Policy), no 404
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    # the Manager stops: the page says the stream is reconnecting
    mgr.stop()
    wait_for(driver, lambda d: stream_state(d) in ("reconnecting", "offline"), "the stream reconnecting")
    assert "reconnecting" in driver.find_element(By.ID, "stream-state").text


def test_status_page_resyncs_after_the_manager_restarts(netmgr_factory, services, browser):
    """The stream drops: the page says so, the browser reconnects by itself (SSE ``retry``), and
    the page rebuilds its tables from /api/status: what went while it was away is gone, though
    no event said so (the first Manager is killed, so it publishes nothing)."""
    bind = f"127.0.0.1:{free_port()}"
    first = netmgr_factory("--http", bind, env={"NETMGR_HEARTBEAT_INTERVAL": "0.5"})
    driver = browser
    driver.get(f"http://{bind}/")
    wait_for(driver, lambda d: stream_state(d) == "live", "the event stream live")
    driver.execute_script("window.netmgrTestMark = 'no reload';")
    services("Echo", first.port)
    wait_for(driver, lambda d: row(d, service_row("Echo")), "the Echo row")
    first_name = driver.find_element(By.ID, "manager-name").text

    first.stop(sig=signal.SIGKILL)  # it says nothing more: no "service gone" reaches the page
    wait_for(driver, lambda d: stream_state(d) == "reconnecting", "the stream reconnecting")
    assert driver.find_element(By.ID, "stream-state").text == "reconnecting…"
    assert row(driver, service_row("Echo")), "the last known rows stay (dimmed) while away"

    second = netmgr_factory("--http", bind, env={"NETMGR_HEARTBEAT_INTERVAL": "0.5"})
    wait_for(driver, lambda d: stream_state(d) == "live", "the stream live again")
    wait_for(driver, lambda d: not row(d, service_row("Echo")), "the stale Echo row go")
    name = driver.find_element(By.ID, "manager-name").text
    assert name != first_name and name.endswith(f":{second.port}]"), name
    services("BasicMath", second.port)
    wait_for(driver, lambda d: row(d, service_row("BasicMath")), "a Service of the new Manager")
    assert driver.execute_script("return window.netmgrTestMark") == "no reload"
