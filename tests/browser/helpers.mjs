// Helpers for Herald's browser tests: launch Debian's headless Chromium
// through playwright-core with a fresh profile, plus the harness shared with
// the SDK suite (tests/support/herald.mjs: start the real herald binary on a
// free loopback port, sign HS256 JWTs, make self-signed certs, call Herald's
// server API), re-exported here for the tests.
//
// Nothing here downloads a browser: Chromium is /usr/bin/chromium (Debian's).

import { existsSync, rmSync } from 'node:fs';

import { chromium } from 'playwright-core';

import * as shared from '../support/herald.mjs';

export {
  REPO_ROOT, api, freePort, heraldBin, makeSelfSignedCert, request, signJwt, startHerald,
  tail, tempDir, waitFor,
} from '../support/herald.mjs';

export const CHROMIUM_PATH = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Publishes `data` to `channel` with the API key `apiKey`; returns { offset, epoch }. */
export function publish(herald, apiKey, channel, data) {
  return shared.publish(herald, channel, data, apiKey);
}

/**
 * Launches Debian's headless Chromium with a fresh profile.
 * Returns { context, page, close() }.
 */
export async function launchBrowser({ ignoreCertErrors = false } = {}) {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(`${CHROMIUM_PATH} not found; run scripts/install-test-deps.sh`);
  }
  const userDataDir = shared.tempDir('herald-chromium-');
  const args = [...CHROMIUM_ARGS];
  if (ignoreCertErrors) args.push('--ignore-certificate-errors');
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM_PATH,
      headless: true,
      args,
      ignoreHTTPSErrors: ignoreCertErrors,
      timeout: 30_000,
    });
  } catch (err) {
    rmSync(userDataDir, { recursive: true, force: true });
    throw err;
  }
  const page = context.pages()[0] ?? (await context.newPage());
  const consoleLines = [];
  page.on('console', (msg) => consoleLines.push(`[console.${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => consoleLines.push(`[pageerror] ${err.message}`));
  const close = async () => {
    try {
      await context.close();
    } finally {
      rmSync(userDataDir, { recursive: true, force: true });
    }
  };
  return { context, page, consoleLines, close };
}

/** One line per top-level key (or array item): readable diagnostics without a wall of JSON. */
export function compact(value) {
  if (Array.isArray(value)) return value.map((v) => JSON.stringify(v)).join('\n');
  if (value && typeof value === 'object') {
    return Object.entries(value).map(([k, v]) => {
      if (Array.isArray(v) && v.length && typeof v[0] === 'object') {
        return `${k}:\n${v.map((x) => `  ${JSON.stringify(x)}`).join('\n')}`;
      }
      return `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`;
    }).join('\n');
  }
  return String(value);
}
