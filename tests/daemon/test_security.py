"""Security behaviour of ``netmgr start``: TLS, the three auth modes, admin requests, shared databases.

Every peer that is not a raw socket is msl-network 1.0 code (``msl.network.connect`` and
``msl.network.Service`` subclasses from ``tests/msl_services.py``). Expected texts are those of the
reference, sections 1.3, 1.7, 2, 4, the section 5 checklists (test_connect, test_client) and the
fixes of 6.1. Each test waits on conditions (bounded polls, futures, socket timeouts), never on a
fixed sleep; a watchdog ends a hung test.
"""
import json
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import stat
import subprocess
import sys
import textwrap
import threading
import uuid

import pytest

import rawpeer
from msl.network import connect
from msl.network.database import ConnectionsTable, HostnamesTable, UsersTable

from msl_services import Echo
from rawpeer import RawPeer

HOST = "127.0.0.1"
WAIT = 15  # seconds: bound for any single condition
TEST_DEADLINE = 90  # a hung test dumps every thread's stack and ends the run
FAST_BCRYPT = ("--bcrypt-rounds", "4")  # re-hashing on login stays cheap in tests


pytestmark = pytest.mark.usefixtures("watchdog")



def wait_until(condition, timeout=WAIT, what="condition"):
    return rawpeer.wait_until(condition, timeout, what, interval=0.05)


def cert_path(home):
    return home / "certs" / f"{HOST}.crt"


def key_path(home):
    return home / "keys" / f"{HOST}.key"


# ------------------------------------------------------------------------------------------
# raw peers


class TlsPeer(RawPeer):
    """A RawPeer over TLS that verifies the Manager with its generated certificate."""

    def __init__(self, port, cafile, timeout=5):
        context = ssl.create_default_context(cafile=str(cafile))
        raw = socket.create_connection((HOST, port), timeout=timeout)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.sock.settimeout(timeout)
        self._buf = bytearray()


def closes(peer, within=5):
    """Whether the Manager closes ``peer`` within ``within`` seconds (and sends nothing more)."""
    peer.sock.settimeout(within)
    extra = []
    try:
        while True:
            line = peer.read_raw_line()
            if not line:
                break
            extra.append(line)
    except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
        pass
    except socket.timeout:
        return False
    assert not extra, f"the Manager sent more before closing: {extra}"
    return True


def answer(peer, request, value):
    """Answer a Manager request (username/password) as the 1.0 client does."""
    peer.send_json({"error": False, "requester": request["requester"], "result": value,
                    "uid": request["uid"]})


def raw_login(peer, username, password, name="Raw"):
    """Handshake of a raw peer in login mode; return the Manager's network name."""
    req = peer.read()
    assert req["attribute"] == "username", req
    manager = req["requester"]
    answer(peer, req, username)
    req = peer.read()
    assert (req["attribute"], req["args"]) == ("password", [username]), req
    answer(peer, req, password)
    peer.handshake_client(name)
    return manager


# ------------------------------------------------------------------------------------------
# 1.0 clients and services


class Network:
    """A running netmgr plus the 1.0 clients and services a test creates (closed at teardown)."""

    def __init__(self, mgr, home=None, tls=True, **credentials):
        self.mgr = mgr
        self.port = mgr.port
        self.tls = tls
        self.cert = str(cert_path(home)) if tls else None
        self.credentials = credentials
        self.clients = []
        self.threads = []

    def kwargs(self, **kw):
        base = dict(port=self.port, timeout=WAIT, **self.credentials)
        if self.tls:
            base.update(host="localhost", cert_file=self.cert)
        else:
            base.update(host=HOST, disable_tls=True)
        base.update(kw)
        return base

    def connect(self, name="Client", **kw):
        cxn = connect(name=name, **self.kwargs(**kw))
        self.clients.append(cxn)
        return cxn

    def start(self, service, **kw):
        """Start a 1.0 Service in a daemon thread; return once the Manager lists it."""
        thread = threading.Thread(target=service.start, kwargs=self.kwargs(**kw), daemon=True,
                                  name=f"service-{service.name}")
        thread.start()
        self.threads.append(thread)
        probe = self.connect("Probe")
        wait_until(lambda: service.name in probe.identities(timeout=WAIT)["services"]
                   or not thread.is_alive(), what=f"service {service.name}")
        assert thread.is_alive(), f"{service.name} did not register"
        return service

    def close(self):
        for cxn in reversed(self.clients):
            try:
                cxn.disconnect(timeout=5)
            except Exception:  # noqa: BLE001 -- a client the Manager already dropped
                pass
        self.mgr.stop()
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive(), f"{thread.name} still running after the Manager stopped"


