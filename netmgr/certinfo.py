"""What a certificate says: the ``certdump`` text, fingerprints, and the hash names both use.

Contract: pure functions; no gevent, no sockets, no ``ssl``, no logging. The only I/O is reading
the PEM file that :func:`load_certificate` is given a path of. :func:`dump_certificate` prints
what MSL-Network 1.0's ``certdump`` prints (reference §3, §4), with these deliberate differences
(reference §6.1 item 10):

* every extension is listed; 1.0 printed only the last one;
* the SHA-256 fingerprint (what a client's trust-on-first-use prompt asks to compare) comes just
  before 1.0's last two lines, ``Fingerprint (SHA1):`` and the SHA-1 fingerprint;

otherwise the texts are identical for certificates with at most one extension (every certificate
1.0 generates). :func:`fingerprint` takes any hash of :func:`hash_algorithm`; signing is limited
to :data:`netmgr.crypto.SIGNATURE_HASHES`.
"""
import inspect
import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

# Same names and order (``dir`` is sorted) as 1.0's ``hash_map``.
HASHES = {name.upper(): obj for name, obj in ((n, getattr(hashes, n)) for n in dir(hashes))
          if not name.startswith("_") and inspect.isclass(obj)
          and issubclass(obj, hashes.HashAlgorithm) and obj is not hashes.HashAlgorithm}

# The BLAKE2 classes take a digest size; cryptography only supports their full sizes.
_DIGEST_SIZES = {"BLAKE2B": 64, "BLAKE2S": 32}

_HEX_FIELDS = {"Key", "Modulus", "Y", "P", "Q", "G"}  # shown as colon-hex blocks, as in 1.0
_OID = re.compile(r"oid=(.+), name=(.+)\)")  # 1.0's ``_oid_regex``, applied to repr(ObjectIdentifier)


def hash_algorithm(algorithm, allowed=tuple(HASHES)):
    """A ``HashAlgorithm`` instance from an instance or a name of `allowed` (any case), with 1.0's errors."""
    if isinstance(algorithm, hashes.HashAlgorithm):
        return algorithm
    if not isinstance(algorithm, str):
        raise TypeError("The hash algorithm must be a string or HashAlgorithm instance")
    name = algorithm.upper()
    if name not in allowed:
        names = ", ".join(allowed)
        raise ValueError(f"Invalid hash algorithm {name!r}. Allowed algorithms are\n{names}")
    if name in _DIGEST_SIZES:
        return HASHES[name](_DIGEST_SIZES[name])
    try:
        return HASHES[name]()
    except TypeError:  # SHAKE128/256 are extendable-output functions without a fixed size
        raise ValueError(f"The hash algorithm {name!r} needs a digest size; "
                         f"pass a hashes.{HASHES[name].__name__}(size) instance") from None


def load_certificate(cert):
    """An ``x509.Certificate`` from a certificate, PEM bytes or the path of a PEM file."""
    if isinstance(cert, x509.Certificate):
        return cert
    if isinstance(cert, bytes):
        return x509.load_pem_x509_certificate(cert)
    with open(cert, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def fingerprint(cert, algorithm="SHA1"):
    """The fingerprint of `cert` as 1.0 shows it: colon-separated lowercase hex (SHA-1 by default)."""
    return _colon_hex(load_certificate(cert).fingerprint(hash_algorithm(algorithm)))


# ----------------------------------------------------------------------------------------- dump

def dump_certificate(cert):
    """The text that 1.0's ``msl-network certdump`` prints for `cert` (certificate, PEM or path)."""
    cert = load_certificate(cert)
    lines = ["Version: " + cert.version.name, "Serial Number: " + _colon_hex(cert.serial_number)]
    lines += ["Issuer:", *_name_lines(cert.issuer)]
    lines += ["Validity:",
              "  Not Before: " + cert.not_valid_before_utc.strftime("%d %B %Y %H:%M:%S GMT"),
              "  Not After : " + cert.not_valid_after_utc.strftime("%d %B %Y %H:%M:%S GMT")]
    lines += ["Subject:", *_name_lines(cert.subject)]
    lines += ["Subject Public Key Info:", *_key_lines(cert.public_key())]
    if cert.extensions:
        lines.append("Extensions:")
        for ext in cert.extensions:
            oid, name = _oid(ext.oid)
            value = str(ext.value).replace("<", "").replace(">", "")
            lines += [f"  {value}:", f"    oid: {oid}", f"    name: {name}", f"    critical: {ext.critical}"]
    oid, name = _oid(cert.signature_algorithm_oid)
    lines += ["Signature Algorithm:", "  oid: " + oid, "  name: " + name, "  value:",
              _justify(_colon_hex(cert.signature))]
    lines += ["Fingerprint (SHA256):", fingerprint(cert, "SHA256")]  # new: see the module docstring
    lines += ["Fingerprint (SHA1):", fingerprint(cert)]  # 1.0's last two lines
    return "\n".join(lines)


def _name_lines(name):
    # 1.0 walks NameOID's attributes in definition order and shows the first value of each.
    lines = []
    for attr, oid in vars(NameOID).items():
        if attr.startswith("_"):
            continue
        values = name.get_attributes_for_oid(oid)
        if values:
            title = attr.replace("_", " ").title().replace(" Or ", " or ")
            lines.append(f"  {title}: {values[0].value}")
    return lines


def _key_lines(key):
    if isinstance(key, ec.EllipticCurvePublicKey):
        point = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        fields = [("Encryption", "Elliptic Curve"), ("Curve", key.curve.name),
                  ("Size", key.curve.key_size), ("Key", point)]
    elif isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        fields = [("Encryption", "RSA"), ("Exponent", numbers.e), ("Size", key.key_size),
                  ("Modulus", numbers.n)]
    elif isinstance(key, dsa.DSAPublicKey):
        numbers, params = key.public_numbers(), key.public_numbers().parameter_numbers
        fields = [("Encryption", "DSA"), ("Size", key.key_size), ("Y", numbers.y),
                  ("P", params.p), ("Q", params.q), ("G", params.g)]
    else:  # Ed25519, Ed448: 1.0 raised NotImplementedError
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        fields = [("Encryption", type(key).__name__.lstrip("_")), ("Key", raw)]
    lines = []
    for label, value in fields:
        if label in _HEX_FIELDS:
            lines += [f"  {label}:", _justify(_colon_hex(value))]
        else:
            lines.append(f"  {label}: {value}")
    return lines


def _colon_hex(value):
    """``aa:bb:…``; an int is written like 1.0 does (hex, padded to an even number of digits)."""
    h = value.hex() if isinstance(value, bytes) else format(value, "x")
    if len(h) % 2:
        h = "0" + h
    return ":".join(h[i:i + 2] for i in range(0, len(h), 2))


def _justify(h, width=75):
    # 1.0 joins with "    \n    ", leaving four trailing spaces on all but the last line;
    # kept so that the dumps compare equal.
    return "    " + "    \n    ".join(h[i:i + width] for i in range(0, len(h), width))


def _oid(oid):
    """(dotted string, name) as 1.0 parses them out of ``repr(ObjectIdentifier)``."""
    match = _OID.search(str(oid))
    return (match.group(1), match.group(2)) if match else (oid.dotted_string, "Unknown OID")
