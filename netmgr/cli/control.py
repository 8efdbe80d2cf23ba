"""``netmgr status``, ``stop``, ``reload`` and ``disconnect``: talk to the running Manager.

Each reaches the Manager through its control socket when one is there (HOME/netmgr.sock, then
the service's /run/netmgr/netmgr.sock; ``--socket PATH`` names another): no password, the
socket's file permissions decide. Giving ``-H``, ``-p``, ``-u`` or a password chooses TCP with
an administrator's login instead, for a remote Manager. Thin: the work is in
:mod:`netmgr.cli.status`.
"""
import contextlib
import functools
import json
import os
import shutil
import sys
import time

import click

from netmgr import config, hostinfo
from netmgr.cli import actions
from netmgr.cli.app import cli, config_option, json_option, print_json, secret, settings
from netmgr.errors import Failed
from netmgr.protocol import SHUTDOWN_MANAGER

D = config.DEFAULTS

#: status's credentials: (prompt text, hidden), asked for only when the Manager wants one
PROMPTS = {"username": ("Username", False), "password": ("Password", True),
           "manager_password": ("Manager password", True)}
#: what the terminal shows around ``status --watch``: the alternate screen, the cursor hidden
ENTER_SCREEN, LEAVE_SCREEN, HOME_CURSOR = "\x1b[?1049h\x1b[?25l", "\x1b[?25h\x1b[?1049l", "\x1b[H"


def manager_options(f):
    """How to reach the Manager: the control socket by default, TCP with a login on request."""
    options = [
        click.option("-s", "--socket", "socket_path", default=None, metavar="PATH",
                     help="The Manager's control socket [default: HOME/netmgr.sock, "
                          "else /run/netmgr/netmgr.sock]."),
        click.option("-H", "--host", default=None,
                     help="Log in over TCP to the Manager on this host [default: the config's host, "
                          "else localhost]."),
        click.option("-p", "--port", type=click.IntRange(1, 65535), default=None,
                     help=f"The Manager's TCP port [default: the config's, else {D['port']}]."),
        click.option("-u", "--username", default=None, help="An administrator's username (TCP) [default: prompt]."),
        click.option("--password", default=None, help="The administrator's password (TCP) [default: prompt]."),
        click.option("--password-file", default=None, type=click.Path(dir_okay=False),
                     help="Read the administrator's password from the first line of this file."),
        click.option("--manager-password", default=None,
                     help="The Manager password of a Manager started with -P (TCP)."),
        click.option("--manager-password-file", default=None, type=click.Path(dir_okay=False),
                     help="Read the Manager password from the first line of this file."),
        click.option("-c", "--cert-file", default=None,
                     help="The Manager's certificate (TCP) [default: the config's, else "
                          "HOME/certs/<host>.crt]."),
        click.option("--disable-tls/--enable-tls", default=None, help="The Manager runs without TLS (TCP)."),
        click.option("--timeout", type=click.FloatRange(0.1), default=10.0, show_default=True,
                     help="Seconds to wait for the Manager."),
        config_option,
    ]
    for option in reversed(options):
        f = option(f)

    @functools.wraps(f)
    def wrapper(config_file, socket_path, host, port, username, password, password_file,
                manager_password, manager_password_file, cert_file, disable_tls, timeout, **kwargs):
        cfg = settings(config_file, port=port, disable_tls=disable_tls)
        tcp = any(v is not None for v in (host, port, username, password, password_file, manager_password,
                                          manager_password_file, cert_file, disable_tls))
        path = socket_path or (None if tcp else find_socket(cfg))
        if path:
            opener = functools.partial(_status().over_socket, path, timeout)
        else:
            host = host or ("localhost" if cfg.host in (None, "", "0.0.0.0", "::") else cfg.host)
            ask = _asker(cfg, {"username": username, "password": secret(password, password_file),
                               "manager_password": secret(manager_password, manager_password_file)})
            opener = functools.partial(_status().over_tcp, host, cfg.port, ask,
                                       cert_file or cfg.cert_and_key(cfg.host)[0], cfg.disable_tls, timeout)
        return f(opener=opener, source=path or f"{host}:{cfg.port}", **kwargs)
    return wrapper