@pytest.fixture
def network(netmgr_home):
    created = []

    def make(mgr, tls=True, **credentials):
        net = Network(mgr, netmgr_home, tls=tls, **credentials)
        created.append(net)
        return net

    yield make
    for net in created:
        net.close()


@pytest.fixture
def msl10_db(tmp_path):
    """A database made by msl-network 1.0's own UsersTable: PBKDF2 rows admin (admin), bob."""
    path = tmp_path / "msl10.sqlite3"
    with UsersTable(database=str(path)) as users:
        users.insert("admin", "whatever", True)
        users.insert("bob", "bob pw", False)
    return path


def user_row(db, username):
    with sqlite3.connect(str(db)) as con:
        return con.execute("SELECT key, salt, is_admin FROM auth_users WHERE username = ?",
                           (username,)).fetchone()


def rows_for(rows, port):
    return [row[5] for row in rows if row[4] == port]


# ------------------------------------------------------------------------------------------
# 1. TLS without authentication


TOFU_CLIENT = textwrap.dedent("""
    import json, sys
    from msl.network import connect
    cxn = connect(host="localhost", port=int(sys.argv[1]), auto_save=True, timeout=10)
    echo = cxn.link("Echo")
    print(json.dumps(echo.echo(1, x=2)))
    cxn.disconnect()
""")


