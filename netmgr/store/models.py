"""peewee models of MSL-Network 1.0's three SQLite tables, and the table APIs the Manager and CLI use.

The file format is 1.0's (reference §2): the tables are created with 1.0's own ``CREATE TABLE``
statements, so ``sqlite_master`` of a netmgr file and of a 1.0 file are identical and each program
opens the other's files. What netmgr changes inside that format:

* new passwords are bcrypt (see :mod:`netmgr.store.passwords`); 1.0 PBKDF2 rows still verify;
* ``connections(start, end)`` filters work (1.0 queried a missing ``timestamp`` column, §6 item 19);
* connection events are buffered by :class:`ConnectionLog` and written in one transaction per flush,
  never one commit per event (§6 item 17).

It imports peewee, the hashing of :mod:`netmgr.store.passwords`, and this host's aliases from
:mod:`netmgr.hostinfo` (a new ``auth_hostnames`` table is seeded with them, as in 1.0); no gevent and
no sockets. It never decides *when* to write: callers flush the log, and CPU-bound hashing goes
through the ``run`` hook of :class:`UsersTable` so a gevent caller can send it to the hub threadpool
while the database work stays on the calling greenlet.
"""
import collections
import datetime as dt
import os
import re

from peewee import (AutoField, BlobField, BooleanField, DatabaseError, Field, IntegerField, IntegrityError,
                    Model, SqliteDatabase, TextField, chunked)
from playhouse.sqlite_ext import RowIDField

from netmgr.errors import PathError
from netmgr.hostinfo import localhost_aliases
from netmgr.store.passwords import DEFAULT_ROUNDS, hash_password, needs_rehash, verify_dummy, verify_password

# thread_safe=False: one connection shared by every greenlet. With peewee's default (thread-local
# state) and gevent's monkey-patched threading.local, each greenlet would open its own connection --
# and with ':memory:' see its own empty database. Use the database from the hub thread only; sqlite3's
# check_same_thread makes any use from a threadpool thread fail loudly.
db = SqliteDatabase(None, thread_safe=False)

BUSY_TIMEOUT_MS = 5000
INSERT_BATCH = 100  # 5 parameters per row: well under SQLite's 999-variable limit of old builds

# Verbatim from msl/network/database.py 1.0.0 (ConnectionsTable, HostnamesTable, UsersTable). Do not
# reformat: SQLite stores this text in sqlite_master, and byte-identical schemas are the point.
SCHEMA = (
    'CREATE TABLE IF NOT EXISTS connections ('
    'pid INTEGER PRIMARY KEY AUTOINCREMENT, '
    'datetime DATETIME NOT NULL, '
    'ip_address TEXT NOT NULL, '
    'domain TEXT NOT NULL, '
    'port INTEGER NOT NULL, '
    'message TEXT NOT NULL);',
    'CREATE TABLE IF NOT EXISTS auth_hostnames '
    '(hostname TEXT NOT NULL, UNIQUE(hostname));',
    'CREATE TABLE IF NOT EXISTS auth_users ('
    'pid INTEGER PRIMARY KEY AUTOINCREMENT, '
    'username TEXT NOT NULL, '
    'key BLOB NOT NULL, '
    'salt BLOB NOT NULL, '
    'is_admin BOOLEAN NOT NULL, '
    'UNIQUE(username));',
)

_USERNAME_INVALID = re.compile(r':\d+$')  # 1.0 utils._is_username_invalid_regex


def is_username_invalid(username):
    """1.0's rule: a username cannot end with ``:<integer>`` (it would read as host:port)."""
    return _USERNAME_INVALID.search(username) is not None


# ------------------------------------------------------------------------------------------ datetimes

def to_iso(value, *, end_of_day=False):
    """Normalise a datetime, date or ISO string to 1.0's stored text ``YYYY-MM-DDTHH:MM:SS`` (local).

    A bare date means its first second, or its last with *end_of_day* (inclusive upper bounds). Aware
    datetimes are converted to local time, because 1.0 stores naive local time.
    """
    if isinstance(value, str):
        text = value.strip()
        value = dt.date.fromisoformat(text) if len(text) == 10 else dt.datetime.fromisoformat(text)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time.max if end_of_day else dt.time.min)
    if not isinstance(value, dt.datetime):
        raise TypeError(f'expected a datetime, date or ISO string, not {type(value).__name__}')
    if value.tzinfo is not None:
        value = value.astimezone().replace(tzinfo=None)
    return value.replace(microsecond=0).isoformat(sep='T')


