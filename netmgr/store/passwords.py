"""Password hashing for the ``auth_users`` table: bcrypt for new rows, PBKDF2 verify for 1.0 rows.

This module performs no I/O and holds no state besides a cache of dummy hashes.

Storage in the two 1.0 columns (reference §2, ``auth_users``):

* bcrypt rows (written by netmgr): ``key`` = the full bcrypt hash (``b"$2b$12$…"``, 60 bytes; it carries
  its own salt and cost), ``salt`` = the 6-byte marker ``BCRYPT_SALT = b"bcrypt"``.
* PBKDF2 rows (written by MSL-Network 1.0): ``key`` = 32-byte PBKDF2-HMAC-SHA256 output, 100 000
  iterations, ``salt`` = 16 random bytes.

A row is bcrypt exactly when its salt equals the marker; a 1.0 salt is 16 bytes, so it can never collide.
The marker keeps the columns NOT NULL and lets an operator see the format with a plain ``SELECT``.
MSL-Network 1.0 tools cannot verify bcrypt rows: they run PBKDF2 over the marker and compare with the
60-byte hash, which simply fails (no crash), so such users cannot log in to a 1.0 Manager.

Everything here is CPU-bound (bcrypt at cost 12 is ~0.2 s, PBKDF2 ~0.05 s): a gevent caller runs it in
the hub threadpool (STYLE rule 4).
"""
import functools
import hashlib
import hmac

import bcrypt

__all__ = [
    "BCRYPT_SALT", "DEFAULT_ROUNDS", "MAX_PASSWORD_BYTES", "PBKDF2_ITERATIONS",
    "hash_password", "verify_password", "needs_rehash", "verify_dummy", "is_bcrypt",
]

BCRYPT_SALT = b"bcrypt"
"""Value of the ``salt`` column that marks a bcrypt row."""

DEFAULT_ROUNDS = 12
"""bcrypt cost factor (log2 of the number of rounds) for new hashes."""

MAX_PASSWORD_BYTES = 72
"""bcrypt ignores input past 72 bytes; we refuse such passwords instead of truncating them."""

PBKDF2_ITERATIONS = 100_000
PBKDF2_KEY_LENGTH = 32


def _as_bytes(value):
    # sqlite3 returns BLOBs as bytes, but a memoryview/bytearray may come from other callers.
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def is_bcrypt(key, salt):
    """Whether a ``(key, salt)`` row holds a bcrypt hash (salt is the marker)."""
    return _as_bytes(salt) == BCRYPT_SALT


def hash_password(password, rounds=DEFAULT_ROUNDS):
    """Hash *password* with bcrypt; return ``(key, salt)`` for the ``auth_users`` columns.

    Raises ``TypeError`` if *password* is not a str and ``ValueError`` if it is empty or longer than
    72 bytes in UTF-8 (bcrypt would silently ignore the rest, so two passwords sharing the first 72
    bytes would be equal).
    """
    if not isinstance(password, str):
        raise TypeError(f"password must be a str, not {type(password).__name__}")
    if not password:
        raise ValueError("The password must not be empty")
    encoded = password.encode()
    if len(encoded) > MAX_PASSWORD_BYTES:
        raise ValueError(f"The password is {len(encoded)} bytes long in UTF-8; "
                         f"at most {MAX_PASSWORD_BYTES} bytes are allowed")
    return bcrypt.hashpw(encoded, bcrypt.gensalt(rounds)), BCRYPT_SALT


def verify_password(password, key, salt):
    """Whether *password* matches a stored ``(key, salt)`` row, bcrypt or 1.0 PBKDF2.

    Never raises for bad input: a non-str password, an over-long password or a malformed row is False.
    """
    if not isinstance(password, str):
        return False
    key, salt = _as_bytes(key), _as_bytes(salt)
    if not isinstance(key, bytes) or not isinstance(salt, bytes):
        return False
    try:
        encoded = password.encode()
    except UnicodeEncodeError:  # lone surrogates
        return False
    if is_bcrypt(key, salt):
        if len(encoded) > MAX_PASSWORD_BYTES:  # never stored, and bcrypt>=5 raises on it
            return False
        try:
            return bcrypt.checkpw(encoded, key)
        except ValueError:  # malformed hash in the key column
            return False
    derived = hashlib.pbkdf2_hmac("sha256", encoded, salt, PBKDF2_ITERATIONS, PBKDF2_KEY_LENGTH)
    return hmac.compare_digest(derived, key)


def needs_rehash(key, salt, rounds=None):
    """True for a 1.0 PBKDF2 row; with *rounds*, also for a bcrypt row of a lower cost."""
    if not is_bcrypt(key, salt):
        return True
    if rounds is None:
        return False
    try:
        return int(_as_bytes(key).split(b"$")[2]) < rounds
    except (IndexError, ValueError):
        return True


@functools.lru_cache(maxsize=8)
def _dummy_key(rounds):
    return bcrypt.hashpw(b"netmgr-dummy-password", bcrypt.gensalt(rounds))


def verify_dummy(password, rounds=DEFAULT_ROUNDS):
    """Spend the time of a real bcrypt check of *password*, then return False.

    Called for an unknown username so that the reply time does not reveal whether the user exists
    (reference §6.1 item 6). It runs the very code path of :func:`verify_password` against a cached
    hash of the same cost; the first call per cost pays once for building that hash.
    """
    verify_password(password, _dummy_key(rounds), BCRYPT_SALT)
    return False
