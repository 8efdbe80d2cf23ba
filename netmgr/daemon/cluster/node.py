"""One Manager as a node of a cluster: one namespace of Services shared over NATS (issue 14).

Every node keeps its own peers and its own :class:`~netmgr.daemon.registry.Registry`. A Service
connected to another node is a Service record here too, whose handle (:class:`RemoteService`)
forwards to its owner; a Client of another node that uses a Service of this node is a Client
record here (not in ``identity()``), whose handle (:class:`RemoteClient`) forwards to its node.
So what the registry does for one node — in-flight requests, replies accepted only from the
Service a request went to and only once, a request failed with its uid when its Service goes,
links, locks and ``max_clients`` — holds across the cluster, decided by the Service's own node.

Requests between peers of one node never touch NATS. The wire between nodes (subjects under
``netmgr.<cluster_name>``) is in docs/cluster.md; :mod:`netmgr.daemon.cluster.bridge` is the one
place where the hub meets nats-py.
"""
import os
import time

import gevent
import orjson

from netmgr import protocol
from netmgr.daemon import log
from netmgr.daemon.cluster.bridge import Bridge
from netmgr.daemon.cluster.state import DEAD_AFTER, HEARTBEAT, Membership
from netmgr.daemon.registry import Client, Service
from netmgr.errors import Refused, StartupError, error_text
from netmgr.hostinfo import HOSTNAME

logger = log.get_logger("netmgr.daemon.cluster")

#: seconds a Service name's claim lives in the KV bucket unless its node renews it
CLAIM_TTL = 3.0
#: seconds between two renewals of a node's claims
RENEW = 1.0
#: seconds a link or lock request waits for the Service's node
CTL_TIMEOUT = 2.0


def default_node_name():
    """The host's short name, as a node name (letters, digits, ``-``, ``_``)."""
    short = HOSTNAME.split(".")[0] or "node"
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in short)


class RemoteRefused(Refused):
    """A refusal made by another node: its text is already the wire text."""

    @property
    def message(self):
        return self.text


def _key(name):
    """A KV key for a Service name (KV keys allow only ``[-/_=.a-zA-Z0-9]``)."""
    return "s." + name.encode("utf-8").hex()