def now_iso():
    """The current local time as 1.0 stores it, e.g. ``2026-11-21T13:12:56``."""
    return dt.datetime.now().replace(microsecond=0).isoformat(sep='T')


class IsoDateTimeField(Field):
    """1.0's ``DATETIME`` column: ISO text with ``T`` and no microseconds; read back as that text."""
    field_type = 'DATETIME'

    def db_value(self, value):
        return None if value is None else to_iso(value)


# --------------------------------------------------------------------------------------------- models

class BaseModel(Model):
    class Meta:
        database = db


class Connection(BaseModel):
    pid = AutoField()
    datetime = IsoDateTimeField()
    ip_address = TextField()
    domain = TextField()
    port = IntegerField()
    message = TextField()

    class Meta:
        table_name = 'connections'


class Hostname(BaseModel):
    # 1.0 declares no primary key, so the key is SQLite's implicit rowid (not a declared column).
    rowid = RowIDField()
    hostname = TextField(unique=True)

    class Meta:
        table_name = 'auth_hostnames'


class User(BaseModel):
    pid = AutoField()
    username = TextField(unique=True)
    key = BlobField()
    salt = BlobField()
    is_admin = BooleanField()

    class Meta:
        table_name = 'auth_users'


# ----------------------------------------------------------------------------------------- open/close

def _is_memory(path):
    return path == ':memory:' or path.startswith('file::memory:')


