"""netmgr.store.models and netmgr.store.passwords against real SQLite files, and against MSL-Network 1.0's own tables.

Files written by msl-network 1.0.0 (``msl.network.database``) must open unchanged in netmgr and vice
versa (reference §2). bcrypt runs at cost 4 here to keep the suite fast.
"""
import hashlib
import os
import re
import shutil
import sqlite3
import types
from datetime import datetime, timedelta, timezone

import pytest
from msl.network import constants as msl_constants
from msl.network import database as msl_db

from netmgr import hostinfo
from netmgr.store import models
from netmgr.store import passwords
from netmgr.store.models import ConnectionLog, close_db, open_db

ROUNDS = 4
TABLES = ('connections', 'auth_hostnames', 'auth_users')


@pytest.fixture(autouse=True)
def _closed_db():
    yield
    close_db()


@pytest.fixture
def users():
    return models.UsersTable(rounds=ROUNDS)


@pytest.fixture
def dbfile(tmp_path):
    path = tmp_path / 'sub' / 'manager.sqlite3'  # the parent does not exist yet
    open_db(path)
    return path


def peer(ip, port, domain='localhost'):
    # msl's ConnectionsTable.insert(peer, message) reads only these three attributes
    return types.SimpleNamespace(ip_address=ip, domain=domain, port=port)


def master(path):
    """The schema of a file, minus rootpage (allocation order is not part of the schema)."""
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                            "ORDER BY type, name").fetchall()


def write_msl_file(path):
    """A database written only by msl-network 1.0: two users, a hostname, three connection rows."""
    with msl_db.UsersTable(database=str(path)) as table:
        table.insert('alice', 'alice-pw', False)
        table.insert('root', 'root-pw', True)
        records = table.records()
    with msl_db.HostnamesTable(database=str(path)) as table:
        table.insert('trusted.example')
        hosts = table.hostnames()
    with msl_db.ConnectionsTable(database=str(path)) as table:
        table.insert(peer('127.0.0.1', 50001), 'new connection request')
        table.insert(peer('127.0.0.1', 50001), 'connected as a client')
        table.insert(peer('192.0.2.7', 50002, 'host.example'), 'rejected: wrong login password')
        rows = table.connections()
    return records, hosts, rows


# ---------------------------------------------------------------------------- 1.0 file -> netmgr

def test_msl_file_opens_in_netmgr(tmp_path, users):
    path = tmp_path / 'msl.sqlite3'
    records, hosts, rows = write_msl_file(path)
    schema = master(path)

    open_db(path)
    assert users.records() == records
    assert users.usernames() == ['alice', 'root']
    assert users.users() == [('alice', False), ('root', True)]
    assert users.is_admin('root') and not users.is_admin('alice') and not users.is_admin('nobody')
    # 1.0 rows are PBKDF2 (16-byte salt, 32-byte key) and verify as they are
    key, salt = users.credentials('alice')
    assert (len(key), len(salt)) == (32, 16) and passwords.needs_rehash(key, salt)
    assert users.is_password_valid('alice', 'alice-pw')
    assert users.is_password_valid('root', 'root-pw')
    assert not users.is_password_valid('alice', 'root-pw')
    assert models.hostnames.hostnames() == hosts
    assert models.connections.connections() == rows
    # opening changed nothing in the schema (journal mode lives in the header, not in sqlite_master)
    assert master(path) == schema


def test_rehash_legacy_row(tmp_path, users):
    path = tmp_path / 'msl.sqlite3'
    write_msl_file(path)
    open_db(path)

    assert not users.rehash('alice', 'wrong')  # never rewrites a row with an unverified password
    assert passwords.needs_rehash(*users.credentials('alice'))
    assert users.rehash('alice', 'alice-pw')
    key, salt = users.credentials('alice')
    assert salt == passwords.BCRYPT_SALT and key.startswith(b'$2b$04$')
    assert users.is_password_valid('alice', 'alice-pw')
    assert not users.is_password_valid('alice', 'wrong')
    assert not users.rehash('alice', 'alice-pw')  # already bcrypt at this cost
    assert users.is_admin('root') and not users.is_admin('alice')

    # 1.0 can no longer verify the re-hashed user: it runs PBKDF2 over the b"bcrypt" marker and
    # compares with the 60-byte bcrypt hash, which fails (cleanly, no exception). Rows it wrote and
    # netmgr did not touch still work for it. This is the accepted cost of bcrypt (reference §2).
    with msl_db.UsersTable(database=str(path)) as table:
        assert not table.is_password_valid('alice', 'alice-pw')
        assert table.is_password_valid('root', 'root-pw')
        assert table.users() == [('alice', False), ('root', True)]


# ---------------------------------------------------------------------------- netmgr file -> 1.0