def _status():
    from netmgr.cli import status as manager_status  # loads the client library

    return manager_status


def find_socket(cfg):
    """The first control socket that exists (or that this user may not even look at)."""
    candidates = hostinfo.control_socket_candidates(cfg.home)
    if cfg.control_socket == "":
        candidates = candidates[1:]
    elif cfg.control_socket:
        candidates.insert(0, cfg.control_socket)
    for path in candidates:
        try:
            os.stat(path)
        except PermissionError:  # /run/netmgr is 0750: say so rather than try TCP
            return path
        except OSError:
            continue
        return path
    return None


def _asker(cfg, known):
    """The TCP login's ``ask(kind)``: the option's value, else (the Manager password of ``auth =
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


# ------------------------------------------------------------------------------------ commands

@cli.command(short_help="Show the running Manager's peers and Services.")
@click.option("-w", "--watch", is_flag=True, help="Refresh until Ctrl-C, like top.")
@click.option("-n", "--interval", type=click.FloatRange(0.1), default=2.0, show_default=True,
              help="Seconds between refreshes of --watch.")
@json_option
@manager_options
def status(opener, source, watch, interval, as_json):
    """Show the running Manager's peers, Services, links and locks."""
    manager_status = _status()
    if watch:
        return _watch(opener, source, interval, as_json)
    with opener() as client:
        result = manager_status.snapshot(client)
    print_json(result) if as_json else click.echo(manager_status.format_status(result, actions.table))


@cli.command()
@manager_options
def stop(opener, source):
    """Stop the running Manager (its peers are disconnected)."""
    with opener() as client:
        _status().request(client, SHUTDOWN_MANAGER)
    click.echo(f"Stopped the Manager at {source}")


@cli.command(short_help="Re-read the config, certificate and key.")
@manager_options
def reload(opener, source):
    """Re-read the config, certificate and key; every peer stays connected."""
    with opener() as client:
        _status().request(client, "reload")
    click.echo(f"Reloaded the Manager at {source}")


@cli.command(short_help="Disconnect a peer by its network name.")
@click.argument("peer")
@manager_options
def disconnect(opener, source, peer):
    """Disconnect a peer by its network name (see `netmgr status`)."""
    with opener() as client:
        _status().request(client, "disconnect_peer", peer)
    click.echo(f"Disconnected {peer}")


# ------------------------------------------------------------------------------ status --watch

def _watch(opener, source, interval, as_json):
    """Redraw the status every `interval` seconds until Ctrl-C (exit status 130).

    On a terminal the view takes the alternate screen, as top does; otherwise (a pipe, a log)
    each refresh is printed after the last, without escape sequences.
    """
    manager_status = _status()
    tty = sys.stdout.isatty() and not as_json
    stack = contextlib.ExitStack()
    client = None
    if tty:
        click.echo(ENTER_SCREEN, nl=False)
    try:
        while True:
            try:
                if client is None:
                    client = stack.enter_context(opener())
                result = manager_status.snapshot(client)
                text = None if as_json else manager_status.format_watch(
                    result, actions.table, _width(), source=source)
            except Failed as exc:
                stack.close()
                client, result = None, {"error": str(exc)}
                text = f"{time.strftime('%H:%M:%S')}  {exc}\n(trying again every {interval:g} s)"
            if as_json:
                click.echo(json.dumps(result, ensure_ascii=False, separators=(",", ":")))
            elif tty:
                click.echo(HOME_CURSOR + "\n".join(line + "\x1b[K" for line in text.split("\n")) + "\x1b[J",
                           nl=False)
            else:
                click.echo(text + "\n")
            time.sleep(interval)
    except KeyboardInterrupt:
        return 130
    finally:
        if tty:
            click.echo(LEAVE_SCREEN, nl=False)
        with contextlib.suppress(Exception):
            stack.close()


def _width():
    return shutil.get_terminal_size((80, 24)).columns
