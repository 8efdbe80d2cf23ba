"""netmgr: a wire-compatible successor of the MSL-Network 1.0 Network Manager.

The parts (docs/design.md has the map):

* the shared core: :mod:`netmgr.protocol` (pure), :mod:`netmgr.errors`, :mod:`netmgr.hostinfo`,
  :mod:`netmgr.config`, :mod:`netmgr.crypto`;
* :mod:`netmgr.daemon`: the Manager (the only package that imports gevent), with
  :mod:`netmgr.store`, its database;
* :mod:`netmgr.client`: the blocking client and Service library;
* :mod:`netmgr.cli`: the ``netmgr`` command.

Porting an msl-network 1.0 program is one import line::

    from netmgr import connect, Service, LinkedClient, run_services, run_forever

These names are loaded on first use (PEP 562), so ``import netmgr`` stays cheap and imports no
gevent.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # type checkers and IDEs see the real names; at run time they load lazily
    from netmgr.client.client import Client, connect  # noqa: F401
    from netmgr.client.link import Link, LinkedClient  # noqa: F401
    from netmgr.client.service import Service, run_forever, run_services  # noqa: F401

#: name -> module of the lazily re-exported public API
_EXPORTS = {
    "connect": "netmgr.client.client",
    "Client": "netmgr.client.client",
    "Link": "netmgr.client.link",
    "LinkedClient": "netmgr.client.link",
    "Service": "netmgr.client.service",
    "run_forever": "netmgr.client.service",
    "run_services": "netmgr.client.service",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'netmgr' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
