"""Links with Services: :class:`Link` (from :meth:`Client.link <netmgr.client.Client.link>`) and
:class:`LinkedClient` (a Client with one Link), msl-network 1.0's API.

A Link turns attribute access into requests through its Client and restores itself after the
Client reconnects; it performs no I/O of its own. Both classes are importable from
:mod:`netmgr.client`.
"""
import logging
import math
import threading
import time
from operator import attrgetter

from netmgr.protocol import SHUTDOWN_SERVICE

logger = logging.getLogger("netmgr.client")

_AGAIN = object()


def _identity_property(key, doc):
    """A read-only property: ``key`` of the Service's identity."""
    return property(lambda self: self._service_identity[key], doc=doc)


def _remaining(deadline):
    if deadline is None:
        return math.inf
    return max(0.001, deadline - time.monotonic())


class Link:
    """A link between a :class:`Client` and a Service (create it with :meth:`Client.link`).

    Any attribute becomes a request to the Service: ``link.add(1, 2)``; pass
    ``asynchronous=True`` for a :class:`concurrent.futures.Future` and ``timeout=`` to bound
    the wait. Also a context manager that unlinks on leaving the block.
    """

    def __init__(self, client, service, identity):
        self._client = client
        self._service_name = service
        self._service_identity = identity
        self._linked_gen = client._gen
        self._lock_shared = None  # the ``shared`` of a lock this link holds, for relock
        self._restore_lock = threading.Lock()
        logger.debug("linked with %s[%s]", service, identity.get("address"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.unlink()

    def _request(self, service, attribute, *args, **kwargs):
        client = self._client
        if client is None:
            raise AttributeError(f"Cannot access {attribute!r} since the link has been broken")
        timeout = kwargs.pop("timeout", None)
        asynchronous = kwargs.pop("asynchronous", False)
        return client._request(service, attribute, args, kwargs, timeout, asynchronous, self)

    def _restore(self, deadline, retry=True):
        """Link again after a reconnect; retry while the Service is not back (until deadline)."""
        client = self._client
        if client is None:
            raise AttributeError(f"Cannot access {self._service_name!r} since the link has "
                                 f"been broken")
        with self._restore_lock:
            while True:
                gen = client._gen
                if self._linked_gen == gen:
                    return
                identity = self._link_again(client, deadline, retry)
                if identity is _AGAIN or gen != client._gen:
                    continue
                self._service_identity = identity
                if self._lock_shared is not None and client._relock:
                    self._relock(client, deadline)
                self._linked_gen = gen
                logger.info("link with %r restored", self._service_name)
                return

    def _link_again(self, client, deadline, retry):
        """The Service's identity from a new ``link``; ``_AGAIN`` while it is not back."""
        try:
            return client._request("Manager", "link", (self._service_name,), {},
                                   _remaining(deadline))
        except RuntimeError as exc:
            if not retry or "does not exist" not in str(exc) and "not connected" not in str(exc):
                raise
            if deadline is not None and time.monotonic() + 0.1 >= deadline:
                raise TimeoutError(f"The {self._service_name!r} service is not available after "
                                   f"reconnecting to Manager[{client._address_manager}]") from exc
        time.sleep(0.1)
        return _AGAIN

    def _relock(self, client, deadline):
        try:
            client._request("Manager", "acquire_lock", (self._service_name,),
                            {"shared": self._lock_shared}, _remaining(deadline))
        except RuntimeError as exc:
            logger.error("could not re-acquire the lock of %r: %s", self._service_name, exc)
            self._lock_shared = None

    def acquire_lock(self, shared=False, timeout=None):
        """Acquire a lock with the linked Service (1.0); returns the linked Clients' names."""
        out = self._request("Manager", "acquire_lock", self._service_name, shared=shared,
                            timeout=timeout)
        self._lock_shared = bool(shared)
        return out

    def release_lock(self, timeout=None):
        """Release this Client's lock with the Service (1.0); returns the remaining holders."""
        out = self._request("Manager", "release_lock", self._service_name, timeout=timeout)
        self._lock_shared = None
        return out

    service_address = _identity_property("address", ":class:`str`: The address of the Service.")
    service_attributes = _identity_property("attributes",
                                            ":class:`dict`: The attributes of the Service.")
    service_language = _identity_property(
        "language", ":class:`str`: The programming language the Service runs on.")
    service_max_clients = _identity_property(
        "max_clients", ":class:`int`: How many Clients may link with the Service (<= 0: no limit).")
    service_name = property(attrgetter("_service_name"),
                            doc=":class:`str`: The name of the Service.")
    service_os = _identity_property("os", ":class:`str`: The operating system the Service runs on.")

    def disconnect(self, timeout=None):
        """An alias for :meth:`unlink`."""
        self.unlink(timeout=timeout)

    def notification_handler(self, *args, **kwargs):
        """Called with each notification the Service emits; re-assign it on the instance.

        Runs on the Client's dispatcher thread, in the order the notifications arrived.
        """

    def shutdown_service(self, *args, **kwargs):
        """Ask the Service to shut down (it must implement ``shutdown_service``)."""
        out = self._request(self._service_name, SHUTDOWN_SERVICE, *args, **kwargs)
        if self._client is not None and self in self._client._links:
            self._client._links.remove(self)
        self._client = None
        return out

    def unlink(self, timeout=None):
        """Unlink from the Service."""
        if self._client is not None:
            self._client.unlink(self, timeout=timeout)
            self._client = None

    def __repr__(self):
        if self._client is None:
            return f"<Un-Linked from {self.service_name}[{self.service_address}]>"
        return (f"<Link with {self.service_name}[{self.service_address}] "
                f"at Manager[{self._client._address_manager}]>")

    def __getattr__(self, item):
        if item.startswith("__") and item.endswith("__"):
            raise AttributeError(item)
        if self._client is None:
            raise AttributeError(f"Cannot access {item!r} since the link has been broken")

        def request(*args, **kwargs):
            client = self._client
            if kwargs or client is None:
                return self._request(self._service_name, item, *args, **kwargs)
            return client._request(self._service_name, item, args, kwargs, None, False, self)
        return request


class LinkedClient:
    """A :class:`Client` with a :class:`Link` to one Service (1.0).

    ``kwargs`` go to :func:`connect`; ``timeout`` (default 10) bounds connecting *and* waiting
    for the Service to appear. A context manager that disconnects on leaving the block.
    """

    def __init__(self, service_name, **kwargs):
        # netmgr.client imports this module to re-export LinkedClient: import it when used
        from netmgr.client import connect, filter_client_connect_kwargs

        self._client = None
        self._link = None
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
        identity = self._link._service_identity
        self._service_identity = {key: identity[key] for key in (
            "address", "attributes", "language", "os", "max_clients")}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.disconnect()

    def acquire_lock(self, shared=False, timeout=None):
        """See :meth:`Link.acquire_lock`."""
        self._check_link("acquire_lock")
        return self._link.acquire_lock(shared=shared, timeout=timeout)

    def admin_request(self, attrib, *args, **kwargs):
        """See :meth:`Client.admin_request`."""
        self._check_client()
        return self._client.admin_request(attrib, *args, **kwargs)

    def disconnect(self, timeout=None):
        """See :meth:`Client.disconnect`."""
        if self._client is not None:
            self._client.disconnect(timeout=timeout)
            self._client = None
            self._link = None

    def identity(self):
        """See :meth:`Client.identity`."""
        self._check_client()
        return self._client.identity()

    def identities(self, *, as_string=False, indent=2, timeout=None):
        """See :meth:`Client.identities`."""
        self._check_client()
        return self._client.identities(as_string=as_string, indent=indent, timeout=timeout)

    def is_connected(self):
        """See :meth:`Client.is_connected`."""
        if self._client is None:
            return False
        return self._client.is_connected()

    def notification_handler(self, *args, **kwargs):
        """See :meth:`Link.notification_handler` (assigning it sets the Link's)."""

    def service_error_handler(self):
        """Called just before a RuntimeError from the Service is raised; override to clean up."""

    def shutdown_service(self, *args, **kwargs):
        """See :meth:`Link.shutdown_service`."""
        self._check_link("shutdown_service")
        return self._link.shutdown_service(*args, **kwargs)

    def spawn(self, name="LinkedClient"):
        """A new :class:`LinkedClient` linked with the same Service."""
        kwargs = self._kwargs.copy()
        kwargs["name"] = name
        return LinkedClient(self.service_name, **kwargs)

    def unlink(self, timeout=None):
        """See :meth:`Link.unlink`."""
        if self._link is not None:
            self._link.unlink(timeout=timeout)
            self._link = None

    def release_lock(self, timeout=None):
        """See :meth:`Link.release_lock`."""
        self._check_link("release_lock")
        return self._link.release_lock(timeout=timeout)

    address_manager = property(attrgetter("_address_manager"),
                               doc=":class:`str`: ``host:port`` of the Manager.")
    client = property(attrgetter("_client"),
                      doc=":class:`Client`: The Client that provides the :class:`Link`.")
    link = property(attrgetter("_link"), doc=":class:`Link`: The Link with the Service.")
    name = property(attrgetter("_name"), doc=":class:`str`: The name of the Client.")
    port = property(attrgetter("_port"),
                    doc=":class:`int`: The local port of the connection to the Manager.")
    # the Service, as it was when the LinkedClient linked with it
    service_address = Link.service_address
    service_attributes = Link.service_attributes
    service_language = Link.service_language
    service_max_clients = Link.service_max_clients
    service_name = Link.service_name
    service_os = Link.service_os

    def __repr__(self):
        if self._link is None:
            return (f"<Un-Linked[name={self._name}] from "
                    f"{self._service_name}[{self.service_address}]>")
        return (f"<Link[name={self._name}] with {self._service_name}[{self.service_address}] "
                f"at Manager[{self._address_manager}]>")

    def __setattr__(self, name, value):
        if name == "notification_handler":
            self._link.notification_handler = value
        else:
            super().__setattr__(name, value)

    def __getattr__(self, item):
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
