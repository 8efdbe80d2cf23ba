"""The Manager's SQLite database in msl-network 1.0's format: peewee models and password hashing.

Used by the daemon and by the administration commands. No gevent, no sockets: CPU-bound hashing
goes through a ``run`` hook the daemon points at its threadpool.

May import: the shared core (``netmgr.errors``, ``netmgr.hostinfo``) and peewee and bcrypt.
"""
