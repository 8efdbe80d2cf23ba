"""``netmgr status``, ``connections`` and ``config``: what the Manager is doing, did, and is told.

Thin: ``status`` resolves where the Manager is and how to log in, and prints what
:func:`netmgr.cli.status.fetch` returns; ``connections`` prints the connection log of the
database (:mod:`netmgr.cli.actions`); ``config`` prints the settings in effect and their sources.
Text output escapes non-printable characters (issue 10, finding 8).
"""
import contextlib

import click

from netmgr import config
from netmgr.cli import actions
from netmgr.cli.app import cli, config_option, database_option, json_option, print_json, secret, settings
from netmgr.errors import Failed
from netmgr.terminal import printable

D = config.DEFAULTS

#: status's credentials: (prompt text, hidden), asked for only when the Manager wants one
PROMPTS = {"username": ("Username", False), "password": ("Password", True),
           "manager_password": ("Manager password", True)}


@cli.command()
@click.option("-H", "--host", default=None,
              help="The Manager's host [default: the config's host, else localhost].")
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=None,
              help=f"The Manager's port [default: the config's, else {D['port']}].")
@click.option("-u", "--username", default=None, help="An administrator's username [default: prompt].")
@click.option("--password", default=None, help="The administrator's password [default: prompt].")
@click.option("--password-file", default=None, type=click.Path(dir_okay=False),
              help="Read the administrator's password from the first line of this file.")
@click.option("--manager-password", default=None, help="The Manager password of a Manager started with -P.")
@click.option("--manager-password-file", default=None, type=click.Path(dir_okay=False),
              help="Read the Manager password from the first line of this file.")
@click.option("-c", "--cert-file", default=None,
              help="The Manager's certificate [default: the config's, else HOME/certs/<host>.crt].")
@click.option("--disable-tls/--enable-tls", default=None, help="The Manager runs without TLS.")
@click.option("--timeout", type=click.FloatRange(0.1), default=10.0, show_default=True,
              help="Seconds to wait for the Manager.")
@json_option
@config_option
def status(config_file, host, port, username, password, password_file, manager_password,
           manager_password_file, cert_file, disable_tls, timeout, as_json):
    """Show the running Manager's peers, services, links and locks (needs an administrator)."""
    from netmgr.cli import status as manager_status  # loads the client library

    cfg = settings(config_file, port=port, disable_tls=disable_tls)
    if host is None:
        host = "localhost" if cfg.host in (None, "", "0.0.0.0", "::") else cfg.host
    ask = _asker(cfg, {"username": username, "password": secret(password, password_file),
                       "manager_password": secret(manager_password, manager_password_file)})
    result = manager_status.fetch(host, cfg.port, ask, cert_file or cfg.cert_and_key(cfg.host)[0],
                                  cfg.disable_tls, timeout)
    print_json(result) if as_json else click.echo(manager_status.format_status(result, actions.table))


def _asker(cfg, known):
    """status's ``ask(kind)``: the option's value, else (the Manager password of ``auth =
    password``) the configured one when readable, else a prompt; each asked for at most once."""
    def ask(kind):
        if known[kind] is None and kind == "manager_password" and cfg.auth == "password":
            with contextlib.suppress(Failed):  # the service's file may be unreadable
                known[kind] = config.secret_value(cfg.auth_password)
        if known[kind] is None:
            text, hidden = PROMPTS[kind]
            known[kind] = click.prompt(text, hide_input=hidden, err=True)
        return known[kind]
    return ask


@cli.command()
@click.option("--since", default=None, metavar="WHEN",
              help="From this date or time (YYYY-MM-DD[THH:MM:SS]).")
@click.option("--until", default=None, metavar="WHEN", help="Up to this date (whole day) or time.")
@database_option
@json_option
@config_option
def connections(config_file, since, until, database, as_json):
    """Print the connection log of the Manager's database."""
    cfg = settings(config_file, database=database)
    result = actions.list_connections(cfg.database, since, until, home=cfg.home)
    print_json(result) if as_json else _echo_text(actions.format_connections(result))


def _echo_text(text):
    """Print text with non-printable characters escaped (``\\x1b``), line by line: a peer's
    name or a reverse-DNS domain must not reach the terminal raw (issue 10, finding 8)."""
    click.echo("\n".join(printable(line) for line in text.split("\n")))


@cli.command("config")
@json_option
@config_option
def show_config(config_file, as_json):
    """Show the settings in effect, and where each comes from."""
    cfg = settings(config_file)
    if as_json:
        print_json({"config_file": cfg.path, "settings": cfg.as_dict()})
        return
    click.echo(f"Config file: {cfg.path or '(none)'}\n")
    click.echo(actions.table(["Key", "Value", "Source"],
                             [(k, "" if v is None else v, s) for k, v, s in cfg.items()]))