def test_tls_trust_on_first_use_saves_the_certificate(netmgr_factory, netmgr_home, network, tmp_path):
    net = network(netmgr_factory(tls=True))
    net.start(Echo())
    client_home = tmp_path / "client-home"
    env = dict(os.environ, MSL_NETWORK_HOME=str(client_home))
    done = subprocess.run([sys.executable, "-c", TOFU_CLIENT, str(net.port)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[1], {"x": 2}]
    saved = client_home / "certs" / "localhost.crt"
    assert saved.is_file()
    assert (ssl.PEM_cert_to_DER_cert(saved.read_text())
            == ssl.PEM_cert_to_DER_cert(cert_path(netmgr_home).read_text()))


def test_tls_with_the_generated_cert_file(netmgr_factory, network):
    net = network(netmgr_factory(tls=True))
    net.start(Echo())
    echo = net.connect().link("Echo")
    assert echo.echo("tls", n=1) == [["tls"], {"n": 1}]


def test_plaintext_client_against_tls_manager(netmgr_factory, network):
    net = network(netmgr_factory(tls=True))
    with pytest.raises(ConnectionError, match="You have TLS disabled"):
        connect(host=HOST, port=net.port, disable_tls=True, timeout=3)
    assert net.mgr.proc.poll() is None
    assert net.connect().identities(timeout=WAIT)["port"] == net.port  # still serving


def test_tls_client_against_plaintext_manager(netmgr_factory, netmgr_home, tmp_path, monkeypatch):
    tls_mgr = netmgr_factory(tls=True)  # only to have a certificate to offer
    plain = netmgr_factory("-d", str(tmp_path / "plain.sqlite3"))
    with pytest.raises(ConnectionError, match="Try setting disable_tls=True"):
        connect(host="localhost", port=plain.port, cert_file=str(cert_path(netmgr_home)), timeout=5)
    # no cached certificate: the unverified fetch fails the same way
    monkeypatch.setattr("msl.network.cryptography.CERT_DIR", str(tmp_path / "empty-certs"))
    with pytest.raises(ConnectionError, match="Try setting disable_tls=True"):
        connect(host="localhost", port=plain.port, timeout=5)
    assert plain.proc.poll() is None and tls_mgr.proc.poll() is None


def test_generated_private_key_is_0600(netmgr_factory, netmgr_home):
    netmgr_factory(tls=True)
    key = key_path(netmgr_home)
    assert key.is_file() and cert_path(netmgr_home).is_file()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


# ------------------------------------------------------------------------------------------
# 2. Manager password (TLS)


@pytest.fixture(params=["words", "file"])
def password_mgr(request, netmgr_factory, tmp_path):
    """netmgr with the Manager password ``secret word``, from two words or from a file."""
    if request.param == "words":
        args = ("-P", "secret", "word")
    else:
        path = tmp_path / "manager-password.txt"
        path.write_text("secret word\nsecond line is ignored\n")
        args = ("-P", str(path))
    return netmgr_factory(*args, tls=True)


def test_manager_password_client_and_service(password_mgr, network):
    net = network(password_mgr, password_manager="secret word")
    net.start(Echo())
    echo = net.connect().link("Echo")
    assert echo.echo(7) == [[7], {}]


def test_wrong_manager_password(password_mgr, network, netmgr_home):
    net = network(password_mgr)
    with pytest.raises(ValueError, match="Wrong Manager password"):
        connect(**net.kwargs(password_manager="not it"))
    with TlsPeer(net.port, cert_path(netmgr_home)) as peer:
        req = peer.read()
        assert req["attribute"] == "password" and req["args"] == [req["requester"]], req
        answer(peer, req, "not it")
        reply = peer.read()
        assert reply["error"] is True and reply["message"] == "ValueError: Wrong Manager password"
        assert reply["uid"] == ""
        assert closes(peer), "the connection stays open after a wrong password"


def test_blank_manager_password_closes_promptly_over_tls(password_mgr, netmgr_home):
    with TlsPeer(password_mgr.port, cert_path(netmgr_home)) as peer:
        assert peer.read()["attribute"] == "password"
        peer.send(b"\r\n")
        assert closes(peer, within=5), "a blank password left the connection open"


# ------------------------------------------------------------------------------------------
# 3. Login against a database made by msl-network 1.0 (TLS)


@pytest.fixture
def login_mgr(netmgr_factory, msl10_db):
    return netmgr_factory("-d", str(msl10_db), "--auth-login", *FAST_BCRYPT, tls=True)


def test_login_admin_requests(login_mgr, network):
    net = network(login_mgr)
    admin = net.connect("Admin", username="admin", password="whatever")
    assert admin.admin_request("users_table.usernames") == ["admin", "bob"]
    assert admin.admin_request("port") == net.port
    assert admin.admin_request("login")
    assert admin.admin_request("password") is None
    assert admin.admin_request("hostnames") is None
    assert admin.admin_request("users_table.is_user_registered", "admin") is True
    assert admin.admin_request("users_table.is_user_registered", "nobody") is False
    assert admin.admin_request("users_table.is_password_valid", "admin", "whatever") is True
    assert admin.admin_request("users_table.is_password_valid", "admin", "nope") is False
    assert admin.admin_request("users_table.is_admin", "admin") is True
    assert admin.admin_request("users_table.is_admin", "bob") is False

    bob = net.connect("Bob", username="bob", password="bob pw")
    with pytest.raises(RuntimeError, match="You must be an administrator"):
        bob.admin_request("port")

    def bobs_rows():
        rows = admin.admin_request("connections_table.connections")
        found = rows_for(rows, bob.port)
        return found if {"new connection request", "connected as a client"} <= set(found) else None

    found = wait_until(bobs_rows, timeout=3.5, what="bob's connection rows")
    assert found[:2] == ["new connection request", "connected as a client"]


def test_login_failures(login_mgr, network):
    net = network(login_mgr)
    with pytest.raises(ValueError, match="Unregistered user"):
        connect(**net.kwargs(username="mallory", password="x"))
    with pytest.raises(ValueError, match="Wrong login password"):
        connect(**net.kwargs(username="bob", password="not bob's"))
    assert net.mgr.proc.poll() is None


def test_login_rehashes_pbkdf2_rows_to_bcrypt(login_mgr, network, msl10_db):
    key, salt, _ = user_row(msl10_db, "bob")
    assert len(salt) == 16 and len(key) == 32  # 1.0's PBKDF2 row
    with UsersTable(database=str(msl10_db)) as users:
        assert users.is_password_valid("bob", "bob pw")
    net = network(login_mgr)
    net.connect("Bob", username="bob", password="bob pw").disconnect()
    key, salt, _ = wait_until(lambda: (lambda r: r if bytes(r[1]) == b"bcrypt" else None)(
        user_row(msl10_db, "bob")), what="bob's row re-hashed")
    assert bytes(key).startswith(b"$2")
    # Expected and documented (netmgr.store.passwords): 1.0 tools cannot verify bcrypt rows, so after
    # logging in to netmgr once, bob can no longer log in to an msl-network 1.0 Manager.
    with UsersTable(database=str(msl10_db)) as users:
        assert users.is_password_valid("bob", "bob pw") is False
    # netmgr still verifies him
    net.connect("Bob again", username="bob", password="bob pw")
    with pytest.raises(ValueError, match="Wrong login password"):
        connect(**net.kwargs(username="bob", password="bob pw "))


@pytest.mark.parametrize("launcher", ["console-script", "python-m"])
def test_login_mode_with_empty_users_table_exits_non_zero(launcher, tmp_path, netmgr_home):
    db = tmp_path / "empty.sqlite3"
    with UsersTable(database=str(db)):
        pass
    if launcher == "console-script":
        exe = shutil.which("netmgr")
        assert exe, "the netmgr console script is not installed"
        argv = [exe]
    else:  # as tests/conftest.py starts netmgr
        argv = [sys.executable, "-m", "netmgr.launcher"]
    argv += ["start", "-H", HOST, "-p", "0", "--disable-tls", "-d", str(db), "--auth-login"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, NETMGR_HOME=str(netmgr_home)))
    assert "The 'auth_users' table is empty, no one could log in" in done.stderr
    assert "Network Manager running" not in done.stdout + done.stderr
    assert done.returncode != 0, f"{' '.join(argv[:3])} exited 0 after: {done.stderr.strip()!r}"


