"""netmgr.crypto on real files in ``tmp_path``, real TLS handshakes on ``127.0.0.1:0`` and the real
msl-network 1.0 code (run in subprocesses, so that ``MSL_NETWORK_HOME`` is set before 1.0 reads it).
"""
import datetime
import ipaddress
import json
import math
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtensionOID
from cryptography.x509.oid import NameOID

from netmgr import certinfo, crypto
from netmgr.errors import StartupError

PASSWORD = "dummy pw!"  # the password of the 1.0 test-suite's encrypted EC key


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def san_of(cert_path):
    cert = crypto.load_certificate(str(cert_path))
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def run_msl(tmp_path, code, *args):
    """Run `code` with msl-network 1.0 in a fresh interpreter whose MSL_NETWORK_HOME is tmp_path/msl."""
    env = dict(os.environ, MSL_NETWORK_HOME=str(tmp_path / "msl"))
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code, *map(str, args)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


class TLSServer:
    """A plain-thread TLS server: handshake, send ``hello\\n``, close; one connection at a time."""

    def __init__(self, context):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.errors = []
        self.thread = threading.Thread(target=self._serve, args=(context,), daemon=True)
        self.thread.start()

    def _serve(self, context):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # the listening socket was shut down
                return
            with conn:
                conn.settimeout(10)
                try:
                    with context.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(b"hello\n")
                except OSError as e:  # ssl.SSLError is an OSError
                    self.errors.append(e)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def tls_server():
    servers = []

    def start(context):
        servers.append(TLSServer(context))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def tls_hello(port, cafile, server_hostname, strict=False):
    """Connect as a 1.0 client does after trust on first use: the saved certificate is the CA."""
    context = ssl.create_default_context(cafile=str(cafile))
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    if strict:  # Python 3.13's create_default_context() sets these two flags
        context.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as tls:
            return tls.recv(16)


@pytest.fixture
def ec_pair(tmp_path):
    """An encrypted SECP384R1 key and its certificate, as the 1.0 test-suite's Manager uses."""
    key = crypto.generate_key(str(tmp_path / "ec.key"), "ecc", PASSWORD)
    cert = crypto.generate_certificate(str(tmp_path / "ec.crt"), key, key_password=PASSWORD)
    return cert, key


# ---------------------------------------------------------------------------------------- keys

KEYS = [("rsa", 2048, "secp384r1", rsa.RSAPrivateKey, "RSA"),
        ("dsa", 2048, "secp384r1", dsa.DSAPrivateKey, "DSA"),
        ("ecc", 2048, "secp256r1", ec.EllipticCurvePrivateKey, "EC"),
        ("ECC", 2048, "SECP384R1", ec.EllipticCurvePrivateKey, "EC")]


@pytest.mark.parametrize("password", [None, PASSWORD, b"bytes pw"])
@pytest.mark.parametrize("algorithm,size,curve,cls,label", KEYS)
def test_generate_key(tmp_path, algorithm, size, curve, cls, label, password):
    path = tmp_path / "sub" / "dir" / "k.key"
    assert crypto.generate_key(str(path), algorithm, password, size, curve) == str(path)
    assert mode_of(path) == 0o600 and crypto.is_private_key_safe(path)
    pem = path.read_bytes()
    assert pem.startswith(f"-----BEGIN {label} PRIVATE KEY-----\n".encode())  # TraditionalOpenSSL
    assert (b"ENCRYPTED" in pem) == (password is not None)
    key = crypto.load_key(str(path), password)
    assert isinstance(key, cls)
    if label == "EC":
        assert key.curve.name == curve.lower()
    else:
        assert key.key_size == size
    if label == "RSA":
        assert key.public_key().public_numbers().e == 65537


def test_key_mode_is_0600_even_if_the_file_existed(tmp_path):
    path = tmp_path / "old.key"
    path.write_text("world readable\n")
    os.chmod(path, 0o644)
    assert not crypto.is_private_key_safe(path)
    crypto.generate_key(str(path), "ecc")
    assert mode_of(path) == 0o600 and crypto.is_private_key_safe(path)
    assert isinstance(crypto.load_key(str(path)), ec.EllipticCurvePrivateKey)


