"""The ``netmgr`` command tree. Thin: parse options, call one library function, print.

Errors exit non-zero with one line on stderr; ``NETMGR_DEBUG=1`` shows the traceback.
"""
import os
import sys
import traceback

import click

from netmgr import __version__, log

DEBUG_ENV = "NETMGR_DEBUG"


class UsageError(Exception):
    """An error the user can fix; printed as one line."""


def secret_value(value):
    """A password given as its value, or as the path of a file whose first line is it (1.0)."""
    if value is not None and os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            return f.readline().strip()
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="netmgr")
def cli():
    """netmgr: the Network Manager for MSL-Network 1.0 Clients and Services."""


@cli.command()
@click.option("-p", "--port", type=click.IntRange(0, 65535), default=1875, show_default=True,
              help="Port to listen on (0 picks a free port).")
@click.option("-H", "--host", default=None, help="Address to bind (default: all interfaces).")
@click.option("--disable-tls", is_flag=True, help="Use plaintext TCP (LabVIEW VIs, trusted networks).")
@click.option("-P", "--auth-password", default=None,
              help="Require this Manager password (the value, or a file whose first line is it).")
@click.option("-G", "--log-level", default="INFO", show_default=True,
              help="Log level: a name (any case) or a number.")
@click.option("-l", "--log-file", default=None, type=click.Path(dir_okay=False),
              help="Also write the log to this file (appended).")
@click.option("--max-connections", type=click.IntRange(1), default=10000, show_default=True,
              help="Connections served at once; more wait in the listen backlog.")
@click.option("--handshake-timeout", type=click.FloatRange(0.1), default=30.0, show_default=True,
              help="Seconds a peer has to authenticate and send its identity.")
@click.option("--max-line-size", type=click.IntRange(1024), default=256 * 1024 * 1024,
              show_default=True, help="Largest message (bytes) an identified peer may send.")
@click.option("--max-queue-size", type=click.IntRange(1024), default=512 * 1024 * 1024,
              show_default=True, help="Bytes queued for a peer that does not read before it is dropped.")
def start(port, host, disable_tls, auth_password, log_level, log_file, max_connections,
          handshake_timeout, max_line_size, max_queue_size):
    """Start the Network Manager."""
    from netmgr import auth, manager

    try:
        level = log.parse_level(log_level)
    except ValueError as exc:
        raise UsageError(f"ValueError: {exc}") from None
    if not disable_tls:
        raise UsageError("TLS is not available in this version of netmgr yet: start it with "
                         "--disable-tls to serve plaintext TCP")
    log.configure(level, log_file)
    mode = auth.NoAuth()
    if auth_password is not None:
        mode = auth.PasswordAuth(secret_value(auth_password))
    settings = manager.Settings(
        host=host, port=port, auth=mode, max_connections=max_connections,
        handshake_timeout=handshake_timeout, line_limit=max_line_size,
        queue_limit=max_queue_size)
    try:
        mgr = manager.Manager(settings).start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {host or '*'}:{port}: {exc.strerror or exc}") from None
    tls = "ENABLED" if not disable_tls else "DISABLED"
    shown = host or manager.HOSTNAME
    log.get_logger().info(f"Network Manager running on {shown}:{mgr.port} (TLS {tls})")
    mgr.serve_forever()


def main(argv=None):
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
