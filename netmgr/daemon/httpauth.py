"""Who may read the HTTP endpoint (:mod:`netmgr.daemon.http`): decided once at start, checked per request.

Authentication is required when the endpoint listens beyond loopback, when ``http_token_file``
is set, or when the Manager's ``auth`` is ``login`` or ``password`` (a Manager whose peers need a
secret does not show its state to anyone on the machine). Then a request carries either

* ``Authorization: Bearer <token>``: the first line of ``http_token_file``, compared with
  ``hmac.compare_digest``; the file is read again when it changes (rotation needs no reload);
* HTTP Basic as a user of the ``auth_users`` table with the admin flag: the password is checked
  in the Manager's password threads (``offload``), throttled per address and braked like a
  wire login (:mod:`netmgr.daemon.auth`). A browser sends Basic with every request, so a
  verified ``(user, password)`` is remembered for :attr:`HTTPAuth.CACHE_SECONDS` under a keyed
  hash (never the password), and only while the user's row is unchanged.

Every refusal and every fresh Basic login is an ``auth`` event (mode ``http``), never with a
secret; a token that is accepted is not (a scrape every 15 s would flood the stream).
"""
import base64
import binascii
import hashlib
import hmac
import math
import os
import secrets
import time

import gevent

from netmgr.config import read_secret_file
from netmgr.daemon import log
from netmgr.daemon.auth import Attempt, Brake
from netmgr.daemon.limits import normal_ip
from netmgr.errors import Failed, StartupError
from netmgr.store import passwords

logger = log.get_logger("netmgr.daemon.http")

#: the Manager auth modes that make the HTTP endpoint require authentication on loopback too
SECRET_MODES = ("login", "password")