def test_wrong_or_missing_password(tmp_path):
    path = crypto.generate_key(str(tmp_path / "k.key"), "ecc", PASSWORD)
    with pytest.raises(ValueError):
        crypto.load_key(path, "wrong")
    with pytest.raises(ValueError):
        crypto.load_key(path)


def test_bad_key_arguments(tmp_path):
    path = str(tmp_path / "k.key")
    with pytest.raises(ValueError, match=r"^Invalid curve name 'XXX'\. Allowed curves are\n") as e:
        crypto.generate_key(path, "ecc", curve="xxx")
    assert "SECP384R1" in str(e.value) and "PRIME256V1" in str(e.value)
    with pytest.raises(ValueError, match="must be RSA, DSA or ECC. Got ED25519"):
        crypto.generate_key(path, "ed25519")
    for size in (0, -2048, 2048.0, True):
        with pytest.raises(ValueError, match="positive integer"):
            crypto.generate_key(path, "rsa", size=size)
    assert not os.path.exists(path)


# -------------------------------------------------------------------------------- certificates

@pytest.mark.parametrize("hostname,extra", [
    (None, None),
    ("manager.example.org", x509.DNSName("manager.example.org")),
    ("10.1.2.3", x509.IPAddress(ipaddress.ip_address("10.1.2.3"))),
    ("[fd00::7]", x509.IPAddress(ipaddress.ip_address("fd00::7"))),
    ("0.0.0.0", None),  # a wildcard bind address is no name a client dials
])
def test_certificate_names(tmp_path, hostname, extra):
    key = crypto.generate_key(str(tmp_path / "k.key"), "ecc")
    path = crypto.generate_certificate(str(tmp_path / "c.crt"), key, hostname=hostname)
    cert = crypto.load_certificate(path)
    assert cert.version == x509.Version.v3 and cert.issuer == cert.subject
    cn = hostname.strip("[]") if extra is not None else socket.gethostname()
    attrs = {a.oid: a.value for a in cert.subject}
    assert attrs == {NameOID.COUNTRY_NAME: "NZ", NameOID.STATE_OR_PROVINCE_NAME: "Wellington",
                     NameOID.LOCALITY_NAME: "Lower Hutt",
                     NameOID.ORGANIZATION_NAME: "Measurement Standards Laboratory of New Zealand",
                     NameOID.COMMON_NAME: cn, NameOID.EMAIL_ADDRESS: "info@measurement.govt.nz"}
    san = list(san_of(path))
    assert len(san) == len(set(san))
    for want in [x509.DNSName("localhost"), x509.DNSName(socket.gethostname()),
                 x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                 x509.IPAddress(ipaddress.ip_address("::1"))] + ([extra] if extra else []):
        assert want in san
    assert x509.IPAddress(ipaddress.ip_address("0.0.0.0")) not in san
    bc = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS)
    assert bc.critical and bc.value.ca is False


