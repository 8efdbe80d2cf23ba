"""msl-network 1.0's own manager-facing tests, run unchanged against netmgr (issue 10, item 8).

Where the pieces come from:

* The test files come from the msl-network 1.0.0 sdist on PyPI, fetched with ``pip download``
  once into pytest's cache and checked against its sha256.
* The sdist does not ship 1.0's ``conftest.py``, whose ``Manager`` helper the tests drive; it
  exists only in the git tag. ``msl-network-1.0.0-conftest.py`` next to this file is that file
  byte for byte (tag v1.0.0, commit 07f1cf8b; checked by its sha256 below), never edited here.

The patch, applied to a temporary copy at test time: the helper's one start command runs
``python -m netmgr.launcher start`` instead of ``msl-network start``, with the same options; and
where ``netstat`` (net-tools) is missing, its port probe reads ``/proc/net/tcp`` instead.

A 1.0 test file is manager-facing when its tests start a Manager through ``conftest.Manager``;
such a file runs whole, so its few tests that need no Manager (test_connect.py's no-Manager
cases, test_cli_start.py's argument errors) run too. test_run_services.py and
test_to_json_attrib.py are not run: they start 1.0's own Manager in-process through
``msl.network.run_services``, which no start command reaches (test_unlink.py's
test_unlink_linkedclient_max10 does the same, so it runs against 1.0, not netmgr). The other
files test 1.0's client library, CLI and database without a Manager.

Each file runs in its own pytest subprocess, in a private TMPDIR (the helper deletes
``$TMPDIR/.msl``) and process group, so a Manager left behind by a failure is stopped with it.
1.0's tests mostly wait (its example services sleep; test_services.py alone takes about 100 s
against 1.0 itself), so two files run at a time, the longest first: about 2.5 minutes in all.
"""
import hashlib
import os
import pathlib
import re
import signal
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor

import pytest

import netmgr

SDIST = "msl-network-1.0.0.tar.gz"
SDIST_SHA256 = "32a4153b292bd93c1040e0dd50fba4dca476d612614a22ed4792f860b058c712"
CONFTEST = pathlib.Path(__file__).with_name("msl-network-1.0.0-conftest.py")
CONFTEST_SHA256 = "cd307e5900524a5eeccc138822dec075a946bce84e05e2c7aee81c64c7be5c6e"
START_1_0 = "[sys.executable, '-c', 'from msl.network import cli; cli.main()', 'start',"
START_NETMGR = "[sys.executable, '-m', 'netmgr.launcher', 'start',"
# the longest first, so that the two runs at a time end together
MANAGER_FACING = ["test_services.py", "test_client.py", "test_connect.py", "test_emit_notification.py",
                  "test_large_request_reply.py", "test_linked_client.py", "test_lock.py",
                  "test_manager_multiple_lines.py", "test_unlink.py", "test_cli_start.py"]
JOBS = 2
FILE_TIMEOUT = 400  # seconds for one 1.0 test file; test_services.py takes about 140 s

# Appended to the copy: without netstat, 1.0's probe finds the port in /proc/net/tcp{,6}
# (any socket whose local port it is, as `netstat -an | grep :PORT` does).
PORT_PROBE = '''

# --- netmgr test-time patch: a port probe for machines without net-tools ---
def _proc_port_in_use(port):
    if port is None:
        return False
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(table) as fp:
                next(fp)
                if any(int(line.split()[1].rsplit(':', 1)[1], 16) == port for line in fp):
                    return True
        except OSError:
            pass
    return False


if shutil.which('netstat') is None and sys.platform != 'darwin':
    Manager.is_port_in_use = staticmethod(_proc_port_in_use)
'''

