// Shared helpers for Herald's browser tests: start the real herald binary on a
// free loopback port, launch Debian's headless Chromium through playwright-core,
// sign HS256 JWTs, make self-signed certs, and call Herald's server API.
//
// Nothing here downloads a browser: Chromium is /usr/bin/chromium (Debian's).

import { spawn, execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '..', '..');

/** Path of the herald binary under test: $HERALD_BIN, else target/release/herald. */
export function heraldBin() {
  const bin = process.env.HERALD_BIN
    ? path.resolve(process.env.HERALD_BIN)
    : path.join(REPO_ROOT, 'target', 'release', 'herald');
  if (!existsSync(bin)) {
    throw new Error(
      `herald binary not found at ${bin}; build it with ` +
        '`cargo build --release -p herald` or set HERALD_BIN',
    );
  }
  return bin;
}

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

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Creates a fresh temp dir under the OS temp dir (the caller removes it). */
export function tempDir(prefix) {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * Generates a self-signed P-256 cert for localhost / 127.0.0.1 with openssl.
 * Returns { dir, cert, key, cleanup }.
 */
export function makeSelfSignedCert() {
  const dir = tempDir('herald-tls-');
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  try {
    execFileSync(
      'openssl',
      [
        'req', '-x509',
        '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
        '-nodes', '-days', '1',
        '-subj', '/CN=localhost',
        '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-keyout', key, '-out', cert,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    const detail = err.code === 'ENOENT'
      ? 'openssl is not installed (run scripts/install-test-deps.sh)'
      : `${err.message}\n${err.stderr ?? ''}`;
    throw new Error(`cannot generate a self-signed certificate: ${detail}`);
  }
  return { dir, cert, key, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** base64url of a Buffer or string. */
function b64url(buf) {
  return Buffer.from(buf).toString('base64url');
}

/** Signs an HS256 JWT with `secret`. */
export function signJwt(claims, secret) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${sig}`;
}

/**
 * One HTTP(S) request from node. TLS certificates are not verified (tests use
 * self-signed certs). Resolves { status, headers, text, json } (json is
 * undefined when the body is not JSON).
 */
export function request(url, { method = 'GET', headers = {}, body, timeoutMs = 10_000 } = {}) {
  const u = new URL(url);
  const lib = u.protocol === 'https:' ? https : http;
  const payload = body === undefined ? undefined
    : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  const hdrs = { ...headers };
  if (payload !== undefined) {
    hdrs['content-length'] = Buffer.byteLength(payload);
    if (!Object.keys(hdrs).some((h) => h.toLowerCase() === 'content-type')) {
      hdrs['content-type'] = 'application/json';
    }
  }
  return new Promise((resolve, reject) => {
    const req = lib.request(
      u,
      { method, headers: hdrs, rejectUnauthorized: false, agent: false, timeout: timeoutMs },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json;
          try { json = JSON.parse(text); } catch { json = undefined; }
          resolve({ status: res.statusCode, headers: res.headers, text, json });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${url} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/**
 * Starts herald with `args` (plus `--listen 127.0.0.1:PORT`) and waits until
 * GET /healthz answers 200 (at most `readyTimeoutMs`). HERALD_* variables of
 * the test's own environment are not passed on, so only `args`/`env` count.
 *
 * Returns { port, baseUrl, proc, logs(), stop() }.
 */
export async function startHerald({ args = [], env = {}, tls = false, readyTimeoutMs = 20_000 } = {}) {
  const bin = heraldBin();
  const port = await freePort();
  const baseUrl = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const childEnv = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('HERALD_')),
  );
  if (!childEnv.RUST_LOG) childEnv.RUST_LOG = 'info';
  Object.assign(childEnv, env);

  const fullArgs = ['--listen', `127.0.0.1:${port}`, ...args];
  const proc = spawn(bin, fullArgs, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const MAX = 256 * 1024;
  const keep = (chunk) => {
    output += chunk.toString('utf8');
    if (output.length > MAX) output = output.slice(output.length - MAX);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    proc.on('exit', (code, signal) => { exited = { code, signal }; resolve(exited); });
    proc.on('error', (err) => { exited = { error: err }; resolve(exited); });
  });

  const cmdline = [bin, ...fullArgs].join(' ');
  const logs = () => output;
  const stop = async () => {
    if (exited) return exited;
    proc.kill('SIGTERM');
    let timer;
    const res = await Promise.race([
      exitPromise,
      new Promise((resolve) => { timer = setTimeout(() => resolve(null), 5_000); }),
    ]);
    clearTimeout(timer);
    if (res) return res;
    proc.kill('SIGKILL');
    return exitPromise;
  };

  const deadline = Date.now() + readyTimeoutMs;
  let lastErr = 'no answer yet';
  for (;;) {
    if (exited) {
      throw new Error(
        `herald exited before it was ready (${JSON.stringify(exited)}, ${exited.error ?? ''})\n` +
          `command: ${cmdline}\n--- herald output ---\n${output}`,
      );
    }
    try {
      const res = await request(`${baseUrl}/healthz`, { timeoutMs: 1_000 });
      if (res.status === 200) break;
      lastErr = `GET /healthz -> ${res.status} ${res.text.slice(0, 200)}`;
    } catch (err) {
      lastErr = err.message;
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(
        `herald not ready after ${readyTimeoutMs} ms (last: ${lastErr})\n` +
          `command: ${cmdline}\n--- herald output ---\n${output}`,
      );
    }
    await sleep(100);
  }
  return { port, baseUrl, proc, cmdline, logs, stop };
}

/** POST /api/<method> with the API key; returns the parsed response or throws. */
export async function api(herald, method, body, apiKey) {
  const res = await request(`${herald.baseUrl}/api/${method}`, {
    method: 'POST',
    headers: { 'x-api-key': apiKey },
    body,
  });
  if (res.status !== 200 || !res.json || res.json.error) {
    throw new Error(
      `POST /api/${method} ${JSON.stringify(body)} -> ${res.status} ${res.text}`,
    );
  }
  return res.json;
}

/** Publishes `data` to `channel`; returns { offset, epoch }. */
export async function publish(herald, apiKey, channel, data) {
  const res = await api(herald, 'publish', { channel, data }, apiKey);
  if (!res.result || typeof res.result.offset !== 'number') {
    throw new Error(`publish to ${channel}: unexpected answer ${JSON.stringify(res)}`);
  }
  return res.result;
}

/**
 * Launches Debian's headless Chromium with a fresh profile.
 * Returns { context, page, close() }.
 */
export async function launchBrowser({ ignoreCertErrors = false } = {}) {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(`${CHROMIUM_PATH} not found; run scripts/install-test-deps.sh`);
  }
  const userDataDir = tempDir('herald-chromium-');
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

/** Polls `fn` (async, returns truthy when done) until true or `timeoutMs`; returns the last value. */
export async function waitFor(fn, { timeoutMs = 10_000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v || Date.now() > deadline) return v;
    await sleep(intervalMs);
  }
}

/** Formats herald's log tail for an assertion message. */
export function tail(text, lines = 80) {
  const all = text.split('\n');
  return all.slice(Math.max(0, all.length - lines)).join('\n');
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
