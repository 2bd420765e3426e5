// The npm `centrifuge` SDK suite, defined once and run per transport by
// websocket.test.mjs, http_stream.test.mjs and sse.test.mjs.
//
// Each scenario uses real SDK clients against the real herald binary (one herald
// per transport file, config in helpers.mjs SUITE_CONFIG). On failure the
// assertion message carries every client's frames and events and herald's log.
//
// Emulation transports (http_stream, sse): when herald does not serve the
// transport's endpoint at all (404/405), the scenarios still run but are marked
// `todo` so they are reported, not counted as passing.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  api, connToken, connected, nextEvent, publish, scope, startHerald, subToken, subscribed,
  transportServed, uniq, waitFor,
} from './helpers.mjs';

export const EMULATION_TODO = 'emulation transport not implemented yet';

/** Whether herald serves `transport`; a throwaway herald answers the probe. */
async function probe(transport) {
  if (transport === 'websocket') return true;
  const herald = await startHerald();
  try {
    return await transportServed(herald, transport);
  } finally {
    await herald.stop();
  }
}

// How long a client may take to connect; short when the transport is known to be
// missing (todo), so that its scenarios fail fast.
let connectTimeoutMs = 10_000;

/** Connects `client` and returns the SDK's 'connected' context. */
async function connect(client) {
  const ev = nextEvent(client, 'connected', { timeoutMs: connectTimeoutMs });
  ev.catch(() => {});
  client.connect();
  await connected(client, connectTimeoutMs);
  return ev;
}

/** Collects the publications of `sub` in an array (`.data` of each). */
function collect(sub) {
  const got = [];
  sub.on('publication', (ctx) => got.push(ctx));
  return got;
}

