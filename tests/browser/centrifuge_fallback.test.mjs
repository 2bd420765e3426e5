// The npm `centrifuge` SDK in a Chromium page whose WebSocket attempts are blocked
// (as by a proxy that refuses upgrades) falls back along its transport list
// [websocket, http_stream, sse] to bidirectional emulation, subscribes through
// POST /emulation and still receives a publication. With HTTP streaming blocked
// as well, it lands on SSE emulation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

import {
  REPO_ROOT, compact, launchBrowser, publish, startHerald, tail, waitFor,
} from './helpers.mjs';

const API_KEY = 'K';
// The SDK's browser bundle, from the SDK test suite's node_modules
// (scripts/install-test-deps.sh installs it).
const SDK_BUNDLE = path.join(REPO_ROOT, 'tests', 'sdk', 'node', 'node_modules', 'centrifuge', 'dist', 'centrifuge.js');

const scenarios = [
  { blocked: ['websocket'], want: 'http_stream' },
  { blocked: ['websocket', 'http_stream'], want: 'sse' },
];

for (const { blocked, want } of scenarios) {
  test(`centrifuge with ${blocked.join(' and ')} blocked falls back to ${want} and receives`, { timeout: 60_000 }, async (t) => {
    assert.ok(existsSync(SDK_BUNDLE), `${SDK_BUNDLE} is missing: run scripts/install-test-deps.sh`);
    const herald = await startHerald({
      args: ['--allow-anonymous', '--allow-anonymous-connect', '--api-key', API_KEY],
    });
    t.after(() => herald.stop());
    const browser = await launchBrowser();
    t.after(() => browser.close());
    const { page } = browser;

    const diagnostics = async (what) => {
      let s;
      try {
        s = await page.evaluate(() => window.fallback);
      } catch (err) { s = { error: err.message }; }
      return `${what}\n--- page state ---\n${compact(s)}\n` +
        `--- browser console ---\n${browser.consoleLines.join('\n')}\n` +
        `--- herald (${herald.cmdline}) ---\n${tail(herald.logs())}`;
    };

    // A proxy that refuses the HTTP streaming request; WebSockets are refused in
    // the page below (request interception does not see WebSocket handshakes).
    if (blocked.includes('http_stream')) {
      await page.route('**/connection/http_stream', (route) => route.abort('connectionrefused'));
    }
    const health = await page.goto(`${herald.baseUrl}/healthz`);
    assert.equal(health.status(), 200);
    await page.addScriptTag({ content: readFileSync(SDK_BUNDLE, 'utf8') });

    await page.evaluate(({ base }) => {
      // Every WebSocket fails to open, as when an intermediary blocks upgrades.
      class BlockedWebSocket {
        constructor(url) {
          this.url = url;
          this.readyState = 0;
          setTimeout(() => {
            this.readyState = 3;
            this.onerror?.(new Event('error'));
            this.onclose?.({ code: 1006, reason: '', wasClean: false });
          }, 10);
        }
        send() { throw new Error('not open'); }
        close() {}
      }
      window.WebSocket = BlockedWebSocket;
      const state = { transport: null, errors: [], pubs: [], subscribed: false };
      window.fallback = state;
      const ws = base.replace(/^http/, 'ws');
      const client = new Centrifuge([
        { transport: 'websocket', endpoint: `${ws}/connection/websocket` },
        { transport: 'http_stream', endpoint: `${base}/connection/http_stream` },
        { transport: 'sse', endpoint: `${base}/connection/sse` },
      ], { websocket: BlockedWebSocket, minReconnectDelay: 100, maxReconnectDelay: 500 });
      client.on('connected', (ctx) => { state.transport = ctx.transport; });
      client.on('error', (ctx) => { state.errors.push({ type: ctx.type, transport: ctx.transport, message: ctx.error?.message }); });
      const sub = client.newSubscription('news');
      sub.on('subscribed', () => { state.subscribed = true; });
      sub.on('publication', (ctx) => { state.pubs.push(ctx.data); });
      sub.subscribe();
      client.connect();
      window.client = client;
    }, { base: herald.baseUrl });

    const subscribed = await waitFor(
      () => page.evaluate(() => window.fallback.subscribed),
      { timeoutMs: 20_000 },
    );
    if (!subscribed) assert.fail(await diagnostics(`not subscribed over a fallback within 20 s`));
    const state = await page.evaluate(() => window.fallback);
    assert.equal(state.transport, want, await diagnostics(`connected over ${state.transport}, want ${want}`));
    assert.ok(
      state.errors.some((e) => e.transport === 'websocket'),
      await diagnostics('the SDK tried the WebSocket first'),
    );

    await publish(herald, API_KEY, 'news', { hello: 'fallback' });
    const got = await waitFor(
      () => page.evaluate(() => window.fallback.pubs.length >= 1),
      { timeoutMs: 10_000 },
    );
    if (!got) assert.fail(await diagnostics('no publication over the fallback within 10 s'));
    const pubs = await page.evaluate(() => window.fallback.pubs);
    assert.deepEqual(pubs, [{ hello: 'fallback' }], await diagnostics('wrong publications'));
    await page.evaluate(() => window.client.disconnect());
  });
}
