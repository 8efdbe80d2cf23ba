"""Authentication modes, run by a session between accept and identity (reference 1.3).

Each mode is an object with ``description`` (logged at start-up) and ``authenticate(session)``
which uses ``session.ask(attribute, *args)`` and ``session.reject(message)`` and returns
whether the peer may go on to the identity step.

Guessing is bounded per source address, not per connection (OpenSSH's ``PerSourcePenalties``):
an attempt reserves its place in the address's budget *before* the first prompt, so N parallel
connections from one address get the same ``max_auth_failures`` as one. Source rotation is met
by a global brake (:class:`Brake`): once failures from everywhere exceed a rate, each password
check waits its turn, one at a time, at a bounded pace. Password hashes run in a small thread
pool (``auth_workers``), so guessing can never take every core.
"""
import hmac
import math
import time

import gevent
from gevent.lock import Semaphore

from netmgr.daemon import log
from netmgr.errors import error_text
from netmgr.store import passwords

logger = log.get_logger("netmgr.daemon.auth")


class NoAuth:
    description = "not using authentication"

    def authenticate(self, session):
        return True


class Throttle:
    """Failed and running attempts per source address (reference 6.6: 1.0 has no back-off).

    An address may have at most ``max_failures`` failures plus attempts in progress within
    ``window`` seconds; at the limit it is refused for ``lockout`` seconds without its secret
    being checked. A success clears its record. Failures are logged at WARNING once per address
    when it is locked out, with their count, not one line each.
    """

    def __init__(self, max_failures=5, window=60.0, lockout=30.0, clock=time.monotonic):
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self._clock = clock
        self._failures = {}  # ip -> (count, time of the first failure in the window)
        self._running = {}  # ip -> attempts between their reservation and their verdict

    def retry_after(self, ip):
        """Seconds ``ip`` stays locked out; 0 when it is not."""
        record = self._failures.get(ip)
        if record is None or record[0] < self.max_failures:
            return 0
        wait = record[1] + self.lockout - self._clock()
        if wait <= 0:
            del self._failures[ip]
            return 0
        return wait

    def busy(self, ip):
        """Whether ``ip``'s failures and running attempts use its whole budget: a new attempt
        must wait for one of them to end (a success frees its place, a failure may lock out)."""
        record = self._failures.get(ip)
        return (0 if record is None else record[0]) + self._running.get(ip, 0) >= self.max_failures

    def reserve(self, ip):
        """Take a place in ``ip``'s budget before prompting; release it with one of the verdicts."""
        self._running[ip] = self._running.get(ip, 0) + 1

    def release(self, ip):
        """The attempt ended without a verdict (the peer left, or the deadline passed)."""
        count = self._running.get(ip, 0)
        if count <= 1:
            self._running.pop(ip, None)
        else:
            self._running[ip] = count - 1

    def failed(self, ip):
        self.release(ip)
        now = self._clock()
        count, first = self._failures.get(ip, (0, now))
        if now - first > self.window and count < self.max_failures:
            count, first = 0, now
        count += 1
        # the lockout runs from the failure that reached the limit
        self._failures[ip] = (count, now if count >= self.max_failures else first)
        if count == self.max_failures:
            logger.warning("auth_locked_out", ip=ip, failures=count, lockout=self.lockout)
        if len(self._failures) > 100_000:  # bound the table under a spray of addresses
            self._failures.clear()

    def succeeded(self, ip):
        self.release(ip)
        self._failures.pop(ip, None)


class Brake:
    """A global failure-rate brake against guessing from rotating source addresses.

    While more than ``rate`` failures happened in the last ``window`` seconds (from anywhere,
    or for one username), each password check first waits for a single slot and holds it for
    ``pace`` seconds: at most 1/pace guesses per second get through, while a legitimate user
    still gets in, in turn.
    """

    def __init__(self, rate=30, window=60.0, pace=0.25, clock=time.monotonic):
        self.rate = rate
        self.window = window
        self.pace = pace
        self._clock = clock
        self._times = {}  # key -> failure times in the window (oldest first)
        self._slot = Semaphore()

    def failed(self, key=None):
        times = self._times.setdefault(key, [])
        times.append(self._clock())
        if len(times) > 2 * self.rate:
            del times[:len(times) - 2 * self.rate]
        if len(self._times) > 10_000:
            self._times.clear()

    def engaged(self, key=None):
        times = self._times.get(key)
        if not times:
            return False
        cutoff = self._clock() - self.window
        while times and times[0] < cutoff:
            times.pop(0)
        return len(times) > self.rate

    def check(self, verify, *keys):
        """``verify()``, after waiting for the slot when the brake is engaged for any key
        (the global count, key None, when no key is given)."""
        if not any(self.engaged(key) for key in keys or (None,)):
            return verify()
        with self._slot:
            result = verify()
            gevent.sleep(self.pace)
            return result


def auth_event(session, event, mode, reason=None, user=None):
    """The ``auth`` event of a login (and its count); never a password."""
    manager = session.manager
    if event == "failed":
        manager.counts["auth_failures"] += 1
    elif event == "throttled":
        manager.counts["auth_throttled"] += 1
    fields = {"address": session.address or f"{session.ip}:{session.port}", "mode": mode}
    if type(user) is str:
        fields["user"] = user
    if reason:
        fields["reason"] = reason
    manager.events.publish("auth", event, **fields)


