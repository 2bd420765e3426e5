// The npm `centrifuge` SDK in Chromium over a real WebSocket: ws:// on HTTP/1.1,
// and wss:// where Chrome carries the WebSocket inside the page's HTTP/2
// connection (RFC 8441 extended CONNECT). Herald's metrics must show the
// WebSocket arriving over HTTP/2 — proof it was not a separate HTTP/1.1 upgrade.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

import {
  REPO_ROOT, compact, launchBrowser, makeSelfSignedCert, publish, request, startHerald, tail, waitFor,
} from './helpers.mjs';

const API_KEY = 'K';
const SDK_BUNDLE = path.join(REPO_ROOT, 'tests', 'sdk', 'node', 'node_modules', 'centrifuge', 'dist', 'centrifuge.js');

function websocketConnections(metrics, httpVersion) {
  const line = metrics.split('\n').find((l) =>
    l.startsWith('herald_connections_accepted_total{') &&
    l.includes('transport="websocket"') && l.includes(`http_version="${httpVersion}"`));
  return line ? Number(line.split(' ').pop()) : 0;
}

for (const { tls, httpVersion, page: pageProtocol } of [
  { tls: false, httpVersion: '1.1', page: 'http/1.1' },
  { tls: true, httpVersion: '2', page: 'h2' },
]) {
  test(`centrifuge over ${tls ? 'wss:// (HTTP/2 extended CONNECT)' : 'ws:// (HTTP/1.1)'} subscribes and receives`, { timeout: 60_000 }, async (t) => {
    assert.ok(existsSync(SDK_BUNDLE), `${SDK_BUNDLE} is missing: run scripts/install-test-deps.sh`);
    const cert = tls ? makeSelfSignedCert() : null;
    if (cert) t.after(() => cert.cleanup());
    const herald = await startHerald({
      tls,
      args: [
        '--allow-anonymous', '--allow-anonymous-connect', '--api-key', API_KEY,
        ...(cert ? ['--tls-cert', cert.cert, '--tls-key', cert.key] : []),
      ],
    });
    t.after(() => herald.stop());
    const browser = await launchBrowser({ ignoreCertErrors: tls });
    t.after(() => browser.close());
    const { page } = browser;
    const diagnostics = async (what) => {
      let s;
      try { s = await page.evaluate(() => window.state); } catch (err) { s = { error: err.message }; }
      return `${what}\n--- page state ---\n${compact(s)}\n--- browser console ---\n` +
        `${browser.consoleLines.join('\n')}\n--- herald ---\n${tail(herald.logs())}`;
    };

    const health = await page.goto(`${herald.baseUrl}/healthz`);
    assert.equal(health.status(), 200);
    await page.addScriptTag({ content: readFileSync(SDK_BUNDLE, 'utf8') });
    await page.evaluate((wsUrl) => {
      window.state = { subscribed: false, got: [], transport: null, errors: [] };
      const client = new Centrifuge(wsUrl);
      client.on('connected', (ctx) => { window.state.transport = ctx.transport; });
      client.on('error', (ctx) => window.state.errors.push(String(ctx.error && ctx.error.message)));
      const sub = client.newSubscription('news');
      sub.on('subscribed', () => { window.state.subscribed = true; });
      sub.on('publication', (ctx) => window.state.got.push(ctx.data));
      sub.subscribe();
      client.connect();
    }, `${herald.baseUrl.replace(/^http/, 'ws')}/connection/websocket`);

    const subscribed = await waitFor(() => page.evaluate(() => window.state.subscribed), { timeoutMs: 15_000 });
    if (!subscribed) assert.fail(await diagnostics('the SDK did not subscribe within 15 s'));
    await publish(herald, API_KEY, 'news', { hello: 'browser' });
    const received = await waitFor(() => page.evaluate(() => window.state.got.length >= 1), { timeoutMs: 10_000 });
    if (!received) assert.fail(await diagnostics('the publication did not arrive within 10 s'));
    const state = await page.evaluate(() => window.state);
    assert.deepEqual(state.got, [{ hello: 'browser' }]);
    assert.equal(state.transport, 'websocket');
    const pageProto = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
    assert.equal(pageProto, pageProtocol);

    const metrics = await request(`${herald.baseUrl}/metrics`);
    const count = websocketConnections(metrics.text, httpVersion);
    assert.ok(count >= 1, await diagnostics(
      `herald_connections_accepted_total{transport="websocket",http_version="${httpVersion}"} is ${count}, expected >= 1`));
    if (tls) {
      assert.equal(websocketConnections(metrics.text, '1.1'), 0,
        'over HTTPS with h2 the WebSocket must not arrive as a separate HTTP/1.1 upgrade');
    }
  });
}
