"""``netmgr delete`` and ``netmgr install-service``: netmgr's files on this host.

Thin: ``delete`` asks for confirmation and prints through :func:`netmgr.cli.cleanup.delete`;
``install-service`` prints the actions of :func:`netmgr.cli.install.install_service`.
"""
import os

import click

from netmgr.cli import cleanup, install
from netmgr.cli.app import cli, config_option, settings


@cli.command(short_help="Delete the files netmgr or 1.0 created.")
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
    cfg = settings(config_file)
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


@cli.command("install-service", short_help="Install netmgr as a systemd service.")
@click.option("--prefix", default="/", show_default=True,
              help="Install under this root (files only unless it is '/').")
@click.option("--config-template", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Config file to install when /etc/netmgr/netmgr.conf does not exist yet.")
@click.option("--wheel", default=None, type=click.Path(exists=True, dir_okay=False),
              help="The netmgr wheel for /opt/netmgr [default: the one this netmgr was "
                   "installed from, or one built from its source checkout].")
@click.option("--find-links", default=None, type=click.Path(exists=True, file_okay=False),
              help="Offline: take netmgr and its dependencies only from the wheels in this "
                   "directory (pip --no-index --find-links).")
@click.option("--python", default=None, type=click.Path(exists=True, dir_okay=False),
              help="The Python that makes /opt/netmgr [default: this one, else /usr/bin/python3 "
                   "if the service cannot see this one].")
@click.option("--executable", default=None,
              help="Make no /opt/netmgr: ExecStart= runs this installed netmgr.")
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
def install_service(prefix, config_template, wheel, find_links, python, executable, dry_run):
    """Install netmgr as a systemd service: venv /opt/netmgr, user, units, config (idempotent)."""
    for action in install.install_service(prefix, config_template, dry_run, executable,
                                          wheel=wheel, find_links=find_links, python=python):
        click.echo(("(dry run) " if dry_run else "") + str(action))
