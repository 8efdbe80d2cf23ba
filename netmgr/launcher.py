"""Entry point of the ``netmgr`` command: the Manager's process is made cooperative first.

This is the composition root: it may import :mod:`netmgr.daemon` (for
:func:`~netmgr.daemon.patch`) and :mod:`netmgr.cli`; the command tree itself reaches the daemon
only through :mod:`netmgr.daemon.startup`. Only ``netmgr start`` is patched: the admin commands
(``netmgr status`` uses the blocking client library) run on plain sockets and threads, whose
timeouts gevent's patched sockets would not honour the same way.
"""
import sys


def _command(argv):
    """The subcommand's name: the first word that is not an option (group options take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if _command(argv) == "start":
        from netmgr.daemon import patch

        patch()
    from netmgr.cli import app

    return app.main(argv)


if __name__ == "__main__":
    sys.exit(main())
