"""``netmgr connections`` and ``config``: what the Manager did, and is told.

Thin: ``connections`` prints the connection log of the
database (:mod:`netmgr.cli.actions`); ``config`` prints the settings in effect and their sources.
Text output escapes non-printable characters (issue 10, finding 8).
"""

import click

from netmgr import config
from netmgr.cli import actions, control
from netmgr.cli.app import cli, config_option, database_option, json_option, print_json, settings
from netmgr.terminal import printable

D = config.DEFAULTS

@cli.command(short_help="Print the connection log.")
@click.option("--since", default=None, metavar="WHEN",
              help="From this date or time (YYYY-MM-DD[THH:MM:SS]).")
@click.option("--until", default=None, metavar="WHEN", help="Up to this date (whole day) or time.")
@database_option
@click.option("-s", "--socket", "socket_path", default=None, metavar="PATH",
              help="Ask the running Manager through this control socket [default: its socket when "
                   "there is one and no --database is given].")
@json_option
@config_option
def connections(config_file, since, until, database, socket_path, as_json):
    """Print the connection log (the running Manager's, else the database file's)."""
    cfg = settings(config_file, database=database)
    path = socket_path or (None if database else control.find_socket(cfg))
    if path:
        result = _live_connections(path, since, until)
    else:
        result = actions.list_connections(cfg.database, since, until, home=cfg.home)
    print_json(result) if as_json else _echo_text(actions.format_connections(result))


def _live_connections(path, since, until):
    """The connection log through the control socket: the Manager writes its buffered rows first."""
    from netmgr.cli import status as manager_status  # loads the client library

    since, until = actions.parse_when(since, "--since"), actions.parse_when(until, "--until")
    with manager_status.over_socket(path) as client:
        rows = manager_status.request(client, "connections_table.connections", since, until)
    return {"database": f"the running Manager ({path})",
            "connections": [dict(zip(actions.CONNECTION_FIELDS, row)) for row in rows]}


def _echo_text(text):
    """Print text with non-printable characters escaped (``\\x1b``), line by line: a peer's
    name or a reverse-DNS domain must not reach the terminal raw (issue 10, finding 8)."""
    click.echo("\n".join(printable(line) for line in text.split("\n")))


@cli.command("config")
@json_option
@config_option
def show_config(config_file, as_json):
    """Show the settings and where each comes from.

    Paths that are not set show the ones netmgr start uses (under HOME).
    """
    cfg = settings(config_file)
    if as_json:
        print_json({"config_file": cfg.path, "settings": cfg.as_dict()})
        return
    click.echo(f"Config file: {cfg.path or '(none)'}\n")
    click.echo(actions.table(["Key", "Value", "Source"],
                             [(k, "" if v is None else v, s) for k, v, s in cfg.items()]))
