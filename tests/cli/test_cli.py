"""The ``netmgr`` command tree in-process (click's CliRunner): msl-network 1.0's texts (reference
section 3 and the section 5 test_cli_* checklist), exit statuses, prompts, --json and the
configuration's precedence. tests/cli/test_cli_live.py runs the same program as real processes.
"""
import json
import os
import re
import stat

import pytest
from cli_support import fails, ok

from netmgr import certinfo, config, crypto
from netmgr.cli import app as cli
from netmgr.store import models
from netmgr.store import passwords

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATE = os.path.join(ROOT, "etc", "netmgr", "netmgr.conf")
FAST = ["--bcrypt-rounds", "4"]


@pytest.fixture(autouse=True)
def isolated(home_env):
    return home_env


@pytest.fixture
def home(isolated):
    return isolated


def lines(text):
    return text.rstrip("\n").split("\n")


def one_error_line(result):
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr.rstrip("\n")


# ------------------------------------------------------------------------------------- general

def test_version_and_help():
    assert ok("--version").stdout == f"{cli.__version__}\n"
    assert "Commands:" in ok().stdout  # bare ``netmgr``: the help, exit 0 (1.0)
    for command in ("start", "keygen", "certgen", "certdump", "user", "hostname", "delete",
                    "status", "connections", "config"):
        assert "Usage: netmgr" in ok(command, "--help").stdout


def test_usage_errors_are_one_line_with_status_2():
    result = fails(2, "keygen", "--bogus")
    assert re.fullmatch(r"Error: No such option '--bogus'.*\(see 'netmgr keygen --help'\)",
                        one_error_line(result))
    assert one_error_line(fails(2, "nonsense")).startswith("Error: No such command 'nonsense'")


def test_traceback_only_with_netmgr_debug(tmp_path):
    missing = tmp_path / "missing.crt"
    plain = fails(1, "certgen", "--show", tmp_path / "c.crt", "-k", tmp_path / "dir" / "k.key",
                  "-y", "1", "-a", "XXX")
    assert "Traceback" not in plain.stderr
    debug = fails(1, "certgen", tmp_path / "c.crt", "-a", "XXX", env={"NETMGR_DEBUG": "1"})
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().split("\n")[-2].startswith("ValueError: Invalid hash algorithm 'XXX'")
    assert not missing.exists()


def test_join_words_is_per_command():
    assert cli.join_words(["user", "add", "a", "-p", "h", "e", "l", "-a"]) == \
        ["user", "add", "a", "-p", "h e l", "-a"]
    assert cli.join_words(["start", "-p", "1875", "-P", "h", "e", "-D", "dummy", "pw!"]) == \
        ["start", "-p", "1875", "-P", "h e", "-D", "dummy pw!"]
    assert cli.join_words(["certgen", "-p", "a", "b", "out.crt"]) == ["certgen", "-p", "a b out.crt"]


# ---------------------------------------------------------------------------------------- user

def add(name, password="pw", *extra):
    return ok("user", "add", name, "-p", password, *FAST, *extra)


def test_user_list_texts(home):
    assert ok("user", "list").stdout == "There are no users in the database\n"
    assert (home / "manager.sqlite3").is_file()  # list creates the default database (1.0)
    for name, admin in (("the-enforcer", True), ("Alice", False), ("bob", False), ("Mallory", True)):
        add(name, "pw", *(["--admin"] if admin else []))
    assert lines(ok("user", "list").stdout) == [
        f"Users in {home / 'manager.sqlite3'}",
        "",
        "Username     Administrator",
        "============ =============",
        "Alice        False",
        "Mallory      True",
        "bob          False",
        "the-enforcer True",
    ]
    data = json.loads(ok("user", "list", "--json").stdout)
    assert data["users"][0] == {"username": "Alice", "admin": False}
    assert [u["username"] for u in data["users"]] == ["Alice", "Mallory", "bob", "the-enforcer"]


def test_user_list_short_names_use_width_8():
    add("al")
    assert lines(ok("user", "list").stdout)[2:] == ["Username Administrator", "======== =============",
                                                    "al       False"]


@pytest.mark.parametrize("action", ["add", "insert", "remove", "delete", "update"])
def test_user_without_username(action):
    result = fails(2, "user", action)
    assert one_error_line(result) == f"ValueError: You must specify a username to {action}"


