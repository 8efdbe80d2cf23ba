"""Issue 11, "the administrator's day": ``netmgr start`` and the database as an operator meets them.

Real processes (``python -m netmgr.launcher``) on real files in ``tmp_path``:

* a database that cannot be used is named, with what was being done, by every command that
  opens it; so is a home that cannot be created (even root cannot make a directory under a
  regular file);
* ``-l`` in a directory that does not exist is a usage error that creates nothing;
* a start that fails (a busy port, no users for ``--auth-login``) leaves no new file, and the
  files that were there before as they were;
* Ctrl-C at any moment ends a command with 130 and no traceback;
* SIGHUP opens the log file again at its path after logrotate renamed it.

Every wait is on a readiness line, a prompt, a file's content or a process exit; the only sleeps
choose the moment a signal is sent.
"""
import os
import pty
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ManagerProcess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JUNK = b"this is not an SQLite database, it is a text file that is long enough\n"
LOCAL = ("-H", "127.0.0.1")
WAIT = 30


pytestmark = pytest.mark.usefixtures("watchdog", "clean_env")




def argv(*args):
    return [sys.executable, "-m", "netmgr.launcher", *map(str, args)]


def netmgr(*args, home, input=None):
    """``netmgr ARGS`` to completion, with HOME `home`."""
    return subprocess.run(argv(*args), cwd=ROOT, input=input, capture_output=True, text=True,
                          env=dict(os.environ, NETMGR_HOME=str(home)), timeout=60)


def tree(path):
    """Every path under `path`, with the content of each file."""
    found = {}
    for top, dirs, files in os.walk(path):
        for name in dirs:
            found[os.path.join(top, name)] = None
        for name in files:
            with open(os.path.join(top, name), "rb") as f:
                found[os.path.join(top, name)] = f.read()
    return found


def wait_until(condition, what):
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def text_of(path):
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


# ------------------------------------------------------------------------------------ database

OPENERS = {
    "start": ("start", *LOCAL, "-p", "0", "--disable-tls"),
    "user add": ("user", "add", "bob", "-p", "pw of bob", "--bcrypt-rounds", "4"),
    "user list": ("user", "list"),
    "hostname list": ("hostname", "list"),
    "connections": ("connections",),
}


@pytest.mark.parametrize("command", OPENERS)
def test_a_file_that_is_not_a_database_is_named(tmp_path, command):
    db = tmp_path / "manager.sqlite3"
    db.write_bytes(JUNK)
    home = tmp_path / "home"
    done = netmgr(*OPENERS[command], "-d", db, home=home)
    assert (done.returncode, done.stderr) == (1, f"cannot open the database {db}: file is not a database\n")
    assert db.read_bytes() == JUNK
    assert sorted(os.listdir(tmp_path)) == ["empty.conf", "manager.sqlite3"]  # no home, no -wal


@pytest.mark.parametrize("command", [c for c in OPENERS if c != "connections"])  # connections:
def test_a_database_that_cannot_be_opened_is_named(tmp_path, command):  # "Cannot find the database"
    db = tmp_path / "manager.sqlite3"
    db.mkdir()  # a directory where the file should be
    done = netmgr(*OPENERS[command], "-d", db, home=tmp_path / "home")
    assert (done.returncode, done.stderr) == (1, f"cannot open the database {db}: unable to open database file\n")
    assert os.listdir(db) == [] and not (tmp_path / "home").exists()


