"""The ``netmgr`` command tree: the top-level group, error handling, and the shared options.

Exit status 0 on success; on an error, one line (1.0's words where 1.0 had some) on stderr and
1, or 2 for a usage error; Ctrl-C is ``Aborted!`` and 130. ``NETMGR_DEBUG=1`` also shows the
traceback. Settings not given as flags come from the environment, then the config file
(:mod:`netmgr.config`).

The commands live in modules of their own, which add themselves to :data:`cli` when they are
imported (the end of this module imports them): ``start``, ``keys`` (keygen, certgen,
certdump), ``access`` (user, hostname), ``host`` (delete, install-service), ``show``
(connections, config), ``control`` (status, stop, reload, disconnect) and ``events``. Each is
thin: parse options, call one library function, print.
"""
import json
import os
import sys
import traceback

import click

from netmgr import __version__, config
from netmgr.errors import Failed, UsageError

DEBUG_ENV = "NETMGR_DEBUG"

#: Options that take several words (1.0's ``nargs='+'``), joined with single spaces, per command.
MULTI_WORD = {
    "start": {"-P", "--auth-password", "-D", "--key-file-password"},
    "user": {"-p", "--password"},
    "keygen": {"-p", "--password"},
    "certgen": {"-p", "--key-file-password"},
    "status": {"--password", "--manager-password"},
    "stop": {"--password", "--manager-password"},
    "reload": {"--password", "--manager-password"},
    "disconnect": {"--password", "--manager-password"},  # PEER first: the words run to the next option
    "events": {"--password", "--manager-password"},
}


def join_words(argv):
    """``user add a -p h e l l o`` -> ``user add a -p 'h e l l o'``, as msl-network 1.0's argparse does."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    multi = MULTI_WORD.get(command, set())
    out, i = [], 0
    while i < len(argv):
        out.append(argv[i])
        if argv[i] in multi:
            words = []
            i += 1
            while i < len(argv) and (not argv[i].startswith("-") or not words):
                words.append(argv[i])
                i += 1
            if words:
                out.append(" ".join(words))
            continue
        i += 1
    return out


class NetmgrGroup(click.Group):
    """The top-level group: 1.0's multi-word values, and errors as one line with an exit status."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args = join_words(list(sys.argv[1:] if args is None else args))
        code = run(lambda: super(NetmgrGroup, self).main(
            args, prog_name or "netmgr", complete_var, standalone_mode=False, **extra))
        if standalone_mode:
            sys.exit(code)
        return code


def run(invoke):
    """Call `invoke`; return the exit status, printing any error as one line on stderr."""
    try:
        value = invoke()
    except click.exceptions.NoArgsIsHelpError as exc:  # bare ``netmgr``: help, as 1.0
        click.echo(exc.ctx.get_help())
        return 0
    except click.exceptions.Abort as exc:  # a prompt: Ctrl-C (130) or the end of the input (1)
        click.echo("Aborted!", err=True)
        return 130 if isinstance(exc.__context__, KeyboardInterrupt) else 1
    except KeyboardInterrupt:
        click.echo("Aborted!", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        _fail(f"Error: {exc.format_message()}" + _usage_hint(exc))
        return exc.exit_code
    except UsageError as exc:
        _fail(str(exc))
        return 2
    except Failed as exc:
        _fail(str(exc))
        return 1
    except Exception as exc:  # noqa: BLE001 -- one clear line, the traceback on request
        _fail(f"{type(exc).__name__}: {exc}")
        return 1
    return value if isinstance(value, int) else 0


def _usage_hint(exc):
    ctx = getattr(exc, "ctx", None)
    return f" (see '{ctx.command_path} --help')" if ctx is not None else ""


def _fail(message):
    if os.environ.get(DEBUG_ENV) == "1":
        traceback.print_exc()
    click.echo(message, err=True)


# ------------------------------------------------------------------- shared by the command modules

def print_json(value):
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def config_option(f):
    return click.option("--config", "config_file", default=None, metavar="FILE",
                        help=f"Config file [default: ${config.CONFIG_ENV}, "
                             f"else {config.SYSTEM_CONFIG}].")(f)


def database_option(f):
    return click.option("-d", "--database", default=None,
                        help="SQLite database [default: the config's, else HOME/manager.sqlite3].")(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)


def settings(config_file, **flags):
    """The settings in effect: the config file, then the environment, then these flags."""
    return config.load(config_file).override(**flags)


def secret(value, path, announce=None):
    """A password option: ``--x VALUE`` (or 1.0's file path: `announce` is printed) or ``--x-file PATH``."""
    if value is not None and path is not None:
        raise UsageError("Give the password or the password file, not both")
    if path is not None:
        return config.read_secret_file(path)
    return config.secret_value(value, announce and (lambda: click.echo(announce)))


# ------------------------------------------------------------------------------------ the group

@click.group("netmgr", cls=NetmgrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="netmgr", message="%(version)s")
def cli():
    """netmgr: the Network Manager for MSL-Network 1.0 Clients and Services."""


def main(argv=None):
    """The ``netmgr`` program: runs the command and exits with its status."""
    cli.main(args=argv, prog_name="netmgr")


# The command modules import `cli` and the helpers above from here, and add their commands to it
# as they are imported: these imports come last so that a module imported first finds them.
from netmgr.cli import start, keys, access, host, show, control, events  # noqa: E402 -- see above

#: The modules that make up the command tree, in the order their commands are added.
COMMAND_MODULES = (start, keys, access, host, show, control, events)


if __name__ == "__main__":  # ``python -m netmgr.cli.app``: the commands joined the imported module's cli
    from netmgr.cli.app import main as registered_main

    registered_main()