def test_user_add_insert_and_errors(home):
    assert ok("user", "add", "a.smith", "-p", "a", "good", "password", *FAST).stdout == "a.smith has been added\n"
    assert ok("user", "insert", "j.doe", "-p", "x", "--admin", *FAST).stdout == "j.doe has been inserted\n"
    assert one_error_line(fails(1, "user", "add", "j.doe", "-p", "y")) == \
        "ValueError: A user with the name 'j.doe' already exists"
    assert one_error_line(fails(1, "user", "add", "person:1234", "-p", "y")) == \
        'ValueError: A username cannot end with ":<integer>"'
    models.open_db(str(home / "manager.sqlite3"))
    assert models.users.is_password_valid("a.smith", "a good password")  # 1.0's words joined
    assert models.users.is_admin("j.doe") and not models.users.is_admin("a.smith")
    key, salt = models.users.credentials("j.doe")
    assert passwords.is_bcrypt(key, salt) and key.startswith(b"$2b$04$")


def test_user_password_from_a_file(tmp_path, home):
    pw_file = tmp_path / "pw.txt"
    pw_file.write_text("from the file\nsecond line\n")
    result = ok("user", "add", "f", "-p", pw_file, *FAST)
    assert lines(result.stdout) == ["Reading the password from the file", "f has been added"]
    ok("user", "add", "g", "--password-file", pw_file, *FAST)
    assert one_error_line(fails(2, "user", "add", "h", "-p", "x", "--password-file", pw_file)) == \
        "Give the password or the password file, not both"
    models.open_db(str(home / "manager.sqlite3"))
    assert models.users.is_password_valid("f", "from the file")
    assert models.users.is_password_valid("g", "from the file")


def test_user_password_prompt_is_hidden_and_confirmed(home):
    secret = "n0t-Echoed-pw"
    result = ok("user", "add", "bob", *FAST, input=f"{secret}\n{secret}\n")
    assert "Password for bob" in result.output and "Repeat for confirmation" in result.output
    assert secret not in result.output
    assert result.stdout.endswith("bob has been added\n")
    mismatch = fails(1, "user", "add", "eve", *FAST, input="firstPW1\nsecondPW2\n")
    assert "do not match" in mismatch.output
    assert "firstPW1" not in mismatch.output and "secondPW2" not in mismatch.output
    assert mismatch.stderr.rstrip().endswith("Aborted!")
    models.open_db(str(home / "manager.sqlite3"))
    assert models.users.is_password_valid("bob", secret)
    assert not models.users.is_user_registered("eve")


def test_user_add_checks_before_prompting():
    add("bob")
    result = fails(1, "user", "add", "bob", input="")
    assert "Password" not in result.output
    assert one_error_line(result) == "ValueError: A user with the name 'bob' already exists"


def test_user_update_changes_only_what_is_given(home):
    add("u", "old", "--admin")
    assert ok("user", "update", "u", "-p", "new", "pw", *FAST).stdout == "Updated u\n"
    models.open_db(str(home / "manager.sqlite3"))
    assert models.users.is_password_valid("u", "new pw")
    assert models.users.is_admin("u")  # 1.0 would have removed the admin rights here
    models.close_db()
    ok("user", "update", "u", "--no-admin")
    models.open_db(str(home / "manager.sqlite3"))
    assert not models.users.is_admin("u") and models.users.is_password_valid("u", "new pw")
    models.close_db()
    ok("user", "update", "u", "-a")
    result = ok("user", "update", "u", *FAST, input="third\nthird\n")  # nothing given: prompt
    assert "third" not in result.output
    models.open_db(str(home / "manager.sqlite3"))
    assert models.users.is_admin("u") and models.users.is_password_valid("u", "third")
    models.close_db()
    assert one_error_line(fails(1, "user", "update", "nobody", "-a")) == \
        "ValueError: Cannot update 'nobody'. This user is not in the table."


