"""What the administration commands do: users, trusted hostnames, the connection log, keys and
certificates. :mod:`netmgr.cli.app` parses the options, calls one function here and prints what it
returns; the wording of every result and error is msl-network 1.0's (reference section 3).

Errors are exceptions: :class:`Failed` carries a text to print as it is, anything else is
printed as ``<ExcName>: <message>`` (1.0's form, e.g. ``ValueError: A user with the name 'x'
already exists``). Nothing here prompts; a password that may have to be asked for is passed as
a callable that is only called once the other arguments have been checked.
"""
import contextlib
import math
import os

from netmgr import certinfo, crypto
from netmgr.store import models
from netmgr.errors import Failed, UsageError




# ------------------------------------------------------------------------------------ ownership

def adopt_owner(path, home):
    """Give what root created under a home owned by a service user to that user.

    ``netmgr user add`` or ``keygen`` run by root on a host whose Manager runs as ``netmgr``
    (``/var/lib/netmgr``) would otherwise leave a database or key the service cannot open.
    `path` and each of its parents below `home` that root owns are given home's owner and group.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not path or not home:
        return
    home = os.path.abspath(home)
    try:
        st = os.stat(home)
    except OSError:
        return
    if st.st_uid == 0:
        return
    current = os.path.abspath(path)
    while current.startswith(home + os.sep):
        with contextlib.suppress(OSError):
            if os.stat(current).st_uid == 0:
                os.chown(current, st.st_uid, st.st_gid)
        current = os.path.dirname(current)


# ------------------------------------------------------------------------------------- database

@contextlib.contextmanager
def database(path, home=None, must_exist=False, seed_hostnames=False):
    """Open the Manager's database (creating it, and its parents, unless `must_exist`)."""
    if path != ":memory:" and not os.path.isfile(path):
        if must_exist:
            raise Failed(f"Cannot find the database {path}")
    models.open_db(path, seed_hostnames=seed_hostnames)
    try:
        yield path
    finally:
        models.close_db()
        adopt_owner(path, home)


def table(headers, rows):
    """Columns separated by one space, a ``=`` rule under the headers; the last column unpadded.

    This is 1.0's ``user list`` layout (``Username     Administrator`` / ``============ =====``).
    """
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]

    def line(cells):
        return " ".join(c.ljust(w) for c, w in zip(cells[:-1], widths)) + (" " if len(cells) > 1 else "") \
            + cells[-1]

    return "\n".join([line(headers), " ".join("=" * w for w in widths)] + [line(r) for r in rows])


# ---------------------------------------------------------------------------------------- users

def list_users(path, home=None):
    """``{"database": path, "users": [{"username", "admin"}]}``, sorted as 1.0 sorts (str order)."""
    with database(path, home):
        users = models.users.users()
    return {"database": path, "users": [{"username": u, "admin": bool(a)} for u, a in users]}


def format_users(result):
    users = result["users"]
    if not users:
        return "There are no users in the database"
    rows = [(u["username"], u["admin"]) for u in users]
    return f"Users in {result['database']}\n\n" + table(["Username", "Administrator"], rows)


def _need_username(username, action):
    if not username:
        raise UsageError(f"ValueError: You must specify a username to {action}")


def add_user(path, action, username, get_password, admin=False, rounds=None, home=None):
    """``<user> has been added`` (or ``inserted``); `get_password()` runs after the checks."""
    _need_username(username, action)
    with database(path, home):
        users = models.UsersTable()
        if models.is_username_invalid(username):  # before asking for a password
            raise ValueError('A username cannot end with ":<integer>"')
        if users.is_user_registered(username):
            raise ValueError(f"A user with the name {username!r} already exists")
        users.insert(username, get_password(), is_admin=admin, rounds=rounds)
    return f"{username} has been {action}ed"


def update_user(path, username, get_password=None, admin=None, rounds=None, home=None):
    """``Updated <user>``: only what is given changes (1.0 also reset the admin flag)."""
    _need_username(username, "update")
    with database(path, home):
        users = models.UsersTable()
        if not users.is_user_registered(username):
            raise ValueError(f"Cannot update {username!r}. This user is not in the table.")
        password = get_password() if get_password is not None else None
        users.update(username, password=password, is_admin=admin, rounds=rounds)
    return f"Updated {username}"


def remove_user(path, action, username, home=None):
    """``<user> has been removed`` (or ``deleted``)."""
    _need_username(username, action)
    with database(path, home):
        try:
            models.users.delete(username)
        except ValueError:
            raise ValueError(f"Cannot {action} {username!r}. This user is not in the table.") from None
    return f"{username} has been {action}d"


# ------------------------------------------------------------------------------------ hostnames

def list_hostnames(path, home=None):
    """``{"database": path, "hostnames": [...]}``; a new table gets this computer's aliases (1.0)."""
    with database(path, home, seed_hostnames=True):
        return {"database": path, "hostnames": models.hostnames.hostnames()}


def format_hostnames(result):
    lines = [f"Trusted devices in {result['database']}", "", "Hostnames:"]
    return "\n".join(lines + [f"  {name}" for name in result["hostnames"]])


