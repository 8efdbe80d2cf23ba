"""The ``netmgr`` command line: the click tree, settings resolution and the admin commands.

Thin: a command parses its options, calls one function, and prints the result.

* ``app``: the top-level group, one-line errors and exit statuses, the shared options;
* the commands, each module adding its own to the group: ``start``, ``keys`` (keygen, certgen,
  certdump), ``access`` (user, hostname), ``host`` (delete, install-service), ``show`` (status,
  connections, config);
* what the commands do: ``actions`` (users, hostnames, the connection log, keys and
  certificates), ``status`` (a running Manager's state, through the client library),
  ``cleanup`` (delete) and ``install`` (install-service).

May import: the shared core, ``netmgr.store``, ``netmgr.client``; the daemon only through its
start-up entry, in ``netmgr start``.
"""