# ------------------------------------------------------------------------------------------
# 4. Trusted hostnames (TLS)


def test_trusted_hostname_default_table_accepts_loopback(netmgr_factory, network):
    net = network(netmgr_factory("--auth-hostname", tls=True))
    assert net.connect().identities(timeout=WAIT)["port"] == net.port


def test_untrusted_hostname_then_table_edit_applies_without_restart(netmgr_factory, network,
                                                                    netmgr_home, tmp_path):
    db = tmp_path / "hosts.sqlite3"
    with HostnamesTable(database=str(db)) as table:  # 1.0 seeds every localhost alias
        for name in table.hostnames():
            table.delete(name)
        table.insert("trusted.example")  # never empty: an empty table is re-seeded on open
    net = network(netmgr_factory("-d", str(db), "--auth-hostname", tls=True))
    with pytest.raises(ValueError, match="is not a trusted hostname") as info:
        connect(**net.kwargs())
    assert "'localhost' is not a trusted hostname" in str(info.value)
    with TlsPeer(net.port, cert_path(netmgr_home)) as peer:
        first = peer.read()
        assert first["error"] is True, first
        assert first["message"] == "ValueError: 'localhost' is not a trusted hostname"
        assert closes(peer), "the connection stays open after an untrusted hostname"

    with sqlite3.connect(str(db)) as con:  # an operator edits the table; no restart
        con.execute("INSERT INTO auth_hostnames VALUES ('localhost')")
    assert net.connect().identities(timeout=WAIT)["port"] == net.port


# ------------------------------------------------------------------------------------------
# 5. Fixes of reference 6.1


