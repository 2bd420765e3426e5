// Sanity check of the browser harness itself: Debian's Chromium starts with the
// project's flags and runs script in a page. Needs no herald binary, so a
// failure here points at the machine (chromium install, flags), not at Herald.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { launchBrowser } from './helpers.mjs';

test('headless chromium launches and runs a data: page', { timeout: 60_000 }, async () => {
  const browser = await launchBrowser();
  try {
    const { page } = browser;
    await page.goto('data:text/html,<title>herald</title><p id=x>hello</p>');
    assert.equal(await page.title(), 'herald');
    const text = await page.evaluate(() => document.getElementById('x').textContent);
    assert.equal(text, 'hello');
    const ua = await page.evaluate(() => navigator.userAgent);
    assert.match(ua, /Chrome\/\d+/);
    assert.equal(await page.evaluate(() => typeof EventSource), 'function');
  } finally {
    await browser.close();
  }
});
