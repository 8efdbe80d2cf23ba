"""Issue 11, "the administrator's day": keys, certificates, ``netmgr config`` paths, trusted hosts.

The ``netmgr`` commands run in-process (click's CliRunner) or as real processes
(``python -m netmgr.launcher``) on real files in ``tmp_path``: ``keygen``/``certgen`` never
replace a file without ``--force``, ``certgen --algorithm`` offers only what it signs with,
``certdump`` prints the SHA-256 fingerprint a client is asked to compare, ``config`` shows the
paths a Manager would use, ``hostname add`` says when a name is already trusted, every help
line is whole at 80 columns, and a bad key is reported as a key, naming its file.
"""
import json
import os
import re
import stat
import subprocess
import sys
import time

import pytest
from cli_support import fails, ok
from cryptography.hazmat.primitives import hashes

from netmgr import config, crypto
from netmgr.client import tofu
from netmgr.errors import StartupError
from netmgr.store import models

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIGNATURE_HASHES = "SHA224, SHA256, SHA384, SHA3_224, SHA3_256, SHA3_384, SHA3_512, SHA512"


@pytest.fixture(autouse=True)
def home(home_env):
    return home_env


def netmgr(*args, env=None):
    """``python -m netmgr.launcher ARGS`` as a real process, to completion."""
    return subprocess.run([sys.executable, "-m", "netmgr.launcher", *map(str, args)], cwd=ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=60)


def lines(text):
    return text.rstrip("\n").split("\n")


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# ------------------------------------------------------------------------- keygen / certgen --force

def test_keygen_refuses_to_replace_a_key_without_force(tmp_path):
    key = tmp_path / "keys" / "m.key"
    ok("keygen", "-o", key)
    old = key.read_bytes()
    refused = fails(1, "keygen", "ecc", "-o", key)
    assert refused.stderr == (f"The private key '{key}' already exists: use --force to replace it "
                              f"(keeping the old one as '{key}.bak')\n")
    assert refused.stdout == "" and key.read_bytes() == old and not (tmp_path / "keys" / "m.key.bak").exists()

    key.chmod(0o644)  # as msl-network 1.0 left its keys: the copy must not stay readable
    replaced = ok("keygen", "ecc", "-o", key, "--force")
    assert replaced.stdout == f"Kept the old private key as '{key}.bak'\nCreated private ECC key '{key}'\n"
    backup = tmp_path / "keys" / "m.key.bak"
    assert backup.read_bytes() == old and mode_of(backup) == 0o600 and mode_of(key) == 0o600
    assert crypto.load_key(str(key)).curve.name == "secp384r1"
    assert crypto.load_key(str(backup)).key_size == 2048


def test_keygen_refuses_the_default_key_too(home):
    key = home / "keys" / "localhost.key"
    ok("keygen")
    assert fails(1, "keygen").stderr.startswith(f"The private key '{key}' already exists: use --force")
    assert lines(ok("keygen", "-f").stdout)[0] == f"Kept the old private key as '{key}.bak'"


def test_certgen_refuses_to_replace_a_certificate_and_uses_the_existing_key(tmp_path):
    key, cert = tmp_path / "m.key", tmp_path / "m.crt"
    ok("keygen", "ecc", "-o", key)
    key_bytes = key.read_bytes()
    ok("certgen", cert, "-k", key)
    old = cert.read_bytes()
    refused = fails(1, "certgen", cert, "-k", key)
    assert refused.stderr == (f"The certificate '{cert}' already exists: use --force to replace it "
                              f"(keeping the old one as '{cert}.bak')\n")
    assert cert.read_bytes() == old and not (tmp_path / "m.crt.bak").exists()

    replaced = ok("certgen", cert, "-k", key, "--force")
    assert replaced.stdout == (f"Kept the old certificate as '{cert}.bak'\n"
                               f"Created the self-signed certificate '{cert}'\n")
    assert (tmp_path / "m.crt.bak").read_bytes() == old and cert.read_bytes() != old
    assert key.read_bytes() == key_bytes and not (tmp_path / "m.key.bak").exists()  # the key is used
    assert crypto.load_certificate(str(cert)).public_key() == crypto.load_key(str(key)).public_key()