def test_failed_manager_passwords_lock_the_address_out(netmgr_factory, network):
    mgr = netmgr_factory("-P", "right", "--max-auth-failures", "3", "--auth-lockout", "30")
    net = network(mgr, tls=False)
    for _ in range(3):
        with pytest.raises(ValueError, match="Wrong Manager password"):
            connect(**net.kwargs(password_manager="wrong"))
    with pytest.raises(ValueError, match="Too many failed attempts"):
        connect(**net.kwargs(password_manager="right"))
    assert mgr.proc.poll() is None


def test_blank_answers_close_the_connection_plaintext(netmgr_factory, msl10_db, tmp_path):
    password = netmgr_factory("-P", "right")
    with RawPeer(password.port, timeout=5) as peer:
        assert peer.read()["attribute"] == "password"
        peer.send(b"\r\n")
        assert closes(peer), "a blank Manager password left the connection open"
    login = netmgr_factory("-d", str(msl10_db), "--auth-login")
    with RawPeer(login.port, timeout=5) as peer:
        assert peer.read()["attribute"] == "username"
        peer.send(b"\r\n")
        assert closes(peer), "a blank username left the connection open"
    with RawPeer(login.port, timeout=5) as peer:
        req = peer.read()
        answer(peer, req, "bob")
        assert peer.read()["attribute"] == "password"
        peer.send(b"   \r\n")
        assert closes(peer), "a blank password left the connection open"


OFF_LIST = ["_loop", "users_table._connection", "connections_table.execute", "__class__",
            "settings", "users_table.insert.__globals__"]


def test_admin_requests_off_the_allow_list_are_errors_with_their_uid(netmgr_factory, msl10_db):
    mgr = netmgr_factory("-d", str(msl10_db), "--auth-login", *FAST_BCRYPT)
    with RawPeer(mgr.port, timeout=5) as peer:
        raw_login(peer, "bob", "bob pw")
        uid = peer.request("Manager", "port")  # bob is no admin: the inline challenge
        req = peer.read()
        assert req["attribute"] == "username", req
        answer(peer, req, "admin")
        req = peer.read()
        assert (req["attribute"], req["args"]) == ("password", ["admin"]), req
        answer(peer, req, "whatever")
        reply = peer.read()
        assert (reply["uid"], reply["error"], reply["result"]) == (uid, False, mgr.port), reply
        for attribute in OFF_LIST:
            uid = peer.request("Manager", attribute, "SELECT * FROM auth_users")
            reply = peer.read()
            assert reply["uid"] == uid and reply["error"] is True, (attribute, reply)
            assert reply["message"].startswith("AttributeError:"), (attribute, reply)
            assert "auth_users" not in json.dumps(reply.get("result")), (attribute, reply)
        # the connection is still usable
        assert peer.call("Manager", "users_table.usernames")["result"] == ["admin", "bob"]


def test_admin_off_list_error_reaches_a_1_0_client(netmgr_factory, msl10_db, network):
    net = network(netmgr_factory("-d", str(msl10_db), "--auth-login", *FAST_BCRYPT), tls=False,
                  username="admin", password="whatever")
    admin = net.connect("Admin")
    for attribute in ("_loop", "connections_table.execute"):
        with pytest.raises(RuntimeError, match="is not an admin request of the Manager"):
            admin.admin_request(attribute, "DELETE FROM auth_users")
    assert admin.admin_request("users_table.usernames") == ["admin", "bob"]


def test_admin_logged_in_at_the_handshake_is_not_challenged_again(netmgr_factory, msl10_db):
    """Reference 1.3 (login mode): "OK -> peer is_admin = the user's admin flag"."""
    mgr = netmgr_factory("-d", str(msl10_db), "--auth-login", *FAST_BCRYPT)
    with RawPeer(mgr.port, timeout=5) as peer:
        raw_login(peer, "admin", "whatever")
        uid = peer.request("Manager", "port")
        reply = peer.read()
        assert reply.get("uid") == uid and reply.get("result") == mgr.port, (
            f"sent Manager.port (uid {uid}) after logging in as admin; got {reply}")