def _no_secret(url):
    """A server URL without its ``user:password@`` part, for the log."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}***@{rest.split('@', 1)[1]}" if "@" in rest else url


def _join(data):
    return b"".join(data) if type(data) is tuple else bytes(data)


class RemoteService:
    """The handle of a Service of another node: what the registry sends it goes to its node."""

    __slots__ = ("node", "cluster")

    def __init__(self, node, cluster):
        self.node, self.cluster = node, cluster

    def send(self, data):
        self.cluster.forward_request(self.node, data)


class RemoteClient:
    """The handle of a Client of another node using a Service of this one."""

    __slots__ = ("node", "name", "cluster")

    def __init__(self, node, name, cluster):
        self.node, self.name, self.cluster = node, name, cluster

    def send(self, data):
        self.cluster.send_to(self.node, {"k": "msg", "c": self.name, "n": self.cluster.name}, data)


class ClusterNode:
    """The cluster side of one Manager: ``start()``, ``close()``, and the hooks the Manager calls."""

    def __init__(self, manager):
        try:
            import nats  # noqa: F401 -- the extra netmgr[cluster]
        except ImportError:
            raise StartupError("--cluster needs nats-py: pip install 'netmgr[cluster]'") from None
        self.manager = manager
        cfg = manager.cfg
        self.name = cfg.node or default_node_name()
        self.prefix = f"netmgr.{cfg.cluster_name}"
        self.bucket_name = f"netmgr_{cfg.cluster_name}"
        self.epoch = f"{os.getpid()}-{time.time():.6f}"
        self.seq = 0
        self.membership = Membership(self.name)
        self.bridge = Bridge([u.strip() for u in cfg.cluster.split(",") if u.strip()],
                             f"netmgr {self.name}", self._on_state, creds=cfg.cluster_creds,
                             tls_ca=cfg.cluster_tls_ca)
        self.kv = None
        self.claims = {}  # local Service name -> KV revision of its claim
        self.remote_clients = {}  # (node, client name) -> registry Client record
        self._greenlets = []
        self._beat_soon = False
        self.state = "connecting"

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        self.manager.registry.node = self.name
        self.bridge.start()
        self.manager.events.subscribe(self._on_event, ["service"])
        self._greenlets = [gevent.spawn(self._heartbeats), gevent.spawn(self._expire),
                           gevent.spawn(self._renew)]
        logger.info("cluster", node=self.name, servers=[_no_secret(u) for u in self.bridge.servers])

    def close(self):
        gevent.killall(self._greenlets, block=False)
        if self.bridge.connected and self.kv is not None:
            for name in list(self.claims):
                self._release(name)
        self.bridge.close()

    def _on_state(self, state):
        self.state = state
        logger.info("cluster_nats", state=state, node=self.name)
        if state == "connected":
            gevent.spawn(self._setup)
        elif state == "reconnected":
            gevent.spawn(self._reclaim)

    def _setup(self):
        """Subscriptions (nats-py renews them after a reconnect) and the claims' bucket."""
        bridge, p = self.bridge, self.prefix
        bridge.subscribe(f"{p}.hb.*", self._on_heartbeat)
        bridge.subscribe(f"{p}.to.{self.name}", self._on_message)
        bridge.subscribe(f"{p}.ctl.{self.name}", self._on_ctl)
        self.kv = bridge.call(self._bucket)
        self._reclaim()
        self.beat()

    async def _bucket(self):
        from nats.js.api import KeyValueConfig
        from nats.js.errors import BucketNotFoundError, NotFoundError

        js = self.bridge.js
        try:
            return await js.key_value(self.bucket_name)
        except (BucketNotFoundError, NotFoundError):
            replicas = min(3, len(self.bridge.servers))
            return await js.create_key_value(KeyValueConfig(
                bucket=self.bucket_name, history=1, ttl=CLAIM_TTL, replicas=replicas))

    # ------------------------------------------------------------------ Service names
    def claim(self, name):
        """Claim a Service name cluster-wide before the Service is registered here; Refused
        with 1.0's text when another node holds it. Without NATS the claim is made later
        (:meth:`_reclaim`); a name claimed elsewhere meanwhile then loses here."""
        if self.kv is None or not self.bridge.connected:
            self.claims[name] = None
            return
        try:
            self.claims[name] = self.bridge.call(self._create, name)
        except Refused:
            raise
        except Exception as exc:  # noqa: BLE001 -- NATS trouble: accept, reconcile on reconnect
            logger.warning("cluster_claim_deferred", service=name, error=str(exc) or type(exc).__name__)
            self.claims[name] = None

    async def _create(self, name):
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        kv, value = self.kv, self.name.encode()
        try:
            return await kv.create(_key(name), value)
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            pass  # lost the create (a lagging replica may say "not found": the leader refused)
        entry = await kv.get(_key(name))
        holder = entry.value.decode() if entry.value else ""
        alive = holder == self.name or holder in self.membership.members
        if alive and holder != self.name:
            raise Refused("NameError", f"A {name!r} service is already running on the Manager")
        # our own claim from before a restart, or a node that is gone: take it over
        return await kv.update(_key(name), value, last=entry.revision)

    def _release(self, name):
        revision = self.claims.pop(name, None)
        if revision is None or self.kv is None:
            return
        try:
            self.bridge.call(self._delete, name, revision)
        except Exception:  # noqa: BLE001 -- the TTL removes it anyway
            pass

    async def _delete(self, name, revision):
        await self.kv.delete(_key(name), last=revision)

    def _renew(self):
        while True:
            gevent.sleep(RENEW)
            if self.kv is None or not self.bridge.connected:
                continue
            for name, revision in list(self.claims.items()):
                if revision is None:  # made while NATS was away, or deferred: claim it now
                    self._reclaim_one(name)
                    continue
                try:
                    self.claims[name] = self.bridge.call(self._update, name, revision)
                except Exception:  # noqa: BLE001 -- lost: someone else holds it now, or it expired
                    self._reclaim_one(name)

    async def _update(self, name, revision):
        return await self.kv.update(_key(name), self.name.encode(), last=revision)

    def _reclaim(self):
        """After (re)connecting: claim every local Service's name again; one now held by
        another node loses here (its Service is disconnected)."""
        for name in list(self.claims):
            self._reclaim_one(name)

    def _reclaim_one(self, name):
        if name not in self.claims:
            return
        try:
            self.claims[name] = self.bridge.call(self._create, name)
        except Refused:
            self.claims.pop(name, None)
            record = self.manager.registry.service(name)
            if record is not None and getattr(record, "node", None) is None:
                logger.warning("cluster_name_lost", service=name)
                record.handle.abort(f"the name {name!r} is held by another node of the cluster")
        except Exception as exc:  # noqa: BLE001 -- NATS trouble: tried again at the next renewal
            logger.info("cluster_claim_retry", service=name, error=str(exc) or type(exc).__name__)

    def _on_event(self, event):
        """Local Services registered and gone: the heartbeat says so at once; a gone one's
        claim is released."""
        data = event.data
        if data.get("node") is not None:
            return
        if data["event"] == "gone":
            gevent.spawn(self._release, data["name"])
        self._beat_soon = True
        gevent.spawn(self.beat)

    # ------------------------------------------------------------------ heartbeats
    def beat(self):
        if not self.bridge.connected:
            return
        self.seq += 1
        registry = self.manager.registry
        services = {}
        for record in list(registry.records()):
            if record.node is None:
                entry = registry.services[record.name]
                services[record.name] = {"network_name": record.network_name, "address": entry["address"],
                                         "attributes": entry["attributes"], "language": entry["language"],
                                         "os": entry["os"], "max_clients": entry["max_clients"]}
        beat = {"node": self.name, "epoch": self.epoch, "seq": self.seq, "manager": self.manager.name,
                "services": services}
        self.bridge.publish(f"{self.prefix}.hb.{self.name}", protocol.dumps(beat)[:-2])

    def _heartbeats(self):
        while True:
            gevent.sleep(HEARTBEAT)
            self.beat()

    def _on_heartbeat(self, data, _reply):
        try:
            beat = orjson.loads(data)
        except ValueError:
            beat = protocol.loads(data)
        if beat.get("node") == self.name:
            return
        joined, added, removed = self.membership.heard(beat, time.monotonic())
        registry = self.manager.registry
        node = beat["node"]
        if joined:
            self._drop_node(node, "restarted")  # whatever an earlier run of it left here
            self.manager.events.publish("cluster", "node_joined", node=node, manager=beat.get("manager"))
        for name in removed:
            record = registry.service(name)
            if record is not None and record.node == node:
                self._remove(record, f"gone from node {node}")
        for name, entry in added.items():
            record = registry.service(name)
            if record is not None:
                if record.node is None:
                    logger.warning("cluster_name_conflict", service=name, node=node)
                    continue
                self._remove(record, f"moved to node {node}")
            fields = {"name": name, "attributes": entry["attributes"], "language": entry["language"],
                      "os": entry["os"], "max_clients": entry["max_clients"]}
            try:
                registry.add(RemoteService(node, self), entry["network_name"], entry["address"], "service",
                             fields, node=node)
            except Refused:
                continue
        self.manager.publish_pending()

    def _expire(self):
        while True:
            gevent.sleep(HEARTBEAT / 2)
            for member in self.membership.expired(time.monotonic()):
                logger.warning("cluster_node_left", node=member.name, silent_for=DEAD_AFTER)
                self._drop_node(member.name, f"node {member.name} left the cluster")
                self.manager.events.publish("cluster", "node_left", node=member.name,
                                            reason=f"no heartbeat for {DEAD_AFTER} s")
                if self.kv is not None and self.bridge.connected:
                    gevent.spawn(self._forget_claims, member)

    def _forget_claims(self, member):
        for name in member.services:
            try:
                self.bridge.call(self._delete_if, name, member.name)
            except Exception:  # noqa: BLE001 -- the TTL removes it anyway
                pass

    async def _delete_if(self, name, holder):
        entry = await self.kv.get(_key(name))
        if entry.value and entry.value.decode() == holder:
            await self.kv.delete(_key(name), last=entry.revision)

    def _drop_node(self, node, reason):
        """A node left (or restarted): its Services go from here, every request in flight to
        them fails with its uid, and its Clients' links and locks here are released."""
        registry = self.manager.registry
        for record in [r for r in registry.records() if r.node == node]:
            self._remove(record, reason)
        for key in [k for k in self.remote_clients if k[0] == node]:
            record = self.remote_clients.pop(key)
            registry.remove(record, reason)
        self.manager.publish_pending()

    def _remove(self, record, reason):
        effects = self.manager.registry.remove(record, reason)
        for handle, message in effects:
            handle.send(protocol.dumps(message))

    # ------------------------------------------------------------------ data between nodes
    def send_to(self, node, header, data):
        self.bridge.publish(f"{self.prefix}.to.{node}", orjson.dumps(header) + b"\n" + _join(data))

    def forward_request(self, node, data):
        """A request of a local Client for a Service of ``node`` (its requester is spliced in)."""
        body = _join(data)
        limit = self.bridge.nc.max_payload if self.bridge.nc is not None else 1 << 20
        if len(body) + 64 > limit or not self.bridge.connected:
            why = (f"the request is {len(body)} bytes and the cluster carries at most {limit} between "
                   "nodes (nats-server max_payload)" if self.bridge.connected
                   else "this node is cut off from the cluster")
            self._fail_locally(node, body, error_text("ConnectionError", why))
            return
        self.send_to(node, {"k": "req", "n": self.name}, body)

    def _fail_locally(self, node, body, message):
        data = protocol.loads(body) if len(body) < 1 << 16 else {}
        requester = data.get("requester") if isinstance(data, dict) else None
        uid = data.get("uid", "") if isinstance(data, dict) else protocol.find_uid(body)
        if isinstance(requester, str):
            reply = protocol.dumps(protocol.error(message, requester, uid))
            gevent.spawn(self._deliver, node, requester, reply)

    def _on_message(self, payload, _reply):
        header_end = payload.index(b"\n")
        header = orjson.loads(payload[:header_end])
        line = payload[header_end + 1:]
        kind = header["k"]
        if kind == "req":
            self._serve_request(header["n"], line)
        elif kind == "msg":
            self._deliver(header.get("n"), header["c"], line)
        elif kind == "gone":
            record = self.remote_clients.pop((header["n"], header["c"]), None)
            if record is not None:
                self.manager.registry.remove(record, "client disconnected")
                self.manager.publish_pending()

    def _remote_client(self, node, name):
        record = self.remote_clients.get((node, name))
        if record is None:
            record = self.manager.registry.add_remote_client(RemoteClient(node, name, self), name)
            self.remote_clients[(node, name)] = record
        return record

    def _serve_request(self, node, line):
        """A Client of ``node`` calls a Service of this node: the checks and the in-flight
        record are this node's, as for a local Client."""
        data = protocol.loads(line) if len(line) < 4096 else _envelope(line)
        requester, service, uid = data.get("requester"), data.get("service"), data.get("uid", "")
        if type(requester) is not str or type(service) is not str or type(uid) is not str:
            return
        registry = self.manager.registry
        record = self._remote_client(node, requester)
        try:
            target = registry.route_request(record, service, uid)
        except Refused as exc:
            registry.emit("request_failed", "refused", service=service, requester=requester, uid=uid,
                          message=exc.message)
            record.handle.send(protocol.dumps(protocol.error(exc.message, requester, uid)))
        else:
            target.handle.send(line + protocol.CRLF if not line.endswith(b"\n") else line)
        if registry.pending:
            self.manager.publish_pending()

    def _deliver(self, node, client_name, line):
        """A reply or notification from another node for the local Client ``client_name``.

        A reply is delivered only if its request is in flight here, once (as from a local
        Service); the Service is the one of that node holding the request."""
        registry = self.manager.registry
        client = registry.client(client_name)
        if client is None or type(client.handle) is RemoteClient:
            return
        try:
            data = protocol.loads(line) if len(line) < 4096 else _envelope(line)
        except ValueError:
            return
        uid = data.get("uid") if isinstance(data, dict) else None
        if uid == protocol.NOTIFICATION_UID:
            client.handle.send(line if line.endswith(b"\n") else line + protocol.CRLF)
            return
        for service in list(client.sent_to):
            if service.node is not None and (node is None or service.node == node):
                uids = service.inflight.get(client_name)
                if uids and uid in uids:
                    registry.route_reply(service, client_name, uid)
                    if data.get("error") is True:
                        service.stats.errors += 1
                    client.handle.send(line if line.endswith(b"\n") else line + protocol.CRLF)
                    return

    def client_leaving(self, record):
        """A local Client is going: the nodes whose Services it used forget it."""
        nodes = {s.node for s in record.links | record.sent_to if s.node is not None}
        for node in nodes:
            self.send_to(node, {"k": "gone", "n": self.name, "c": record.name}, b"")

    # ------------------------------------------------------------------ links and locks
    def ctl(self, service, client, op, shared=False):
        """Link, unlink, lock or release at the Service's node; its result, or RemoteRefused."""
        request = {"op": op, "client": client.name, "node": self.name, "service": service.name,
                   "shared": shared}
        try:
            answer = orjson.loads(self.bridge.request(f"{self.prefix}.ctl.{service.node}",
                                                      orjson.dumps(request), timeout=CTL_TIMEOUT))
        except Exception as exc:  # noqa: BLE001 -- the node did not answer
            raise RemoteRefused("ConnectionError", error_text(
                "ConnectionError", f"the node {service.node!r} of the {service.name!r} Service did "
                f"not answer: {exc or type(exc).__name__}")) from None
        if "error" in answer:
            raise RemoteRefused("RemoteError", answer["error"])
        return answer["result"]

    def _on_ctl(self, payload, reply):
        request = orjson.loads(payload)
        registry = self.manager.registry
        record = self._remote_client(request["node"], request["client"])
        op, name = request["op"], request["service"]
        try:
            if op == "link":
                value = registry.link(record, name)
            elif op == "unlink":
                value = registry.unlink(record, name)
            elif op == "acquire_lock":
                value = registry.acquire_lock(record, name, bool(request.get("shared")))
            elif op == "release_lock":
                value = registry.release_lock(record, name)
            else:
                raise Refused("ValueError", f"unknown cluster operation {op!r}")
            answer = {"result": value}
        except Refused as exc:
            answer = {"error": exc.message}
        self.manager.publish_pending()
        self.bridge.respond(reply, protocol.dumps(answer)[:-2])

    # ------------------------------------------------------------------ status
    def describe(self):
        now = time.monotonic()
        nodes = {self.name: {"services": sorted(n for n in self.claims), "age": 0.0, "manager": self.manager.name}}
        for member in self.membership.members.values():
            nodes[member.name] = {"services": sorted(member.services), "age": round(now - member.seen, 2),
                                  "manager": member.manager}
        return {"node": self.name, "nats": "connected" if self.bridge.connected else "disconnected",
                "nodes": nodes}


def _envelope(line):
    from netmgr.daemon.routing import decode
    return decode(line)
