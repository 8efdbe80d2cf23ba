"""Side-by-side benchmark of netmgr against the MSL-Network 1.0 Manager.

Run from the repository root with ``python -m bench`` (see ``bench/README.md``).

Layout:

* ``runner.py``   the command line: options, the repeat loop, the report at the end.
* ``cases.py``    the cases and the rows of their tables (pure data).
* ``runs.py``     one run of one case: start a fresh Manager and the peers, measure, return figures.
* ``report.py``   medians, the printed report and the JSON document (no I/O).
* ``managers.py`` how to start each Manager and wait until it speaks.
* ``procs.py``    process bookkeeping (spawn, tear-down, no orphans) and ``/proc`` readers.
* ``wire.py``     the raw protocol the peers speak (framing, TLS reads, the blocking handshake).
* ``peers.py``    raw-protocol peers (Echo Service, load generator in ``loadgen.py``, idle-connection
  opener); each runs in its own process, started as ``python -m bench.peers ROLE ...``; no msl-network code.
* ``libpeers.py`` the library cases' peers, through netmgr's and 1.0's client libraries
  (``python -m bench.libpeers ROLE ...``).
* ``attacks.py``  the hostile peers of issue 10, one function each (``python -m bench.attacks NAME ...``;
  ``tests/daemon/test_overload.py`` calls the same functions; the login ones are in ``guessing.py``);
  ``canary.py`` the canary and the RSS watch; ``rawconn.py`` their raw connections; ``overload.py``
  one run of the overload case.
* ``scale.py``    one run of the issue 12 cases: ``big10m`` (its client is ``bigecho.py``, its floor the
  non-parsing relay ``relay.py``, its table ``scalereport.py``) and ``idle20000``.

May import: the standard library, orjson; netmgr and msl-network only in child processes (the
Managers, ``libpeers.py``, the key generator), never in the process that measures.

Linux only: CPU time and RSS are read from ``/proc/<pid>``.
"""