def test_shutdown_manager_ends_the_process(netmgr_factory, msl10_db, network):
    mgr = netmgr_factory("-d", str(msl10_db), "--auth-login", *FAST_BCRYPT, tls=True)
    net = network(mgr, username="admin", password="whatever")
    admin = net.connect("Admin")
    assert admin.admin_request("shutdown_manager", timeout=WAIT) is None
    assert mgr.proc.wait(5) == 0


def test_shutdown_manager_needs_an_admin(netmgr_factory, msl10_db, network):
    mgr = netmgr_factory("-d", str(msl10_db), "--auth-login", *FAST_BCRYPT)
    net = network(mgr, tls=False, username="bob", password="bob pw")
    with pytest.raises(RuntimeError, match="You must be an administrator"):
        net.connect("Bob").admin_request("shutdown_manager", timeout=WAIT)
    assert mgr.proc.poll() is None


def test_inline_admin_challenge_does_not_swallow_a_concurrent_request(netmgr_factory, msl10_db):
    mgr = netmgr_factory("-d", str(msl10_db), "--auth-login", *FAST_BCRYPT)
    with RawPeer(mgr.port, timeout=5) as peer:
        raw_login(peer, "bob", "bob pw")
        admin_uid = peer.request("Manager", "users_table.usernames")
        ask = peer.read()
        assert (ask["attribute"], ask["uid"]) == ("username", ""), ask
        identity_uid = uuid.uuid4().hex
        peer.request("Manager", "identity", uid=identity_uid)
        reply = peer.read()
        assert reply["uid"] == identity_uid and reply["error"] is False, reply
        assert reply["result"]["port"] == mgr.port
        answer(peer, ask, "admin")
        ask = peer.read()
        assert (ask["attribute"], ask["args"]) == ("password", ["admin"]), ask
        answer(peer, ask, "whatever")
        reply = peer.read()
        assert reply["uid"] == admin_uid and reply["result"] == ["admin", "bob"], reply


def test_failed_inline_challenge_answers_the_request(netmgr_factory, msl10_db):
    mgr = netmgr_factory("-d", str(msl10_db), "--auth-login", *FAST_BCRYPT)
    with RawPeer(mgr.port, timeout=5) as peer:
        raw_login(peer, "bob", "bob pw")
        uid = peer.request("Manager", "port")
        answer(peer, peer.read(), "admin")
        answer(peer, peer.read(), "not the password")
        reply = peer.read()
        assert reply["uid"] == uid and reply["error"] is True, reply
        assert reply["message"] == "ValueError: Wrong login password"
        assert peer.call("Manager", "identity")["result"]["port"] == mgr.port  # still connected


# ------------------------------------------------------------------------------------------
# 6. One database file shared with msl-network 1.0 (one Manager at a time)