def test_netmgr_file_opens_in_msl(dbfile, users):
    users.insert('alice', 'alice-pw')
    users.insert('root', 'root-pw', is_admin=True)
    models.hostnames.insert('trusted.example')
    models.connections.insert_many([
        (datetime(2026, 11, 21, 13, 12, 56, 789), '127.0.0.1', 'localhost', 50001, 'new connection request'),
        ('2026-11-21T13:12:57', '192.0.2.7', 'host.example', 50002, 'disconnected'),
    ])
    hosts = models.hostnames.hostnames()
    rows = models.connections.connections()
    assert rows[0][1] == '2026-11-21T13:12:56'  # 1.0's text: T separator, no microseconds
    close_db()

    with msl_db.UsersTable(database=str(dbfile)) as table:
        assert table.usernames() == ['alice', 'root']
        assert table.users() == [('alice', False), ('root', True)]
        assert table.is_admin('root') and not table.is_admin('alice')
        assert table.is_user_registered('alice')
        # bcrypt rows: 1.0 cannot verify them (returns False, does not crash)
        assert not table.is_password_valid('alice', 'alice-pw')
        # 1.0 writes PBKDF2 into the same file; netmgr keeps verifying it
        table.update('alice', password='from-1.0')
    with msl_db.HostnamesTable(database=str(dbfile)) as table:
        assert table.hostnames() == hosts and 'trusted.example' in hosts
    with msl_db.ConnectionsTable(database=str(dbfile)) as table:
        assert table.connections() == rows
    with msl_db.ConnectionsTable(database=str(dbfile), as_datetime=True) as table:
        assert table.connections()[0][1] == datetime(2026, 11, 21, 13, 12, 56)

    open_db(dbfile)
    assert users.is_password_valid('alice', 'from-1.0')
    assert users.is_admin('root')


def test_schema_identical_to_msl(tmp_path):
    msl_path = tmp_path / 'msl.sqlite3'
    write_msl_file(msl_path)
    open_db(tmp_path / 'netmgr.sqlite3')
    close_db()
    ours, theirs = master(tmp_path / 'netmgr.sqlite3'), master(msl_path)
    assert ours == theirs
    names = {name for _, name, _, _ in ours}
    assert set(TABLES) <= names  # plus sqlite_sequence and the two UNIQUE autoindexes
    assert {'sqlite_sequence', 'sqlite_autoindex_auth_hostnames_1',
            'sqlite_autoindex_auth_users_1'} <= names


def test_models_map_every_column(dbfile):
    for model in (models.Connection, models.Hostname, models.User):
        columns = [row[1] for row in models.db.execute_sql(
            f'PRAGMA table_info({model._meta.table_name})')]
        mapped = [f.column_name for f in model._meta.sorted_fields if f.column_name != 'rowid']
        assert mapped == columns
    # auth_hostnames has no declared key: the model's key is the implicit rowid
    models.hostnames.insert('a.example')
    row = models.Hostname.get(models.Hostname.hostname == 'a.example')
    assert row.rowid == models.db.execute_sql(
        "SELECT rowid FROM auth_hostnames WHERE hostname = 'a.example'").fetchone()[0]


# ---------------------------------------------------------------------------- open_db

def test_wal_mode_for_files_not_memory(dbfile):
    assert models.db.execute_sql('PRAGMA journal_mode').fetchone()[0] == 'wal'
    assert models.db.execute_sql('PRAGMA busy_timeout').fetchone()[0] == models.BUSY_TIMEOUT_MS
    close_db()
    with sqlite3.connect(dbfile) as conn:  # WAL is persistent: 1.0 opens the file in WAL too
        assert conn.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'

    open_db(':memory:')
    assert models.db.execute_sql('PRAGMA journal_mode').fetchone()[0] == 'memory'
    assert models.hostnames.hostnames() == hostinfo.localhost_aliases()
    assert models.users.users() == []


def test_open_without_wal(tmp_path):
    open_db(tmp_path / 'x.sqlite3', wal=False)
    assert models.db.execute_sql('PRAGMA journal_mode').fetchone()[0] == 'delete'


def test_seeding_of_empty_hostnames(dbfile):
    aliases = hostinfo.localhost_aliases()
    assert models.hostnames.hostnames() == aliases
    assert {'localhost', '127.0.0.1', '::1', '1.0.0.127.in-addr.arpa'} <= set(aliases)
    if shutil.which('ip'):  # 1.0 parses `ip -4 address`; without iproute2 it lists no IPv4 addresses
        assert set(aliases) == msl_constants.LOCALHOST_ALIASES

    for name in aliases:
        models.hostnames.delete(name)
    assert models.hostnames.hostnames() == []
    open_db(dbfile, seed_hostnames=False)  # an emptied table can stay empty (reference §6 item 8)
    assert models.hostnames.hostnames() == []
    open_db(dbfile)  # 1.0's behaviour: an empty table is re-seeded on open
    assert models.hostnames.hostnames() == aliases

    for name in aliases:
        models.hostnames.delete(name)
    models.hostnames.insert('only.example')
    open_db(dbfile)  # a non-empty table is left alone
    assert models.hostnames.hostnames() == ['only.example']


