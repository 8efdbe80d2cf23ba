"""The ``netmgr`` command tree. Thin: parse options, call one library function, print.

Exit status 0 on success; on an error, one line (1.0's words where 1.0 had some) on stderr and
1, or 2 for a usage error. ``NETMGR_DEBUG=1`` also shows the traceback. Settings not given as
flags come from the environment, then the config file (:mod:`netmgr.config`).
"""
import contextlib
import json
import os
import sys
import traceback

import click

from netmgr import __version__, config
from netmgr.cli import actions as commands
from netmgr.errors import Failed, UsageError

DEBUG_ENV = "NETMGR_DEBUG"

#: Options that take several words (1.0's ``nargs='+'``), joined with single spaces, per command.
MULTI_WORD = {
    "start": {"-P", "--auth-password", "-D", "--key-file-password"},
    "user": {"-p", "--password"},
    "keygen": {"-p", "--password"},
    "certgen": {"-p", "--key-file-password"},
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
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        return 1
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


def _print_json(value):
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


def _settings(config_file, **flags):
    return config.load(config_file).override(**flags)


@click.group("netmgr", cls=NetmgrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="netmgr", message="%(version)s")
def cli():
    """netmgr: the Network Manager for MSL-Network 1.0 Clients and Services."""


# ------------------------------------------------------------------------------------------ start

D = config.DEFAULTS


@cli.command()
@click.option("--auth-hostname", is_flag=True, default=None,
              help="Only accept peers from trusted hostnames.")
@click.option("--auth-login", is_flag=True, default=None,
              help="Ask every peer for a username and password.")
@click.option("-P", "--auth-password", default=None, metavar="PASSWORD",
              help="Require this Manager password (the value, or a file whose first line is it).")
@click.option("-c", "--cert-file", default=None,
              help="TLS certificate (PEM) [default: HOME/certs/<host>.crt].")
@database_option
@click.option("--disable-tls/--enable-tls", default=None,
              help="Plaintext TCP (LabVIEW VIs, trusted networks) [default: TLS].")
@click.option("-H", "--host", default=None, help="Address to bind [default: all interfaces].")
@click.option("-k", "--key-file", default=None, help="Private key of the certificate (PEM).")
@click.option("-D", "--key-file-password", default=None, metavar="PASSWORD",
              help="Password of the private key (the value, or a file whose first line is it).")
@click.option("-p", "--port", default=None, help=f"Port (0 picks a free one) [default: {D['port']}].")
@click.option("-G", "--log-level", default=None,
              help=f"Log level: a name (any case) or a number [default: {D['log_level']}].")
@click.option("-l", "--log-file", default=None, help="Also log to this file (appended) "
              "[default: HOME/logs/manager-<time>.log; 'none': no file].")
@click.option("--max-connections", type=click.IntRange(1), default=None,
              help=f"Connections served at once; more wait in the backlog "
                   f"[default: {D['max_connections']}].")
@click.option("--handshake-timeout", type=click.FloatRange(0.1), default=None,
              help=f"Seconds a peer has for TLS, authentication and its identity "
                   f"[default: {D['handshake_timeout']}].")
@click.option("--max-line-size", type=click.IntRange(1024), default=None,
              help=f"Largest message (bytes) an identified peer may send [default: {D['max_line_size']}].")
@click.option("--max-queue-size", type=click.IntRange(1024), default=None,
              help=f"Bytes queued for a peer that does not read before it is dropped "
                   f"[default: {D['max_queue_size']}].")
@click.option("--bcrypt-rounds", type=click.IntRange(4, 31), default=None,
              help=f"bcrypt cost of passwords hashed by this Manager [default: {D['bcrypt_rounds']}].")
@click.option("--max-auth-failures", type=click.IntRange(1), default=None,
              help=f"Failed logins from one address before it is locked out "
                   f"[default: {D['max_auth_failures']}].")
@click.option("--auth-lockout", type=click.FloatRange(0), default=None,
              help=f"Seconds an address stays locked out [default: {D['auth_lockout']}].")
@config_option
def start(config_file, auth_hostname, auth_login, auth_password, log_file, **flags):
    """Start the Network Manager."""
    from netmgr.daemon import startup as server

    if log_file is not None and log_file.strip().lower() == "none":
        log_file = ""
    def options():
        settings = _settings(config_file, log_file=log_file, **flags)
        return settings.start_options(auth_hostname, auth_login, auth_password)

    server.run(**options(), reread=options)  # SIGHUP resolves the settings again


# ------------------------------------------------------------------------------------ keys, certs

@cli.command()
@click.argument("algorithm", default="rsa", type=click.Choice(["rsa", "dsa", "ecc"], case_sensitive=False))
@click.option("-c", "--curve", default="SECP384R1", show_default=True, help="Elliptic curve (ECC only).")
@click.option("-p", "--password", default=None,
              help="Encrypt the key with this password (the value, or a file whose first line is it).")
@click.option("--password-file", default=None, type=click.Path(dir_okay=False),
              help="Read the password from the first line of this file.")
@click.option("-o", "--out", default=None,
              help="Where to write the key [default: HOME/keys/localhost.key].")
@click.option("-s", "--size", default="2048", show_default=True, help="Key size in bits (RSA, DSA).")
@config_option
def keygen(config_file, algorithm, curve, password, password_file, out, size):
    """Generate a private key to sign a certificate (PEM, mode 0600)."""
    cfg = _settings(config_file)
    password = _secret(password, password_file, "Reading the key password from the file")
    out = out or cfg.cert_and_key()[1]
    click.echo(commands.keygen(out, algorithm, size, curve, password, home=cfg.home))


@cli.command()
@click.argument("out", required=False)
@click.option("-a", "--algorithm", default="SHA256", show_default=True,
              help="Hash algorithm of the signature.")
@click.option("-k", "--key-file", default=None,
              help="Private key that signs the certificate (created if missing) "
                   "[default: HOME/keys/localhost.key].")
@click.option("-p", "--key-file-password", default=None,
              help="Password of the key (the value, or a file whose first line is it).")
@click.option("--key-file-password-file", default=None, type=click.Path(dir_okay=False),
              help="Read the key password from the first line of this file.")
@click.option("-y", "--years-valid", default="100", show_default=True,
              help="Validity in years (0.25: 3 months).")
@click.option("-H", "--host", default=None,
              help="Name the certificate (CN, subjectAltName) and its default files after this host.")
@click.option("--show", is_flag=True, help="Print the details of the new certificate.")
@config_option
def certgen(config_file, out, algorithm, key_file, key_file_password, key_file_password_file,
            years_valid, host, show):
    """Generate a self-signed certificate (PEM) [OUT default: HOME/certs/localhost.crt]."""
    cfg = _settings(config_file)
    password = _secret(key_file_password, key_file_password_file, "Reading the key password from the file")
    default_cert, default_key = cfg.cert_and_key(host) if host else cfg.cert_and_key()
    click.echo(commands.certgen(out or default_cert, key_file or default_key, password, algorithm,
                                years_valid, host, show, home=cfg.home))


@cli.command()
@click.argument("certfile")
@click.option("-o", "--out", default=None, help="Write the details to this file instead.")
def certdump(certfile, out):
    """Print the details of a PEM certificate."""
    click.echo(commands.certdump(certfile, out))


# ----------------------------------------------------------------------------------------- secrets

def _secret(value, path, announce=None):
    """A password option: ``--x VALUE`` (or 1.0's file path: `announce` is printed) or ``--x-file PATH``."""
    if value is not None and path is not None:
        raise UsageError("Give the password or the password file, not both")
    if path is not None:
        return config.read_secret_file(path)
    return config.secret_value(value, announce and (lambda: click.echo(announce)))


def _new_password(value, path, username):
    """A callable giving the new password; it prompts (hidden, confirmed) when none was given."""
    given = _secret(value, path, "Reading the password from the file")
    if given is not None:
        return lambda: given
    return lambda: click.prompt(f"Password for {username}", hide_input=True, confirmation_prompt=True)


# -------------------------------------------------------------------------------------------- user

@cli.group(context_settings={"help_option_names": ["-h", "--help"]})
def user():
    """Add, update, remove or list the users of --auth-login (and administrators)."""


def _user_options(f):
    for decorator in reversed([
        click.argument("username", required=False),
        click.option("-p", "--password", default=None,
                     help="The password (the value, or a file whose first line is it) [default: prompt]."),
        click.option("--password-file", default=None, type=click.Path(dir_okay=False),
                     help="Read the password from the first line of this file."),
        database_option,
        click.option("--bcrypt-rounds", type=click.IntRange(4, 31), default=None,
                     help=f"bcrypt cost of the new hash [default: {D['bcrypt_rounds']}]."),
        config_option,
    ]):
        f = decorator(f)
    return f


def _add_command(action):
    @_user_options
    @click.option("-a", "--admin", is_flag=True, help="The user is an administrator.")
    def command(config_file, username, password, password_file, database, bcrypt_rounds, admin):
        cfg = _settings(config_file, database=database, bcrypt_rounds=bcrypt_rounds)
        click.echo(commands.add_user(cfg.database, action, username,
                                     _new_password(password, password_file, username),
                                     admin, cfg.bcrypt_rounds, home=cfg.home))
    command.__doc__ = f"{action.title()} a user (the password is asked for if not given)."
    return user.command(action)(command)


def _remove_command(action):
    @user.command(action)
    @click.argument("username", required=False)
    @database_option
    @config_option
    def command(config_file, username, database):
        cfg = _settings(config_file, database=database)
        click.echo(commands.remove_user(cfg.database, action, username, home=cfg.home))
    command.__doc__ = f"{action.title()} a user."
    return command


for _action in ("add", "insert"):
    _add_command(_action)
for _action in ("remove", "delete"):
    _remove_command(_action)


@user.command("update")
@_user_options
@click.option("--admin/--no-admin", "-a/-A", default=None,
              help="Give or take administrator rights [default: unchanged].")
def user_update(config_file, username, password, password_file, database, bcrypt_rounds, admin):
    """Change a user's password and/or admin rights; only what is given changes.

    With neither --password nor --admin/--no-admin, the new password is asked for.
    """
    cfg = _settings(config_file, database=database, bcrypt_rounds=bcrypt_rounds)
    get_password = None
    if password is not None or password_file is not None or admin is None:
        get_password = _new_password(password, password_file, username)
    click.echo(commands.update_user(cfg.database, username, get_password, admin,
                                    cfg.bcrypt_rounds, home=cfg.home))


@user.command("list")
@database_option
@json_option
@config_option
def user_list(config_file, database, as_json):
    """List the users and whether each is an administrator."""
    cfg = _settings(config_file, database=database)
    result = commands.list_users(cfg.database, home=cfg.home)
    _print_json(result) if as_json else click.echo(commands.format_users(result))


# ---------------------------------------------------------------------------------------- hostname

@cli.group(context_settings={"help_option_names": ["-h", "--help"]})
def hostname():
    """Add, remove or list the trusted hostnames of --auth-hostname."""


def _hostname_command(action, adding):
    @hostname.command(action)
    @click.argument("names", nargs=-1)
    @database_option
    @config_option
    def command(config_file, names, database):
        cfg = _settings(config_file, database=database)
        if adding:
            click.echo("\n".join(commands.add_hostnames(cfg.database, action, names, home=cfg.home)))
            return 0
        results = commands.remove_hostnames(cfg.database, action, names, home=cfg.home)
        for ok, text in results:
            click.echo(text, err=not ok)
        return 0 if all(ok for ok, _ in results) else 1
    command.__doc__ = f"{action.title()} trusted hostnames."
    return command


for _action, _adding in (("add", True), ("insert", True), ("remove", False), ("delete", False)):
    _hostname_command(_action, _adding)


@hostname.command("list")
@database_option
@json_option
@config_option
def hostname_list(config_file, database, as_json):
    """List the trusted hostnames."""
    cfg = _settings(config_file, database=database)
    result = commands.list_hostnames(cfg.database, home=cfg.home)
    _print_json(result) if as_json else click.echo(commands.format_hostnames(result))


# ------------------------------------------------------------------------------------------ delete

@cli.command()
@click.option("-a", "--all", "everything", is_flag=True,
              help="Delete the database, certificates, keys and logs.")
@click.option("-c", "--certs", is_flag=True, help="Delete the certificates (ROOT/certs/*.crt).")
@click.option("-d", "--database", is_flag=True, help="Delete the database.")
@click.option("-k", "--keys", is_flag=True, help="Delete the private keys (ROOT/keys/*.key).")
@click.option("-l", "--logs", is_flag=True, help="Delete the log files (ROOT/logs/*.log).")
@click.option("-r", "--root", default=None, help="The directory to clean [default: HOME].")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@config_option
def delete(config_file, everything, certs, database, keys, logs, root, quiet, yes):
    """Delete the files netmgr (or msl-network 1.0) created: database, certificates, keys, logs."""
    from netmgr.cli import cleanup

    cfg = _settings(config_file)
    root = root or cfg.home
    db = (os.path.join(root, "manager.sqlite3") if root != cfg.home else cfg.database) \
        if (everything or database) else None

    def echo(text, end="\n"):
        if not quiet:
            click.echo(text, nl=False) if end == "" else click.echo(text)

    def confirm():
        if yes:
            return True
        answer = click.prompt("Proceed (Y/n)?", default="", show_default=False, prompt_suffix=" ")
        if answer.strip().lower() in ("", "y", "yes"):
            return True
        echo("Okay, not deleting")
        return False

    ok = cleanup.delete(root, db, everything, certs, keys, logs, echo=echo,
                        error=lambda text: click.echo(text, err=True), confirm=confirm)
    return 0 if ok else 1


# ------------------------------------------------------------------------- status and connections

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
    from netmgr.cli import status as status_client

    cfg = _settings(config_file, port=port, disable_tls=disable_tls)
    if host is None:
        host = "localhost" if cfg.host in (None, "", "0.0.0.0", "::") else cfg.host
    known = {"username": username, "password": _secret(password, password_file),
             "manager_password": _secret(manager_password, manager_password_file)}
    prompts = {"username": ("Username", False), "password": ("Password", True),
               "manager_password": ("Manager password", True)}

    def ask(kind):  # called only for what the Manager asks for
        if known[kind] is None and kind == "manager_password" and cfg.auth == "password":
            with contextlib.suppress(Failed):  # the service's file may be unreadable
                known[kind] = config.secret_value(cfg.auth_password)
        if known[kind] is None:
            text, hidden = prompts[kind]
            known[kind] = click.prompt(text, hide_input=hidden, err=True)
        return known[kind]

    result = status_client.fetch(host, cfg.port, ask, cert_file or cfg.cert_and_key(cfg.host)[0],
                                 cfg.disable_tls, timeout)
    _print_json(result) if as_json else click.echo(status_client.format_status(result, commands.table))


@cli.command()
@click.option("--since", default=None, metavar="WHEN",
              help="From this date or time (YYYY-MM-DD[THH:MM:SS]).")
@click.option("--until", default=None, metavar="WHEN", help="Up to this date (whole day) or time.")
@database_option
@json_option
@config_option
def connections(config_file, since, until, database, as_json):
    """Print the connection log of the Manager's database."""
    cfg = _settings(config_file, database=database)
    result = commands.list_connections(cfg.database, since, until, home=cfg.home)
    _print_json(result) if as_json else click.echo(commands.format_connections(result))


@cli.command("config")
@json_option
@config_option
def show_config(config_file, as_json):
    """Show the settings in effect, and where each comes from."""
    cfg = _settings(config_file)
    if as_json:
        _print_json({"config_file": cfg.path, "settings": cfg.as_dict()})
        return
    click.echo(f"Config file: {cfg.path or '(none)'}\n")
    click.echo(commands.table(["Key", "Value", "Source"],
                              [(k, "" if v is None else v, s) for k, v, s in cfg.items()]))


@cli.command("install-service")
@click.option("--prefix", default="/", show_default=True,
              help="Install under this root (files only unless it is '/').")
@click.option("--config-template", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Config file to install when /etc/netmgr/netmgr.conf does not exist yet.")
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
def install_service(prefix, config_template, dry_run):
    """Install netmgr as a systemd service: user, directories, units and config (idempotent)."""
    from netmgr.cli import install

    actions = install.install_service(prefix, config_template, dry_run)
    for action in actions:
        click.echo(("(dry run) " if dry_run else "") + str(action))


def main(argv=None):
    """The ``netmgr`` program: runs the command and exits with its status."""
    cli.main(args=argv, prog_name="netmgr")


if __name__ == "__main__":
    main()