def test_database_shared_with_msl_network_1_0(tmp_path, msl_factory, netmgr_factory):
    db = tmp_path / "msl.sqlite3"  # the file msl_factory passes with -d
    with UsersTable(database=str(db)) as users:
        users.insert("msladmin", "m pw", True)  # only ever used with 1.0 (stays PBKDF2)
        users.insert("nmadmin", "n pw", True)   # only ever used with netmgr

    def plain(port, username, password, name):
        return connect(name=name, host=HOST, port=port, disable_tls=True, timeout=WAIT,
                       username=username, password=password)

    # --- 1.0 writes
    msl = msl_factory("--auth-login")
    cxn = plain(msl.port, "msladmin", "m pw", "From10")
    cxn.admin_request("users_table.insert", "carol", "carol pw", False)
    cxn.admin_request("hostnames_table.insert", "from-msl.example")
    port10 = cxn.port
    cxn.disconnect(timeout=5)
    msl.stop(sig=signal.SIGINT)

    # --- netmgr sees it, and writes
    nm = netmgr_factory("-d", str(db), "--auth-login", *FAST_BCRYPT)
    admin = plain(nm.port, "nmadmin", "n pw", "FromNetmgr")
    try:
        assert {"msladmin", "nmadmin", "carol"} <= set(admin.admin_request("users_table.usernames"))
        assert "from-msl.example" in admin.admin_request("hostnames_table.hostnames")
        rows = admin.admin_request("connections_table.connections")
        assert rows_for(rows, port10)[:2] == ["new connection request", "connected as a client"]
        carol = plain(nm.port, "carol", "carol pw", "Carol")  # a row inserted by 1.0
        carol.disconnect(timeout=5)
        admin.admin_request("users_table.insert", "dave", "dave pw", False)
        admin.admin_request("hostnames_table.insert", "from-netmgr.example")
        port_nm = admin.port
    finally:
        admin.disconnect(timeout=5)
    assert nm.stop() == 0  # buffered connection rows are flushed at stop

    # --- 1.0's tables see netmgr's writes
    with UsersTable(database=str(db)) as users:
        assert {"carol", "dave"} <= set(users.usernames())
        assert users.is_password_valid("msladmin", "m pw")
        # documented limitation: 1.0 cannot verify netmgr's bcrypt rows
        assert users.is_password_valid("dave", "dave pw") is False
    with HostnamesTable(database=str(db)) as hosts:
        assert {"from-msl.example", "from-netmgr.example"} <= set(hosts.hostnames())
    with ConnectionsTable(database=str(db)) as conns:
        messages = rows_for(conns.connections(), port_nm)
    assert messages[:2] == ["new connection request", "connected as a client"]
    assert messages[-1] == "disconnected"

    # --- and so does a 1.0 Manager started on the file again
    msl = msl_factory("--auth-login")
    cxn = plain(msl.port, "msladmin", "m pw", "From10again")
    try:
        assert "dave" in cxn.admin_request("users_table.usernames")
        assert "from-netmgr.example" in cxn.admin_request("hostnames_table.hostnames")
        rows = cxn.admin_request("connections_table.connections")
        assert rows_for(rows, port_nm)[:2] == ["new connection request", "connected as a client"]
    finally:
        cxn.disconnect(timeout=5)


# ------------------------------------------------------------------------------------------
# 7. connections(start, end) over the wire


def test_connections_filters_over_the_wire(netmgr_factory, msl10_db, network):
    with ConnectionsTable(database=str(msl10_db)):
        pass
    fixed = [("2001-02-03T04:05:06", 1001), ("2002-06-07T08:09:10", 1002),
             ("2002-06-07T23:59:59", 1003), ("2003-01-01T00:00:00", 1004)]
    with sqlite3.connect(str(msl10_db)) as con:
        con.executemany("INSERT INTO connections VALUES (NULL, ?, '10.0.0.9', 'old.example', ?, "
                        "'connected as a client')", fixed)
    net = network(netmgr_factory("-d", str(msl10_db), "--auth-login", *FAST_BCRYPT), tls=False,
                  username="admin", password="whatever")
    admin = net.connect("Admin")

    def ports(**kwargs):
        return [row[4] for row in admin.admin_request("connections_table.connections", **kwargs)
                if row[2] == "10.0.0.9"]

    assert ports() == [1001, 1002, 1003, 1004]
    assert ports(start="2002-01-01T00:00:00", end="2002-12-31T23:59:59") == [1002, 1003]
    assert ports(start="2002-06-07T08:09:10", end="2002-06-07T08:09:10") == [1002]  # inclusive
    assert ports(end="2002-06-07") == [1001, 1002, 1003]  # a bare-date end covers its day
    assert ports(start="2002-06-08") == [1004]
    assert ports(start="2004-01-01T00:00:00") == []
    rows = admin.admin_request("connections_table.connections", start="2001-02-03T04:05:06",
                               end="2001-02-03T04:05:06")
    assert [row[1:] for row in rows] == [["2001-02-03T04:05:06", "10.0.0.9", "old.example", 1001,
                                          "connected as a client"]]
    with pytest.raises(RuntimeError, match="ValueError"):
        admin.admin_request("connections_table.connections", start="not a date")
