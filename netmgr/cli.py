"""The ``netmgr`` command tree. Thin: parse options, call one library function, print.

Errors exit non-zero with one line on stderr; ``NETMGR_DEBUG=1`` shows the traceback.
"""
import os
import sys
import traceback

import click

from netmgr import __version__
from netmgr.errors import UsageError

DEBUG_ENV = "NETMGR_DEBUG"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="netmgr")
def cli():
    """netmgr: the Network Manager for MSL-Network 1.0 Clients and Services."""


@cli.command()
@click.option("--auth-hostname", is_flag=True, help="Only accept peers from trusted hostnames.")
@click.option("--auth-login", is_flag=True, help="Ask every peer for a username and password.")
@click.option("-P", "--auth-password", default=None, metavar="PASSWORD",
              help="Require this Manager password (the value, or a file whose first line is it).")
@click.option("-c", "--cert-file", default=None, help="TLS certificate (PEM).")
@click.option("-d", "--database", default=None, help="SQLite database [default: HOME/manager.sqlite3].")
@click.option("--disable-tls", is_flag=True, help="Plaintext TCP (LabVIEW VIs, trusted networks).")
@click.option("-H", "--host", default=None, help="Address to bind [default: all interfaces].")
@click.option("-k", "--key-file", default=None, help="Private key of the certificate (PEM).")
@click.option("-D", "--key-file-password", default=None, metavar="PASSWORD",
              help="Password of the private key (the value, or a file whose first line is it).")
@click.option("-p", "--port", default="1875", show_default=True, help="Port (0 picks a free one).")
@click.option("-G", "--log-level", default="INFO", show_default=True,
              help="Log level: a name (any case) or a number.")
@click.option("-l", "--log-file", default=None, help="Also log to this file (appended) "
              "[default: HOME/logs/manager-<time>.log].")
@click.option("--max-connections", type=click.IntRange(1), default=10000, show_default=True,
              help="Connections served at once; more wait in the listen backlog.")
@click.option("--handshake-timeout", type=click.FloatRange(0.1), default=30.0, show_default=True,
              help="Seconds a peer has for TLS, authentication and its identity.")
@click.option("--max-line-size", type=click.IntRange(1024), default=256 * 1024 * 1024,
              show_default=True, help="Largest message (bytes) an identified peer may send.")
@click.option("--max-queue-size", type=click.IntRange(1024), default=512 * 1024 * 1024,
              show_default=True, help="Bytes queued for a peer that does not read before it is dropped.")
@click.option("--bcrypt-rounds", type=click.IntRange(4, 31), default=12, show_default=True,
              help="bcrypt cost of passwords hashed by this Manager.")
@click.option("--max-auth-failures", type=click.IntRange(1), default=5, show_default=True,
              help="Failed logins from one address before it is locked out.")
@click.option("--auth-lockout", type=click.FloatRange(0), default=30.0, show_default=True,
              help="Seconds an address stays locked out.")
def start(**options):
    """Start the Network Manager."""
    from netmgr import server

    server.run(**options)


#: Options that take several words (1.0's ``nargs='+'``), joined with single spaces.
MULTI_WORD = {"-P", "--auth-password", "-D", "--key-file-password"}


def join_words(argv):
    """``-P h e l l o`` -> ``-P 'h e l l o'``, as msl-network 1.0's argparse does."""
    out, i = [], 0
    while i < len(argv):
        out.append(argv[i])
        if argv[i] in MULTI_WORD:
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


def main(argv=None):
    argv = join_words(sys.argv[1:] if argv is None else list(argv))
    try:
        cli.main(args=argv, prog_name="netmgr", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        return 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except UsageError as exc:
        _fail(str(exc))
        return 2
    except Exception as exc:  # noqa: BLE001 -- one clear line, the traceback on request
        _fail(f"{type(exc).__name__}: {exc}")
        return 1
    return 0


def _fail(message):
    if os.environ.get(DEBUG_ENV) == "1":
        traceback.print_exc()
    click.echo(f"netmgr: {message}", err=True)


if __name__ == "__main__":
    sys.exit(main())