def throttled(session, throttle, poll=0.05):
    """Refuse a locked-out address (True: the caller must stop), or wait for a place in its budget.

    Parallel attempts from one address beyond its budget wait for the running ones (within the
    handshake deadline): honest parallel logins all get in, parallel guesses are checked no
    more than ``max_failures`` times before the address is locked out.
    """
    while True:
        wait = throttle.retry_after(session.ip)
        if wait:
            session.log.info("auth_throttled", retry_after=round(wait, 1))
            auth_event(session, "throttled", session.manager.cfg.auth,
                       reason=f"locked out for {math.ceil(wait)} s")
            session.reject(error_text("ValueError", f"Too many failed attempts, try again in "
                                                    f"{math.ceil(wait)} second(s)"))
            return True
        if not throttle.busy(session.ip):
            return False  # the caller reserves its place before it yields again
        gevent.sleep(poll)


class Attempt:
    """One reserved attempt of an address: ``with Attempt(throttle, ip) as attempt:`` then
    ``attempt.failed()`` or ``attempt.succeeded()``; leaving without either releases it."""

    def __init__(self, throttle, ip):
        self.throttle, self.ip, self.settled = throttle, ip, False

    def __enter__(self):
        self.throttle.reserve(self.ip)
        return self

    def __exit__(self, *exc):
        if not self.settled:
            self.throttle.release(self.ip)

    def failed(self):
        self.settled = True
        self.throttle.failed(self.ip)

    def succeeded(self):
        self.settled = True
        self.throttle.succeeded(self.ip)


class PasswordAuth:
    """The Manager password (``-P``): one shared secret, compared in constant time."""

    description = "using a password for authentication"

    def __init__(self, password, throttle, brake=None):
        self.password = password
        self._secret = password.encode("utf-8")
        self.throttle = throttle
        self.brake = brake or Brake()

    def authenticate(self, session):
        if throttled(session, self.throttle):
            return False
        with Attempt(self.throttle, session.ip) as attempt:
            value = session.ask("password", session.manager.name)
            if value is None or value == "":  # a blank or missing reply closes the connection (6.5)
                session.manager.record(session, "connection closed prematurely" if value is None
                                       else "connection closed before receiving the password")
                return False
            given = value.encode("utf-8") if isinstance(value, str) else b"\0not a string"
            if not self.brake.check(lambda: hmac.compare_digest(given, self._secret)):
                attempt.failed()
                self.brake.failed()
                session.manager.record(session, "rejected: wrong Manager password")
                session.log.info("auth_rejected", reason="wrong Manager password")
                auth_event(session, "failed", "password", reason="wrong Manager password")
                session.reject(error_text("ValueError", "Wrong Manager password"))
                return False
            attempt.succeeded()
        auth_event(session, "ok", "password")
        return True


class LoginAuth:
    """Username and password from the ``auth_users`` table (``--auth-login``).

    The flow is the same for an unknown user and a wrong password: the password is always asked
    for and always checked, against a dummy hash of the same cost when the user is unknown, so
    timing does not tell them apart. The texts differ because 1.0 clients and tests match them
    ("Unregistered user", "Wrong login password").
    """

    description = "using a login for authentication"

    def __init__(self, users, throttle, rounds, brake=None):
        self.users = users
        self.throttle = throttle
        self.rounds = rounds
        self.brake = brake or Brake()

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
        if throttled(session, self.throttle):
            return None
        with Attempt(self.throttle, session.ip) as attempt:
            return self._login(session, ask or session.ask, reject or session.reject, attempt)

    def _login(self, session, ask, reject, attempt):
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
        key = ("user", username if isinstance(username, str) else "")
        ok = self.brake.check(lambda: manager.offload(self._verify, user, password), key, None)
        if not ok:
            attempt.failed()
            self.brake.failed(key)
            self.brake.failed()
            message = "unregistered user" if user is None else "wrong login password"
            manager.record(session, f"rejected: {message}")
            session.log.info("auth_rejected", reason=message)
            auth_event(session, "failed", "login", reason=message, user=username)
            reject(error_text("ValueError", message[0].upper() + message[1:]))
            return None
        attempt.succeeded()
        if passwords.needs_rehash(user[2], user[3]):
            # 1.0 rows are PBKDF2: upgrade to bcrypt now that the password is known
            if self.users.rehash(username, password, self.rounds):
                session.log.info("password_rehashed", user=username)
        session.log.info("logged_in", user=username, admin=bool(user[4]))
        auth_event(session, "ok", "login", user=username)
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
            auth_event(session, "ok", "hostname")
            return True
        session.manager.record(session, "rejected: untrusted hostname")
        session.log.info("auth_rejected", reason="untrusted hostname")
        auth_event(session, "failed", "hostname", reason="untrusted hostname")
        session.reject(error_text("ValueError", f"{session.hostname!r} is not a trusted hostname"))
        return False