def test_user_remove_and_delete():
    add("a")
    add("b")
    assert ok("user", "remove", "a").stdout == "a has been removed\n"
    assert ok("user", "delete", "b").stdout == "b has been deleted\n"
    assert one_error_line(fails(1, "user", "remove", "a")) == \
        "ValueError: Cannot remove 'a'. This user is not in the table."
    assert one_error_line(fails(1, "user", "delete", "a")) == \
        "ValueError: Cannot delete 'a'. This user is not in the table."


def test_user_database_option(tmp_path, home):
    db = tmp_path / "sub" / "other.db"
    add("x", "pw", "-d", db)
    assert lines(ok("user", "list", "--database", db).stdout)[0] == f"Users in {db}"
    assert ok("user", "list").stdout == "There are no users in the database\n"


def test_password_over_72_bytes_is_refused():
    result = fails(1, "user", "add", "long", "-p", "x" * 73, *FAST)
    assert one_error_line(result).startswith("ValueError: The password is 73 bytes long")


# ------------------------------------------------------------------------------------ hostname

def test_hostname_list_texts(home):
    out = lines(ok("hostname", "list").stdout)
    assert out[:3] == [f"Trusted devices in {home / 'manager.sqlite3'}", "", "Hostnames:"]
    names = [line[2:] for line in out[3:]]
    assert all(line.startswith("  ") for line in out[3:])
    assert names == sorted(names) and {"localhost", "127.0.0.1", "::1"} <= set(names)
    assert json.loads(ok("hostname", "list", "--json").stdout)["hostnames"] == names


@pytest.mark.parametrize("action, word", [("add", "added"), ("insert", "inserted"),
                                          ("remove", "removed"), ("delete", "deleted")])
def test_hostname_without_names(action, word):
    assert one_error_line(fails(2, "hostname", action)) == f"No hostnames were {word}"


def test_hostname_add_remove():
    assert lines(ok("hostname", "add", "mslnz", "a.b.c", "10.0.0.1").stdout) == \
        ["Added mslnz", "Added a.b.c", "Added 10.0.0.1"]
    assert ok("hostname", "insert", "x").stdout == "Inserted x\n"
    assert lines(ok("hostname", "remove", "127.0.0.1", "::1", "localhost").stdout) == \
        ["Removed 127.0.0.1", "Removed ::1", "Removed localhost"]
    assert ok("hostname", "delete", "x").stdout == "Deleted x\n"
    mixed = fails(1, "hostname", "remove", "nope", "mslnz", "abc")
    assert mixed.stdout == "Removed mslnz\n"
    assert lines(mixed.stderr) == ["Cannot remove 'nope'. This hostname is not in the table.",
                                   "Cannot remove 'abc'. This hostname is not in the table."]
    listed = json.loads(ok("hostname", "list", "--json").stdout)["hostnames"]
    assert "a.b.c" in listed and "mslnz" not in listed and "localhost" not in listed


# -------------------------------------------------------------------------------------- keygen

@pytest.mark.parametrize("size", ["-1", "1.3j", "None", "0"])
def test_keygen_bad_size(size):
    assert one_error_line(fails(2, "keygen", "--size", size)) == \
        "ValueError: The --size value must be a positive integer"


def test_keygen_default(home):
    path = home / "keys" / "localhost.key"
    assert ok("keygen").stdout == f"Created private RSA key '{path}'\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert crypto.load_key(str(path)).key_size == 2048


def test_keygen_algorithms_passwords_and_out(tmp_path):
    out = tmp_path / "k" / "ecc.key"
    result = ok("keygen", "ecc", "--password", "the", "password", "--out", out)
    assert result.stdout == f"Created private ECC key '{out}'\n"
    assert crypto.load_key(str(out), "the password").curve.name == "secp384r1"
    pw_file = tmp_path / "pw"
    pw_file.write_text("filed\n")
    dsa = tmp_path / "dsa.key"
    result = ok("keygen", "dsa", "-s", "1024", "-p", pw_file, "-o", dsa)
    assert lines(result.stdout) == ["Reading the key password from the file", f"Created private DSA key '{dsa}'"]
    assert crypto.load_key(str(dsa), "filed").key_size == 1024
    ok("keygen", "ECC", "-c", "secp256r1", "--password-file", pw_file, "-o", tmp_path / "e.key")
    assert crypto.load_key(str(tmp_path / "e.key"), "filed").curve.name == "secp256r1"