export async function defineSdkSuite(transport) {
  const served = await probe(transport);
  const todo = served ? undefined : EMULATION_TODO;
  if (todo) connectTimeoutMs = 2_000;
  const opts = (timeout) => (todo ? { timeout, todo } : { timeout });

  describe(`npm centrifuge over ${transport}, 1 s server pings`, () => {
    let herald;
    before(async () => {
      herald = await startHerald({ args: ['--client-ping-interval', '1s', '--client-pong-timeout', '1s'] });
    });
    after(async () => {
      await herald?.stop();
    });

    it('server pings and the SDK\'s pongs keep an idle connection up', opts(30_000), async (t) => {
      const h = scope(t, herald, transport);
      await h.run(async () => {
        const user = `idle-${uniq()}`;
        // The SDK drops a connection whose server pings are more than 1.5 s late.
        const c = h.client({ token: connToken(user), maxServerPingDelay: 1_500 }, user);
        await connect(c);
        await sleep(5_000);
        assert.equal(c.state, 'connected');
        assert.equal(c.events.filter((e) => e.ev === 'connecting').length, 1, 'no reconnect');
        const lines = (dir) => c.frames
          .filter((f) => f.slice(13, 15) === dir)
          .flatMap((f) => f.slice(16).split('\n'));
        const pings = lines('<-').filter((l) => l.trim() === '{}').length;
        const pongs = lines('->').filter((l) => l.trim() === '{}').length;
        t.diagnostic(`pings received: ${pings}, pongs sent: ${pongs}`);
        assert.ok(pings >= 3, `at least 3 pings ({}) in 5 s, got ${pings}`);
        assert.ok(pongs >= 3, `the SDK answered with pongs ({}), got ${pongs}`);
      });
    });
  });

  describe(`npm centrifuge over ${transport}`, () => {
    let herald;
    before(async () => {
      herald = await startHerald();
    });
    after(async () => {
      await herald?.stop();
    });

    it('connects with a token, subscribes and receives server API publications', opts(30_000), async (t) => {
      const h = scope(t, herald, transport);
      await h.run(async () => {
        const user = `alice-${uniq()}`;
        const c = h.client({ token: connToken(user) }, user);
        const ctx = await connect(c);
        assert.ok(typeof ctx.client === 'string' && ctx.client.length > 0, `connected ctx: ${JSON.stringify(ctx)}`);
        assert.equal(ctx.transport, transport);

        const channel = `chat:${uniq()}`;
        const sub = c.newSubscription(channel);
        const got = collect(sub);
        const sctx = await subscribed(sub);
        assert.equal(sctx.channel, channel);

        const positions = [];
        for (let i = 1; i <= 3; i++) positions.push(await publish(herald, channel, { n: i, text: `hello ${i}` }));
        await waitFor(() => got.length >= 3, { timeoutMs: 5_000 });
        assert.deepEqual(got.map((p) => p.data), [1, 2, 3].map((n) => ({ n, text: `hello ${n}` })));
        assert.deepEqual(got.map((p) => p.channel), [channel, channel, channel]);
        // History is on in the namespace: publications carry their offsets.
        assert.deepEqual(got.map((p) => p.offset), positions.map((p) => p.offset));
      });
    });

    it('client-side sub.publish() reaches every subscriber, with the publisher info', opts(30_000), async (t) => {
      const h = scope(t, herald, transport);
      await h.run(async () => {
        const channel = `chat:${uniq()}`;
        const alice = h.client({ token: connToken(`alice-${uniq()}`) }, 'alice');
        const bob = h.client({ token: connToken(`bob-${uniq()}`) }, 'bob');
        const aliceCtx = await connect(alice);
        await connect(bob);
        const aSub = alice.newSubscription(channel);
        const bSub = bob.newSubscription(channel);
        const aGot = collect(aSub);
        const bGot = collect(bSub);
        await subscribed(aSub);
        await subscribed(bSub);

        await aSub.publish({ text: 'from alice' });
        await waitFor(() => aGot.length >= 1 && bGot.length >= 1, { timeoutMs: 5_000 });
        assert.deepEqual(bGot.map((p) => p.data), [{ text: 'from alice' }]);
        assert.deepEqual(aGot.map((p) => p.data), [{ text: 'from alice' }]);
        const info = bGot[0].info;
        assert.ok(info, `publication from a client carries info: ${JSON.stringify(bGot[0])}`);
        assert.equal(info.client, aliceCtx.client);
        assert.match(info.user, /^alice-/);
      });
    });

    it('sub.presence() and sub.presenceStats() list the subscribers with their info', opts(30_000), async (t) => {
      const h = scope(t, herald, transport);
      await h.run(async () => {
        const channel = `chat:${uniq()}`;
        const aliceUser = `alice-${uniq()}`;
        const bobUser = `bob-${uniq()}`;
        const alice = h.client({ token: connToken(aliceUser, 3600, { info: { name: 'Alice' } }) }, 'alice');
        const bob = h.client({ token: connToken(bobUser, 3600, { info: { name: 'Bob' } }) }, 'bob');
        const aliceCtx = await connect(alice);
        const bobCtx = await connect(bob);
        const aSub = alice.newSubscription(channel);
        const bSub = bob.newSubscription(channel);
        await subscribed(aSub);
        await subscribed(bSub);

        let presence;
        await waitFor(async () => {
          presence = await aSub.presence();
          return Object.keys(presence.clients).length >= 2;
        }, { timeoutMs: 5_000, intervalMs: 200 });
        const clients = presence.clients;
        assert.deepEqual(Object.keys(clients).sort(), [aliceCtx.client, bobCtx.client].sort(),
          `presence: ${JSON.stringify(presence)}`);
        assert.equal(clients[aliceCtx.client].user, aliceUser);
        assert.equal(clients[aliceCtx.client].client, aliceCtx.client);
        assert.deepEqual(clients[aliceCtx.client].connInfo, { name: 'Alice' });
        assert.equal(clients[bobCtx.client].user, bobUser);
        assert.deepEqual(clients[bobCtx.client].connInfo, { name: 'Bob' });

        const stats = await bSub.presenceStats();
        assert.equal(stats.numClients, 2, `presenceStats: ${JSON.stringify(stats)}`);
        assert.equal(stats.numUsers, 2, `presenceStats: ${JSON.stringify(stats)}`);

        // The same through the client-level API and after one leaves.
        bSub.unsubscribe();
        await waitFor(async () => (await alice.presenceStats(channel)).numClients === 1, { timeoutMs: 5_000, intervalMs: 200 });
        const after1 = await alice.presenceStats(channel);
        assert.deepEqual({ numClients: after1.numClients, numUsers: after1.numUsers }, { numClients: 1, numUsers: 1 });
      });
    });

    it('sub.history() returns the channel history (limit, reverse) with offset and epoch', opts(30_000), async (t) => {
      const h = scope(t, herald, transport);
      await h.run(async () => {
        const channel = `chat:${uniq()}`;
        const positions = [];
        for (let i = 1; i <= 3; i++) positions.push(await publish(herald, channel, { n: i }));
        const c = h.client({ token: connToken(`hist-${uniq()}`) });
        await connect(c);
        const sub = c.newSubscription(channel);
        await subscribed(sub);

        const res = await sub.history({ limit: 10 });
        assert.deepEqual(res.publications.map((p) => p.data), [{ n: 1 }, { n: 2 }, { n: 3 }],
          `history: ${JSON.stringify(res)}`);
        assert.deepEqual(res.publications.map((p) => p.offset), positions.map((p) => p.offset));
        assert.equal(res.offset, positions[2].offset);
        assert.equal(res.epoch, positions[2].epoch);
        assert.ok(typeof res.epoch === 'string' && res.epoch.length > 0);

        const rev = await sub.history({ limit: 2, reverse: true });
        assert.deepEqual(rev.publications.map((p) => p.data), [{ n: 3 }, { n: 2 }],
          `history reverse: ${JSON.stringify(rev)}`);

        const since = await sub.history({ limit: 10, since: { offset: positions[0].offset, epoch: positions[0].epoch } });
        assert.deepEqual(since.publications.map((p) => p.data), [{ n: 2 }, { n: 3 }],
          `history since: ${JSON.stringify(since)}`);
      });
    });

    it('server-side disconnect during 1,000 publications: reconnect with recovered: true, each number once, in order', opts(120_000), async (t) => {
      const h = scope(t, herald, transport);
      await h.run(async () => {
        const TOTAL = 1000;
        const DISCONNECT_AT = 300;
        const user = `rec-${uniq()}`;
        const channel = `feed:${uniq()}`;
        const c = h.client({ token: connToken(user) }, user);
        await connect(c);
        const sub = c.newSubscription(channel);
        const numbers = [];
        const subscribedEvents = [];
        sub.on('publication', (ctx) => numbers.push(ctx.data.n));
        sub.on('subscribed', (ctx) => subscribedEvents.push({ ...ctx, receivedBefore: numbers.length }));
        const first = await subscribed(sub);
        assert.equal(first.recoverable, true, `subscribe reply of a force_recovery namespace: ${JSON.stringify(first)}`);

        const connectedBefore = c.events.filter((e) => e.ev === 'connected').length;
        let disconnectAnswer;
        for (let n = 1; n <= TOTAL; n++) {
          await publish(herald, channel, { n });
          if (n === DISCONNECT_AT) {
            // 3011 `force reconnect` (3000-3499: the SDK reconnects); without a code the
            // API's default is Centrifugo's 3503 `force disconnect`, no reconnect.
            disconnectAnswer = await api(herald, 'disconnect', {
              user,
              disconnect: { code: 3011, reason: 'force reconnect' },
            });
          }
          // Spread the rest over the reconnect so that some are missed, some live.
          if (n > DISCONNECT_AT && n % 10 === 0) await sleep(5);
        }
        await waitFor(() => numbers.length >= TOTAL, { timeoutMs: 30_000 });
        await sleep(300); // a duplicate would arrive now
        t.diagnostic(`/api/disconnect -> ${JSON.stringify(disconnectAnswer)}`);
        t.diagnostic(`subscribed events: ${JSON.stringify(subscribedEvents.map((e) => ({
          wasRecovering: e.wasRecovering, recovered: e.recovered, receivedBefore: e.receivedBefore,
          hasRecoveredPublications: e.hasRecoveredPublications, streamPosition: e.streamPosition,
        })))}`);

        const reconnecting = c.events.filter((e) => e.ev === 'connecting').slice(1);
        t.diagnostic(`reconnect reasons: ${JSON.stringify(reconnecting.map((e) => e.ctx))}`);
        const reconnects = c.events.filter((e) => e.ev === 'connected').length - connectedBefore;
        assert.ok(reconnects >= 1, 'the client reconnected after /api/disconnect');
        assert.ok(subscribedEvents.length >= 2, `resubscribed after the reconnect (${subscribedEvents.length} subscribed events)`);
        for (const ev of subscribedEvents.slice(1)) {
          assert.equal(ev.wasRecovering, true, `resubscribe asked for recovery: ${JSON.stringify(ev)}`);
          assert.equal(ev.recovered, true, `resubscribe recovered: ${JSON.stringify(ev)}`);
        }
        const expected = Array.from({ length: TOTAL }, (_, i) => i + 1);
        if (numbers.length !== TOTAL || numbers.some((n, i) => n !== i + 1)) {
          const seen = new Map();
          for (const n of numbers) seen.set(n, (seen.get(n) || 0) + 1);
          const missing = expected.filter((n) => !seen.has(n));
          const dups = [...seen].filter(([, k]) => k > 1).map(([n]) => n);
          const firstBad = numbers.findIndex((n, i) => n !== i + 1);
          assert.fail(`received ${numbers.length} publications; missing ${JSON.stringify(missing.slice(0, 30))}` +
            `${missing.length > 30 ? ` (+${missing.length - 30})` : ''}; duplicated ${JSON.stringify(dups.slice(0, 30))}; ` +
            `first out of place at index ${firstBad}: ${JSON.stringify(numbers.slice(Math.max(0, firstBad - 3), firstBad + 5))}`);
        }
        assert.deepEqual(numbers, expected);
      });
    });

    it('/api/disconnect without a code: the SDK is told 3503 and stays disconnected', opts(30_000), async (t) => {
      const h = scope(t, herald, transport);
      await h.run(async () => {
        const user = `gone-${uniq()}`;
        const c = h.client({ token: connToken(user) }, user);
        await connect(c);
        const disconnected = nextEvent(c, 'disconnected', { timeoutMs: 5_000 });
        await api(herald, 'disconnect', { user });
        const ctx = await disconnected;
        assert.equal(ctx.code, 3503, `disconnected: ${JSON.stringify(ctx)}`);
        await sleep(1_000);
        assert.equal(c.state, 'disconnected', 'no reconnect after a 35xx code');
        assert.equal(c.events.filter((e) => e.ev === 'connecting').length, 1, 'no reconnect attempt');
      });
    });

    it('join and leave pushes reach a subscriber that asked for them (joinLeave: true)', opts(30_000), async (t) => {
      const h = scope(t, herald, transport);
      await h.run(async () => {
        const channel = `chat:${uniq()}`;
        const aliceUser = `alice-${uniq()}`;
        const bobUser = `bob-${uniq()}`;
        const alice = h.client({ token: connToken(aliceUser) }, 'alice');
        const bob = h.client({ token: connToken(bobUser, 3600, { info: { name: 'Bob' } }) }, 'bob');
        await connect(alice);
        const bobCtx = await connect(bob);
        const aSub = alice.newSubscription(channel, { joinLeave: true });
        const joins = [];
        const leaves = [];
        aSub.on('join', (ctx) => joins.push(ctx));
        aSub.on('leave', (ctx) => leaves.push(ctx));
        await subscribed(aSub);

        const bSub = bob.newSubscription(channel);
        await subscribed(bSub);
        await waitFor(() => joins.some((j) => j.info.user === bobUser), { timeoutMs: 5_000 });
        const join = joins.find((j) => j.info.user === bobUser);
        assert.ok(join, `alice saw bob join: ${JSON.stringify(joins)}`);
        assert.equal(join.channel, channel);
        assert.equal(join.info.client, bobCtx.client);
        assert.deepEqual(join.info.connInfo, { name: 'Bob' });

        bSub.unsubscribe();
        await waitFor(() => leaves.some((l) => l.info.user === bobUser), { timeoutMs: 5_000 });
        const leave = leaves.find((l) => l.info.user === bobUser);
        assert.ok(leave, `alice saw bob leave: ${JSON.stringify(leaves)}`);
        assert.equal(leave.channel, channel);
        assert.equal(leave.info.client, bobCtx.client);

        // A disconnect is a leave too.
        await subscribed(bSub);
        await waitFor(() => joins.filter((j) => j.info.user === bobUser).length >= 2, { timeoutMs: 5_000 });
        bob.disconnect();
        await waitFor(() => leaves.filter((l) => l.info.user === bobUser).length >= 2, { timeoutMs: 5_000 });
        assert.equal(leaves.filter((l) => l.info.user === bobUser).length, 2, `leaves: ${JSON.stringify(leaves)}`);
        // Alice stays subscribed: no leave of hers.
        assert.ok(!leaves.some((l) => l.info.user === aliceUser), `no leave of alice: ${JSON.stringify(leaves)}`);
      });
    });

    it('a channel that needs a subscription token: refused (103) without, subscribed with getToken', opts(30_000), async (t) => {
      const h = scope(t, herald, transport);
      await h.run(async () => {
        const user = `priv-${uniq()}`;
        const c = h.client({ token: connToken(user) }, user);
        await connect(c);

        // Without a token: permission denied, the SDK gives up on the subscription.
        const denied = c.newSubscription(`private:${uniq()}`);
        const unsub = nextEvent(denied, 'unsubscribed', { timeoutMs: 5_000 });
        denied.subscribe();
        const uctx = await unsub;
        assert.equal(uctx.code, 103, `unsubscribed without a token: ${JSON.stringify(uctx)}`);

        // With a subscription token from getToken.
        const channel = `private:${uniq()}`;
        const tokenCalls = [];
        const sub = c.newSubscription(channel, {
          getToken: async (ctx) => {
            tokenCalls.push(ctx);
            return subToken(user, ctx.channel);
          },
        });
        const got = collect(sub);
        await subscribed(sub);
        assert.deepEqual(tokenCalls.map((x) => x.channel), [channel]);
        await publish(herald, channel, { secret: 42 });
        await waitFor(() => got.length >= 1, { timeoutMs: 5_000 });
        assert.deepEqual(got.map((p) => p.data), [{ secret: 42 }]);

        // A token for another user or another channel is refused.
        const wrong = c.newSubscription(`private:${uniq()}`, { token: subToken(user, `private:${uniq()}`) });
        const wrongUnsub = nextEvent(wrong, 'unsubscribed', { timeoutMs: 5_000 });
        wrong.subscribe();
        const wctx = await wrongUnsub;
        assert.notEqual(wctx.code, 0, `a token for another channel is refused: ${JSON.stringify(wctx)}`);
      });
    });

    it('an expiring connection token is refreshed through getToken without dropping the connection', opts(40_000), async (t) => {
      const h = scope(t, herald, transport);
      await h.run(async () => {
        const user = `exp-${uniq()}`;
        const tokenCalls = [];
        const c = h.client({
          token: connToken(user, 3),
          getToken: async () => {
            tokenCalls.push(Date.now());
            return connToken(user, 3600);
          },
        }, user);
        const started = Date.now();
        await connect(c);
        const channel = `chat:${uniq()}`;
        const sub = c.newSubscription(channel);
        const got = collect(sub);
        await subscribed(sub);

        // Well past the first token's expiry.
        await sleep(6_000);
        assert.ok(tokenCalls.length >= 1, 'getToken was called when the token expired');
        t.diagnostic(`getToken called ${tokenCalls.length}x, first after ${tokenCalls[0] - started} ms`);
        assert.equal(c.state, 'connected');
        assert.equal(sub.state, 'subscribed');
        const connects = c.events.filter((e) => e.ev === 'connected').length;
        const disconnects = c.events.filter((e) => e.ev === 'disconnected' || e.ev === 'connecting').length;
        assert.equal(connects, 1, 'the refresh happened on the live connection (one connected event)');
        assert.equal(disconnects, 1, 'only the initial connecting event, no reconnect');
        const refreshSent = c.frames.some((f) => f.includes(' -> ') && f.includes('"refresh"'));
        assert.ok(refreshSent, 'the SDK sent a refresh command');

        await publish(herald, channel, { after: 'expiry' });
        await waitFor(() => got.length >= 1, { timeoutMs: 5_000 });
        assert.deepEqual(got.map((p) => p.data), [{ after: 'expiry' }]);
      });
    });
  });
}
