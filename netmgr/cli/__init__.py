"""The ``netmgr`` command line: the click tree, settings resolution and the admin commands.

Thin: a command parses its options, calls one function (in :mod:`netmgr.cli.actions`,
``status``, ``cleanup`` or ``install``), and prints the result. ``netmgr status`` talks to a
running Manager through the client library.

May import: the shared core, ``netmgr.store``, ``netmgr.client``; the daemon only through
:mod:`netmgr.daemon.startup` (``netmgr start``).
"""
