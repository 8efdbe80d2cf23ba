"""Authentication modes, run by a session between accept and identity (reference 1.3).

Each mode is an object with ``description`` (logged at start-up) and ``authenticate(session)``
which uses ``session.ask(attribute, *args)`` and ``session.reject(message)`` and returns
whether the peer may go on to the identity step.
"""
import hmac

from netmgr.protocol import error_text


class NoAuth:
    description = "not using authentication"

    def authenticate(self, session):
        return True


class PasswordAuth:
    """The Manager password (``-P``): one shared secret, compared in constant time."""

    description = "using a password for authentication"

    def __init__(self, password):
        self._secret = password.encode("utf-8")

    def authenticate(self, session):
        value = session.ask("password", session.manager.name)
        if value is None or value == "":
            session.log.info("handshake_aborted", reason="no password")
            return False  # a blank or missing reply closes the connection (reference 6.5)
        given = value.encode("utf-8") if isinstance(value, str) else b"\0not a string"
        if not hmac.compare_digest(given, self._secret):
            session.log.info("auth_rejected", reason="wrong Manager password")
            session.reject(error_text("ValueError", "Wrong Manager password"))
            return False
        return True