def test_certgen_creates_a_missing_key_and_keeps_it_on_force(home):
    key, cert = home / "keys" / "localhost.key", home / "certs" / "localhost.crt"
    ok("certgen")
    key_bytes = key.read_bytes()
    assert fails(1, "certgen").stderr.startswith(f"The certificate '{cert}' already exists")
    ok("certgen", "--force")
    assert key.read_bytes() == key_bytes and not (home / "keys" / "localhost.key.bak").exists()


# ------------------------------------------------------------------------------ certgen --algorithm

def test_certgen_offers_exactly_the_hashes_it_signs_with(tmp_path):
    assert crypto.SIGNATURE_HASHES == tuple(SIGNATURE_HASHES.split(", "))
    usage = ok("certgen", "--help").stdout
    assert "[SHA224|SHA256|SHA384|SHA3_224|SHA3_256|SHA3_384|SHA3_512|SHA512]" in usage
    assert "MD5" not in usage and "SHA1" not in usage
    key = tmp_path / "m.key"
    ok("keygen", "ecc", "-o", key)
    for name in crypto.SIGNATURE_HASHES:  # each one listed really signs, in any case
        cert = tmp_path / f"{name}.crt"
        ok("certgen", cert, "-k", key, "-a", name.lower())
        signed = crypto.load_certificate(str(cert)).signature_hash_algorithm
        assert signed.name == name.lower().replace("_", "-")  # sha3-256


@pytest.mark.parametrize("name", ["MD5", "sha1", "BLAKE2b", "XXX"])
def test_certgen_refuses_other_hashes_in_1_0s_words(tmp_path, name):
    cert = tmp_path / "c.crt"
    refused = fails(1, "certgen", cert, "-k", tmp_path / "m.key", "-a", name)
    assert refused.stderr == (f"ValueError: Invalid hash algorithm '{name.upper()}'. Allowed algorithms are\n"
                              f"{SIGNATURE_HASHES}\n")
    assert not cert.exists() and not (tmp_path / "m.key").exists()


# ------------------------------------------------------------------------------------- certdump

def test_certdump_prints_the_sha256_fingerprint_the_client_asks_to_compare(home, tmp_path, monkeypatch,
                                                                            capsys):
    ok("certgen")
    cert = home / "certs" / "localhost.crt"
    x509 = crypto.load_certificate(str(cert))
    sha256, sha1 = x509.fingerprint(hashes.SHA256()).hex(":"), x509.fingerprint(hashes.SHA1()).hex(":")
    assert lines(ok("certdump", cert).stdout)[-4:] == ["Fingerprint (SHA256):", sha256,
                                                       "Fingerprint (SHA1):", sha1]  # 1.0's lines last
    out = tmp_path / "details.txt"
    ok("certdump", cert, "-o", out)
    assert lines(out.read_text())[-4:] == ["Fingerprint (SHA256):", sha256, "Fingerprint (SHA1):", sha1]

    # the first-use prompt of a client shows the same text to compare (docs/client.md)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert tofu._user_trusts("lab-pc", cert.read_bytes()) is False
    shown = capsys.readouterr().out.splitlines()
    assert f"SHA256: {sha256}" in shown and f"SHA1:   {sha1}" in shown


# -------------------------------------------------------------------------------------- config

def config_rows(*args, env=None):
    """``{key: (value, source)}`` of ``netmgr config``'s table (tmp paths hold no spaces)."""
    out = lines(ok("config", *args, env=env).stdout)
    assert out[2].split() == ["Key", "Value", "Source"]
    return {key: (value, source) for key, value, source in (row.split(None, 2) for row in out[4:]
                                                             if len(row.split()) >= 3)}