def test_keygen_errors(tmp_path):
    bad_curve = fails(1, "keygen", "ecc", "-c", "XXX", "-o", tmp_path / "x.key")
    assert bad_curve.stderr.startswith("ValueError: Invalid curve name 'XXX'. Allowed curves are\n")
    assert not (tmp_path / "x.key").exists()
    assert fails(1, "keygen", "dsa", "-s", "1234", "-o", tmp_path / "d.key").stderr.startswith("ValueError: ")
    assert "'xyz' is not one of 'rsa', 'dsa', 'ecc'" in one_error_line(fails(2, "keygen", "xyz"))


# ------------------------------------------------------------------------------------- certgen

@pytest.mark.parametrize("years", ["-1", "1.3j", "None", "nan", "inf", "0"])
def test_certgen_bad_years(years):
    assert one_error_line(fails(2, "certgen", "--years-valid", years)) == \
        "ValueError: The --years-valid value must be a positive number"


def test_certgen_default_creates_key(home):
    cert = home / "certs" / "localhost.crt"
    assert ok("certgen").stdout == f"Created the self-signed certificate '{cert}'\n"
    assert (home / "keys" / "localhost.key").is_file()
    assert crypto.load_certificate(str(cert)).version.name == "v3"


def test_certgen_encrypted_key_show_algorithm_and_out(tmp_path):
    key = tmp_path / "k.key"
    ok("keygen", "ecc", "-p", "dummy", "pw!", "-o", key)
    out = tmp_path / "c" / "cert.pem"
    result = ok("certgen", "-k", key, "-p", "dummy", "pw!", "--show", "-a", "SHA512", out)
    text = lines(result.stdout)
    assert text[0] == f"Created the self-signed certificate '{out}'"
    assert text[1] == "" and text[2] == "Version: v3"
    assert text[-2] == "Fingerprint (SHA1):" and text[-1] == certinfo.fingerprint(str(out))
    assert crypto.load_certificate(str(out)).signature_hash_algorithm.name == "sha512"
    wrong = fails(1, "certgen", tmp_path / "w.crt", "-k", key, "-p", "wrong")
    assert wrong.stderr.startswith("ValueError: ")
    pw_file = tmp_path / "pw"
    pw_file.write_text("dummy pw!\n")
    result = ok("certgen", tmp_path / "f.crt", "-k", key, "-p", pw_file)  # -p takes every word after it
    assert lines(result.stdout)[0] == "Reading the key password from the file"
    bad_hash = fails(1, "certgen", tmp_path / "x.crt", "-k", key, "-p", "dummy", "pw!", "-a", "XXX")
    assert bad_hash.stderr.startswith("ValueError: Invalid hash algorithm 'XXX'")


def test_certgen_host_names_the_files(home):
    ok("certgen", "--host", "127.0.0.1")
    cert = crypto.load_certificate(str(home / "certs" / "127.0.0.1.crt"))
    assert (home / "keys" / "127.0.0.1.key").is_file()
    assert "127.0.0.1" in certinfo.dump_certificate(cert)


# ------------------------------------------------------------------------------------ certdump

def test_certdump(tmp_path, home):
    missing = tmp_path / "nope.crt"
    assert one_error_line(fails(1, "certdump", missing)) == f"Cannot find {missing}"
    ok("certgen")
    cert = home / "certs" / "localhost.crt"
    assert ok("certdump", cert).stdout == certinfo.dump_certificate(str(cert)) + "\n"
    out = tmp_path / "dump" / "details.txt"
    assert ok("certdump", cert, "--out", out).stdout == f"Dumped the certificate details to {out}\n"
    text = lines(out.read_text())
    assert text[0] == f"Certificate details for {cert}" and text[1] == "Version: v3"
    assert text[-2] == "Fingerprint (SHA1):" and text[-1] == certinfo.fingerprint(str(cert))


# -------------------------------------------------------------------------------------- delete

def populate(root):
    for sub, ext in (("certs", ".crt"), ("keys", ".key"), ("logs", ".log")):
        for i in range(10):
            folder = root / sub / ("nested" if i % 2 else "")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"f{i}{ext}").write_text("x" * 100)
        (root / sub / "remains.txt").write_text("keep")
    (root / "manager.sqlite3").write_bytes(b"\0" * 2048)
    (root / "remains.txt").write_text("keep")


