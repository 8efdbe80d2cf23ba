"""``netmgr user`` and ``netmgr hostname``: who may connect (logins, administrators, trusted hosts).

Thin: each command resolves the database from the settings, calls one function of
:mod:`netmgr.cli.actions` and prints what it returns (1.0's words). A password that was not
given is asked for (hidden, confirmed) only once the other arguments have been checked.
"""
import click

from netmgr import config
from netmgr.cli import actions
from netmgr.cli.app import cli, config_option, database_option, json_option, print_json, secret, settings

D = config.DEFAULTS


def _new_password(value, path, username):
    """A callable giving the new password; it prompts (hidden, confirmed) when none was given."""
    given = secret(value, path, "Reading the password from the file")
    if given is not None:
        return lambda: given
    return lambda: click.prompt(f"Password for {username}", hide_input=True, confirmation_prompt=True)


def _list_command(group, listing, formatting, doc):
    """``<group> list``: `listing` (a function of :mod:`netmgr.cli.actions`), as JSON or text."""
    @database_option
    @json_option
    @config_option
    def command(config_file, database, as_json):
        cfg = settings(config_file, database=database)
        result = listing(cfg.database, home=cfg.home)
        print_json(result) if as_json else click.echo(formatting(result))
    command.__doc__ = doc  # before click reads it
    return group.command("list")(command)


# -------------------------------------------------------------------------------------------- user

@cli.group(context_settings={"help_option_names": ["-h", "--help"]})
def user():
    """Add, update, remove or list users.

    The users of --auth-login, and the administrators.
    """


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
        cfg = settings(config_file, database=database, bcrypt_rounds=bcrypt_rounds)
        click.echo(actions.add_user(cfg.database, action, username,
                                    _new_password(password, password_file, username),
                                    admin, cfg.bcrypt_rounds, home=cfg.home))
    command.__doc__ = f"{action.title()} a user (the password is asked for if not given)."
    return user.command(action)(command)


def _remove_command(action):
    @user.command(action, help=f"{action.title()} a user.")
    @click.argument("username", required=False)
    @database_option
    @config_option
    def command(config_file, username, database):
        cfg = settings(config_file, database=database)
        click.echo(actions.remove_user(cfg.database, action, username, home=cfg.home))
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
    """Change a user's password and/or admin rights.

    Only what is given changes; with neither --password nor --admin/--no-admin, the new
    password is asked for.
    """
    cfg = settings(config_file, database=database, bcrypt_rounds=bcrypt_rounds)
    get_password = None
    if password is not None or password_file is not None or admin is None:
        get_password = _new_password(password, password_file, username)
    click.echo(actions.update_user(cfg.database, username, get_password, admin,
                                   cfg.bcrypt_rounds, home=cfg.home))


_list_command(user, actions.list_users, actions.format_users,
              "List the users and whether each is an administrator.")


# ---------------------------------------------------------------------------------------- hostname

@cli.group(context_settings={"help_option_names": ["-h", "--help"]})
def hostname():
    """Add, remove or list trusted hostnames.

    The hosts that --auth-hostname lets connect.
    """


def _hostname_command(action, adding):
    @hostname.command(action, help=f"{action.title()} trusted hostnames.")
    @click.argument("names", nargs=-1)
    @database_option
    @config_option
    def command(config_file, names, database):
        cfg = settings(config_file, database=database)
        if adding:
            click.echo("\n".join(actions.add_hostnames(cfg.database, action, names, home=cfg.home)))
            return 0
        results = actions.remove_hostnames(cfg.database, action, names, home=cfg.home)
        for ok, text in results:
            click.echo(text, err=not ok)
        return 0 if all(ok for ok, _ in results) else 1
    return command


for _action, _adding in (("add", True), ("insert", True), ("remove", False), ("delete", False)):
    _hostname_command(_action, _adding)


_list_command(hostname, actions.list_hostnames, actions.format_hostnames, "List the trusted hostnames.")
