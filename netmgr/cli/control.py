"""``netmgr status``, ``stop``, ``reload`` and ``disconnect``: talk to the running Manager.

Thin: each resolves where the Manager is and how to reach it, and prints what
:mod:`netmgr.cli.status` returns.
"""
import contextlib

import click

from netmgr import config
from netmgr.cli import actions
from netmgr.cli.app import cli, config_option, json_option, print_json, secret, settings
from netmgr.errors import Failed

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
