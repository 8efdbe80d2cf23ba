"""The public link classes (msl-network 1.0's API): :class:`Link`, from
:meth:`Client.link <netmgr.client.Client.link>`, and :class:`LinkedClient`, a Client with one Link.

:class:`LinkedClient` connects with :func:`netmgr.client.connect`, imported from
:mod:`netmgr.client.client`; the :class:`Link` class is defined in :mod:`netmgr.client.proxy`,
which the Client imports, so the Client and this module do not import each other. Both classes
are importable from here, from :mod:`netmgr.client` and from :mod:`netmgr`.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from netmgr.client.client import Client, connect, filter_client_connect_kwargs
from netmgr.client.peer import ConnectionView
from netmgr.client.proxy import Link, ServiceView

__all__ = ["Link", "LinkedClient"]


class LinkedClient(ServiceView, ConnectionView):
    """A :class:`Client` with a :class:`Link` to one Service (1.0).

    ``kwargs`` go to :func:`connect`; ``timeout`` (default 10) bounds connecting *and* waiting
    for the Service to appear. A context manager that disconnects on leaving the block. The
    ``service_*`` properties describe the Service as it was when the LinkedClient linked.
    """

    def __init__(self, service_name: str, **kwargs: Any) -> None:
        self._client: Any = None  # the Client, None once disconnected
        self._link: Any = None  # the Link, None once unlinked
        super().__init__()
        kwargs.setdefault("name", self.__class__.__name__)
        kwargs.setdefault("timeout", 10)
        self._kwargs = filter_client_connect_kwargs(**kwargs)
        t0 = time.perf_counter()
        self._client = connect(**self._kwargs)
        try:
            while True:
                if service_name in self._client.identities()["services"]:
                    break
                if time.perf_counter() - t0 > self._kwargs["timeout"]:
                    raise TimeoutError(f"The {service_name!r} service is not available")
                time.sleep(0.1)
            self._link = self._client.link(service_name)
        except BaseException:
            self._client.disconnect()
            raise
        self._address_manager = self._client.address_manager
        self._name = self._client.name
        self._port = self._client.port
        self._service_name = self._link.service_name
        # a snapshot, as in 1.0: the Link's identity may change when it is restored
        link = self._link
        self._service_identity = {
            "address": link.service_address, "attributes": link.service_attributes,
            "language": link.service_language, "os": link.service_os,
            "max_clients": link.service_max_clients}

    def __enter__(self) -> LinkedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def acquire_lock(self, shared: bool = False, timeout: float | None = None) -> list[str]:
        """See :meth:`Link.acquire_lock`."""
        self._check_link("acquire_lock")
        return self._link.acquire_lock(shared=shared, timeout=timeout)

    def admin_request(self, attrib: str, *args: Any, **kwargs: Any) -> Any:
        """See :meth:`Client.admin_request`."""
        self._check_client()
        return self._client.admin_request(attrib, *args, **kwargs)

    def disconnect(self, timeout: float | None = None) -> None:
        """See :meth:`Client.disconnect`."""
        if self._client is not None:
            self._client.disconnect(timeout=timeout)
            self._client = None
            self._link = None

    def identity(self) -> dict[str, Any]:
        """See :meth:`Client.identity`."""
        self._check_client()
        return self._client.identity()

    def identities(self, *, as_string: bool = False, indent: int = 2,
                   timeout: float | None = None) -> Any:
        """See :meth:`Client.identities` (a dict; with `as_string`, its text)."""
        self._check_client()
        return self._client.identities(as_string=as_string, indent=indent, timeout=timeout)

    def is_connected(self) -> bool:
        """See :meth:`Client.is_connected`."""
        if self._client is None:
            return False
        return self._client.is_connected()

    def notification_handler(self, *args: Any, **kwargs: Any) -> None:
        """See :meth:`Link.notification_handler` (assigning it sets the Link's)."""

    def service_error_handler(self) -> None:
        """Called just before a RuntimeError from the Service is raised; override to clean up."""

    def shutdown_service(self, *args: Any, **kwargs: Any) -> Any:
        """See :meth:`Link.shutdown_service`."""
        self._check_link("shutdown_service")
        return self._link.shutdown_service(*args, **kwargs)

    def spawn(self, name: str = "LinkedClient") -> LinkedClient:
        """A new :class:`LinkedClient` linked with the same Service."""
        kwargs = self._kwargs.copy()
        kwargs["name"] = name
        return LinkedClient(self.service_name, **kwargs)

    def unlink(self, timeout: float | None = None) -> None:
        """See :meth:`Link.unlink`."""
        if self._link is not None:
            self._link.unlink(timeout=timeout)
            self._link = None

    def release_lock(self, timeout: float | None = None) -> list[str]:
        """See :meth:`Link.release_lock`."""
        self._check_link("release_lock")
        return self._link.release_lock(timeout=timeout)

    @property
    def client(self) -> Client | None:
        """:class:`Client`: The Client that provides the :class:`Link`."""
        return self._client

    @property
    def link(self) -> Link | None:
        """:class:`Link`: The Link with the Service."""
        return self._link

    def __repr__(self) -> str:
        if self._link is None:
            return (f"<Un-Linked[name={self._name}] from "
                    f"{self._service_name}[{self.service_address}]>")
        return (f"<Link[name={self._name}] with {self._service_name}[{self.service_address}] "
                f"at Manager[{self._address_manager}]>")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "notification_handler":
            self._link.notification_handler = value
        else:
            super().__setattr__(name, value)

    def __getattr__(self, item: str) -> Callable[..., Any]:
        if item.startswith("__") and item.endswith("__"):
            raise AttributeError(item)
        self._check_link(item)

        def request(*args, **kwargs):
            try:
                return getattr(self._link, item)(*args, **kwargs)
            except Exception:
                self.service_error_handler()
                raise
        return request

    def _check_link(self, item):
        if self.__dict__.get("_link") is None:
            raise AttributeError(f"Cannot access {item!r} since the link has been broken")

    def _check_client(self):
        if self._client is None:
            raise ConnectionError("The LinkedClient has been disconnected")
