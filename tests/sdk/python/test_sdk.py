"""PyPI `centrifuge-python` (client SDK, WebSocket) and PyPI `cent` (server API SDK)
against the real herald binary. See conftest.py for the harness and config.
"""

from __future__ import annotations

import asyncio

import pytest
from cent import (
    AsyncClient as CentAsyncClient,
    Client as CentClient,
    HistoryRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    StreamPosition as CentStreamPosition,
)
from centrifuge import (
    Client,
    ClientEventHandler,
    ClientState,
    ConnectedContext,
    PublicationContext,
    SubscribedContext,
    SubscriptionEventHandler,
    SubscriptionState,
    UnsubscribedContext,
)

from conftest import API_KEY, conn_token, uniq

TIMEOUT = 10.0


class ClientEvents(ClientEventHandler):
    def __init__(self) -> None:
        self.connected: asyncio.Queue[ConnectedContext] = asyncio.Queue()
        self.log: list[str] = []

    async def on_connecting(self, ctx) -> None:
        self.log.append(f"connecting {ctx}")

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.log.append(f"connected {ctx}")
        await self.connected.put(ctx)

    async def on_disconnected(self, ctx) -> None:
        self.log.append(f"disconnected {ctx}")

    async def on_error(self, ctx) -> None:
        self.log.append(f"error {ctx}")


