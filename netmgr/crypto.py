"""Private keys, self-signed certificates and the server's TLS context.

Contract: plain blocking functions on files; no gevent, no network connections, no logging, no
state that changes (the only outside look-ups are the hostname, ``ip -o addr`` and DNS, for the
subjectAltName). Generating keys is CPU-bound, so the Manager calls these before it starts
serving (or through the hub threadpool, STYLE.md rule 4). Files written here are byte-for-byte
what MSL-Network 1.0 reads (PEM, ``TraditionalOpenSSL`` keys). What a certificate says (the
``certdump`` text, fingerprints) is :mod:`netmgr.certinfo`.

Deliberate differences from 1.0 (reference §6.1 item 10):

* private keys are written with mode 0600 (1.0 used the umask, typically 0644);
* ``notBefore`` is back-dated by one day so peers with a slow clock accept a fresh certificate;
  ``notAfter`` is 1.0's arithmetic applied to that ``notBefore`` (same date + ``int(years)``
  years + ``int(fraction * 365)`` days), so "100 years" still reads as exactly 100 years;
* the default extensions are a critical ``BasicConstraints(ca=False)`` and a
  ``SubjectAlternativeName`` that also holds ``::1``, the global IPv6 addresses and the
  ``hostname`` argument (``netmgr start -H H`` certificates cover ``H``). The certificate is
  still its own trust anchor: clients load it with ``cafile=`` (1.0's trust on first use) and a
  chain of length one needs no CA bit. ``ca=False`` stops a client that saved this certificate
  from also trusting any other certificate signed with the server's key, which ``ca=True`` would;
* ``extensions=None`` means the defaults above and ``extensions=[]`` means none at all (1.0
  added its SAN only when the Common Name was this computer's hostname);
* certificates are signed only with the hashes of :data:`SIGNATURE_HASHES` (1.0 offered every
  hash class, and failed later for MD5, SHA1, BLAKE2, SM3 …);
  :func:`netmgr.certinfo.fingerprint` takes any;
* :func:`load_key` and :func:`server_context` name the file at fault (a key or a certificate).
"""
import contextlib
import datetime
import inspect
import ipaddress
import math
import os
import shutil
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from netmgr import hostinfo
from netmgr.certinfo import hash_algorithm, load_certificate
from netmgr.errors import StartupError

KEY_MODE = 0o600
CLOCK_SKEW = datetime.timedelta(days=1)

# 1.0 listed the curves of the private ``ec._CURVE_TYPES``; the public classes plus OpenSSL's two
# aliases give the same names without touching private cryptography state.
_CURVES = {cls.name.upper(): cls for cls in vars(ec).values()
           if inspect.isclass(cls) and issubclass(cls, ec.EllipticCurve) and cls is not ec.EllipticCurve}
_CURVES.update(PRIME192V1=ec.SECP192R1, PRIME256V1=ec.SECP256R1)

# What cryptography signs a certificate with (RSA and EC keys; DSA keys take SHA-2 only); the
# other hashes fail with "not supported for signatures". In ``dir`` order, as 1.0 lists them.
SIGNATURE_HASHES = ("SHA224", "SHA256", "SHA384", "SHA3_224", "SHA3_256", "SHA3_384", "SHA3_512",
                    "SHA512")


# ---------------------------------------------------------------------------------------- keys

