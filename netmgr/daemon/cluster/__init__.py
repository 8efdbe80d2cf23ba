"""Cluster mode (``netmgr start --cluster``): Managers sharing one namespace over NATS.

Imported only when ``cluster`` is set; nats-py (the ``netmgr[cluster]`` extra) only inside
:mod:`netmgr.daemon.cluster.bridge`'s thread. docs/cluster.md describes the topologies, the
failure semantics and the wire between nodes.
"""
