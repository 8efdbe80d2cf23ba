"""Authentication modes, run by a session between accept and identity (reference 1.3).

Each mode is an object with ``description`` (logged at start-up) and ``authenticate(session)``
which uses ``session.ask(attribute, *args)`` and ``session.reject(message)`` and returns
whether the peer may go on to the identity step.
"""
import hmac
import math
import time

from netmgr.store import passwords
from netmgr.errors import error_text


class NoAuth:
    description = "not using authentication"

    def authenticate(self, session):
        return True


class PasswordAuth:
    """The Manager password (``-P``): one shared secret, compared in constant time."""

    description = "using a password for authentication"

    def __init__(self, password, throttle):
        self.password = password
        self._secret = password.encode("utf-8")
        self.throttle = throttle

    def authenticate(self, session):
        if throttled(session, self.throttle):
            return False
        value = session.ask("password", session.manager.name)
        if value is None or value == "":  # a blank or missing reply closes the connection (6.5)
            session.manager.record(session, "connection closed prematurely" if value is None
                                   else "connection closed before receiving the password")
            return False
        given = value.encode("utf-8") if isinstance(value, str) else b"\0not a string"
        if not hmac.compare_digest(given, self._secret):
            self.throttle.failed(session.ip)
            session.manager.record(session, "rejected: wrong Manager password")
            session.log.info("auth_rejected", reason="wrong Manager password")
            session.reject(error_text("ValueError", "Wrong Manager password"))
            return False
        self.throttle.succeeded(session.ip)
        return True


class Throttle:
    """Failed attempts per source address (reference 6.6: 1.0 has no back-off).

    After ``max_failures`` failures within ``window`` seconds, an address is refused for
    ``lockout`` seconds without its secret being checked. A success clears its record.
    """

    def __init__(self, max_failures=5, window=60.0, lockout=30.0, clock=time.monotonic):
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self._clock = clock
        self._failures = {}  # ip -> (count, time of the first failure in the window)

    def retry_after(self, ip):
        """Seconds until ``ip`` may try again; 0 when it may try now."""
        record = self._failures.get(ip)
        if record is None or record[0] < self.max_failures:
            return 0
        wait = record[1] + self.lockout - self._clock()
        if wait <= 0:
            del self._failures[ip]
            return 0
        return wait

    def failed(self, ip):
        now = self._clock()
        count, first = self._failures.get(ip, (0, now))
        if now - first > self.window and count < self.max_failures:
            count, first = 0, now
        count += 1
        # the lockout runs from the failure that reached the limit
        self._failures[ip] = (count, now if count >= self.max_failures else first)
        if len(self._failures) > 100_000:  # bound the table under a spray of addresses
            self._failures.clear()

    def succeeded(self, ip):
        self._failures.pop(ip, None)


def throttled(session, throttle):
    """Refuse a throttled address; True when the caller must stop."""
    wait = throttle.retry_after(session.ip)
    if not wait:
        return False
    session.log.info("auth_throttled", retry_after=round(wait, 1))
    session.reject(error_text("ValueError", f"Too many failed attempts, try again in "
                                            f"{math.ceil(wait)} second(s)"))
    return True


class LoginAuth:
    """Username and password from the ``auth_users`` table (``--auth-login``).

    The flow is the same for an unknown user and a wrong password: the password is always asked
    for and always checked, against a dummy hash of the same cost when the user is unknown, so
    timing does not tell them apart. The texts differ because 1.0 clients and tests match them
    ("Unregistered user", "Wrong login password").
    """

    description = "using a login for authentication"

    def __init__(self, users, throttle, rounds):
        self.users = users
        self.throttle = throttle
        self.rounds = rounds

    def authenticate(self, session):
        admin = self.login(session)
        if admin is None:
            return False
        session.is_admin = admin  # a login at the handshake also settles admin rights (1.3)
        return True

    def login(self, session, ask=None, reject=None):
        """Ask for a username and password; return the user's admin flag, or None on failure.

        ``ask``/``reject`` default to the handshake's; the inline admin challenge passes its own.
        """
        ask = ask or session.ask
        reject = reject or session.reject
        if throttled(session, self.throttle):
            return None
        manager = session.manager
        username = ask("username", manager.name)
        if not username:
            manager.record(session, "connection closed prematurely" if username is None
                           else "connection closed before receiving the username")
            return None
        password = ask("password", username)
        if not password:
            manager.record(session, "connection closed prematurely" if password is None
                           else "connection closed before receiving the password")
            return None
        user = self.users.get_user(username) if isinstance(username, str) else None
        ok = session.manager.offload(self._verify, user, password)
        if not ok:
            self.throttle.failed(session.ip)
            message = "unregistered user" if user is None else "wrong login password"
            manager.record(session, f"rejected: {message}")
            session.log.info("auth_rejected", reason=message)
            reject(error_text("ValueError", message[0].upper() + message[1:]))
            return None
        self.throttle.succeeded(session.ip)
        if passwords.needs_rehash(user[2], user[3]):
            # 1.0 rows are PBKDF2: upgrade to bcrypt now that the password is known
            if self.users.rehash(username, password, self.rounds):
                session.log.info("password_rehashed", user=username)
        session.log.info("logged_in", user=username, admin=bool(user[4]))
        return bool(user[4])

    def _verify(self, user, password):
        if user is None or not isinstance(password, str):
            return passwords.verify_dummy(password if isinstance(password, str) else "", self.rounds)
        return passwords.verify_password(password, user[2], user[3])


class HostnameAuth:
    """Trusted hostnames (``--auth-hostname``): the peer's IP or resolved name is in the table.

    Loopback peers are checked as ``localhost``. ``hostnames`` is a callable returning the
    current set, so edits of the table apply without a restart.
    """

    description = "using trusted hosts for authentication"

    def __init__(self, hostnames):
        self.hostnames = hostnames

    def authenticate(self, session):
        trusted = self.hostnames()
        names = {session.ip, session.domain, session.hostname}
        if session.ip.startswith("127.") or session.ip == "::1":
            names.add("localhost")
        if names & trusted:
            return True
        session.manager.record(session, "rejected: untrusted hostname")
        session.log.info("auth_rejected", reason="untrusted hostname")
        session.reject(error_text("ValueError", f"{session.hostname!r} is not a trusted hostname"))
        return False
