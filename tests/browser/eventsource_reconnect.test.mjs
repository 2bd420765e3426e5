// A plain browser EventSource (no SDK) survives a server-side disconnect with no
// gap and no duplicate: Chromium reconnects by itself, sends Last-Event-ID, and
// Herald replays exactly the publications the page missed.
//
//   publish 1..50 live -> POST /api/disconnect for the page's user ->
//   publish 51..100 while the browser waits to reconnect (retry: 3-5 s) ->
//   wait for the new `connected` -> publish 101..150 live.
//
// The page must end with offsets 1..150, each once, in order, no recovery_failed,
// and at least two `connected` events (proof that it really reconnected).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  api, compact, launchBrowser, publish, signJwt, startHerald, tail, waitFor,
} from './helpers.mjs';

const API_KEY = 'K';
const SECRET = 'S';
const USER = 'browser-user';
const CHANNEL = 'feed';

test('EventSource resumes after /api/disconnect with every publication exactly once', { timeout: 120_000 }, async (t) => {
  const herald = await startHerald({
    args: [
      '--api-key', API_KEY,
      '--token-hmac-secret', SECRET,
      '--history-size', '1000',
      '--history-ttl', '300s',
    ],
  });
  t.after(() => herald.stop());
  const browser = await launchBrowser();
  t.after(() => browser.close());
  const { page } = browser;

  // Every /events request the browser makes, with its Last-Event-ID header.
  const eventsRequests = [];
  page.on('request', async (req) => {
    if (!new URL(req.url()).pathname.startsWith('/events')) return;
    const entry = { url: req.url(), lastEventId: undefined };
    eventsRequests.push(entry);
    try {
      const h = await req.allHeaders();
      entry.lastEventId = h['last-event-id'];
    } catch { /* page gone */ }
  });

  const state = () => page.evaluate(() => ({
    got: window.got,
    failed: window.failed,
    connected: window.connected,
    disconnects: window.disconnects,
    errors: window.errors,
    readyState: window.es.readyState,
  }));
  const diagnostics = async (what) => {
    let s;
    try { s = await state(); } catch (err) { s = { error: err.message }; }
    const summary = {
      ...s,
      got: s.got ? `${s.got.length} offsets: ${JSON.stringify(s.got)}` : undefined,
    };
    return `${what}\n--- page state ---\n${compact(summary)}\n` +
      `--- /events requests ---\n${compact(eventsRequests)}\n` +
      `--- browser console ---\n${browser.consoleLines.join('\n')}\n` +
      `--- herald (${herald.cmdline}) ---\n${tail(herald.logs())}`;
  };

  // Same origin as Herald, so EventSource needs no CORS.
  const health = await page.goto(`${herald.baseUrl}/healthz`);
  assert.equal(health.status(), 200);

  const token = signJwt(
    { sub: USER, exp: Math.floor(Date.now() / 1000) + 3600, channels: [CHANNEL] },
    SECRET,
  );
  await page.evaluate(({ channel, token }) => {
    window.got = [];
    window.pubs = [];
    window.failed = [];
    window.connected = [];
    window.disconnects = [];
    window.errors = [];
    const es = new EventSource(`/events?channel=${encodeURIComponent(channel)}&token=${encodeURIComponent(token)}`);
    window.es = es;
    es.addEventListener('connected', (e) => {
      window.connected.push({ id: e.lastEventId, data: JSON.parse(e.data) });
    });
    es.addEventListener('publication', (e) => {
      const p = JSON.parse(e.data);
      window.pubs.push({ id: e.lastEventId, ...p });
      if (p.channel === channel) window.got.push(p.offset);
    });
    es.addEventListener('recovery_failed', (e) => {
      window.failed.push({ id: e.lastEventId, data: JSON.parse(e.data) });
    });
    es.addEventListener('disconnect', (e) => {
      window.disconnects.push({ id: e.lastEventId, data: JSON.parse(e.data) });
    });
    es.addEventListener('error', () => {
      window.errors.push({ at: Date.now(), readyState: es.readyState });
    });
  }, { channel: CHANNEL, token });

  const count = (expr) => page.evaluate(expr);
  const firstConnect = await waitFor(() => count(() => window.connected.length >= 1), { timeoutMs: 10_000 });
  if (!firstConnect) assert.fail(await diagnostics('no `connected` event within 10 s'));

  const apiOffsets = [];
  const pub = async (from, to) => {
    for (let n = from; n <= to; n++) {
      const r = await publish(herald, API_KEY, CHANNEL, { n });
      apiOffsets.push(r.offset);
    }
  };

  // Phase 1: live.
  await pub(1, 50);
  const live = await waitFor(() => count(() => window.got.length >= 50), { timeoutMs: 10_000 });
  if (!live) assert.fail(await diagnostics('publications 1..50 did not all arrive live within 10 s'));

  // Phase 2: the server closes the page's stream; publish while it is away.
  const disc = await api(herald, 'disconnect', { user: USER }, API_KEY);
  t.diagnostic(`/api/disconnect -> ${JSON.stringify(disc)}`);
  await pub(51, 100);

  // Phase 3: the browser reconnects by itself and catches up.
  const reconnected = await waitFor(() => count(() => window.connected.length >= 2), { timeoutMs: 15_000 });
  if (!reconnected) assert.fail(await diagnostics('the page did not reconnect (no second `connected`) within 15 s'));
  await waitFor(() => count(() => window.got.length >= 100), { timeoutMs: 5_000 });

  // Phase 4: live again on the new stream.
  await pub(101, 150);
  await waitFor(() => count(() => window.got.length >= 150), { timeoutMs: 20_000 });
  await sleep(500); // let any duplicate or stray event arrive before judging

  const s = await state();
  const expected = Array.from({ length: 150 }, (_, i) => i + 1);
  t.diagnostic(`connected: ${s.connected.length}, disconnect events: ${s.disconnects.length}, ` +
    `error events: ${s.errors.length}, /events requests: ${eventsRequests.length}, ` +
    `Last-Event-IDs: ${JSON.stringify(eventsRequests.map((r) => r.lastEventId))}`);

  assert.deepEqual(apiOffsets, expected, await diagnostics('the API did not assign offsets 1..150'));
  assert.deepEqual(s.got, expected, await diagnostics('the page did not get offsets 1..150 exactly once, in order'));
  assert.deepEqual(s.failed, [], await diagnostics('the page got recovery_failed'));
  assert.ok(s.connected.length >= 2, await diagnostics('the page saw fewer than 2 `connected` events'));
  assert.ok(s.disconnects.length >= 1, await diagnostics('the server sent no `disconnect` event before closing'));
  const resumed = eventsRequests.slice(1).some((r) => r.lastEventId);
  assert.ok(resumed, await diagnostics('no reconnect request carried a Last-Event-ID header'));
});