def generate_key(path, algorithm="rsa", password=None, size=2048, curve="secp384r1"):
    """Write a new private key (PEM, ``TraditionalOpenSSL``) to `path` with mode 0600; return `path`.

    `algorithm` is ``rsa`` (exponent 65537), ``dsa`` or ``ecc`` (any case); `size` is used by RSA
    and DSA, `curve` (any case) by ECC. A `password` encrypts the key (``BestAvailableEncryption``).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"The key size must be a positive integer, got {size!r}")
    key = _new_key(algorithm.upper(), size, curve)
    if password is None:
        encryption = serialization.NoEncryption()
    else:
        encryption = serialization.BestAvailableEncryption(_to_bytes(password))
    data = key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL, encryption)
    _write_private(path, data)
    return path


def _new_key(algorithm, size, curve):
    if algorithm == "RSA":
        return rsa.generate_private_key(65537, size)
    if algorithm == "DSA":
        return dsa.generate_private_key(size)
    if algorithm == "ECC":
        return ec.generate_private_key(_curve(curve)())
    raise ValueError(f"The encryption algorithm must be RSA, DSA or ECC. Got {algorithm}")


def _curve(name):
    try:
        return _CURVES[name.upper()]
    except KeyError:
        allowed = ", ".join(sorted(_CURVES))
        raise ValueError(f"Invalid curve name {name.upper()!r}. Allowed curves are\n{allowed}") from None


def _write_private(path, data):
    """Write `data` to `path` readable by the owner only, even if `path` existed with a wider mode."""
    _ensure_parent(path)
    with os.fdopen(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, KEY_MODE), "wb") as f:
        if hasattr(os, "fchmod"):  # os.open's mode only applies to a file it creates
            os.fchmod(f.fileno(), KEY_MODE)
        f.write(data)


def load_key(path, password=None):
    """Return the private key in the PEM file `path`.

    A file that holds no usable key, or a wrong or missing password, raises ValueError
    ``cannot load the private key <path>: <reason>``; a file that cannot be read, OSError.
    """
    with open(path, "rb") as f:
        data = f.read()
    pw = None if password is None else _to_bytes(password)
    try:
        return serialization.load_pem_private_key(data, password=pw)
    except (TypeError, ValueError) as e:  # TypeError: "Password was not given but private key is encrypted"
        raise ValueError(f"cannot load the private key {path}: {e}") from None


def is_private_key_safe(path):
    """Whether no one but the owner may read or write the key file `path` (no group/other mode bits)."""
    return os.stat(path).st_mode & 0o077 == 0


def keep_backup(path, private=False):
    """Copy `path` to ``<path>.bak`` (replacing an older one) and return that path.

    A `private` (key) file's copy is written with mode 0600 from the start, as keys are; any
    other file keeps its mode. The original stays in place until its replacement is written.
    """
    backup = os.fspath(path) + ".bak"
    if private:
        with open(path, "rb") as f:
            _write_private(backup, f.read())
    else:
        shutil.copy2(path, backup)
    return backup


# -------------------------------------------------------------------------------- certificates

def generate_certificate(path, key_path, key_password=None, algorithm="SHA256", years_valid=100,
                         name=None, extensions=None, hostname=None):
    """Write a self-signed X.509 v3 certificate (PEM) to `path`, signed by the key at `key_path`.

    If `key_path` does not exist an RSA-2048 key is created there first (encrypted with
    `key_password` if given), as 1.0 does. `algorithm` is the name (any case) of a
    :data:`SIGNATURE_HASHES` or a ``HashAlgorithm``. `name` defaults to 1.0's subject with
    CN = `hostname` or this computer's hostname; `extensions` (``ExtensionType`` list, added
    non-critical) defaults to the ones described in the module docstring. Returns `path`.
    """
    hash_algorithm = signature_hash(algorithm)
    if not os.path.isfile(key_path):
        generate_key(key_path, password=key_password)
    key = load_key(key_path, key_password)
    hostname = _usable_hostname(hostname)
    if name is None:
        name = default_name(hostname or hostinfo.HOSTNAME)
    not_before, not_after = _validity(years_valid)
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(name)  # self-signed: issuer == subject
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before)
               .not_valid_after(not_after))
    if extensions is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        builder = builder.add_extension(subject_alt_name(hostname), critical=False)
    else:
        for ext in extensions:
            builder = builder.add_extension(ext, critical=False)
    cert = builder.sign(key, hash_algorithm)
    _ensure_parent(path)
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return path


def default_name(common_name):
    """1.0's subject (and issuer) name with the given Common Name."""
    a = x509.NameAttribute
    return x509.Name([
        a(NameOID.COUNTRY_NAME, "NZ"),
        a(NameOID.STATE_OR_PROVINCE_NAME, "Wellington"),
        a(NameOID.LOCALITY_NAME, "Lower Hutt"),
        a(NameOID.ORGANIZATION_NAME, "Measurement Standards Laboratory of New Zealand"),
        a(NameOID.COMMON_NAME, common_name),
        a(NameOID.EMAIL_ADDRESS, "info@measurement.govt.nz"),
    ])


def subject_alt_name(hostname=None):
    """SAN for this computer: its hostname, localhost, 127.0.0.1, ::1, its addresses and `hostname`."""
    wanted = [hostinfo.HOSTNAME, "localhost", "127.0.0.1", "::1", *hostinfo.interface_addresses()]
    if hostname:
        wanted.append(hostname)
    entries = []
    for text in dict.fromkeys(wanted):  # de-duplicated, order kept (1.0 listed 127.0.0.1 twice)
        try:
            entry = x509.IPAddress(ipaddress.ip_address(text))
        except ValueError:
            entry = x509.DNSName(text)
        if entry not in entries:
            entries.append(entry)
    return x509.SubjectAlternativeName(entries)