def test_hostnames_api(dbfile):
    models.hostnames.insert('b.example')
    models.hostnames.insert('b.example')  # INSERT OR IGNORE
    assert models.hostnames.hostnames().count('b.example') == 1
    assert models.hostnames.hostnames() == sorted(models.hostnames.hostnames())
    assert models.hostnames.is_trusted('b.example')
    models.hostnames.delete('b.example')
    assert not models.hostnames.is_trusted('b.example')
    with pytest.raises(ValueError, match=re.escape(
            "Cannot delete 'b.example'. This hostname is not in the table.")):
        models.hostnames.delete('b.example')


# ---------------------------------------------------------------------------- users

def test_insert_validation_texts(dbfile, users):
    with pytest.raises(ValueError, match=re.escape('A username cannot end with ":<integer>"')):
        users.insert('bob:1875', 'pw')
    with pytest.raises(ValueError, match=re.escape("You must specify a password for 'bob'")):
        users.insert('bob', '')
    users.insert('bob', 'pw')
    with pytest.raises(ValueError, match=re.escape("A user with the name 'bob' already exists")):
        users.insert('bob', 'other')
    assert users.usernames() == ['bob']


def test_update_changes_only_what_is_given(dbfile, users):
    users.insert('root', 'old-pw', is_admin=True)
    users.update('root', password='new-pw')  # 1.0's CLI dropped admin rights here (§6 item 22)
    assert users.is_admin('root')
    assert users.is_password_valid('root', 'new-pw') and not users.is_password_valid('root', 'old-pw')

    key_salt = users.credentials('root')
    users.update('root', is_admin=False)
    assert not users.is_admin('root') and users.credentials('root') == key_salt

    users.update('root', password='third', is_admin=True)
    assert users.is_admin('root') and users.is_password_valid('root', 'third')

    with pytest.raises(ValueError, match=re.escape(
            'Must specify either the password and/or the admin rights when updating')):
        users.update('root')
    with pytest.raises(ValueError, match=re.escape("You must specify a password for 'root'")):
        users.update('root', password='')
    with pytest.raises(ValueError, match=re.escape(
            "Cannot update 'ghost'. This user is not in the table.")):
        users.update('ghost', is_admin=True)


def test_delete_and_queries(dbfile, users):
    users.insert('zed', 'pw')
    users.insert('amy', 'pw', is_admin=1)
    assert users.usernames() == ['zed', 'amy']  # insertion order
    assert users.users() == [('amy', True), ('zed', False)]  # sorted
    pid, name, key, salt, admin = users.get_user('amy')
    assert (name, salt, admin) == ('amy', passwords.BCRYPT_SALT, True)
    assert users.get_user('ghost') is None
    users.delete('zed')
    assert not users.is_user_registered('zed')
    with pytest.raises(ValueError, match=re.escape(
            "Cannot delete 'zed'. This user is not in the table.")):
        users.delete('zed')


def test_is_password_valid_never_raises(dbfile, users):
    users.insert('amy', 'pw')
    assert not users.is_password_valid('ghost', 'pw')  # unknown: dummy bcrypt check, then False
    assert not users.is_password_valid(None, 'pw')
    assert not users.is_password_valid('amy', None)
    assert not users.is_password_valid('amy', ['pw'])
    assert not users.is_password_valid('amy', 'x' * 100)


def test_run_hook_carries_all_hashing(dbfile):
    calls = []

    def run(func, *args):
        calls.append(func.__name__)
        return func(*args)

    table = models.UsersTable(run=run, rounds=ROUNDS)
    table.insert('amy', 'pw')
    table.update('amy', password='pw2')
    table.is_password_valid('amy', 'pw2')
    table.is_password_valid('ghost', 'pw2')
    assert calls == ['hash_password', 'hash_password', 'verify_password', 'verify_dummy']


# ---------------------------------------------------------------------------- passwords

def test_72_byte_limit(dbfile, users):
    with pytest.raises(ValueError, match='74 bytes long in UTF-8; at most 72 bytes'):
        passwords.hash_password('é' * 37, rounds=ROUNDS)
    with pytest.raises(ValueError, match='at most 72 bytes'):
        users.insert('amy', 'x' * 73)
    assert not users.is_user_registered('amy')
    users.insert('amy', 'x' * 72)
    assert users.is_password_valid('amy', 'x' * 72)
    assert not users.is_password_valid('amy', 'x' * 72 + 'y')  # bcrypt would have truncated to match


