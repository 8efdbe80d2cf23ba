"""Side-by-side benchmark of netmgr against the MSL-Network 1.0 Manager.

Run from the repository root with ``python -m bench`` (see ``bench/README.md``).

Layout:

* ``peers.py``   raw-protocol peers (Echo Service, load generator, idle-connection opener); each
  runs in its own process, started as ``python -m bench.peers ROLE ...``; no msl-network code.
* ``procs.py``   process bookkeeping (spawn, tear-down, no orphans) and ``/proc`` readers.
* ``managers.py`` how to start each Manager and wait until it speaks.
* ``runner.py``  the cases, the repeat/median logic and the report.

Linux only: CPU time and RSS are read from ``/proc/<pid>``.
"""