def test_config_shows_the_paths_start_would_use(home):
    rows = config_rows()
    assert rows["cert_file"] == (str(home / "certs" / "localhost.crt"), "home (NETMGR_HOME)")
    assert rows["key_file"] == (str(home / "keys" / "localhost.key"), "home (NETMGR_HOME)")
    assert rows["log_file"] == (str(home / "logs" / "manager-YYYY-MM-DD-HH-MM-SS.log"), "home (NETMGR_HOME)")
    assert rows["database"] == (str(home / "manager.sqlite3"), "home (NETMGR_HOME)")
    settings = json.loads(ok("config", "--json").stdout)["settings"]
    assert settings["cert_file"] == str(home / "certs" / "localhost.crt")
    assert settings["key_file"] == str(home / "keys" / "localhost.key")
    assert settings["log_file"] == str(home / "logs" / "manager-YYYY-MM-DD-HH-MM-SS.log")


def test_config_paths_follow_the_host_and_the_configured_files(home, tmp_path):
    rows = config_rows(env={"NETMGR_HOST": "lab.example"})
    assert rows["cert_file"] == (str(home / "certs" / "lab.example.crt"), "home (NETMGR_HOME)")
    assert rows["key_file"] == (str(home / "keys" / "lab.example.key"), "home (NETMGR_HOME)")
    both = tmp_path / "both.pem"  # a certificate file alone must hold the key too (1.0)
    rows = config_rows(env={"NETMGR_CERT_FILE": str(both), "NETMGR_LOG_FILE": str(tmp_path / "m.log")})
    assert rows["cert_file"] == (str(both), "NETMGR_CERT_FILE")
    assert rows["key_file"] == (str(both), "cert_file")
    assert rows["log_file"] == (str(tmp_path / "m.log"), "NETMGR_LOG_FILE")
    key = tmp_path / "m.key"
    rows = config_rows(env={"NETMGR_KEY_FILE": str(key)})
    assert rows["key_file"] == (str(key), "NETMGR_KEY_FILE")
    assert rows["cert_file"] == (str(home / "certs" / "localhost.crt"), "home (NETMGR_HOME)")


def test_the_log_file_is_named_after_the_start_time(home):
    when = time.strptime("2026-01-02 03:04:05", "%Y-%m-%d %H:%M:%S")
    assert config.load().log_path(when) == str(home / "logs" / "manager-2026-01-02-03-04-05.log")


# ------------------------------------------------------------------------------- trusted names, users

def test_hostname_add_of_a_trusted_name_says_so(home):
    assert ok("hostname", "add", "localhost", "new.example").stdout == \
        "localhost is already trusted\nAdded new.example\n"
    assert ok("hostname", "insert", "new.example", "x.example", "x.example").stdout == \
        "new.example is already trusted\nInserted x.example\nx.example is already trusted\n"
    listed = json.loads(ok("hostname", "list", "--json").stdout)["hostnames"]
    assert listed.count("new.example") == 1 and listed.count("x.example") == 1


def test_user_add_of_an_existing_user_is_1_0s_error_and_asks_nothing(home):
    assert ok("user", "add", "ann", "-p", "first", "--bcrypt-rounds", "4").stdout == "ann has been added\n"
    again = fails(1, "user", "add", "ann", "--bcrypt-rounds", "4", input="second\nsecond\n")
    assert again.stderr == "ValueError: A user with the name 'ann' already exists\n"
    assert again.stdout == ""  # no password prompt, no "has been added"
    models.open_db(str(home / "manager.sqlite3"))
    assert models.UsersTable().is_password_valid("ann", "first")  # unchanged


# ------------------------------------------------------------------------------------ help lines


def test_help_lines_are_whole_at_80_columns():
    from netmgr.cli.app import cli

    for args, names in ((["--help"], sorted(cli.commands)),
                        (["user", "--help"], ("add", "insert", "update", "remove", "delete", "list")),
                        (["hostname", "--help"], ("add", "insert", "remove", "delete", "list"))):
        proc = netmgr(*args, env={"COLUMNS": "80"})
        assert proc.returncode == 0, proc.stderr
        shown = {row.split()[0]: row for row in proc.stdout.split("Commands:\n")[1].splitlines() if row}
        for name in names:
            assert "..." not in shown[name] and len(shown[name]) <= 80, shown[name]
            assert shown[name].rstrip().endswith("."), shown[name]