@pytest.mark.parametrize("how", ["NETMGR_HOME", "config"])
@pytest.mark.parametrize("command", ["start", "user list"])
def test_a_home_that_cannot_be_created_is_one_line(tmp_path, how, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way\n")
    home = blocker / "home"  # not even root can create a directory under a regular file
    conf = tmp_path / "netmgr.conf"
    conf.write_text(f"[netmgr]\nhome = {home}\n")
    args = OPENERS[command] if command != "start" else ("start", *LOCAL, "-p", "0")  # TLS: certs/ too
    if how == "config":
        done = subprocess.run(argv(*args, "--config", conf), cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
    else:
        done = netmgr(*args, home=home)
    assert (done.returncode, done.stderr) == (1, f"cannot create the directory {home}: Not a directory\n")
    assert blocker.read_text() == "in the way\n"


# ------------------------------------------------------------------------------------ log file

def test_a_log_file_in_a_directory_that_does_not_exist_is_a_usage_error(tmp_path):
    home = tmp_path / "home"
    log_file = tmp_path / "no" / "dir" / "x.log"
    done = netmgr("start", *LOCAL, "-p", "0", "-l", log_file, home=home)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"the log file's directory {tmp_path / 'no' / 'dir'} does not exist\n"
    assert sorted(os.listdir(tmp_path)) == ["empty.conf"]


def test_the_default_log_file_is_still_created(tmp_path):
    home = tmp_path / "home"
    mgr = ManagerProcess(argv("start", *LOCAL, "-p", "0", "--disable-tls"),
                         env=dict(os.environ, NETMGR_HOME=str(home)))
    try:
        (log_file,) = (home / "logs").iterdir()
        assert log_file.name.startswith("manager-") and log_file.name.endswith(".log")
        # stdout gets each event just before the file does
        wait_until(lambda: "Network Manager running on 127.0.0.1:" in log_file.read_text(), "the log")
        assert log_file.read_text().split("\n")[0].endswith("loaded the 'connections' table from "
                                                          f"{home}/manager.sqlite3")
    finally:
        assert mgr.stop(signal.SIGINT) == 130  # Ctrl-C: a clean stop, and the shell's 130


# ------------------------------------------------------------------------------- failed starts

def test_a_busy_port_creates_nothing(tmp_path):
    home = tmp_path / "home"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = netmgr("start", *LOCAL, "-p", port, home=home)  # TLS: a key and a certificate to make
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert not home.exists()


def test_a_failed_start_removes_what_it_created_and_keeps_what_was_there(tmp_path):
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    old_log = home / "logs" / "old.log"
    old_log.write_text("yesterday's lines\n")
    before = tree(home)
    # the key, the certificate and the database are made, then login mode finds no user
    done = netmgr("start", *LOCAL, "-p", "0", "--auth-login", "-l", old_log, home=home)
    assert done.returncode == 2
    assert done.stderr.startswith("The 'auth_users' table is empty, no one could log in\n")
    assert done.stdout.split("\n")[0].endswith(f"loaded certificate {home}/certs/127.0.0.1.crt")
    assert tree(home) == before  # no certs/, keys/ or database; the log file as it was


def test_a_failed_start_in_a_new_home_removes_the_home(tmp_path):
    home = tmp_path / "new" / "home"
    done = netmgr("start", *LOCAL, "-p", "0", "--auth-login", home=home)
    assert done.returncode == 2
    assert "created_certificate" in done.stdout
    assert sorted(os.listdir(tmp_path)) == ["empty.conf"]


# ---------------------------------------------------------------------------------------- Ctrl-C

def spawn_held(*args, home):
    """Start ``netmgr ARGS`` with SIGINT blocked: a signal sent before the interpreter has run any
    of netmgr (Python's own start-up, where nothing of ours can catch it) waits, and is delivered
    when the launcher starts. Later signals arrive at once, wherever the program is."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return subprocess.Popen(argv(*args), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=dict(os.environ, NETMGR_HOME=str(home)))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def interrupt(proc, delay):
    time.sleep(delay)  # only chooses the moment; the result must not depend on it
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=WAIT)
    return proc.returncode, out, err


DELAYS = (0, 0.01, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3)


def test_ctrl_c_at_any_moment_of_a_command_is_130(tmp_path):
    with socket.socket() as silent:  # accepts, never answers: status waits for it
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        for delay in DELAYS:
            proc = spawn_held("status", *LOCAL, "-p", port, "--disable-tls", "--timeout", WAIT,
                              "-u", "admin", "--password", "pw", home=tmp_path / "home")
            code, out, err = interrupt(proc, delay)
            assert (code, out, err.lstrip("\n")) == (130, "", "Aborted!\n"), delay


def test_ctrl_c_while_netmgr_start_starts_is_130_and_leaves_nothing(tmp_path):
    for n, delay in enumerate(DELAYS + (0.5, 0.8, 1.2)):
        home = tmp_path / f"home{n}"
        proc = spawn_held("start", *LOCAL, "-p", "0", home=home)
        code, out, err = interrupt(proc, delay)
        assert "Traceback" not in out + err, delay
        if "Network Manager running on" in out:  # the signal found the Manager running: a clean stop
            assert (code, err) == (130, ""), delay
            assert out.rstrip("\n").endswith("stopped")
        else:
            assert (code, err.lstrip("\n")) == (130, "Aborted!\n"), (delay, out)
            assert not home.exists(), delay


def test_ctrl_c_at_the_password_prompt_is_130(tmp_path):
    pid, terminal = pty.fork()
    if pid == 0:  # the child: netmgr on a real terminal, as an administrator types it
        try:
            os.chdir(ROOT)
            os.execve(sys.executable, argv("user", "add", "bob", "-d", tmp_path / "m.sqlite3"),
                      dict(os.environ, NETMGR_HOME=str(tmp_path / "home")))
        finally:
            os._exit(127)
    output = b""
    try:
        while b"Password for bob:" not in output:
            output += os.read(terminal, 1024)
        os.write(terminal, b"\x03")  # Ctrl-C: the terminal sends SIGINT to netmgr
        while True:
            try:
                chunk = os.read(terminal, 1024)
            except OSError:  # EIO: netmgr has ended, the terminal is closed
                break
            if not chunk:
                break
            output += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 130, output
    assert output.decode().rstrip().endswith("Aborted!") and b"Traceback" not in output


# ------------------------------------------------------------------------------- log rotation

def test_sighup_reopens_the_log_file_after_logrotate_renamed_it(tmp_path):
    log_file = tmp_path / "manager.log"
    mgr = ManagerProcess(argv("start", *LOCAL, "-p", "0", "--disable-tls", "-l", log_file),
                         env=dict(os.environ, NETMGR_HOME=str(tmp_path / "home")))
    try:
        rotated = tmp_path / "manager.log.1"
        log_file.rename(rotated)  # what logrotate does; the Manager still writes the renamed file
        mgr.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reloaded" in text_of(log_file), "the reload's line in a new log file")
        old = rotated.read_text()
        assert "Network Manager running on" in old and "reloading" in old and "reloaded" not in old
        assert "Network Manager running on" not in log_file.read_text()
    finally:
        assert mgr.stop() == 0
    assert "stopped" in log_file.read_text() and "stopped" not in rotated.read_text()
