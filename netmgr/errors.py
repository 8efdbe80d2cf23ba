"""netmgr's exceptions, in one tree, and 1.0's way of writing an exception on the wire.

::

    NetmgrError
      UsageError          the user can fix it: one line on stderr, exit status 2
        ConfigError       a config file or environment value; the text names where it came from
        StartupError      the Manager cannot start (1.0's words where it has some)
      Failed              a command failed: its text is printed as it is, exit status 1
        PathError         a file or directory cannot be created or opened; the text names both
        InstallError      a step of ``netmgr install-service`` failed, or it refused one
      ProtocolError       a peer broke the framing: the Manager disconnects it
        LineTooLong
      NestingTooDeep      (also a ValueError) JSON nested deeper than protocol.MAX_NESTING
      HandshakeFailed     a peer did not finish TLS, authentication and identity in time
      Refused             a request the Manager refuses; ``message`` is the wire text
      CertificateRefused  (also a ConnectionRefusedError) the user refused a Manager's certificate
      MessageTooLargeError (also a RuntimeError) a reply longer than the client's ``read_limit``

Errors of the client library keep the standard bases msl-network 1.0 programs catch
(``ConnectionRefusedError``, ``RuntimeError``). This module imports nothing.
"""


def error_text(kind, text):
    """``"<ExcClass>: <str(exc)>"`` exactly as 1.0 renders it; ``str(KeyError(x))`` is ``repr(x)``."""
    if kind == "KeyError":
        return f"KeyError: {text!r}"
    return f"{kind}: {text}"


class NetmgrError(Exception):
    """The base of every netmgr exception."""


class UsageError(NetmgrError):
    """An error the user can fix; printed as one line (or 1.0's lines) without a traceback."""


class ConfigError(UsageError):
    """A config file or environment value that cannot be used; the text names where it came from."""


class StartupError(UsageError):
    """The Manager cannot start; the text is for the operator (1.0's wording where it has one)."""


class Failed(NetmgrError):
    """The command failed; the text is printed as it is (1.0's words, without an exception name)."""


class InstallError(Failed):
    """A step of ``netmgr install-service`` failed; the text is for the operator."""


class PathError(Failed):
    """A file or directory cannot be created or opened. The text names the path and what was
    being done, e.g. ``cannot open the database /x/manager.sqlite3: file is not a database``."""


class ProtocolError(NetmgrError):
    """A framing violation: the peer is disconnected."""


class LineTooLong(ProtocolError):
    """A line exceeded the reader's limit."""

    def __init__(self, limit):
        super().__init__(f"a line exceeded the limit of {limit} bytes")
        self.limit = limit


class NestingTooDeep(NetmgrError, ValueError):
    """JSON nested deeper than ``limit`` (:data:`netmgr.protocol.MAX_NESTING`) levels.

    A ValueError like any other line that is not JSON: the request gets an error reply and the
    connection lives on. Raised instead of RecursionError, which would end the peer's session.
    """

    def __init__(self, limit):
        super().__init__(f"JSON nested deeper than {limit} levels")
        self.limit = limit


class HandshakeFailed(NetmgrError):
    """A peer did not complete TLS, authentication and its identity within the deadline."""


class Refused(NetmgrError):
    """A request the Manager refuses; ``message`` is the wire text, e.g. ``PermissionError: …``."""

    def __init__(self, kind, text):
        super().__init__(text)
        self.kind = kind
        self.text = text

    @property
    def message(self):
        return error_text(self.kind, self.text)


class CertificateRefused(NetmgrError, ConnectionRefusedError):
    """The user refused the Manager's certificate at the trust-on-first-use prompt."""


class MessageTooLargeError(NetmgrError, RuntimeError):
    """A reply was longer than the connection's ``read_limit``; it was discarded unread."""
