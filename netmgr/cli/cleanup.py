"""``netmgr delete``: remove the database, certificates, keys and log files of a netmgr home.

Texts, order and sizes are msl-network 1.0's ``delete`` (reference section 3). Only
``<root>/manager.sqlite3`` (or the configured database), ``*.crt`` under ``certs/``, ``*.key``
under ``keys/`` and ``*.log`` under ``logs/`` are removed; any other file stays. Unlike 1.0, the
database's SQLite companions (``-wal``, ``-shm``) go with it, and a file that cannot be removed
is reported on stderr and makes the command fail.
"""
import os

from netmgr.errors import Failed, UsageError

KINDS = (  # (flag, directory, extension, search heading, plural noun, nothing found)
    ("certs", "certs", ".crt", "certificates", "certificate(s)", "no certificates found"),
    ("keys", "keys", ".key", "keys", "key(s)", "no keys found"),
    ("logs", "logs", ".log", "log files", "log file(s)", "no log files found"),
)


def human_size(size):
    """1.0's sizes: ``N B``, ``N kB``, ``N MB``, ``N GB`` (decimal units)."""
    if size < 1e3:
        return f"{size} B"
    if size < 1e6:
        return f"{round(size / 1e3)} kB"
    if size < 1e9:
        return f"{round(size / 1e6)} MB"
    return f"{round(size / 1e9)} GB"


def search(directory, extension):
    """Every file under `directory` whose name ends with `extension`, and their total size."""
    files, total = [], 0
    for root, _, names in os.walk(directory):
        for name in sorted(names):
            if name.endswith(extension):
                path = os.path.join(root, name)
                files.append(path)
                total += os.path.getsize(path)
    return files, human_size(total)


def delete(root, database=None, everything=False, certs=False, keys=False, logs=False,
           echo=print, error=print, confirm=lambda: True):
    """Delete what is selected under `root`; return False if a file could not be removed.

    `echo(text, end)` prints progress, `error(text)` a failure, and `confirm()` asks 1.0's
    ``Proceed (Y/n)?`` (it prints ``Okay, not deleting`` itself when the answer is no).
    """
    chosen = {"certs": certs or everything, "keys": keys or everything, "logs": logs or everything}
    if not (everything or database is not None or any(chosen.values())):
        raise UsageError("You must specify what you want to delete, for example\n"
                         "  netmgr delete --keys")
    if not os.path.isdir(root):
        raise Failed(f"The {root!r} directory does not exist")
    remover = _Remover(echo, error)
    if database is not None:
        _delete_database(database, echo, confirm, remover)
    for flag, directory, extension, heading, noun, nothing in KINDS:
        if not chosen[flag]:
            continue
        echo(f"\nSearching for {heading} ... ", end="")
        files, size = search(os.path.join(root, directory), extension)
        if not files:
            echo(nothing)
            continue
        echo(f"\n  {len(files)} {noun} will be deleted [{size}]")
        if confirm():
            for path in files:
                remover.remove(path)
    return remover.ok


def _delete_database(database, echo, confirm, remover):
    if not os.path.isfile(database):
        echo("No database file found")
        return
    echo("\nThe following database will be deleted:")
    echo(f"  {database} [{human_size(os.path.getsize(database))}]")
    if confirm():
        remover.remove(database)
        for suffix in ("-wal", "-shm"):  # a stale WAL must not meet a new database
            if os.path.isfile(database + suffix):
                remover.remove(database + suffix)


class _Remover:
    """Removes files one by one, reporting each; ``ok`` turns False at the first failure."""

    def __init__(self, echo, error):
        self.echo, self.error = echo, error
        self.ok = True

    def remove(self, path):
        try:
            os.remove(path)
        except OSError as exc:
            self.ok = False
            self.error(f"[OSError] {exc} -- Cannot delete {path}")
        else:
            self.echo(f"[Deleted] {path}")
