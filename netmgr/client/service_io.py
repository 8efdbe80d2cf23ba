"""A Service's connection to the Manager: connecting with failover, losing it, and the outbox.

Connecting tries each Manager of the failover list (:mod:`netmgr.client.failover`), with back-off
between rounds when ``reconnect`` allows it; each connection bumps the generation ``st.gen``,
so a reply computed for an earlier connection is dropped rather than sent on the new one.
Replies and notifications share one ordered outbox: the thread that finds no write in progress
writes, with one ``sendall`` for everything queued meanwhile, so an emitter never waits for
another's write. State callbacks run on the thread that notices the change (the reader).

:class:`ServiceIO` is a mixin of :class:`netmgr.client.Service`; its state is the Service's
``_netmgr`` (:class:`netmgr.client.service_work._State`) and ``_nm_opts``.
"""
import logging

from netmgr.client.failover import Failover, summary
from netmgr.client.peer import CONNECTED, DISCONNECTED, RECONNECTING, encode
from netmgr.errors import CertificateRefused
from netmgr.hostinfo import HOSTNAME
from netmgr.protocol import DISCONNECT_REQUEST, dumps, error, result

logger = logging.getLogger("netmgr.service")


def _refused(exc):
    return isinstance(exc, CertificateRefused)


def _refused_or_credentials(exc):
    return isinstance(exc, (CertificateRefused, ValueError))


class ServiceIO:
    """The connection and the outbox of a Service (a mixin; see the module docstring)."""

    def _nm_connect(self, initial=False):
        """Connect (trying each Manager, with back-off when reconnecting). False: stop."""
        st = self._netmgr
        opts = self._nm_opts
        failover = Failover(opts, self._identity)

        def wait(delay):
            logger.info("%s: connecting again in %.2f s (%s)", self._name, delay,
                        summary(failover.errors[-1][2]) if failover.errors else "")
            with st.cond:
                if not st.stopping:
                    st.cond.wait(delay)

        try:
            # wrong credentials end the first start; a refused certificate ends it always (1.0)
            found = failover.run(fatal=_refused_or_credentials if initial else _refused,
                                 stop=lambda: st.stopping,
                                 wait=None if initial and opts.attempts == 0 else wait)
        except CertificateRefused:
            return False  # 1.0: the user refused the certificate
        if found is not None:
            return self._nm_install(*found)
        if not failover.stopped:
            logger.error("%s gave up connecting after %d attempt(s)", self._name, failover.rounds)
        return False

    def _nm_install(self, host, port, transport, local_port, leftover, lines):
        st = self._netmgr
        with st.cond:
            if st.stopping:
                transport.close()
                return False
            st.transport = transport
            st.lines = lines
            st.gen += 1
            st.buffered.clear()
            st.buffered.extend(leftover)
            st.received = 0
            st.rejected = None
        with st.olock:
            st.out.clear()
            st.writing = False
        self._port = local_port
        self._network_name = f"{self._name}[{HOSTNAME}:{local_port}]"
        self._address_manager = f"{host}:{port}"
        logger.info("connected to Manager[%s] as %s", self._address_manager, self._network_name)
        self._nm_state_changed(CONNECTED)
        return True

    def _nm_state_changed(self, state):
        callback = self._nm_opts.on_state_change
        if callback is not None:
            try:
                callback(self, state)
            except Exception:  # noqa: BLE001
                logger.exception("on_state_change of %s raised", self._name)

    def _nm_connection_lost(self):
        """EOF or an error on the socket: reconnect, or finish. Called by the leader."""
        st = self._netmgr
        with st.cond:
            transport, st.transport = st.transport, None
            st.gen += 1
        if transport is not None:
            transport.close()
        reconnect = (self._nm_opts.attempts != 0 and not st.stopping)
        if st.rejected and st.received == 0 and not reconnect:
            logger.error("%s", st.rejected)
        if not reconnect:
            logger.info("%s disconnected from Manager[%s]", self._network_name, self._address_manager)
            self._nm_state_changed(DISCONNECTED)
            return False
        logger.warning("%s lost the connection to Manager[%s]; reconnecting", self._network_name,
                       self._address_manager)
        self._nm_state_changed(RECONNECTING)
        if self._nm_connect():
            return True
        self._nm_state_changed(DISCONNECTED)
        return False

    # ------------------------------------------------------------------ output
    def _nm_send(self, data, gen):
        """Queue `data` on the ordered outbox; the first thread to find no writer writes."""
        st = self._netmgr
        with st.olock:
            if gen != st.gen or st.transport is None:
                return False
            if st.writing:
                st.out.append(data)
                return True
            st.writing = True
            transport = st.transport
        while True:
            try:
                transport.sendall(data)
            except OSError as exc:
                logger.debug("%s: write failed: %s", self._name, exc)
                transport.shutdown()  # the leader sees EOF and reconnects or stops
                with st.olock:
                    st.out.clear()
                    st.writing = False
                return False
            with st.olock:
                if st.out and gen == st.gen:
                    data = b"".join(st.out) if len(st.out) > 1 else st.out[0]
                    st.out.clear()
                    continue
                st.out.clear()
                st.writing = False
                return True

    def _nm_reply(self, request, value, gen):
        requester = request.get("requester")
        uid = request.get("uid", "")
        try:
            data = encode(result(value, requester, uid))
        except TypeError as not_json:
            to_json = getattr(value, "to_json", None)
            try:
                if to_json is None:
                    raise not_json
                data = dumps(result(to_json(), requester, uid))
            except Exception as exc:  # noqa: BLE001 -- the Client gets it as an error reply
                logger.error("%s: %s", type(exc).__name__, exc)
                self._nm_reply_error(request, exc, gen)
                return
        self._nm_send(data, gen)

    def _nm_reply_error(self, request, exc, gen):
        message = exc if isinstance(exc, str) else f"{exc.__class__.__name__}: {exc}"
        self._nm_send(dumps(error(message, request.get("requester"), request.get("uid", ""))), gen)

    def _nm_send_disconnect(self, gen):
        """Ask the Manager to end the connection (``shutdown_service``, ``stop_service``)."""
        self._nm_send(dumps({"service": self._network_name, "attribute": DISCONNECT_REQUEST}),
                      gen)