def test_hash_and_verify():
    key, salt = passwords.hash_password('s3cret', rounds=ROUNDS)
    assert salt == b'bcrypt' and key.startswith(b'$2b$04$')
    assert passwords.verify_password('s3cret', key, salt)
    assert passwords.verify_password('s3cret', memoryview(key), bytearray(salt))
    assert not passwords.verify_password('S3cret', key, salt)
    assert not passwords.verify_password(b's3cret', key, salt)
    assert not passwords.verify_password('s3cret', b'$2b$garbage', salt)
    assert not passwords.verify_password('\ud800', key, salt)
    assert not passwords.needs_rehash(key, salt)
    assert passwords.needs_rehash(key, salt, rounds=12)
    with pytest.raises(ValueError):
        passwords.hash_password('')
    with pytest.raises(TypeError):
        passwords.hash_password(None)


def test_verify_legacy_pbkdf2_row():
    salt = os.urandom(16)
    key = hashlib.pbkdf2_hmac('sha256', 'pw'.encode(), salt, 100_000, 32)
    assert passwords.verify_password('pw', key, salt)
    assert not passwords.verify_password('pW', key, salt)
    assert passwords.needs_rehash(key, salt)


def test_verify_dummy_costs_a_bcrypt_check():
    assert passwords.verify_dummy('anything', rounds=ROUNDS) is False
    assert passwords.verify_dummy(None, rounds=ROUNDS) is False
    assert passwords._dummy_key(ROUNDS).startswith(b'$2b$04$')  # same cost as the real rows


# ---------------------------------------------------------------------------- connections

def test_connections_start_end_filters(dbfile):
    stamps = ['2026-11-20T23:59:59', '2026-11-21T00:00:00', '2026-11-21T13:12:56',
              '2026-11-21T23:59:59', '2026-11-22T08:00:00']
    models.connections.insert_many(
        [(s, '127.0.0.1', 'localhost', 1000 + i, 'disconnected') for i, s in enumerate(stamps)])

    def between(start=None, end=None):
        return [row[1] for row in models.connections.connections(start=start, end=end)]

    assert between() == stamps
    assert between(start='2026-11-21T13:12:56') == stamps[2:]  # inclusive
    assert between(start='2026-11-21') == stamps[1:]
    assert between(end='2026-11-21T13:12:56') == stamps[:3]  # inclusive
    assert between(end='2026-11-21') == stamps[:4]  # a bare date covers its whole day
    assert between('2026-11-21', '2026-11-21') == stamps[1:4]
    assert between(datetime(2026, 11, 21, 0, 0, 0), datetime(2026, 11, 21, 13, 12, 56, 999)) == stamps[1:3]
    assert between('2026-11-21 00:00:00', '2026-11-21 00:00:00') == [stamps[1]]  # space separator too
    aware = datetime(2026, 11, 21, 13, 12, 56).astimezone().astimezone(timezone(timedelta(hours=5)))
    assert between(aware, aware) == [stamps[2]]  # converted to local time, as stored
    assert between(start='2026-11-23') == []
    with pytest.raises(ValueError):
        between(start='yesterday')

    # the same filters in 1.0 always fail (reference §6 item 19)
    close_db()
    with msl_db.ConnectionsTable(database=str(dbfile)) as table:
        with pytest.raises(sqlite3.OperationalError):
            table.connections(start='2026-11-21')


def test_connection_log_batches(dbfile):
    log = ConnectionLog()
    statements = []
    models.db.connection().set_trace_callback(statements.append)
    n = 250  # more than one INSERT batch
    for i in range(n):
        log.log('127.0.0.1', 'localhost', 40000 + i, 'new connection request')
    assert len(log) == n
    assert statements == [] and models.connections.connections() == []  # log() never touches the DB

    assert log.flush() == n
    models.db.connection().set_trace_callback(None)
    assert [s for s in statements if s.startswith(('BEGIN', 'COMMIT'))] == ['BEGIN IMMEDIATE', 'COMMIT']
    rows = models.connections.connections()
    assert len(rows) == n and len(log) == 0
    assert [row[4] for row in rows] == list(range(40000, 40000 + n))
    assert all(re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d', row[1]) for row in rows)
    assert log.flush() == 0


def test_connection_log_keeps_events_when_flush_fails(dbfile):
    class Failing:
        def insert_many(self, rows):
            raise sqlite3.OperationalError('database is locked')

    log = ConnectionLog(table=Failing(), max_pending=3)
    for port in range(5):
        log.log('127.0.0.1', 'localhost', port, 'disconnected')
    assert len(log) == 3 and log.dropped == 2  # bounded: the oldest were dropped
    with pytest.raises(sqlite3.OperationalError):
        log.flush()
    assert len(log) == 3 and log.dropped == 2
    log._table = models.connections
    assert log.flush() == 3
    assert [row[4] for row in models.connections.connections()] == [2, 3, 4]