class HTTPAuth:
    #: remembered Basic logins, and for how long
    CACHE_SIZE = 128
    CACHE_SECONDS = 300.0
    #: the shortest token accepted: guessing must be hopeless, not merely throttled
    TOKEN_MIN = 16
    #: seconds between two looks at an address whose login budget is in use
    POLL = 0.05

    def __init__(self, manager, required, token_file):
        self.manager = manager
        self.required = required
        self.token_file = token_file
        self._token = None  # bytes
        self._stamp = None  # (inode, mtime, size) of the token file when it was read
        self._cache = {}  # keyed hash of (user, password) -> (row key, admin, expires)
        self._cache_key = secrets.token_bytes(32)
        self.brake = getattr(manager.login, "brake", None) or Brake()

    @classmethod
    def configure(cls, manager, text, loopback):
        """The rules for an endpoint bound to ``text``; StartupError naming what to configure
        when authentication is required and impossible."""
        cfg = manager.cfg
        token_file = getattr(cfg, "http_token_file", None) or None
        secret_mode = cfg.auth in SECRET_MODES
        auth = cls(manager, not loopback or token_file is not None or secret_mode, token_file)
        if token_file is not None:
            auth.read_token(strict=True)
        elif auth.required and not auth.admins():
            why = "it is not on a loopback address" if not loopback else f"auth = {cfg.auth}"
            fix = (f"set http_token_file (config file or NETMGR_HTTP_TOKEN_FILE) to a file whose "
                   f"first line is a token of {cls.TOKEN_MIN} characters or more (openssl rand "
                   f"-hex 32 > FILE), or add an administrator (netmgr user add NAME --admin)")
            if not loopback:
                raise StartupError(f"the HTTP endpoint on {text} needs authentication ({why}) and "
                                   f"has none: {fix}")
            # on loopback the Manager's own peers must not lose it over its page: it answers 401
            # until an administrator is added (the table is read per request)
            logger.warning("http_unreadable", address=text, reason=f"authentication is required "
                           f"({why}) and no one can authenticate", fix=fix)
        return auth

    def describe(self):
        if not self.required:
            return "none (loopback)"
        return "bearer token, basic (administrators)" if self.token_file else "basic (administrators)"

    def admins(self):
        return any(admin for _, admin in self.manager.users.users())

    # ------------------------------------------------------------------ the token file
    def read_token(self, strict=False):
        """The token as bytes, read again when the file changed; None when it cannot be used
        (logged), or with ``strict`` (at start) StartupError."""
        path = self.token_file
        try:
            info = os.stat(path)
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
            if stamp == self._stamp:
                return self._token
            token = read_secret_file(path)
        except (OSError, Failed) as exc:
            problem = f"cannot read the HTTP token file {path}: {getattr(exc, 'strerror', None) or exc}"
            return self._unusable(problem, strict)
        if len(token) < self.TOKEN_MIN:
            return self._unusable(f"the HTTP token in {path} is {len(token)} characters long; use "
                                  f"{self.TOKEN_MIN} or more (openssl rand -hex 32 > {path})", strict)
        if info.st_mode & 0o007:
            logger.warning("http_token_file_readable_by_others", path=path)
        self._stamp, self._token = stamp, token.encode("utf-8")
        return self._token

    def _unusable(self, problem, strict):
        if strict:
            raise StartupError(problem)
        if self._stamp is not None:  # logged once per change, not per request
            logger.warning("http_token_unusable", error=problem)
        self._stamp = self._token = None
        return None

    # ------------------------------------------------------------------ per request
    def check(self, environ):
        """``(who, denial)``: who is None (no authentication needed), ``"token"`` or
        ``"user:<name>"``; denial is None or ``(status, body, headers)``."""
        if not self.required:
            return None, None
        scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme not in ("basic", "bearer") or not value:
            return None, self._challenge(b"authentication required\n")  # a first request: no event
        ip = normal_ip(environ.get("REMOTE_ADDR", ""))
        address = f"{ip}:{environ.get('REMOTE_PORT', '')}"
        wait = self._wait_turn(ip)
        if wait:
            return None, self._throttled(address, wait)
        if scheme == "bearer":
            return self._bearer(value, ip, address)
        return self._basic(value, ip, address)

    def _wait_turn(self, ip):
        """0 when ``ip`` may try now; else the seconds it stays locked out (or 1 when its
        budget stays in use until the deadline): parallel requests of one browser all get in."""
        throttle = self.manager.throttle
        deadline = time.monotonic() + self.manager.cfg.handshake_timeout
        while True:
            wait = throttle.retry_after(ip)
            if wait or not throttle.busy(ip):
                return wait
            if time.monotonic() > deadline:
                return 1
            gevent.sleep(self.POLL)

    def _bearer(self, value, ip, address):
        token = self.read_token() if self.token_file else None
        with Attempt(self.manager.throttle, ip) as attempt:
            if token is not None and hmac.compare_digest(value.encode("utf-8", "replace"), token):
                attempt.succeeded()
                return "token", None
            attempt.failed()
        return None, self._failed(address, "wrong token" if token else "no token is configured")

    def _basic(self, value, ip, address):
        try:
            user, colon, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, ValueError):
            user, colon, password = "", "", ""
        users = self.manager.users
        row = users.get_user(user) if colon and user else None
        key = hmac.new(self._cache_key, f"{user}\0{password}".encode("utf-8", "replace"),
                       hashlib.sha256).digest()
        cached = self._cache.get(key)
        if cached is not None and row is not None and cached[0] == bytes(row[2]) \
                and cached[2] > time.monotonic():
            return self._verdict(user, cached[1], address, fresh=False)
        brake_key = ("user", user)
        with Attempt(self.manager.throttle, ip) as attempt:
            ok = colon and self.brake.check(
                lambda: self.manager.offload(_verify, row, password, users.rounds), brake_key, None)
            if not ok:
                attempt.failed()
                self.brake.failed(brake_key)
                self.brake.failed()
                return None, self._failed(address, "unregistered user" if row is None
                                          else "wrong login password", user=user or None)
            attempt.succeeded()
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (bytes(row[2]), bool(row[4]), time.monotonic() + self.CACHE_SECONDS)
        return self._verdict(user, bool(row[4]), address, fresh=True)

    def _verdict(self, user, is_admin, address, fresh):
        if not is_admin:
            if fresh:
                self._event("failed", address, user=user, reason="not an administrator")
            return None, ("403 Forbidden", b"only administrators may read this endpoint\n", [])
        if fresh:
            self._event("ok", address, user=user)
        return f"user:{user}", None

    # ------------------------------------------------------------------ answers and events
    def _challenge(self, body):
        headers = [("WWW-Authenticate", 'Basic realm="netmgr", charset="UTF-8"')]
        if self.token_file:
            headers.append(("WWW-Authenticate", 'Bearer realm="netmgr"'))
        return "401 Unauthorized", body, headers

    def _failed(self, address, reason, user=None):
        self.manager.counts["auth_failures"] += 1
        logger.info("http_auth_rejected", peer=address, reason=reason)
        self._event("failed", address, user=user, reason=reason)
        return self._challenge(b"authentication failed\n")

    def _throttled(self, address, wait):
        self.manager.counts["auth_throttled"] += 1
        seconds = math.ceil(wait)
        self._event("throttled", address, reason=f"locked out for {seconds} s")
        return ("429 Too Many Requests", f"too many failed attempts, try again in {seconds} s\n".encode(),
                [("Retry-After", str(seconds))])

    def _event(self, event, address, user=None, reason=None):
        fields = {"address": address, "mode": "http"}
        if user is not None:
            fields["user"] = user
        if reason:
            fields["reason"] = reason
        self.manager.events.publish("auth", event, **fields)


def _verify(row, password, rounds):
    """In a password thread: the password against the row, or a dummy check of the same cost."""
    if row is None:
        return passwords.verify_dummy(password, rounds)
    return passwords.verify_password(password, row[2], row[3])
