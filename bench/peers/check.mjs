// Checks one server by hand: subscribes one client, publishes one message over
// HTTP, and waits until the client receives it. Exits 0 on delivery, 1 otherwise.
// Used by bench/race.sh before each benchmark, and to verify the peers by hand.
//
//   node bench/peers/check.mjs PROTOCOL SUBSCRIBE_URL PUBLISH_URL BODY [HEADER]...
//
// PROTOCOL: ws (plain WebSocket: every text message is a delivery), centrifuge
// (Herald's Centrifuge client protocol over WebSocket: connect, subscribe, then a
// push with a publication), sse (text/event-stream: a `data:` line). In the URLs
// and BODY, {channel} is replaced by a fresh channel name and {payload} by a fresh
// payload; HEADER is "Name: value". TLS certificates are not verified.
//
// Needs the npm `ws` package: `npm ci` in tests/sdk/node (found there), or set
// WS_MODULE to its path.
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const WebSocket = require(process.env.WS_MODULE ||
    path.join(here, '../../tests/sdk/node/node_modules/ws'));

const [protocol, subscribeUrl, publishUrl, bodyTemplate, ...headerArgs] = process.argv.slice(2);
if (!protocol || !subscribeUrl || !publishUrl || bodyTemplate === undefined) {
    console.error('usage: check.mjs ws|centrifuge|sse SUBSCRIBE_URL PUBLISH_URL BODY [HEADER]...');
    process.exit(2);
}
const TIMEOUT_MS = Number(process.env.CHECK_TIMEOUT_MS || 5000);
const stamp = `${process.pid}x${Date.now()}`;
const channel = `check-${stamp}`;
const payload = `payload-${stamp}`;
const fill = (t) => t.replaceAll('{channel}', channel).replaceAll('{payload}', payload);

const fail = (why) => {
    console.error(`check ${protocol} ${fill(subscribeUrl)}: FAILED: ${why}`);
    process.exit(1);
};
setTimeout(() => fail(`nothing received within ${TIMEOUT_MS} ms`), TIMEOUT_MS).unref();

function publish() {
    const url = new URL(fill(publishUrl));
    const headers = { 'content-type': 'application/json' };
    for (const h of headerArgs) {
        const at = h.indexOf(':');
        headers[h.slice(0, at).trim().toLowerCase()] = h.slice(at + 1).trim();
    }
    const body = Buffer.from(fill(bodyTemplate));
    headers['content-length'] = body.length;
    const client = url.protocol === 'https:' ? https : http;
    const req = client.request(url, { method: 'POST', headers, rejectUnauthorized: false }, (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => {
            if (res.statusCode >= 300) fail(`publish answered ${res.statusCode}: ${text}`);
        });
    });
    req.on('error', (e) => fail(`publish: ${e.message}`));
    req.end(body);
}

const done = (how) => {
    console.log(`check ${protocol} ${fill(subscribeUrl)}: ok (${how})`);
    process.exit(0);
};
// A subscription is live on the server shortly after the client sees its reply;
// Pushpin applies the origin's subscribe control message after the 101, so the
// publish waits a little.
const publishSoon = () => setTimeout(publish, 300);

if (protocol === 'sse') {
    const url = new URL(fill(subscribeUrl));
    const client = url.protocol === 'https:' ? https : http;
    const req = client.get(url, { headers: { accept: 'text/event-stream' }, rejectUnauthorized: false }, (res) => {
        if (res.statusCode !== 200) fail(`status ${res.statusCode}`);
        let buffer = '';
        let published = false;
        res.setEncoding('utf8');
        res.on('data', (chunk) => {
            buffer += chunk;
            if (!published) {
                published = true;
                publishSoon();
            }
            if (buffer.split('\n').some((l) => l.startsWith('data:') && l.includes(payload))) {
                done('event received');
            }
        });
    });
    req.on('error', (e) => fail(e.message));
} else if (protocol === 'ws' || protocol === 'centrifuge') {
    const ws = new WebSocket(fill(subscribeUrl), { rejectUnauthorized: false });
    ws.on('error', (e) => fail(e.message));
    ws.on('close', (code, reason) => fail(`closed ${code} ${reason}`));
    ws.on('open', () => {
        if (protocol === 'ws') {
            publishSoon();
        } else {
            ws.send(JSON.stringify({ id: 1, connect: {} }));
            ws.send(JSON.stringify({ id: 2, subscribe: { channel } }));
        }
    });
    ws.on('message', (data) => {
        const text = data.toString();
        if (protocol === 'ws') {
            if (text.includes(payload)) done('message received');
            return;
        }
        for (const line of text.split('\n').filter(Boolean)) {
            const reply = JSON.parse(line);
            if (reply.error) fail(`reply ${line}`);
            if (reply.id === 2) publishSoon();
            if (reply.id === undefined && JSON.stringify(reply).includes(payload)) done('publication received');
            if (reply.id === undefined && Object.keys(reply).length === 0) ws.send('{}');
        }
    });
} else {
    fail(`unknown protocol ${protocol}`);
}
