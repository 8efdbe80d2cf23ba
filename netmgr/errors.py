"""The exceptions the command line turns into one line on stderr and a non-zero exit."""


class UsageError(Exception):
    """An error the user can fix; printed as one line (or 1.0's lines) without a traceback."""