@pytest.mark.parametrize("flags, gone", [
    (["--database"], {"db"}), (["--logs"], {"logs"}), (["--certs"], {"certs"}), (["--keys"], {"keys"}),
    (["--all"], {"db", "certs", "keys", "logs"}), (["--keys", "--logs"], {"keys", "logs"}),
    (["--database", "--certs"], {"db", "certs"})])
def test_delete_selected_files(tmp_path, flags, gone):
    root = tmp_path / "root"
    populate(root)
    out = ok("delete", "--root", root, "--yes", *flags).stdout
    expected = {"certs": "10 certificate(s) will be deleted [1 kB]", "keys": "10 key(s) will be deleted [1 kB]",
                "logs": "10 log file(s) will be deleted [1 kB]"}
    for kind, text in expected.items():
        assert (text in out) == (kind in gone)
        remaining = [p for p in (root / kind).rglob("*") if p.is_file() and p.name != "remains.txt"]
        assert (len(remaining) == 0) == (kind in gone)
    assert (f"[Deleted] {root / 'manager.sqlite3'}" in out) == ("db" in gone)
    assert (root / "manager.sqlite3").exists() != ("db" in gone)
    kept = list(root.rglob("remains.txt"))
    assert len(kept) == 4 and all(p.read_text() == "keep" for p in kept)


def test_delete_empty_root_prints_1_0s_seven_lines(tmp_path):
    assert lines(ok("delete", "--all", "--root", tmp_path, "--yes").stdout) == [
        "No database file found",
        "",
        "Searching for certificates ... no certificates found",
        "",
        "Searching for keys ... no keys found",
        "",
        "Searching for log files ... no log files found",
    ]


def test_delete_errors(tmp_path):
    nothing = fails(2, "delete", "--root", tmp_path)
    assert lines(nothing.stderr) == ["You must specify what you want to delete, for example",
                                     "  netmgr delete --keys"]
    missing = tmp_path / "missing"
    assert one_error_line(fails(1, "delete", "--all", "--root", missing)) == \
        f"The {str(missing)!r} directory does not exist"


def test_delete_asks_and_quiet(tmp_path):
    populate(tmp_path)
    no = ok("delete", "--keys", "--root", tmp_path, input="n\n")
    assert "Proceed (Y/n)? " in no.stdout and "Okay, not deleting" in no.stdout
    assert len(list((tmp_path / "keys").rglob("*.key"))) == 10
    ok("delete", "--keys", "--root", tmp_path, input="\n")
    assert not list((tmp_path / "keys").rglob("*.key"))
    assert ok("delete", "--certs", "--root", tmp_path, "-q", "-y").stdout == ""
    assert not list((tmp_path / "certs").rglob("*.crt"))


def test_delete_defaults_to_home_and_takes_the_wal(home):
    add("x")
    db = home / "manager.sqlite3"
    (home / "manager.sqlite3-wal").write_bytes(b"")
    out = ok("delete", "-d", "-y").stdout
    assert f"[Deleted] {db}" in out and f"[Deleted] {db}-wal" in out
    assert not db.exists()


# --------------------------------------------------------------------------------- connections

def seed_connections(db):
    models.open_db(str(db))
    models.connections.insert_many([
        ("2026-01-01T10:00:00", "127.0.0.1", "localhost", 5001, "new connection request"),
        ("2026-01-02T11:00:00", "10.0.0.2", "pc2", 5002, "connected as a client"),
        ("2026-01-03T12:00:00", "10.0.0.3", "pc3", 5003, "disconnected"),
    ])
    models.close_db()


