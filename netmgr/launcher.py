"""Entry point of the ``netmgr`` command: the Manager's process is made cooperative first.

This is the composition root: it may import :mod:`netmgr.daemon` (for
:func:`~netmgr.daemon.patch`) and :mod:`netmgr.cli`; the command tree itself reaches the daemon
only through :mod:`netmgr.daemon.startup`. Only ``netmgr start`` is patched: the admin commands
(``netmgr status`` uses the blocking client library) run on plain sockets and threads, whose
timeouts gevent's patched sockets would not honour the same way.

Ctrl-C at any moment of a command, the loading of its modules and its way out included, ends it
with ``Aborted!`` and exit status 130, never a traceback (issue 11). ``netmgr start`` once it
runs is the exception: SIGINT stops the Manager cleanly, exit status 0 (docs/running.md).
"""
import os
import signal
import sys

ABORTED = 130  # 128 + SIGINT: what a shell shows for a command that Ctrl-C ended


def _command(argv):
    """The subcommand's name: the first word that is not an option (group options take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _patch():
    from netmgr.daemon import patch

    # Ctrl-C waits while gevent patches the standard library: interrupted halfway, a half-patched
    # threading module waits forever at the interpreter's exit
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        patch()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _run(argv):
    if _command(argv) == "start":
        _patch()
    from netmgr.cli import app

    return app.cli.main(args=argv, prog_name="netmgr", standalone_mode=False)


def _exit_aborted(_signum, _frame):
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(ABORTED)


def _end_on_interrupt():
    """From now on Ctrl-C ends the process at once: the command is over, and the interpreter's
    exit (joining threads, atexit) would print a KeyboardInterrupt traceback."""
    signal.signal(signal.SIGINT, _exit_aborted)
    # CPython ends a process in which a KeyboardInterrupt ever left code run from a string
    # (eval/exec: namedtuple() while a module loads) by killing itself with SIGINT at exit, our
    # status lost, even though the interrupt was caught (pythonrun.c's
    # _Py_UnhandledKeyboardInterrupt). Running code from a string resets that flag.
    eval("None")


def main(argv=None):
    """Run the ``netmgr`` command `argv` (default: the command line); return its exit status."""
    try:
        try:
            # A parent may have blocked SIGINT (the mask survives exec): Ctrl-C must reach us,
            # and one held back since the interpreter started is delivered here, inside the try.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            return _run(sys.argv[1:] if argv is None else argv)
        finally:
            _end_on_interrupt()
    except KeyboardInterrupt:  # while the modules load: the command tree reports the rest itself
        _end_on_interrupt()
        sys.stderr.write("Aborted!\n")
        return ABORTED


if __name__ == "__main__":
    sys.exit(main())
