"""The blocking client and Service library: msl-network 1.0's API on plain sockets and threads.

Porting a program is an import change (``from msl.network import connect`` becomes
``from netmgr import connect``). This package never imports gevent or the Manager's code, so
any program (a Qt GUI, a Jupyter kernel, a script LabVIEW starts) can use it without changing
how its threads behave.

The public names are the ones below (``from netmgr import ...`` loads the main ones lazily);
every module of the package is internal:

* ``client``: :func:`connect` and :class:`Client`; ``link``: :class:`Link` (defined in
  ``proxy``, with the ``LinkEnd`` through which a Client and its Links meet) and
  :class:`LinkedClient`;
* ``service``: :class:`Service`, :func:`run_forever`, :func:`run_services` (also importable
  from ``netmgr.service``, as in msl-network 1.0);
* ``events``: :class:`EventSubscription` and :class:`EventStream`, what
  :meth:`Client.events` returns;
* the machinery: ``peer`` (what a Client and a Service share: states, request encoder,
  handshake, 1.0 texts), ``transport`` and ``tofu`` (sockets, TLS, trust on first use),
  ``failover`` (keywords, failover and the one reconnect loop) and ``reconnect`` (a Client's
  connection life), ``calls``, ``reader`` and ``dispatch`` (a Client's requests and replies),
  ``events`` (its event subscriptions),
  ``service_io`` and ``service_work`` (a Service's connection and threads),
  ``manager_process`` (the Manager ``run_forever`` starts).

May import: the shared core (``netmgr.protocol``, ``netmgr.errors``, ``netmgr.hostinfo``,
``netmgr.crypto``); never gevent, nor another part of netmgr (the daemon, the store, the CLI).
tests/test_layers.py checks it.
"""
from netmgr.client.client import (CONNECTED, DEFAULT_REQUEST_TIMEOUT, DISCONNECTED, IDLE_READ_DELAY,
                                  PRECHECK_AFTER, RECONNECTING, Client, MessageTooLargeError,
                                  connect, filter_client_connect_kwargs, get_ssl_context)
from netmgr.client.events import EventStream, EventSubscription
from netmgr.client.link import Link, LinkedClient
from netmgr.client.service import (MANAGER_START_TIMEOUT, TAKEOVER_AFTER, WATCH_IDLE, Service,
                                   filter_run_forever_kwargs, filter_service_start_kwargs,
                                   run_forever, run_services)

__all__ = ["connect", "Client", "Link", "LinkedClient", "EventSubscription", "EventStream",
           "filter_client_connect_kwargs",
           "get_ssl_context", "CONNECTED", "RECONNECTING", "DISCONNECTED",
           "DEFAULT_REQUEST_TIMEOUT", "MessageTooLargeError", "IDLE_READ_DELAY", "PRECHECK_AFTER",
           "Service", "run_forever", "run_services", "filter_service_start_kwargs",
           "filter_run_forever_kwargs", "TAKEOVER_AFTER", "WATCH_IDLE", "MANAGER_START_TIMEOUT"]