def test_connections(home, tmp_path):
    missing = tmp_path / "none.db"
    assert one_error_line(fails(1, "connections", "-d", missing)) == f"Cannot find the database {missing}"
    db = home / "manager.sqlite3"
    seed_connections(db)
    text = lines(ok("connections").stdout)
    assert text[0] == f"Connections in {db}" and text[2].split() == ["Time", "Address", "Port", "Domain", "Message"]
    assert text[4].split() == ["2026-01-01T10:00:00", "127.0.0.1", "5001", "localhost", "new", "connection",
                               "request"]
    data = json.loads(ok("connections", "--json", "--since", "2026-01-02", "--until", "2026-01-02").stdout)
    assert data["connections"] == [{"pid": 2, "datetime": "2026-01-02T11:00:00", "ip_address": "10.0.0.2",
                                    "domain": "pc2", "port": 5002, "message": "connected as a client"}]
    since = json.loads(ok("connections", "--json", "--since", "2026-01-02T12:00:00").stdout)
    assert [c["pid"] for c in since["connections"]] == [3]
    assert "no connections" in ok("connections", "--since", "2030-01-01").stdout
    assert one_error_line(fails(2, "connections", "--since", "yesterday")).startswith("--since must be a date")


def test_connections_text_escapes_what_is_not_printable(home):
    db = home / "manager.sqlite3"
    models.open_db(str(db))
    models.connections.insert_many([("2026-01-01T10:00:00", "10.0.0.9", "pc\x1bc", 5009,
                                     "connected as Evil\x1b]0;pwned\x07\u202e")])
    models.close_db()
    out = ok("connections").stdout
    assert all(line.isprintable() for line in lines(out)), out
    assert "pc\\x1bc" in out and "Evil\\x1b]0;pwned\\x07\\u202e" in out
    raw = json.loads(ok("connections", "--json").stdout)["connections"][0]
    assert raw["domain"] == "pc\x1bc"  # --json keeps the value


# --------------------------------------------------------------------------- status (formatting)

def test_format_status_escapes_names_and_addresses():
    from netmgr.cli.actions import table
    from netmgr.cli.status import format_status

    evil = "Evil\x1bc\u2028\u202e"
    status = {
        "manager": f"Manager[{evil}:1875]",
        "peers": [{"name": f"{evil}[h\x07:2]", "type": "client", "address": "h\x07:2", "admin": False},
                  {"name": "Plain é[h:3]", "type": "service", "address": "h:3", "admin": True}],
        "services": {f"S{evil}": {"address": "h:3\x9b", "max_clients": -1, "in_flight": 2,
                                  "links": [f"{evil}[h\x07:2]"], "locks": [f"{evil}[h\x07:2]"]}},
    }
    text = format_status(status, table)
    shown = "Evil\\x1bc\\u2028\\u202e"
    assert all(line.isprintable() for line in text.split("\n")), text
    assert text.split("\n")[0] == f"Manager: Manager[{shown}:1875]"
    peers = text.split("\n")[5:7]
    assert peers[0].split() == [f"{shown}[h\\x07:2]", "client", "h\\x07:2", "False"]
    assert peers[1].split() == ["Plain", "é[h:3]", "service", "h:3", "True"]
    service = text.split("\n")[-1].split()
    assert service == [f"S{shown}", "h:3\\x9b", "-1", "2", f"{shown}[h\\x07:2]", f"{shown}[h\\x07:2]"]
    # the columns are laid out on the escaped text, so they stay aligned
    rule = text.split("\n")[4]
    assert len(rule.split()[0]) == len(f"{shown}[h\\x07:2]")


def test_format_status_of_printable_names_is_unchanged():
    from netmgr.cli.actions import table
    from netmgr.cli.status import format_status

    status = {"manager": "Manager[h:1875]", "peers": [], "services": {}}
    assert format_status(status, table) == "Manager: Manager[h:1875]\n\nPeers (0)\n\nServices (0)"


# ------------------------------------------------------------------------------- configuration

@pytest.fixture
def captured(monkeypatch):
    """Replace startup.run: the settings ``netmgr start`` resolved, without starting anything."""
    from netmgr.daemon import startup

    calls = []
    monkeypatch.setattr(startup, "run", lambda cfg, reread=None: calls.append(cfg))
    return calls