PYTEST_INI = r"""[pytest]
addopts = -p conftest -p no:cacheprovider
filterwarnings =
    ignore:Python \d\.\d+ support will be dropped in the next release of cryptography:UserWarning
"""


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_sdist(cache):
    """The sdist in `cache`, downloaded from PyPI by pip if it is not there yet."""
    sdist = cache / SDIST
    if not sdist.is_file() or sha256(sdist) != SDIST_SHA256:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:",
                               "--no-deps", "--dest", str(cache), "msl-network==1.0.0"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"pip download failed:\n{done.stdout}\n{done.stderr}"
    assert sha256(sdist) == SDIST_SHA256, f"{sdist} is not the msl-network 1.0.0 sdist"
    return sdist


def unpack_tests(sdist, dest):
    """Write the sdist's tests/*.py into `dest` (plain files only; no path from the archive is used)."""
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            match = re.fullmatch(r"msl-network-1\.0\.0/tests/(test_\w+\.py)", member.name)
            if member.isfile() and match:
                (dest / match.group(1)).write_bytes(tar.extractfile(member).read())


def patched_conftest():
    text = CONFTEST.read_text(encoding="utf-8")
    assert sha256(CONFTEST) == CONFTEST_SHA256, f"{CONFTEST.name} differs from 1.0's conftest.py"
    assert text.count(START_1_0) == 1, "1.0's start command not found in its conftest.py"
    return text.replace(START_1_0, START_NETMGR) + PORT_PROBE


@pytest.fixture(scope="module")
def suite(request, tmp_path_factory):
    """A directory laid out as 1.0's repository: the patched conftest.py and tests/."""
    cache = getattr(request.config, "cache", None)
    cache = (pathlib.Path(cache.mkdir("msl-network-1.0.0-sdist")) if cache is not None
             else tmp_path_factory.mktemp("sdist"))
    root = tmp_path_factory.mktemp("msl-suite")
    (root / "tests").mkdir()
    unpack_tests(fetch_sdist(cache), root / "tests")
    (root / "conftest.py").write_text(patched_conftest(), encoding="utf-8")
    (root / "pytest.ini").write_text(PYTEST_INI, encoding="utf-8")
    return root


def suite_env(root, tmp):
    """The environment of the 1.0 run: this netmgr first on the path, nothing of ours leaking in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NETMGR_", "MSL_NETWORK_", "PYTEST_")) and k != "PYTHONPATH"}
    # the netmgr under test, whether installed or not; NETMGR_CONFIG: a real /etc/netmgr must not leak in
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(pathlib.Path(netmgr.__file__).parents[1])])
    env.update(TMPDIR=str(tmp), NETMGR_CONFIG=os.devnull, PYTHONDONTWRITEBYTECODE="1")
    return env


def run_file(root, name, tmp):
    """Run one 1.0 test file in its own process group; return (exit code, output)."""
    output = tmp / "output.txt"
    with open(output, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "-c", str(root / "pytest.ini"),
                                 "--rootdir", str(root), "-rs", f"tests/{name}"],
                                cwd=root, env=suite_env(root, tmp), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(FILE_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = f"timeout after {FILE_TIMEOUT} s"
        finally:
            try:  # a Manager a failed test left running, or the hung run itself
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return code, output.read_text(errors="replace")


@pytest.fixture(scope="module")
def runs(request, suite, tmp_path_factory):
    """The selected files' runs, started JOBS at a time in MANAGER_FACING order: name -> Future."""
    selected = {item.callspec.params["name"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_msl_network_1_0_suite"}
    pool = ThreadPoolExecutor(JOBS)
    try:
        yield {name: pool.submit(run_file, suite, name, tmp_path_factory.mktemp(name[:-3]))
               for name in MANAGER_FACING if name in selected}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("name", MANAGER_FACING)
def test_msl_network_1_0_suite(runs, name):
    code, output = runs[name].result()
    summary = output.rstrip().splitlines()[-1] if output.strip() else "(no output)"
    print(f"msl-network 1.0 {name} against netmgr: {summary}")
    assert code == 0, f"msl-network 1.0 tests/{name} failed against netmgr (exit {code}):\n{output}"
