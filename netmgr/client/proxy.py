"""A :class:`Link`: a Service seen through a Client, and :class:`LinkEnd`, the interface between
a Link and its Client.

Any public attribute of a Link is a request to its Service, so a Link can give its Client no
public method, and the two meet in a :class:`LinkEnd` instead. The Client
(:meth:`Client.link <netmgr.client.Client.link>`) creates one per link, passes it to the Link as
its ``client`` and keeps it while linked:

* what the Link uses of its Client: ``request`` (the Client's request path, which
  restores the link first after a reconnect), :meth:`LinkEnd.unlink`, :meth:`LinkEnd.forget`
  and :attr:`LinkEnd.address_manager`;
* what the Client knows of the Link: ``link`` (for its ``notification_handler``), ``service``,
  ``identity``, ``gen`` (the connection the link was made on; the Client restores a link of an
  earlier one, :mod:`netmgr.client.reconnect`), ``lock_shared`` (for ``relock``).

Neither reads the other's private attributes. This module performs no I/O and imports no other
module of the library: :mod:`netmgr.client.client` imports it, and :mod:`netmgr.client.link`
(LinkedClient, and the public name of Link) imports both.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from netmgr.protocol import SHUTDOWN_SERVICE

logger = logging.getLogger("netmgr.client")


class LinkEnd:
    """The Client's end of one link (see the module docstring); created by the Client."""

    __slots__ = ("client", "request", "_forget", "link", "service", "identity", "gen",
                 "lock_shared", "restore_lock")

    def __init__(self, client, service, identity, gen, request, forget):
        self.client = client
        #: ``request(service, attribute, args, kwargs, timeout, asynchronous, end)``: the
        #: Client's request path; ``end`` is this object (the link to restore first)
        self.request = request
        self._forget = forget
        self.link = None
        self.service = service
        self.identity = identity
        self.gen = gen
        self.lock_shared = None  # the ``shared`` of a lock the link holds, for relock
        self.restore_lock = threading.Lock()

    @property
    def address_manager(self):
        return self.client.address_manager

    def unlink(self, link, timeout=None):
        """Unlink through the Client (:meth:`Client.unlink <netmgr.client.Client.unlink>`)."""
        self.client.unlink(link, timeout=timeout)

    def forget(self):
        """The Service is gone (``shutdown_service``): the Client stops restoring the link."""
        self._forget(self)


class ServiceView:
    """The Service's name and identity as properties: those of a :class:`Link` and of a
    :class:`~netmgr.client.link.LinkedClient` (which keeps the identity it linked with)."""

    _service_name: str
    _service_identity: dict[str, Any]

    @property
    def service_address(self) -> str:
        """:class:`str`: The address of the Service."""
        return self._service_identity["address"]

    @property
    def service_attributes(self) -> dict[str, Any]:
        """:class:`dict`: The attributes of the Service."""
        return self._service_identity["attributes"]

    @property
    def service_language(self) -> str:
        """:class:`str`: The programming language the Service runs on."""
        return self._service_identity["language"]

    @property
    def service_max_clients(self) -> int:
        """:class:`int`: How many Clients may link with the Service (<= 0: no limit)."""
        return self._service_identity["max_clients"]

    @property
    def service_name(self) -> str:
        """:class:`str`: The name of the Service."""
        return self._service_name

    @property
    def service_os(self) -> str:
        """:class:`str`: The operating system the Service runs on."""
        return self._service_identity["os"]


class Link(ServiceView):
    """A link between a :class:`Client` and a Service (create it with :meth:`Client.link`).

    Any attribute becomes a request to the Service: ``link.add(1, 2)``; pass
    ``asynchronous=True`` for a :class:`concurrent.futures.Future` and ``timeout=`` to bound
    the wait. Also a context manager that unlinks on leaving the block.
    """

    def __init__(self, client: LinkEnd, service: str, identity: dict[str, Any]) -> None:
        self._end = client
        self._broken = False
        self._service_name = service
        client.link = self
        logger.debug("linked with %s[%s]", service, identity.get("address"))

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlink()

    @property
    def _service_identity(self):
        """The identity the Client last linked with (it may change when the link is restored)."""
        return self._end.identity

    def _request(self, service, attribute, *args, **kwargs):
        if self._broken:
            raise AttributeError(f"Cannot access {attribute!r} since the link has been broken")
        timeout = kwargs.pop("timeout", None)
        asynchronous = kwargs.pop("asynchronous", False)
        end = self._end
        return end.request(service, attribute, args, kwargs, timeout, asynchronous, end)

    def acquire_lock(self, shared: bool = False, timeout: float | None = None) -> list[str]:
        """Acquire a lock with the linked Service (1.0); returns the linked Clients' names."""
        out = self._request("Manager", "acquire_lock", self._service_name, shared=shared,
                            timeout=timeout)
        self._end.lock_shared = bool(shared)
        return out

    def release_lock(self, timeout: float | None = None) -> list[str]:
        """Release this Client's lock with the Service (1.0); returns the remaining holders."""
        out = self._request("Manager", "release_lock", self._service_name, timeout=timeout)
        self._end.lock_shared = None
        return out

    def disconnect(self, timeout: float | None = None) -> None:
        """An alias for :meth:`unlink`."""
        self.unlink(timeout=timeout)

    def notification_handler(self, *args: Any, **kwargs: Any) -> None:
        """Called with each notification the Service emits; re-assign it on the instance.

        Runs on the Client's dispatcher thread, in the order the notifications arrived.
        """

    def shutdown_service(self, *args: Any, **kwargs: Any) -> Any:
        """Ask the Service to shut down (it must implement ``shutdown_service``)."""
        out = self._request(self._service_name, SHUTDOWN_SERVICE, *args, **kwargs)
        if not self._broken:
            self._end.forget()
        self._broken = True
        return out

    def unlink(self, timeout: float | None = None) -> None:
        """Unlink from the Service."""
        if not self._broken:
            self._end.unlink(self, timeout=timeout)
            self._broken = True

    def __repr__(self) -> str:
        if self._broken:
            return f"<Un-Linked from {self.service_name}[{self.service_address}]>"
        return (f"<Link with {self.service_name}[{self.service_address}] "
                f"at Manager[{self._end.address_manager}]>")

    def __getattr__(self, item: str) -> Callable[..., Any]:
        if item.startswith("__") and item.endswith("__"):
            raise AttributeError(item)
        if self.__dict__.get("_broken", True):
            raise AttributeError(f"Cannot access {item!r} since the link has been broken")

        def request(*args, **kwargs):
            if kwargs or self._broken:
                return self._request(self._service_name, item, *args, **kwargs)
            end = self._end
            return end.request(end.service, item, args, kwargs, None, False, end)
        return request