# ------------------------------------------------------------------------------ a bad key or certificate

@pytest.fixture
def files(tmp_path):
    """An EC key and its certificate, a second EC key, an RSA key, and a file that is not PEM."""
    key = crypto.generate_key(str(tmp_path / "m.key"), "ecc")
    cert = crypto.generate_certificate(str(tmp_path / "m.crt"), key)
    other = crypto.generate_key(str(tmp_path / "other.key"), "ecc")
    rsa = crypto.generate_key(str(tmp_path / "rsa.key"), "rsa")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a PEM file\n")
    return {"key": key, "cert": cert, "other": other, "rsa": rsa, "junk": str(junk),
            "missing": str(tmp_path / "missing.key")}


def test_server_context_names_the_file_at_fault(files):
    f = files

    def problem(*args):
        with pytest.raises(StartupError) as e:
            crypto.server_context(*args)
        return str(e.value)

    assert problem(f["cert"], f["junk"]).startswith(f"cannot load the private key {f['junk']}: ")
    assert problem(f["cert"], f["missing"]) == \
        f"cannot load the private key {f['missing']}: No such file or directory"
    assert problem(f["junk"], f["key"]).startswith(f"cannot load the certificate {f['junk']}: ")
    assert problem(f["cert"], f["cert"]).startswith(f"cannot load the private key {f['cert']}: ")
    assert problem(f["cert"]).startswith(f"cannot load the private key {f['cert']}: ")  # no key in it
    for wrong in (f["other"], f["rsa"]):  # KEY_VALUES_MISMATCH, NO_CERTIFICATE_ASSIGNED
        assert problem(f["cert"], wrong) == f"the private key {wrong} does not match the certificate {f['cert']}"
        # ssl ignores a password that the key does not need: still the real problem
        assert problem(f["cert"], wrong, "unneeded") == \
            f"the private key {wrong} does not match the certificate {f['cert']}"
    crypto.server_context(f["cert"], f["key"], "unneeded")


def test_server_context_names_an_encrypted_key_with_a_wrong_password(tmp_path):
    key = crypto.generate_key(str(tmp_path / "e.key"), "ecc", "right")
    cert = crypto.generate_certificate(str(tmp_path / "e.crt"), key, "right")
    with pytest.raises(StartupError, match=f"^cannot load the private key {re.escape(key)}: "
                                           "Incorrect password, could not decrypt key$"):
        crypto.server_context(cert, key, "wrong")


def test_start_reports_a_bad_key_as_a_key(files, tmp_path):
    env = {"NETMGR_HOME": str(tmp_path / "home"), "NETMGR_CONFIG": os.devnull}
    common = ["-p", "0", "-l", tmp_path / "m.log"]
    proc = netmgr("start", "-c", files["cert"], "-k", files["junk"], *common, env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"cannot load the private key {files['junk']}: ")
    proc = netmgr("start", "-c", files["cert"], "-k", files["other"], *common, env=env)
    assert (proc.returncode, proc.stderr) == \
        (2, f"the private key {files['other']} does not match the certificate {files['cert']}\n")
    proc = netmgr("start", "-c", files["junk"], "-k", files["key"], *common, env=env)
    assert proc.returncode == 2 and proc.stderr.startswith(f"cannot load the certificate {files['junk']}: ")


def test_certgen_names_a_bad_key(files, tmp_path):
    cert = tmp_path / "new.crt"
    refused = fails(1, "certgen", cert, "-k", files["junk"])
    assert refused.stderr.startswith(f"ValueError: cannot load the private key {files['junk']}: ")
    assert refused.stderr.count("\n") == 1 and not cert.exists()