def add_hostnames(path, action, names, home=None):
    """``Added <name>`` (or ``Inserted``) per name, or ``<name> is already trusted`` (1.0 said
    ``Added`` again; the table is unchanged either way)."""
    if not names:
        raise UsageError(f"No hostnames were {action}ed")
    done = []
    with database(path, home, seed_hostnames=True):
        for name in names:
            if models.hostnames.is_trusted(name):
                done.append(f"{name} is already trusted")
            else:
                models.hostnames.insert(name)
                done.append(f"{action.title()}ed {name}")
    return done


def remove_hostnames(path, action, names, home=None):
    """``[(ok, text)]``: ``Removed <name>``, or ``Cannot remove '<name>'. This hostname is not in …``."""
    if not names:
        raise UsageError(f"No hostnames were {action}d")
    done = []
    with database(path, home, seed_hostnames=True):
        for name in names:
            try:
                models.hostnames.delete(name)
            except ValueError:
                done.append((False, f"Cannot {action} {name!r}. This hostname is not in the table."))
            else:
                done.append((True, f"{action.title()}d {name}"))
    return done


# ---------------------------------------------------------------------------------- connections

CONNECTION_FIELDS = models.CONNECTION_FIELDS


def parse_when(text, option):
    """A ``--since``/``--until`` value: ``YYYY-MM-DD`` or ``YYYY-MM-DD[T ]HH:MM[:SS]``."""
    if text is None:
        return None
    try:
        models.to_iso(text)
    except (TypeError, ValueError):
        raise UsageError(f"{option} must be a date (YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM:SS), "
                         f"got {text!r}") from None
    return text


def list_connections(path, since=None, until=None, home=None):
    """``{"database", "connections": [{pid, datetime, ip_address, domain, port, message}]}``."""
    since, until = parse_when(since, "--since"), parse_when(until, "--until")
    with database(path, home, must_exist=True):
        rows = models.connections.connections(since, until)
    return {"database": path, "connections": [dict(zip(CONNECTION_FIELDS, row)) for row in rows]}


def format_connections(result):
    rows = result["connections"]
    if not rows:
        return f"There are no connections in {result['database']} for this period"
    body = table(["Time", "Address", "Port", "Domain", "Message"],
                 [(r["datetime"], r["ip_address"], r["port"], r["domain"], r["message"]) for r in rows])
    return f"Connections in {result['database']}\n\n{body}"


# ------------------------------------------------------------------------- keys and certificates

def _positive_size(size):
    try:
        value = int(size)
    except (TypeError, ValueError):
        value = 0
    if value <= 0:
        raise UsageError("ValueError: The --size value must be a positive integer")
    return value


def _positive_years(years):
    try:
        value = float(years)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0:  # 1.0 accepted nan (reference 6.2 item 22)
        raise UsageError("ValueError: The --years-valid value must be a positive number")
    return value


def _make_room(path, what, force, home, private=False):
    """Refuse to replace `path` without `force`; with it, keep the old file. Returns the lines to print.

    The old file is copied to ``<path>.bak`` (a key's copy with mode 0600) and stays in place
    until the new one is written, so a failure on the way loses nothing.
    """
    if not os.path.exists(path):
        return []
    if not force:
        raise Failed(f"The {what} {path!r} already exists: use --force to replace it "
                     f"(keeping the old one as {path + '.bak'!r})")
    backup = crypto.keep_backup(path, private=private)
    adopt_owner(backup, home)
    return [f"Kept the old {what} as {backup!r}"]


def keygen(out, algorithm="rsa", size=2048, curve="SECP384R1", password=None, home=None, force=False):
    """``Created private RSA key '<out>'``. The key is written with mode 0600.

    An existing `out` is only replaced with `force`, after ``Kept the old private key as '<out>.bak'``.
    """
    size = _positive_size(size)
    done = _make_room(out, "private key", force, home, private=True)
    crypto.generate_key(out, algorithm=algorithm, password=password, size=size, curve=curve)
    adopt_owner(out, home)
    return "\n".join(done + [f"Created private {algorithm.upper()} key {out!r}"])


def certgen(out, key_file, key_password=None, algorithm="SHA256", years_valid=100, host=None,
            show=False, home=None, force=False):
    """``Created the self-signed certificate '<out>'``, and with `show` an empty line and the dump.

    An existing `out` is only replaced with `force` (kept as ``<out>.bak``); an existing
    `key_file` is used as it is, a missing one is created.
    """
    years = _positive_years(years_valid)
    done = _make_room(out, "certificate", force, home)
    crypto.generate_certificate(out, key_file, key_password=key_password, algorithm=algorithm,
                                years_valid=years, hostname=host)
    adopt_owner(out, home)
    adopt_owner(key_file, home)
    text = "\n".join(done + [f"Created the self-signed certificate {out!r}"])
    if show:
        text += "\n\n" + certinfo.dump_certificate(out)
    return text


def certdump(certfile, out=None):
    """The details of `certfile`, or ``Dumped the certificate details to <out>`` after writing them."""
    if not os.path.isfile(certfile):
        raise Failed(f"Cannot find {certfile}")
    details = certinfo.dump_certificate(certfile)
    if out is None:
        return details
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write(f"Certificate details for {certfile}\n")
        f.write(details)
    return f"Dumped the certificate details to {out}"