def write_config(path, **keys):
    path.write_text("[netmgr]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()))
    return path


def test_start_precedence_file_env_flag(tmp_path, captured, monkeypatch):
    conf = write_config(tmp_path / "n.conf", port=1111, database=tmp_path / "file.db", auth="login",
                        log_level="debug", max_connections=7)
    ok("start", "--config", conf)
    assert captured[-1].port == 1111 and captured[-1].database == str(tmp_path / "file.db")
    assert captured[-1].auth == "login" and captured[-1].max_connections == 7
    monkeypatch.setenv("NETMGR_PORT", "2222")
    monkeypatch.setenv("NETMGR_DATABASE", str(tmp_path / "env.db"))
    ok("start", "--config", conf)
    assert captured[-1].port == 2222 and captured[-1].database == str(tmp_path / "env.db")
    ok("start", "--config", conf, "-p", "3333", "-d", tmp_path / "flag.db", "--max-connections", "9")
    assert captured[-1].port == "3333" and captured[-1].database == str(tmp_path / "flag.db")
    assert captured[-1].max_connections == 9 and captured[-1].log_level == "debug"
    # an authentication flag replaces the configured mode instead of conflicting with it
    ok("start", "--config", conf, "-P", "h", "e", "l", "l", "o")
    assert captured[-1].auth_password == "h e l l o" and captured[-1].auth == "password"


def test_netmgr_config_env_and_home_layers(tmp_path, captured, monkeypatch):
    monkeypatch.delenv("NETMGR_HOME")
    msl_home = tmp_path / "msl"
    monkeypatch.setenv("MSL_NETWORK_HOME", str(msl_home))
    ok("start")
    assert captured[-1].home == str(msl_home)
    assert captured[-1].database == str(msl_home / "manager.sqlite3")
    conf = write_config(tmp_path / "env.conf", home=tmp_path / "file-home", disable_tls="yes", log_file="none")
    monkeypatch.setenv("NETMGR_CONFIG", str(conf))
    ok("start")
    assert captured[-1].home == str(msl_home)  # an environment variable beats the file
    monkeypatch.delenv("MSL_NETWORK_HOME")
    ok("start", "--enable-tls")
    assert captured[-1].home == str(tmp_path / "file-home") and captured[-1].log_file == ""
    assert captured[-1].disable_tls is False
    monkeypatch.setenv("NETMGR_HOME", str(tmp_path / "nm"))
    monkeypatch.setenv("MSL_NETWORK_HOME", str(msl_home))
    ok("start")
    assert captured[-1].home == str(tmp_path / "nm") and captured[-1].disable_tls is True


def test_user_commands_follow_the_config(tmp_path, monkeypatch):
    """`netmgr user add` with no flags edits the database the configured service uses."""
    service_home = tmp_path / "var-lib-netmgr"
    system_conf = write_config(tmp_path / "etc-netmgr.conf", home=service_home)
    monkeypatch.setattr(config, "SYSTEM_CONFIG", str(system_conf))
    monkeypatch.delenv("NETMGR_HOME")
    add("j.doe")
    assert lines(ok("user", "list").stdout)[0] == f"Users in {service_home / 'manager.sqlite3'}"
    write_config(system_conf, home=service_home, database=tmp_path / "file.db")
    add("file-user")
    assert lines(ok("user", "list").stdout)[0] == f"Users in {tmp_path / 'file.db'}"
    monkeypatch.setenv("NETMGR_DATABASE", str(tmp_path / "env.db"))
    assert lines(ok("user", "list").stdout) == ["There are no users in the database"]
    add("env-user")
    assert lines(ok("user", "list").stdout)[0] == f"Users in {tmp_path / 'env.db'}"
    assert lines(ok("user", "list", "-d", tmp_path / "flag.db").stdout) == ["There are no users in the database"]
    shown = json.loads(ok("config", "--json").stdout)
    assert shown["config_file"] == str(system_conf)
    assert shown["settings"]["database"] == str(tmp_path / "env.db")


@pytest.mark.parametrize("text, message", [
    ("[netmgr]\nport = 70000\n", "{path}: port: must be an integer from 0 to 65535, got '70000'"),
    ("[netmgr]\nprot = 1\n", "{path}: unknown key 'prot' in [netmgr]"),
    ("[other]\nport = 1\n", "{path}: unknown section [other] (only [netmgr] is read)"),
    ("[netmgr]\nauth = ldap\n", "{path}: auth: must be one of none, password, login, hostname, got 'ldap'"),
    ("[netmgr]\nlog_level = loud\n", "{path}: log_level: Cannot set logging level to 'loud'"),
    ("[netmgr]\nauth = password\n", "auth = password needs auth_password ({path})"),
    ("port = 1\n", "Invalid config file {path}: File contains no section headers."),
])
def test_bad_config_file(tmp_path, captured, text, message):
    conf = tmp_path / "bad.conf"
    conf.write_text(text)
    result = fails(2, "start", "--config", conf)
    assert result.stderr.split("\n")[0].startswith(message.format(path=conf)), result.stderr
    assert not captured


def test_bad_environment_and_missing_file(tmp_path):
    assert one_error_line(fails(2, "user", "list", env={"NETMGR_BCRYPT_ROUNDS": "3"})) == \
        "NETMGR_BCRYPT_ROUNDS: must be an integer from 4 to 31, got '3'"
    missing = tmp_path / "missing.conf"
    assert one_error_line(fails(2, "user", "list", "--config", missing)) == f"Cannot find the config file {missing}"
    assert one_error_line(fails(2, "config", env={"NETMGR_CONFIG": str(missing)})) == \
        f"Cannot find the config file {missing}"


def test_unreadable_system_config_is_an_error_with_a_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "SYSTEM_CONFIG", str(tmp_path))  # a directory: open() fails, even for root
    assert one_error_line(fails(2, "user", "list")).startswith(
        f"Cannot read the config file {tmp_path}: Is a directory (set NETMGR_CONFIG to another file")
    assert ok("user", "list", env={"NETMGR_CONFIG": os.devnull}).stdout == "There are no users in the database\n"


