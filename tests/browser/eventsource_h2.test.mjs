// Over TLS Chromium talks HTTP/2 to Herald (ALPN h2), so one page can hold 10
// EventSources at once — over HTTP/1.1 the browser would stop at 6 per origin.
// Each stream gets the one publication sent to its channel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  compact, launchBrowser, makeSelfSignedCert, publish, startHerald, tail, waitFor,
} from './helpers.mjs';

const API_KEY = 'K';
const N = 10;

test('10 anonymous EventSources share one h2 connection over TLS', { timeout: 120_000 }, async (t) => {
  const tls = makeSelfSignedCert();
  t.after(() => tls.cleanup());
  const herald = await startHerald({
    tls: true,
    args: [
      '--tls-cert', tls.cert,
      '--tls-key', tls.key,
      '--allow-anonymous',
      '--api-key', API_KEY,
    ],
  });
  t.after(() => herald.stop());
  const browser = await launchBrowser({ ignoreCertErrors: true });
  t.after(() => browser.close());
  const { page } = browser;

  const diagnostics = async (what) => {
    let s;
    try {
      s = await page.evaluate(() => ({
        streams: (window.streams || []).map((x) => ({
          channel: x.channel, readyState: x.es.readyState,
          connected: x.connected, pubs: x.pubs, errors: x.errors,
        })),
        resources: performance.getEntriesByType('resource')
          .map((r) => ({ name: r.name, nextHopProtocol: r.nextHopProtocol })),
        navigation: performance.getEntriesByType('navigation')
          .map((r) => ({ name: r.name, nextHopProtocol: r.nextHopProtocol })),
      }));
    } catch (err) { s = { error: err.message }; }
    return `${what}\n--- page state ---\n${compact(s)}\n` +
      `--- browser console ---\n${browser.consoleLines.join('\n')}\n` +
      `--- herald (${herald.cmdline}) ---\n${tail(herald.logs())}`;
  };

  const health = await page.goto(`${herald.baseUrl}/healthz`);
  assert.equal(health.status(), 200);
  // Fail fast and clearly when ALPN did not pick h2 (the EventSource part
  // would then stall at 6 connections and only time out).
  const navProto = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
  assert.equal(navProto, 'h2', await diagnostics(`page was loaded over ${navProto}, want h2 (ALPN)`));

  const channels = Array.from({ length: N }, (_, i) => `h2-ch${i}`);
  await page.evaluate((channels) => {
    window.streams = channels.map((channel) => {
      const es = new EventSource(`/events?channel=${encodeURIComponent(channel)}`);
      const s = { channel, es, connected: 0, pubs: [], errors: 0 };
      es.addEventListener('connected', () => { s.connected += 1; });
      es.addEventListener('publication', (e) => { s.pubs.push(JSON.parse(e.data)); });
      es.addEventListener('error', () => { s.errors += 1; });
      return s;
    });
  }, channels);

  const allConnected = await waitFor(
    () => page.evaluate(() => window.streams.every((s) => s.connected >= 1)),
    { timeoutMs: 15_000 },
  );
  if (!allConnected) assert.fail(await diagnostics(`not all ${N} EventSources got \`connected\` within 15 s`));

  for (let i = 0; i < N; i++) {
    await publish(herald, API_KEY, channels[i], { i });
  }

  const allGot = await waitFor(
    () => page.evaluate(() => window.streams.every((s) => s.pubs.length >= 1)),
    { timeoutMs: 10_000 },
  );
  await sleep(300); // let any duplicate arrive before judging
  if (!allGot) assert.fail(await diagnostics(`not all ${N} EventSources got their publication within 10 s`));

  const streams = await page.evaluate(() => window.streams.map((s) => ({ channel: s.channel, pubs: s.pubs })));
  for (let i = 0; i < N; i++) {
    const { channel, pubs } = streams[i];
    assert.equal(pubs.length, 1, await diagnostics(`${channel} got ${pubs.length} publications, want 1`));
    assert.equal(pubs[0].channel, channel, await diagnostics(`${channel} got a publication of another channel`));
    assert.deepEqual(pubs[0].data, { i }, await diagnostics(`${channel} got wrong data`));
  }

  const proto = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
  assert.equal(proto, 'h2', await diagnostics(`page was loaded over ${proto}, want h2`));
});