def test_san_holds_the_local_ipv4_addresses(tmp_path):
    key = crypto.generate_key(str(tmp_path / "k.key"), "ecc")
    san = san_of(crypto.generate_certificate(str(tmp_path / "c.crt"), key))
    if shutil.which("ip"):  # read independently of netmgr.crypto's own parsing of `ip -o addr`
        out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
        local = set(re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", out))
    else:
        local = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    assert "127.0.0.1" in local
    assert local <= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


@pytest.mark.parametrize("years,extra_days", [(100, 0), (1, 0), (2.5, 182), (0.25, 91)])
def test_validity(tmp_path, years, extra_days):
    key = crypto.generate_key(str(tmp_path / "k.key"), "ecc")
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    cert = crypto.load_certificate(crypto.generate_certificate(str(tmp_path / "c.crt"), key,
                                                               years_valid=years))
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    assert before - datetime.timedelta(days=1) <= start <= before - datetime.timedelta(days=1, seconds=-60)
    expected = start.replace(year=start.year + int(years)) + datetime.timedelta(days=extra_days)
    assert end == expected


@pytest.mark.parametrize("years", [math.nan, math.inf, -math.inf, -1, 0, 0.0001, 10000, "5", None])
def test_bad_years_valid(tmp_path, years):
    key = crypto.generate_key(str(tmp_path / "k.key"), "ecc")
    with pytest.raises(ValueError, match="years_valid"):
        crypto.generate_certificate(str(tmp_path / "c.crt"), key, years_valid=years)
    assert not (tmp_path / "c.crt").exists()


@pytest.mark.parametrize("name,cls", [("sha384", hashes.SHA384), ("SHA3_256", hashes.SHA3_256),
                                      (hashes.SHA512(), hashes.SHA512)])
def test_hash_algorithm(tmp_path, name, cls):
    key = crypto.generate_key(str(tmp_path / "k.key"), "ecc")
    cert = crypto.load_certificate(crypto.generate_certificate(str(tmp_path / "c.crt"), key,
                                                               algorithm=name))
    assert isinstance(cert.signature_hash_algorithm, cls)


def test_bad_hash_algorithm(tmp_path):
    key = crypto.generate_key(str(tmp_path / "k.key"), "ecc")
    with pytest.raises(ValueError, match=r"^Invalid hash algorithm 'XXX'\. Allowed algorithms are\n") as e:
        crypto.generate_certificate(str(tmp_path / "c.crt"), key, algorithm="xxx")
    assert "SHA256" in str(e.value) and "SHA3_512" in str(e.value)
    with pytest.raises(TypeError, match="must be a string or HashAlgorithm"):
        crypto.generate_certificate(str(tmp_path / "c.crt"), key, algorithm=256)


def test_missing_key_is_created_as_1_0_does(tmp_path):
    key = tmp_path / "keys" / "new.key"
    crypto.generate_certificate(str(tmp_path / "c.crt"), str(key), key_password=PASSWORD)
    assert mode_of(key) == 0o600
    private = crypto.load_key(str(key), PASSWORD)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
    assert crypto.load_certificate(str(tmp_path / "c.crt")).public_key() == private.public_key()


def test_fingerprint(tmp_path, ec_pair):
    cert = crypto.load_certificate(ec_pair[0])
    sha1 = certinfo.fingerprint(ec_pair[0])
    assert sha1 == certinfo.fingerprint(cert, "sha1") == cert.fingerprint(hashes.SHA1()).hex(":")
    sha256 = certinfo.fingerprint(cert, "SHA256")
    assert sha256 == cert.fingerprint(hashes.SHA256()).hex(":") and len(sha256) == 32 * 3 - 1
    assert len(certinfo.fingerprint(cert, "blake2b")) == 64 * 3 - 1


# ------------------------------------------------------------------------------- real TLS

@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
def test_handshake_with_encrypted_ec_key(tls_server, ec_pair, server_hostname, strict):
    cert, key = ec_pair
    server = tls_server(crypto.server_context(cert, key, PASSWORD))
    assert tls_hello(server.port, cert, server_hostname, strict) == b"hello\n"


def test_handshake_checks_the_hostname(tls_server, ec_pair):
    cert, key = ec_pair
    server = tls_server(crypto.server_context(cert, key, PASSWORD))
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        tls_hello(server.port, cert, "not-this-host.example")


@pytest.mark.parametrize("hostname", ["manager.example.org", "10.1.2.3"])
def test_handshake_for_the_host_argument(tmp_path, tls_server, hostname):
    key = crypto.generate_key(str(tmp_path / "k.key"), "rsa", PASSWORD)
    cert = crypto.generate_certificate(str(tmp_path / "c.crt"), key, PASSWORD, hostname=hostname)
    server = tls_server(crypto.server_context(cert, key, PASSWORD))
    assert tls_hello(server.port, cert, hostname) == b"hello\n"


def test_cert_file_holding_the_key(tmp_path, tls_server):
    key = crypto.generate_key(str(tmp_path / "k.key"), "rsa", PASSWORD)
    cert = crypto.generate_certificate(str(tmp_path / "c.crt"), key, PASSWORD)
    both = tmp_path / "both.pem"
    both.write_bytes((tmp_path / "c.crt").read_bytes() + (tmp_path / "k.key").read_bytes())
    server = tls_server(crypto.server_context(str(both), None, PASSWORD))
    assert tls_hello(server.port, cert, "localhost") == b"hello\n"
    with pytest.raises(StartupError, match=f"^cannot load the private key {re.escape(cert)}: "):
        crypto.server_context(cert, None, PASSWORD)  # a certificate alone is not enough


@pytest.mark.parametrize("algorithm", ["rsa", "dsa", "ecc"])
def test_server_context_loads_encrypted_keys(tmp_path, algorithm):
    key = crypto.generate_key(str(tmp_path / "k.key"), algorithm, PASSWORD)
    cert = crypto.generate_certificate(str(tmp_path / "c.crt"), key, PASSWORD)
    context = crypto.server_context(cert, key, PASSWORD)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    with pytest.raises(StartupError, match=f"^cannot load the private key {re.escape(key)}: "):
        crypto.server_context(cert, key, "wrong")


def test_dsa_certificates_load_but_cannot_handshake(tmp_path, tls_server):
    """Same as 1.0: Python's default ciphers exclude aDSS and TLS 1.3 has no DSA, so use RSA or EC."""
    key = crypto.generate_key(str(tmp_path / "k.key"), "dsa")
    cert = crypto.generate_certificate(str(tmp_path / "c.crt"), key)
    server = tls_server(crypto.server_context(cert, key))
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
        tls_hello(server.port, cert, "localhost")


def test_saved_certificate_is_not_a_ca(tmp_path, tls_server, ec_pair):
    """ca=False: a client that saved our certificate trusts it, and nothing else our key signs."""
    cert_path, key_path = ec_pair
    anchor = crypto.load_certificate(cert_path)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now, day = datetime.datetime.now(datetime.timezone.utc), datetime.timedelta(days=1)
    leaf = (x509.CertificateBuilder().subject_name(crypto.default_name("evil"))
            .issuer_name(anchor.subject).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - day).not_valid_after(now + day)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(crypto.load_key(key_path, PASSWORD), hashes.SHA256()))
    pem = serialization.Encoding.PEM
    chain = tmp_path / "chain.pem"
    chain.write_bytes(leaf.public_bytes(pem) + anchor.public_bytes(pem))
    leaf_key_path = tmp_path / "leaf.key"
    leaf_key_path.write_bytes(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    server = tls_server(crypto.server_context(str(chain), str(leaf_key_path)))
    with pytest.raises(ssl.SSLCertVerificationError, match="invalid CA certificate"):
        tls_hello(server.port, cert_path, "localhost")


MSL_TOFU = """
import json, socket, sys
from msl.network.cryptography import get_ssl_context
port = int(sys.argv[1])
path, context = get_ssl_context(host="localhost", port=port, auto_save=True)
with socket.create_connection(("localhost", port), timeout=10) as raw:
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        hello = tls.recv(16).decode()
print(json.dumps({"path": path, "check_hostname": context.check_hostname, "hello": hello}))
"""


def test_msl_network_1_0_client_trusts_on_first_use(tmp_path, tls_server, ec_pair):
    cert, key = ec_pair
    server = tls_server(crypto.server_context(cert, key, PASSWORD))
    result = json.loads(run_msl(tmp_path, MSL_TOFU, server.port))
    saved = tmp_path / "msl" / "certs" / "localhost.crt"
    assert result == {"path": str(saved), "check_hostname": True, "hello": "hello\n"}
    assert certinfo.fingerprint(saved.read_bytes()) == certinfo.fingerprint(cert)
    again = json.loads(run_msl(tmp_path, MSL_TOFU, server.port))  # now from the saved file
    assert again == result


# ------------------------------------------------------------------------------------- dump

MSL_GENERATE = """
import sys
from msl.network import cryptography as c
print(c.generate_certificate(path=sys.argv[1]))
"""

MSL_DUMP = """
import sys
from msl.network import cryptography as c
print("\\n=====\\n".join(c.get_metadata_as_string(c.load_certificate(p)) for p in sys.argv[1:]))
"""


def msl_dumps(tmp_path, *paths):
    return run_msl(tmp_path, MSL_DUMP, *paths)[:-1].split("\n=====\n")


def as_1_0_dumps_it(text):
    """Our dump without the SHA-256 fingerprint lines that 1.0 does not print (they come just
    before 1.0's last two lines)."""
    lines = text.split("\n")
    assert lines[-4] == "Fingerprint (SHA256):" and len(lines[-3]) == 32 * 3 - 1
    return "\n".join(lines[:-4] + lines[-2:])


def test_dump_equals_1_0_for_a_1_0_certificate(tmp_path):
    path = run_msl(tmp_path, MSL_GENERATE, tmp_path / "msl.crt").strip()
    assert path == str(tmp_path / "msl.crt")
    ours = certinfo.dump_certificate(path)
    assert as_1_0_dumps_it(ours).splitlines() == msl_dumps(tmp_path, path)[0].splitlines()
    assert ours.splitlines()[-2:] == ["Fingerprint (SHA1):", certinfo.fingerprint(path)]
    assert "  Encryption: RSA" in ours and "Extensions:" in ours


@pytest.mark.parametrize("algorithm", ["rsa", "dsa", "ecc"])
def test_dump_equals_1_0_for_our_single_extension_certificates(tmp_path, algorithm):
    key = crypto.generate_key(str(tmp_path / "k.key"), algorithm)
    plain = crypto.generate_certificate(str(tmp_path / "plain.crt"), key, extensions=[])
    one = crypto.generate_certificate(str(tmp_path / "one.crt"), key, algorithm="sha512",
                                      extensions=[crypto.subject_alt_name("x.example")])
    theirs = msl_dumps(tmp_path, plain, one)
    assert [as_1_0_dumps_it(certinfo.dump_certificate(plain)),
            as_1_0_dumps_it(certinfo.dump_certificate(one))] == theirs
    assert "Extensions:" not in theirs[0]


def test_dump_lists_every_extension(tmp_path, ec_pair):
    lines = as_1_0_dumps_it(certinfo.dump_certificate(ec_pair[0])).splitlines()
    start = lines.index("Extensions:")
    assert lines[start + 1].startswith("  BasicConstraints(ca=False, path_length=None):")
    assert lines[start + 2:start + 5] == ["    oid: 2.5.29.19", "    name: basicConstraints",
                                          "    critical: True"]
    assert lines[start + 5].startswith("  SubjectAlternativeName(GeneralNames([DNSName(value=")
    assert lines[start + 6:start + 9] == ["    oid: 2.5.29.17", "    name: subjectAltName",
                                          "    critical: False"]
    theirs = msl_dumps(tmp_path, ec_pair[0])[0].splitlines()  # 1.0 shows the last extension only
    assert lines[:start + 1] + lines[start + 5:] == theirs
    info = lines.index("Subject Public Key Info:")
    assert lines[info + 1:info + 5] == ["  Encryption: Elliptic Curve", "  Curve: secp384r1",
                                        "  Size: 384", "  Key:"]


# --------------------------------------------------------------------------- ensure_certificate

def test_ensure_certificate_creates_once_then_reuses(tmp_path):
    cert, key = str(tmp_path / "certs" / "h.crt"), str(tmp_path / "keys" / "h.key")
    assert crypto.ensure_certificate(cert, key, PASSWORD) == (cert, key, True)
    assert mode_of(key) == 0o600
    first = certinfo.fingerprint(cert, "SHA256")
    assert crypto.ensure_certificate(cert, key, PASSWORD) == (cert, key, False)
    assert certinfo.fingerprint(cert, "SHA256") == first
    crypto.server_context(cert, key, PASSWORD)


def test_ensure_certificate_from_an_existing_key(tmp_path):
    key = crypto.generate_key(str(tmp_path / "h.key"), "ecc", PASSWORD)
    cert = str(tmp_path / "h.crt")
    assert crypto.ensure_certificate(cert, key, PASSWORD, hostname="h.example") == (cert, key, True)
    assert crypto.load_certificate(cert).public_key() == crypto.load_key(key, PASSWORD).public_key()
    assert x509.DNSName("h.example") in san_of(cert)


def test_ensure_certificate_replaces_a_certificate_without_its_key(tmp_path):
    cert, key = str(tmp_path / "h.crt"), str(tmp_path / "h.key")
    crypto.ensure_certificate(cert, key)
    old = certinfo.fingerprint(cert)
    os.remove(key)
    assert crypto.ensure_certificate(cert, key) == (cert, key, True)
    assert certinfo.fingerprint(cert) != old
    crypto.server_context(cert, key)
