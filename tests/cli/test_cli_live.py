"""``netmgr`` as real processes (``python -m netmgr.launcher …``) next to msl-network 1.0.

* exit statuses and stderr lines of real processes;
* the configuration's precedence (file < environment < flag) seen by a running Manager;
* a home made by msl-network 1.0's own commands, used as it is by ``netmgr start`` and
  ``netmgr status``, and a 1.0 client that logs in over TLS with the 1.0 certificate;
* the exact command line of msl-network 1.0's test harness;
* ``netmgr status`` showing a 1.0 Service, a 1.0 Client linked with it, and its lock.

Every wait is on a readiness line, a process exit or a bounded poll, never a bare sleep.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner
from msl.network import connect

from conftest import ManagerProcess, free_port
from msl_services import Echo
from netmgr.cli import app as cli

WAIT = 30
PW = "dummy pw!"
TEST_DEADLINE = 120  # a hung test dumps every thread's stack and ends the run


pytestmark = pytest.mark.usefixtures("watchdog", "clean_env")




def netmgr(*args, env=None, input=None, timeout=60):
    """Run ``python -m netmgr.launcher ARGS`` to completion."""
    return subprocess.run([sys.executable, "-m", "netmgr.launcher", *map(str, args)], input=input,
                          capture_output=True, text=True, env=dict(os.environ, **(env or {})), timeout=timeout)


def msl(*args, env):
    """Run msl-network 1.0's own command line."""
    proc = subprocess.run([sys.executable, "-c", "from msl.network.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def in_process(*args, env):
    result = CliRunner().invoke(cli.cli, [str(a) for a in args], env=env)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def wait_until(condition, what):
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def start_manager(args, env):
    return ManagerProcess([sys.executable, "-m", "netmgr.launcher", "start", *map(str, args)],
                          env=dict(os.environ, **env))


def shutdown(cxn, mgr):
    """1.0's harness: ``admin_request('shutdown_manager')``, then the process exits within 5 s."""
    cxn.admin_request("shutdown_manager", timeout=WAIT)
    assert mgr.proc.wait(5) == 0


# ---------------------------------------------------------------------------- exit statuses

@pytest.mark.parametrize("args, code, stderr", [
    (["user", "add"], 2, "ValueError: You must specify a username to add"),
    (["keygen", "--size", "-1"], 2, "ValueError: The --size value must be a positive integer"),
    (["certgen", "--years-valid", "nan"], 2, "ValueError: The --years-valid value must be a positive number"),
    (["certdump", "/no/such.crt"], 1, "Cannot find /no/such.crt"),
    (["hostname", "remove"], 2, "No hostnames were removed"),
    (["start", "--port", "70000", "--disable-tls"], 2, "ValueError: The port must be a positive integer"),
    (["start", "--port", "1234x", "--disable-tls"], 2, "ValueError: The port must be a positive integer"),
    (["start", "--auth-login", "--auth-password", "h", "e", "l", "l", "o"], 2,
     "Cannot specify multiple authentication methods"),
    (["start", "--log-level", "INVALID", "--disable-tls"], 2, "ValueError: Cannot set logging level to 'INVALID'"),
    (["--bogus"], 2, None),
])
def test_exit_status_and_one_line_on_stderr(tmp_path, args, code, stderr):
    proc = netmgr(*args, env={"NETMGR_HOME": str(tmp_path)})
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1, proc.stderr
    if stderr is not None:
        assert proc.stderr == stderr + "\n"
    assert "Traceback" not in proc.stderr


def test_start_with_an_empty_users_table_in_login_mode(tmp_path):
    db = tmp_path / "users.db"
    proc = netmgr("start", "--auth-login", "--disable-tls", "-p", "0", "-d", db, "-l", tmp_path / "m.log",
                  env={"NETMGR_HOME": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr.split("\n")[:2] == ["The 'auth_users' table is empty, no one could log in",
                                            'To add a user to the \'auth_users\' table run the "netmgr user" command']
    assert all(str(db) in line for line in proc.stdout.splitlines()[:3])


def test_debug_shows_the_traceback(tmp_path):
    proc = netmgr("certgen", tmp_path / "c.crt", "-a", "XXX",
                  env={"NETMGR_HOME": str(tmp_path), "NETMGR_DEBUG": "1"})
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr


def test_user_list_json_and_prompt_from_a_real_process(tmp_path):
    env = {"NETMGR_HOME": str(tmp_path), "NETMGR_BCRYPT_ROUNDS": "4"}
    pw = tmp_path / "pw"
    pw.write_text("secret words\n")
    assert netmgr("user", "add", "ann", "--password-file", pw, "--admin", env=env).stdout == "ann has been added\n"
    users = json.loads(netmgr("user", "list", "--json", env=env).stdout)["users"]
    assert users == [{"username": "ann", "admin": True}]
    assert json.loads(netmgr("hostname", "list", "--json", env=env).stdout)["hostnames"]
    assert json.loads(netmgr("config", "--json", env=env).stdout)["settings"]["bcrypt_rounds"] == 4


# ------------------------------------------------------------------------------- precedence

def test_start_precedence_file_env_flag(tmp_path):
    p_file, p_env, p_flag = free_port(), free_port(), free_port()
    conf = tmp_path / "netmgr.conf"
    conf.write_text(f"[netmgr]\nhost = 127.0.0.1\nport = {p_file}\ndisable_tls = yes\n"
                    f"database = {tmp_path / 'file.db'}\nhome = {tmp_path / 'home'}\n")
    env = {"NETMGR_CONFIG": str(conf)}
    mgr = start_manager([], env)
    assert mgr.port == p_file and f"from {tmp_path / 'file.db'}" in mgr.output
    mgr.stop()
    env.update(NETMGR_PORT=str(p_env), NETMGR_DATABASE=str(tmp_path / "env.db"))
    mgr = start_manager([], env)
    assert mgr.port == p_env and f"from {tmp_path / 'env.db'}" in mgr.output
    mgr.stop()
    mgr = start_manager(["-p", p_flag, "-d", tmp_path / "flag.db"], env)
    assert mgr.port == p_flag and f"from {tmp_path / 'flag.db'}" in mgr.output
    assert "(TLS DISABLED)" in mgr.output
    mgr.stop()
    assert list((tmp_path / "home" / "logs").glob("manager-*.log"))  # the file's home, for the logs


# --------------------------------------------------------------------- msl-network 1.0 homes

def test_a_home_made_by_msl_network_1_0_is_used_as_it_is(tmp_path):
    home = tmp_path / "msl-home"
    env = dict(os.environ, MSL_NETWORK_HOME=str(home))
    msl("user", "add", "admin", "--password", "whatever", "--admin", env=env)
    msl("hostname", "add", "trusted-box", env=env)
    msl("keygen", env=env)
    msl("certgen", env=env)
    cert = home / "certs" / "localhost.crt"
    assert cert.is_file() and (home / "keys" / "localhost.key").is_file()

    mgr = start_manager(["-p", "0", "--auth-login", "--bcrypt-rounds", "4"], {"MSL_NETWORK_HOME": str(home)})
    try:
        assert f"loaded certificate {cert}" in mgr.output
        assert f"loaded the 'auth_users' table from {home / 'manager.sqlite3'}" in mgr.output
        assert "(TLS ENABLED)" in mgr.output
        assert list((home / "logs").glob("manager-*.log"))
        cxn = connect(host="localhost", port=mgr.port, cert_file=str(cert), username="admin",
                      password="whatever", timeout=WAIT)  # the 1.0 client, TLS, the 1.0 certificate
        assert cxn.admin_request("users_table.is_admin", "admin", timeout=WAIT) is True
        assert "trusted-box" in cxn.admin_request("hostnames_table.hostnames", timeout=WAIT)
        # netmgr status finds the Manager through the same home: certificate and port flag only
        pw = tmp_path / "pw"
        pw.write_text("whatever\n")
        proc = netmgr("status", "-p", mgr.port, "-u", "admin", "--password-file", pw,
                      env={"MSL_NETWORK_HOME": str(home)})
        assert proc.returncode == 0, proc.stderr
        assert f":{mgr.port}]" in proc.stdout.splitlines()[0]
        assert "Client[" in proc.stdout  # the 1.0 client, as a peer
        shutdown(cxn, mgr)
    finally:
        mgr.stop()
    assert "admin    True" in msl("user", "list", env=env).splitlines()  # the file is still 1.0's


@pytest.mark.parametrize("mode", ["login", "password", "hostname"])
def test_the_1_0_harness_command_line(tmp_path, mode):
    home = tmp_path / ".msl" / "network"
    env = {"MSL_NETWORK_HOME": str(home)}
    in_process("keygen", "ecc", "--password", PW, env=env)
    in_process("certgen", "--key-file-password", PW, env=env)
    cert, key = home / "certs" / "localhost.crt", home / "keys" / "localhost.key"
    db, log = home / "testing.db", home / "testing.log"
    in_process("user", "add", "admin", "-p", "whatever", "--admin", "-d", db, "--bcrypt-rounds", "4", env=env)
    port = free_port()
    args = ["-p", port, "-d", db, "-l", log, "-D", PW]  # one argv word, as subprocess passes it
    client = dict(host="localhost", port=port, username="admin", password="whatever", timeout=WAIT)
    if mode == "hostname":
        args += ["--disable-tls", "-c", cert, "-k", key, "--auth-hostname"]
        client.update(disable_tls=True)
    elif mode == "password":
        args += ["--host", "localhost", "-P", "<hey~you>"]
        client.update(cert_file=str(cert), password_manager="<hey~you>")
    else:
        args += ["-c", cert, "-k", key, "--auth-login"]
        client.update(cert_file=str(cert))
    mgr = start_manager(args, env)
    try:
        first = log.read_text().splitlines()[0]
        if mode != "hostname":
            assert first.endswith(f"loaded certificate {cert}")
        cxn = connect(**client)
        assert cxn.admin_request("port", timeout=WAIT) == port
        if mode == "password":  # netmgr status over TLS: the configured Manager password, then an admin
            secret = tmp_path / "manager-password"
            secret.write_text("<hey~you>\n")
            conf = tmp_path / "status.conf"
            conf.write_text(f"[netmgr]\nauth = password\nauth_password = {secret}\n")
            proc = netmgr("status", "--config", conf, "-p", port, "-u", "admin", "--password", "whatever",
                          env=env)
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.startswith("Manager: Manager[") and "Client[" in proc.stdout
        shutdown(cxn, mgr)
    finally:
        mgr.stop()


# ------------------------------------------------------------------------------------ status

def test_status_shows_a_service_a_linked_client_and_its_lock(netmgr_factory, netmgr_home, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("whatever\n")
    in_process("user", "add", "admin", "--password-file", pw, "--admin", "--bcrypt-rounds", "4",
               env={"NETMGR_HOME": str(netmgr_home)})
    mgr = netmgr_factory()
    kwargs = dict(host="127.0.0.1", port=mgr.port, disable_tls=True, timeout=WAIT)
    service = Echo()
    thread = threading.Thread(target=service.start, kwargs=kwargs, daemon=True)
    thread.start()
    cxn = connect(name="Locker", **kwargs)
    try:
        wait_until(lambda: "Echo" in cxn.identities(timeout=WAIT)["services"], "the Echo service")
        link = cxn.link("Echo", timeout=WAIT)
        assert link.acquire_lock(timeout=WAIT) == [str(cxn)]
        status = ["status", "-H", "127.0.0.1", "-p", mgr.port, "--disable-tls", "-u", "admin", "--password-file", pw]
        proc = netmgr(*status)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout.splitlines()
        assert out[0] == f"Manager: Manager[{cxn.identities(timeout=WAIT)['hostname']}:{mgr.port}]"
        peers = out[out.index("Peers (2)") + 3:out.index("Services (1)") - 1]
        assert sorted(line.split()[:2] for line in peers) == \
            sorted([[str(cxn), "client"], [service_name(cxn), "service"]])
        row = out[out.index("Services (1)") + 3].split()
        assert row[0] == "Echo" and row[2:] == ["-1", "0", str(cxn), str(cxn)]
        data = json.loads(netmgr(*status, "--json").stdout)
        assert data["services"]["Echo"]["links"] == data["services"]["Echo"]["locks"] == [str(cxn)]
        assert data["clients"] == [str(cxn)]
        link.release_lock(timeout=WAIT)
        data = json.loads(netmgr(*status, "--json").stdout)
        assert data["services"]["Echo"]["locks"] == []
        wrong = netmgr("status", "-H", "127.0.0.1", "-p", mgr.port, "--disable-tls", "-u", "admin",
                       "--password", "nope")
        assert wrong.returncode == 1 and wrong.stderr == "ValueError: Wrong login password\n"
        tls = netmgr("status", "-H", "127.0.0.1", "-p", mgr.port, "-u", "admin", "--password-file", pw,
                     "-c", tmp_path / "none.crt")
        assert tls.returncode == 1 and tls.stderr.startswith("Cannot find the Manager's certificate")
    finally:
        cxn.disconnect(timeout=WAIT)
        mgr.stop(sig=signal.SIGTERM)
        thread.join(10)


def test_status_errors_are_one_line_in_the_commands_words(netmgr_factory, netmgr_home, tmp_path):
    """The client library's errors, as one line with a hint in ``netmgr status``'s options."""
    env = {"NETMGR_HOME": str(netmgr_home)}
    pw = tmp_path / "pw"
    pw.write_text("whatever\n")
    plain, tls = netmgr_factory(), netmgr_factory(tls=True)
    other = tmp_path / "other.crt"  # a certificate that is not the TLS Manager's
    in_process("certgen", other, "-k", tmp_path / "other.key", env=env)
    login = ["-u", "admin", "--password-file", pw]

    def fails(*args):
        proc = netmgr("status", "-H", "127.0.0.1", *args, env=env, input="")
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        return proc.stderr.rstrip("\n")

    assert fails("-p", plain.port, "-c", other, *login).endswith(
        "the Manager does not use TLS: pass --disable-tls")
    assert fails("-p", tls.port, "--disable-tls", "--timeout", "0.5", *login).endswith(
        "if the Manager uses TLS, leave out --disable-tls")
    wrong_cert = fails("-p", tls.port, "-c", other, *login)
    assert wrong_cert.startswith(f"TLS with 127.0.0.1:{tls.port} failed: ")
    assert wrong_cert.endswith(f"is {other} its certificate?")
    port = free_port()
    assert fails("-p", port, "--disable-tls", *login) == f"Cannot connect to 127.0.0.1:{port}: Connection refused"
    assert fails("-p", plain.port, "--disable-tls").endswith("Aborted!")  # no credentials, no terminal


def service_name(cxn):
    return f"Echo[{cxn.identities(timeout=WAIT)['services']['Echo']['address']}]"