def test_bcrypt_rounds_from_the_environment(home):
    ok("user", "add", "r", "-p", "pw", env={"NETMGR_BCRYPT_ROUNDS": "5"})
    models.open_db(str(home / "manager.sqlite3"))
    assert models.users.credentials("r")[0].startswith(b"$2b$05$")


def test_template_documents_every_key_with_its_default():
    # everything is commented out but the HTTP endpoint, on loopback under systemd (issue 13)
    assert config.read_file(TEMPLATE) == {"http": "127.0.0.1:1876"}
    documented = {}
    with open(TEMPLATE, encoding="utf-8") as f:
        for line in f:
            match = re.match(r"^# (\w+) =(.*)$", line.rstrip("\n"))
            if match and match.group(1) in config.KEYS:
                documented[match.group(1)] = match.group(2).strip()
    assert set(documented) == set(config.KEYS)
    for key, text in documented.items():
        if text and "HOME" not in text and "~" not in text:
            assert config.KEYS[key][0](text) == config.DEFAULTS[key], key
        else:
            assert config.DEFAULTS[key] is None, key
    shown = {row[0] for row in config.load(TEMPLATE).items()}
    assert shown == set(config.KEYS)


def test_config_command_names_sources(tmp_path):
    conf = write_config(tmp_path / "c.conf", port=1234, auth_password="s3cret")
    out = ok("config", "--config", conf, env={"NETMGR_LOG_LEVEL": "debug"}).stdout
    rows = {line.split()[0]: line.split() for line in lines(out)[4:]}
    assert rows["port"][1:] == ["1234", str(conf)]
    assert rows["log_level"][1:] == ["debug", "NETMGR_LOG_LEVEL"]
    assert rows["auth_password"][1] == "<set>" and "s3cret" not in out
    assert rows["home"][-1] == "NETMGR_HOME"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_root_gives_new_files_to_the_service_user(tmp_path, monkeypatch):
    service_home = tmp_path / "svc"
    service_home.mkdir()
    os.chown(service_home, 65534, 65534)
    monkeypatch.setenv("NETMGR_HOME", str(service_home))
    add("j.doe")
    ok("keygen")
    ok("certgen")
    for path in (service_home / "manager.sqlite3", service_home / "keys", service_home / "keys" / "localhost.key",
                 service_home / "certs" / "localhost.crt"):
        assert path.stat().st_uid == 65534, path


def test_every_command_has_a_help_line():
    """`netmgr --help` and each group's help list every command with a one-line description."""
    import click as _click

    def walk(group, path):
        for name, command in group.commands.items():
            assert command.get_short_help_str().strip(), f"{path} {name} has no help line"
            if isinstance(command, _click.Group):
                walk(command, f"{path} {name}")

    walk(cli.cli, "netmgr")