class SubEvents(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.subscribed: asyncio.Queue[SubscribedContext] = asyncio.Queue()
        self.unsubscribed: asyncio.Queue[UnsubscribedContext] = asyncio.Queue()
        self.publications: asyncio.Queue[PublicationContext] = asyncio.Queue()
        self.log: list[str] = []

    async def on_subscribing(self, ctx) -> None:
        self.log.append(f"subscribing {ctx}")

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.log.append(f"subscribed {ctx}")
        await self.subscribed.put(ctx)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.log.append(f"unsubscribed {ctx}")
        await self.unsubscribed.put(ctx)

    async def on_publication(self, ctx: PublicationContext) -> None:
        await self.publications.put(ctx)

    async def on_error(self, ctx) -> None:
        self.log.append(f"error {ctx}")


async def connect(herald, user: str, **token_claims) -> tuple[Client, ClientEvents, ConnectedContext]:
    events = ClientEvents()
    client = Client(
        herald.ws_url,
        events=events,
        token=conn_token(user, **token_claims),
        timeout=5.0,
        proxy=None,
    )
    await client.connect()
    try:
        ctx = await asyncio.wait_for(events.connected.get(), TIMEOUT)
    except asyncio.TimeoutError:
        await client.disconnect()
        pytest.fail(f"centrifuge-python did not connect: {events.log}\n{herald.logs()}")
    assert client.state == ClientState.CONNECTED
    return client, events, ctx


async def subscribe(client: Client, channel: str) -> tuple[object, SubEvents, SubscribedContext]:
    events = SubEvents()
    sub = client.new_subscription(channel, events=events)
    await sub.subscribe()
    try:
        ctx = await asyncio.wait_for(events.subscribed.get(), TIMEOUT)
    except asyncio.TimeoutError:
        pytest.fail(f"subscription to {channel} not established: {events.log}")
    assert sub.state == SubscriptionState.SUBSCRIBED
    return sub, events, ctx


async def test_centrifuge_python_receives_publications_from_cent(herald):
    """centrifuge-python connects with a token and subscribes; cent publishes; the
    client receives every publication, in order, with the offsets cent was told."""
    user = f"py-{uniq()}"
    channel = f"chat:{uniq()}"
    client, cevents, cctx = await connect(herald, user)
    cent = CentAsyncClient(herald.api_url, API_KEY)
    try:
        assert cctx.client, f"connected context without a client id: {cctx}"
        _, sevents, sctx = await subscribe(client, channel)
        assert sctx.channel == channel

        results = []
        for i in range(1, 4):
            results.append(await cent.publish(PublishRequest(channel=channel, data={"n": i})))
        got = []
        for _ in range(3):
            got.append(await asyncio.wait_for(sevents.publications.get(), TIMEOUT))
        assert [p.pub.data for p in got] == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert [p.pub.offset for p in got] == [r.offset for r in results]
        assert all(r.epoch and r.epoch == results[0].epoch for r in results), results
        assert [r.offset for r in results] == list(
            range(results[0].offset, results[0].offset + 3)
        ), results
    finally:
        await cent.close()
        await client.disconnect()


async def test_client_publish_history_and_presence_through_the_sdk(herald):
    """The client SDK's own publish, history and presence calls (namespace `chat`
    allows them)."""
    user = f"py-{uniq()}"
    channel = f"chat:{uniq()}"
    client, _, cctx = await connect(herald, user, info={"name": "Py"})
    try:
        sub, sevents, _ = await subscribe(client, channel)
        await sub.publish({"text": "from python"})
        pub = await asyncio.wait_for(sevents.publications.get(), TIMEOUT)
        assert pub.pub.data == {"text": "from python"}
        assert pub.pub.info is not None and pub.pub.info.user == user, pub

        history = await sub.history(limit=10)
        assert [p.data for p in history.publications] == [{"text": "from python"}]
        assert history.epoch and history.offset == history.publications[-1].offset

        presence = await sub.presence()
        assert list(presence.clients) == [cctx.client], presence
        info = presence.clients[cctx.client]
        assert info.user == user
        assert info.conn_info == {"name": "Py"}
        stats = await sub.presence_stats()
        assert (stats.num_clients, stats.num_users) == (1, 1)
    finally:
        await client.disconnect()


async def test_cent_publishes_and_reads_history(herald):
    """cent (async) publishes and reads the history back through the server API:
    limit, reverse and since."""
    channel = f"chat:{uniq()}"
    cent = CentAsyncClient(herald.api_url, API_KEY)
    try:
        results = [
            await cent.publish(PublishRequest(channel=channel, data={"n": i}))
            for i in range(1, 6)
        ]
        epoch = results[0].epoch
        assert epoch and all(r.epoch == epoch for r in results), results
        offsets = [r.offset for r in results]
        assert offsets == list(range(offsets[0], offsets[0] + 5)), offsets

        full = await cent.history(HistoryRequest(channel=channel, limit=10))
        assert [p.data for p in full.publications] == [{"n": i} for i in range(1, 6)]
        assert [p.offset for p in full.publications] == offsets
        assert (full.offset, full.epoch) == (offsets[-1], epoch)

        newest = await cent.history(HistoryRequest(channel=channel, limit=2, reverse=True))
        assert [p.data for p in newest.publications] == [{"n": 5}, {"n": 4}]

        since = await cent.history(
            HistoryRequest(
                channel=channel,
                limit=10,
                since=CentStreamPosition(offset=offsets[2], epoch=epoch),
            )
        )
        assert [p.data for p in since.publications] == [{"n": 4}, {"n": 5}]

        # Without a limit: only the stream position.
        top = await cent.history(HistoryRequest(channel=channel))
        assert top.publications == [] and (top.offset, top.epoch) == (offsets[-1], epoch)
    finally:
        await cent.close()


def test_cent_sync_client_publish_and_history(herald):
    """The synchronous cent.Client against the same API."""
    channel = f"chat:{uniq()}"
    cent = CentClient(herald.api_url, API_KEY)
    try:
        res = cent.publish(PublishRequest(channel=channel, data={"sync": True}))
        assert res.offset >= 1 and res.epoch
        hist = cent.history(HistoryRequest(channel=channel, limit=10))
        assert [p.data for p in hist.publications] == [{"sync": True}]
        assert (hist.offset, hist.epoch) == (res.offset, res.epoch)
    finally:
        cent.close()


async def test_cent_presence_sees_centrifuge_python_subscribers(herald):
    """Presence through the server API lists a live centrifuge-python subscriber."""
    user = f"py-{uniq()}"
    channel = f"chat:{uniq()}"
    client, _, cctx = await connect(herald, user, info={"name": "Py"})
    cent = CentAsyncClient(herald.api_url, API_KEY)
    try:
        await subscribe(client, channel)
        presence = await cent.presence(PresenceRequest(channel=channel))
        assert list(presence.presence) == [cctx.client], presence
        assert presence.presence[cctx.client].user == user
        assert presence.presence[cctx.client].conn_info == {"name": "Py"}
        stats = await cent.presence_stats(PresenceStatsRequest(channel=channel))
        assert (stats.num_clients, stats.num_users) == (1, 1)
    finally:
        await cent.close()
        await client.disconnect()


async def test_subscribe_without_a_grant_is_refused_with_103(herald):
    """A channel of the default namespace (no allow_subscribe_for_client) and no
    grant in the token: the SDK gets permission denied (103) and unsubscribes."""
    client, _, _ = await connect(herald, f"py-{uniq()}")
    try:
        events = SubEvents()
        sub = client.new_subscription(f"news{uniq()}", events=events)
        await sub.subscribe()
        ctx = await asyncio.wait_for(events.unsubscribed.get(), TIMEOUT)
        assert ctx.code == 103, (ctx, events.log)
        assert sub.state == SubscriptionState.UNSUBSCRIBED
    finally:
        await client.disconnect()