def _usable_hostname(hostname):
    """`hostname` without IPv6 brackets; None for a wildcard bind address, which no client dials."""
    if not hostname:
        return None
    hostname = hostname.strip("[]")
    try:
        if ipaddress.ip_address(hostname).is_unspecified:
            return None
    except ValueError:
        pass
    return hostname


def _validity(years_valid):
    """(notBefore, notAfter): back-dated start, then 1.0's years-and-days arithmetic from it."""
    if isinstance(years_valid, bool) or not isinstance(years_valid, (int, float)) \
            or not math.isfinite(years_valid) or years_valid <= 0:
        raise ValueError(f"years_valid must be a finite positive number, got {years_valid!r}")
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    not_before = now - CLOCK_SKEW
    years = int(years_valid)
    days = int((years_valid - years) * 365)
    try:
        not_after = _add_years(not_before, years) + datetime.timedelta(days=days)
    except (ValueError, OverflowError):
        raise ValueError(f"years_valid={years_valid!r} ends after the year 9999") from None
    if not_after <= now:
        raise ValueError(f"years_valid={years_valid!r} gives a certificate that has already expired")
    return not_before, not_after


def _add_years(when, years):
    try:
        return when.replace(year=when.year + years)
    except ValueError:  # 29 February in a year that is not a leap year (1.0 crashed here)
        return when.replace(year=when.year + years, day=28)


def signature_hash(algorithm):
    """The ``HashAlgorithm`` to sign with: an instance, or a name of :data:`SIGNATURE_HASHES` (any case)."""
    return hash_algorithm(algorithm, SIGNATURE_HASHES)


# ------------------------------------------------------------------------------------- server

def server_context(cert_path, key_path=None, key_password=None):
    """The Manager's ``ssl.SSLContext`` (TLS >= 1.2); without `key_path` the key is read from `cert_path`.

    A file that cannot be used raises :class:`~netmgr.errors.StartupError` naming it:
    ``cannot load the certificate <cert>: <reason>``, ``cannot load the private key <key>:
    <reason>`` or ``the private key <key> does not match the certificate <cert>``.

    DSA keys load, but no default client completes a handshake with them (Python's default
    ciphers exclude aDSS and TLS 1.3 has no DSA), exactly as with 1.0; use RSA or EC.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_path, key_path, key_password)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise StartupError(_load_problem(cert_path, key_path or cert_path, key_password, exc)) from None
    return context


def _load_problem(cert_path, key_path, key_password, exc):
    """Which file `load_cert_chain` failed on, and why: OpenSSL says "PEM lib" for both files."""
    try:
        cert = load_certificate(cert_path)
    except (OSError, ValueError) as e:
        return f"cannot load the certificate {cert_path}: {_reason(e)}"
    try:
        key = _key_as_ssl_reads_it(key_path, key_password)
    except OSError as e:
        return f"cannot load the private key {key_path}: {_reason(e)}"
    except ValueError as e:
        return str(e)  # cannot load the private key <path>: <reason>
    if key.public_key() != cert.public_key():  # OpenSSL: KEY_VALUES_MISMATCH, NO_CERTIFICATE_ASSIGNED
        return f"the private key {key_path} does not match the certificate {cert_path}"
    return f"cannot load the certificate {cert_path} with the private key {key_path}: {_reason(exc)}"


def _key_as_ssl_reads_it(path, password):
    """:func:`load_key`, ignoring a password that the key does not need, as ``ssl`` does."""
    try:
        return load_key(path, password)
    except ValueError as e:
        error = e
    if password is not None:
        with contextlib.suppress(ValueError):
            return load_key(path)
    raise error


def _reason(exc):
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def ensure_certificate(cert_path, key_path, key_password=None, hostname=None):
    """Return (cert_path, key_path, created) after creating whatever ``netmgr start`` lacks.

    Both files present: used as they are. Key only: a certificate is made from it. No key: a new
    RSA-2048 key (0600, encrypted with `key_password` if given) and a certificate for it, replacing
    any certificate left at `cert_path`, which could not match the new key.
    """
    have_key = os.path.isfile(key_path)
    if have_key and os.path.isfile(cert_path):
        return cert_path, key_path, False
    if not have_key:
        generate_key(key_path, password=key_password)
    generate_certificate(cert_path, key_path, key_password=key_password, hostname=hostname)
    return cert_path, key_path, True


# ------------------------------------------------------------------------------------- helpers

def _to_bytes(password):
    return password if isinstance(password, bytes) else password.encode()


def _ensure_parent(path):
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
