"""The NATS fixtures do what the cluster tests rely on, shown with nats-py alone (plain asyncio, no
gevent): pub/sub through one server and across the routes of three, JetStream KV ``create`` as an
atomic claim, and an R3 bucket that stays writable when one of the three servers is killed.
"""
import asyncio
import time

import nats
import nats.errors
import nats.js.errors
import pytest

WAIT = 20.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, WAIT * 2))


async def connect(servers):
    # nats-py takes a list of URLs (a comma-joined string is "invalid connect url")
    return await nats.connect(servers.split(",") if isinstance(servers, str) else servers,
                              reconnect_time_wait=0.1, connect_timeout=2)


async def publish_until_received(pub_nc, sub, subject, data):
    """Publish ``data`` until ``sub`` receives it (a bounded wait). A subscription reaches the other
    servers over the routes asynchronously, so the first messages may find no interest there."""
    deadline = time.monotonic() + WAIT
    while True:
        await pub_nc.publish(subject, data)
        try:
            return await sub.next_msg(timeout=0.1)
        except nats.errors.TimeoutError:
            if time.monotonic() > deadline:
                raise


def test_publish_subscribe_through_one_server(nats_server):
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    assert nats_server.proc.poll() is None

    async def main():
        nc = await connect(nats_server.url)
        try:
            sub = await nc.subscribe("fixtures.one")
            await nc.publish("fixtures.one", b"hello")
            return (await sub.next_msg(timeout=WAIT)).data
        finally:
            await nc.close()

    assert run(main()) == b"hello"


def test_the_server_restarts_on_its_port_with_its_store(nats_server):
    async def put():
        nc = await connect(nats_server.url)
        try:
            kv = await nc.jetstream().create_key_value(bucket="fixtures", history=1)
            return await kv.put("k", b"v")
        finally:
            await nc.close()

    async def get():
        nc = await connect(nats_server.url)
        try:
            return (await (await nc.jetstream().key_value("fixtures")).get("k")).value
        finally:
            await nc.close()

    assert run(put()) == 1
    pid = nats_server.proc.pid
    nats_server.kill()
    assert nats_server.proc.returncode == -9
    nats_server.restart()
    assert nats_server.proc.pid != pid
    assert run(get()) == b"v"


def test_a_message_published_on_server_0_reaches_a_subscriber_on_server_2(nats_cluster):
    s0, _, s2 = nats_cluster.servers
    assert nats_cluster.urls == ",".join(s.url for s in nats_cluster.servers)

    async def main():
        sub_nc, pub_nc = await connect([s2.url]), await connect([s0.url])
        try:
            assert sub_nc.connected_url.port == s2.port and pub_nc.connected_url.port == s0.port
            sub = await sub_nc.subscribe("fixtures.across")
            await sub_nc.flush()
            msg = await publish_until_received(pub_nc, sub, "fixtures.across", b"from n0")
            return msg.data
        finally:
            await pub_nc.close()
            await sub_nc.close()

    assert run(main()) == b"from n0"


def test_a_kv_create_is_atomic_the_second_create_of_a_key_fails(nats_server):
    async def main():
        nc = await connect(nats_server.url)
        try:
            kv = await nc.jetstream().create_key_value(bucket="claims", history=1, ttl=3)
            first = await kv.create("Echo", b"node-a")
            with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
                await kv.create("Echo", b"node-b")
            assert (await kv.get("Echo")).value == b"node-a"
            # a deleted key can be claimed again (nats-py's create() retries on the delete marker)
            await kv.delete("Echo")
            again = await kv.create("Echo", b"node-b")
            return first, again
        finally:
            await nc.close()

    first, again = run(main())
    assert again > first


def test_the_race_for_one_name_has_exactly_one_winner(nats_cluster):
    """Concurrent creates of one key from clients on different servers of an R3 bucket."""
    async def bucket_at(url):
        """The bucket, once this server routes its writes to the stream: just after the bucket is
        made, the other servers may not know yet who listens on its subjects (NoStreamResponseError)."""
        nc = await connect([url])
        kv = await nc.jetstream(timeout=1).key_value("race")
        deadline = time.monotonic() + WAIT
        while True:
            try:
                await kv.put(f"ready-{nc.connected_url.port}", b"")
                return nc, kv
            except (nats.js.errors.NoStreamResponseError, nats.errors.TimeoutError):  # no stream leader yet
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)

    async def claim(kv, node):
        try:
            await kv.create("Echo", node.encode())
            return node
        # A loser gets KeyWrongLastSequenceError from the stream leader; then nats-py's create()
        # reads the key to tell a deleted key from a live one, with a direct get that any replica
        # may answer: one that has not applied the winner's write yet says KeyNotFoundError.
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
            return None

    async def main():
        nc = await connect(nats_cluster.urls)
        try:
            await nc.jetstream().create_key_value(bucket="race", history=1, replicas=3)
        finally:
            await nc.close()
        clients = [await bucket_at(s.url) for s in nats_cluster.servers]
        try:
            winners = await asyncio.gather(*(claim(kv, s.name)
                                             for (_, kv), s in zip(clients, nats_cluster.servers)))
            # the stream leader's copy (kv.get() may be answered by a replica that lags)
            last = await clients[0][0].jetstream().get_last_msg("KV_race", "$KV.race.Echo")
            return [w for w in winners if w], last.data.decode()
        finally:
            for nc, _ in clients:
                await nc.close()

    winners, stored = run(main())
    assert winners == [stored]


def test_killing_one_server_of_three_leaves_an_r3_bucket_writable(nats_cluster):
    """The bucket's stream leader is the one killed (the hardest case): JetStream elects a new
    leader among the two left and the client, connected to a survivor, writes again within a
    bounded time: 4.7 to 7.8 s here (nats-server 2.15's Raft election timeout is 4 to 9 s, not
    configurable: server/raft.go). That is longer than the claims' TTL of 3 s: the new leader has
    expired "Echo" by then, so a claim may lapse while its renewals cannot be written."""
    async def leader_of_a_new_bucket():
        nc = await connect(nats_cluster.urls)
        try:
            js = nc.jetstream()
            kv = await js.create_key_value(bucket="claims", history=1, ttl=3, replicas=3)
            await kv.create("Echo", b"a")
            info = await js.stream_info("KV_claims")
            assert len(info.cluster.replicas) == 2  # R3: the leader and two more
            return info.cluster.leader
        finally:
            await nc.close()

    async def write_after_killing(victim):
        # connected to the survivors only: this is not a client-reconnect test
        nc = await connect([s.url for s in nats_cluster.servers if s is not victim])
        try:
            js = nc.jetstream(timeout=1)
            kv = await js.key_value("claims")
            victim.kill()
            deadline, errors = time.monotonic() + WAIT, []
            while True:
                try:
                    revision = await kv.create("Lab", b"b")
                    break
                except (nats.errors.TimeoutError, nats.errors.NoRespondersError,
                        nats.js.errors.NoStreamResponseError) as exc:  # no stream leader yet
                    errors.append(type(exc).__name__)
                    if time.monotonic() > deadline:
                        raise AssertionError(f"no write within {WAIT} s: {errors}") from exc
                    await asyncio.sleep(0.05)
            with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):  # still atomic
                await kv.create("Lab", b"c")
            return revision, (await js.stream_info("KV_claims")).cluster.leader
        finally:
            await nc.close()

    victim = nats_cluster.server(run(leader_of_a_new_bucket()))
    revision, leader = run(write_after_killing(victim))
    assert revision > 1
    assert leader != victim.name
