"""The blocking client and Service library: msl-network 1.0's API on plain sockets and threads.

Porting a program is an import change (``from msl.network import connect`` becomes
``from netmgr import connect``). This package never imports gevent or :mod:`netmgr.daemon`, so
any program (a Qt GUI, a Jupyter kernel, a script LabVIEW starts) can use it without changing
how its threads behave.

The public names are the ones below; every module of the package is internal:

* ``client``: :func:`connect` and :class:`Client`; ``link``: :class:`Link`, :class:`LinkedClient`;
* ``service``: :class:`Service`, :func:`run_forever`, :func:`run_services`;
* the machinery: ``peer`` (what a Client and a Service share: identity, handshake, 1.0 texts),
  ``transport`` and ``tofu`` (sockets, TLS, trust on first use), ``failover`` and ``reconnect``
  (reaching a Manager again), ``calls``, ``reader`` and ``dispatch`` (a Client's requests and
  replies), ``service_io`` and ``service_work`` (a Service's connection and threads),
  ``manager_process`` (the Manager ``run_forever`` starts).

May import: the shared core (``netmgr.protocol``, ``netmgr.hostinfo``, ``netmgr.config``,
``netmgr.crypto``); never gevent, ``netmgr.daemon`` or ``netmgr.cli``.
"""
from netmgr.client.client import (CONNECTED, DEFAULT_REQUEST_TIMEOUT, DISCONNECTED, IDLE_READ_DELAY,
                                  PRECHECK_AFTER, RECONNECTING, Client, Link, LinkedClient,
                                  MessageTooLargeError, connect, filter_client_connect_kwargs,
                                  get_ssl_context)
from netmgr.client.service import (MANAGER_START_TIMEOUT, TAKEOVER_AFTER, WATCH_IDLE, Service,
                                   filter_run_forever_kwargs, filter_service_start_kwargs,
                                   run_forever, run_services)

__all__ = ["connect", "Client", "Link", "LinkedClient", "filter_client_connect_kwargs",
           "get_ssl_context", "CONNECTED", "RECONNECTING", "DISCONNECTED",
           "DEFAULT_REQUEST_TIMEOUT", "MessageTooLargeError", "IDLE_READ_DELAY", "PRECHECK_AFTER",
           "Service", "run_forever", "run_services", "filter_service_start_kwargs",
           "filter_run_forever_kwargs", "TAKEOVER_AFTER", "WATCH_IDLE", "MANAGER_START_TIMEOUT"]