def make_dirs(path):
    """Create the directory *path* and its missing parents; :class:`PathError` names the one that
    cannot be made (``cannot create the directory /x/home: Not a directory``)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise PathError(f'cannot create the directory {exc.filename or path}: {exc.strerror or exc}') from exc


def open_db(path, wal=True, seed_hostnames=True, busy_timeout_ms=BUSY_TIMEOUT_MS):
    """Open (creating if needed) the database at *path* and bind the models to it; return ``db``.

    Creates missing parent directories and missing tables (1.0's exact DDL). WAL lets 1.0 tools and
    readers work next to a running Manager; it is skipped for ``:memory:``. With *seed_hostnames*, an
    empty ``auth_hostnames`` receives :func:`netmgr.hostinfo.localhost_aliases`, as 1.0 does on every open (§6 item 8: pass
    False to let an emptied table stay empty).

    A file that cannot be used raises :class:`PathError` naming it, for every caller (the Manager and
    the admin commands): ``cannot open the database /x/manager.sqlite3: file is not a database``.
    """
    path = os.fspath(path)
    memory = _is_memory(path)
    if not memory:
        make_dirs(os.path.dirname(os.path.abspath(path)))
    pragmas = [('busy_timeout', int(busy_timeout_ms))]
    if wal and not memory:
        pragmas.insert(0, ('journal_mode', 'wal'))
    try:
        db.init(path, pragmas=pragmas, timeout=busy_timeout_ms / 1000)
        db.connect(reuse_if_open=True)
        with db.atomic('IMMEDIATE'):
            for statement in SCHEMA:
                db.execute_sql(statement)
        if seed_hostnames and not Hostname.select().exists():
            hostnames.insert_many(localhost_aliases())
    except DatabaseError as exc:  # sqlite3's errors, as peewee raises them
        close_db()
        raise PathError(f'cannot open the database {path}: {exc}') from exc
    return db


def check_writable():
    """Raise the database's error unless a write transaction can begin now (``/readyz``)."""
    with db.atomic('IMMEDIATE'):
        pass


def close_db():
    """Close the connection, if open. The models stay bound; ``open_db`` may be called again."""
    if not db.is_closed():
        db.close()


# ----------------------------------------------------------------------------------------------- users

def _inline(func, *args):
    return func(*args)


class UsersTable:
    """``auth_users`` with the method names and error texts of 1.0's ``UsersTable``.

    *run(func, *args)* executes the CPU-bound hashing and verification; the default calls inline. A
    gevent Manager passes ``lambda f, *a: hub.threadpool.apply(f, a)`` so bcrypt leaves the hub while
    the queries stay on the calling greenlet. *rounds* is the bcrypt cost of new hashes and of the
    dummy check for unknown users.
    """

    def __init__(self, run=None, rounds=DEFAULT_ROUNDS):
        self._run = run or _inline
        self.rounds = rounds

    def _hash(self, password, rounds):
        return self._run(hash_password, password, rounds or self.rounds)

    def _ensure_user_exists(self, username, action):
        if not self.is_user_registered(username):
            raise ValueError(f'Cannot {action} {username!r}. This user is not in the table.')

    def insert(self, username, password, is_admin=False, rounds=None):
        """Add a user with a bcrypt password. ValueError texts are 1.0's (plus the 72-byte limit)."""
        if is_username_invalid(username):
            raise ValueError('A username cannot end with ":<integer>"')
        if not password:
            raise ValueError(f'You must specify a password for {username!r}')
        duplicate = ValueError(f'A user with the name {username!r} already exists')
        if self.is_user_registered(username):  # before spending a bcrypt hash
            raise duplicate
        key, salt = self._hash(password, rounds)
        try:
            User.insert(username=username, key=key, salt=salt, is_admin=bool(is_admin)).execute()
        except IntegrityError:
            raise duplicate from None

    def update(self, username, password=None, is_admin=None, rounds=None):
        """Change only what is given: a new password (new bcrypt hash) and/or the admin flag."""
        self._ensure_user_exists(username, 'update')
        if password is None and is_admin is None:
            raise ValueError('Must specify either the password and/or the admin rights when updating')
        fields = {}
        if password is not None:
            if not password:
                raise ValueError(f'You must specify a password for {username!r}')
            fields[User.key], fields[User.salt] = self._hash(password, rounds)
        if is_admin is not None:
            fields[User.is_admin] = bool(is_admin)
        User.update(fields).where(User.username == username).execute()

    def delete(self, username):
        self._ensure_user_exists(username, 'delete')
        User.delete().where(User.username == username).execute()

    def get_user(self, username):
        """``(pid, username, key, salt, is_admin)`` or None."""
        return User.select().where(User.username == username).tuples().first()

    def records(self):
        """``[(pid, username, key, salt, is_admin), ...]`` in insertion order."""
        return list(User.select().order_by(User.pid).tuples())

    def usernames(self):
        return [name for name, in User.select(User.username).order_by(User.pid).tuples()]

    def users(self):
        """Sorted ``[(username, is_admin), ...]``."""
        return sorted(User.select(User.username, User.is_admin).tuples())

    def is_user_registered(self, username):
        return User.select().where(User.username == username).exists()

    def credentials(self, username):
        """``(key, salt)`` of *username*, or None: lets a caller verify off the database thread."""
        if not isinstance(username, str):
            return None
        return User.select(User.key, User.salt).where(User.username == username).tuples().first()

    def is_password_valid(self, username, password):
        """Whether *password* is *username*'s; an unknown user costs a dummy bcrypt check, then False."""
        row = self.credentials(username)
        if row is None:
            return self._run(verify_dummy, password, self.rounds)
        return self._run(verify_password, password, *row)

    def is_admin(self, username):
        row = User.select(User.is_admin).where(User.username == username).tuples().first()
        return bool(row and row[0])

    def rehash(self, username, password, rounds=None):
        """Re-hash a PBKDF2 (or cheaper bcrypt) row with bcrypt; return whether the row was rewritten.

        The password is verified first, and the row is only replaced if it still holds the hash that
        was verified, so a concurrent ``update`` is never overwritten.
        """
        rounds = rounds or self.rounds
        row = self.credentials(username)
        if row is None or not needs_rehash(*row, rounds=rounds):
            return False
        if not self._run(verify_password, password, *row):
            return False
        key, salt = self._hash(password, rounds)
        old_key, old_salt = row
        query = User.update(key=key, salt=salt).where(
            (User.username == username) & (User.key == old_key) & (User.salt == old_salt))
        return query.execute() == 1


# ------------------------------------------------------------------------------------------- hostnames

class HostnamesTable:
    """``auth_hostnames`` with 1.0's method names and error texts."""

    def insert(self, hostname):
        """Add a trusted hostname; an existing one is ignored (``INSERT OR IGNORE``)."""
        Hostname.insert(hostname=hostname).on_conflict_ignore().execute()

    def insert_many(self, names):
        rows = [(name,) for name in names]
        with db.atomic('IMMEDIATE'):
            for batch in chunked(rows, INSERT_BATCH):
                Hostname.insert_many(batch, fields=[Hostname.hostname]).on_conflict_ignore().execute()

    def delete(self, hostname):
        if not Hostname.delete().where(Hostname.hostname == hostname).execute():
            raise ValueError(f'Cannot delete {hostname!r}. This hostname is not in the table.')

    def hostnames(self):
        return sorted(name for name, in Hostname.select(Hostname.hostname).tuples())

    def is_trusted(self, hostname):
        return Hostname.select().where(Hostname.hostname == hostname).exists()


# ----------------------------------------------------------------------------------------- connections

#: the names of a connection-log row's values, in the order :meth:`ConnectionsTable.connections` gives them
CONNECTION_FIELDS = ("pid", "datetime", "ip_address", "domain", "port", "message")
_CONNECTION_FIELDS = [Connection.datetime, Connection.ip_address, Connection.domain,
                      Connection.port, Connection.message]


class ConnectionsTable:
    """``connections``: batched inserts and a working ``connections(start, end)``."""

    def insert_many(self, rows):
        """Write ``(datetime, ip_address, domain, port, message)`` rows in one transaction; return count."""
        rows = [(to_iso(when), ip, domain, int(port), message)
                for when, ip, domain, port, message in rows]
        if not rows:
            return 0
        with db.atomic('IMMEDIATE'):
            for batch in chunked(rows, INSERT_BATCH):
                Connection.insert_many(batch, fields=_CONNECTION_FIELDS).execute()
        return len(rows)

    def connections(self, start=None, end=None):
        """Rows ``(pid, 'YYYY-MM-DDTHH:MM:SS', ip, domain, port, message)`` with start <= time <= end.

        *start* and *end* are datetimes, dates or ISO strings (``yyyy-mm-dd`` or
        ``yyyy-mm-ddTHH:MM:SS``); both bounds are inclusive and a bare-date *end* covers its whole day.
        """
        query = Connection.select().order_by(Connection.pid)
        if start is not None:
            query = query.where(Connection.datetime >= to_iso(start))
        if end is not None:
            query = query.where(Connection.datetime <= to_iso(end, end_of_day=True))
        return list(query.tuples())

    def recent(self, n):
        """The newest `n` rows, as :meth:`connections` gives them (oldest first)."""
        rows = list(Connection.select().order_by(Connection.pid.desc()).limit(n).tuples())
        rows.reverse()
        return rows

    def prune(self, max_rows=0, max_age_days=0.0, batch=10_000):
        """Delete at most *batch* rows older than *max_age_days* or beyond the newest *max_rows*
        (0: no such limit); return how many. Short transactions: call again while it returns *batch*."""
        cutoff = []
        if max_age_days:
            oldest = dt.datetime.now() - dt.timedelta(days=max_age_days)
            cutoff.append(Connection.datetime < to_iso(oldest))
        if max_rows:
            keep = Connection.select(Connection.pid).order_by(Connection.pid.desc()).offset(max_rows - 1).limit(1)
            first_kept = keep.scalar()
            if first_kept is not None:
                cutoff.append(Connection.pid < first_kept)
        if not cutoff:
            return 0
        doomed = Connection.select(Connection.pid).where(cutoff[0] if len(cutoff) == 1 else cutoff[0] | cutoff[1])
        with db.atomic('IMMEDIATE'):
            return Connection.delete().where(Connection.pid.in_(doomed.order_by(Connection.pid).limit(batch))).execute()


class ConnectionLog:
    """In-memory buffer of connection events; :meth:`flush` writes them in one transaction.

    :meth:`log` never touches the database, so it is safe on the hot path; the Manager flushes from one
    background greenlet (about once a second) and at shutdown. At most *max_pending* events are kept
    (oldest dropped, counted in :attr:`dropped`) so a locked database cannot exhaust memory.
    """

    def __init__(self, table=None, max_pending=100_000):
        self._table = table or connections
        self._max = max_pending
        self._pending = collections.deque(maxlen=max_pending)
        self.dropped = 0

    def __len__(self):
        return len(self._pending)

    def log(self, ip_address, domain, port, message):
        """Buffer one event, time-stamped now (local time, seconds, as 1.0)."""
        if len(self._pending) == self._max:
            self.dropped += 1
        self._pending.append((now_iso(), ip_address, domain, port, message))

    def flush(self):
        """Write every buffered event; return how many. On failure they are kept and the error raised."""
        if not self._pending:
            return 0
        rows, self._pending = self._pending, collections.deque(maxlen=self._max)
        try:
            return self._table.insert_many(rows)
        except Exception:
            kept = collections.deque(rows, maxlen=self._max)
            kept.extend(self._pending)  # events logged meanwhile are newer; overflow drops the oldest
            self.dropped += len(rows) + len(self._pending) - len(kept)
            self._pending = kept
            raise


users = UsersTable()
hostnames = HostnamesTable()
connections = ConnectionsTable()
