"""``netmgr keygen``, ``certgen`` and ``certdump``: the Manager's private key and TLS certificate.

Thin: each command resolves its defaults from the settings (HOME/keys, HOME/certs), calls one
function of :mod:`netmgr.cli.actions` and prints the text it returns (1.0's words). An existing
key or certificate is replaced only with ``--force``, which keeps the old one as ``<file>.bak``.
Each docstring's first sentence is short enough to show whole in ``netmgr --help`` (issue 11).
"""
import click

from netmgr import crypto
from netmgr.cli import actions
from netmgr.cli.app import cli, config_option, secret, settings


class HashChoice(click.Choice):
    """The hashes certgen signs with (:data:`netmgr.crypto.SIGNATURE_HASHES`), in any case.

    The help lists them; another name fails with 1.0's words (reference section 3, certgen):
    ``ValueError: Invalid hash algorithm 'X'. Allowed algorithms are`` and the list.
    """

    def __init__(self):
        super().__init__(crypto.SIGNATURE_HASHES, case_sensitive=False)

    def normalize_choice(self, choice, ctx):  # click >= 8.2: compared (and listed) upper-case
        return str(choice).upper()

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            crypto.signature_hash(value)  # ValueError: Invalid hash algorithm …
            raise


def force_option(what):
    return click.option("-f", "--force", is_flag=True,
                        help=f"Replace an existing {what}, keeping the old one as FILE.bak.")


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
@force_option("key")
@config_option
def keygen(config_file, algorithm, curve, password, password_file, out, size, force):
    """Generate a private key (PEM, mode 0600).

    The key signs the Manager's certificate (netmgr certgen).
    """
    cfg = settings(config_file)
    password = secret(password, password_file, "Reading the key password from the file")
    out = out or cfg.cert_and_key()[1]
    click.echo(actions.keygen(out, algorithm, size, curve, password, home=cfg.home, force=force))


@cli.command()
@click.argument("out", required=False)
@click.option("-a", "--algorithm", default="SHA256", show_default=True, type=HashChoice(),
              help="Hash algorithm of the signature (DSA keys: SHA-2 only).")
@click.option("-k", "--key-file", default=None,
              help="Private key that signs the certificate (created if missing, used if it exists) "
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
@force_option("certificate")
@config_option
def certgen(config_file, out, algorithm, key_file, key_file_password, key_file_password_file,
            years_valid, host, show, force):
    """Generate a self-signed certificate (PEM).

    OUT defaults to HOME/certs/localhost.crt (HOME/certs/HOST.crt with --host).
    """
    cfg = settings(config_file)
    password = secret(key_file_password, key_file_password_file, "Reading the key password from the file")
    default_cert, default_key = cfg.cert_and_key(host) if host else cfg.cert_and_key()
    click.echo(actions.certgen(out or default_cert, key_file or default_key, password, algorithm,
                               years_valid, host, show, home=cfg.home, force=force))


@cli.command()
@click.argument("certfile")
@click.option("-o", "--out", default=None, help="Write the details to this file instead.")
def certdump(certfile, out):
    """Print the details of a PEM certificate.

    1.0's text, with the SHA-256 fingerprint before 1.0's last lines (the SHA-1 one).
    """
    click.echo(actions.certdump(certfile, out))
