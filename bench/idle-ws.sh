#!/usr/bin/env bash
# Memory per idle WebSocket connection: builds release binaries, starts Herald on a
# loopback port, holds idle WebSockets in steps with herald-bench and reports the
# growth of Herald's resident memory per connection (least-squares slope). Each
# connection upgrades with a hand-written HTTP/1.1 request, sends the Centrifuge
# protocol's {"id":1,"connect":{}} and {"id":2,"subscribe":{"channel":"bench-N"}},
# waits for both replies, then stays idle, answering the server's pings ({} with {})
# as SDK clients do. Not a test: it prints figures and always stops the server it
# started.
#
#   bench/idle-ws.sh                      # 10,000 WebSockets over plain HTTP/1.1
#   TLS=1 bench/idle-ws.sh                # over TLS (a fresh self-signed certificate)
#   STEPS=500,1000,2000 bench/idle-ws.sh  # other steps
#
# Environment:
#   PORT      Herald's port (default 18000)
#   STEPS     connection counts measured (default 2000,4000,6000,8000,10000)
#   CHANNELS  connections are spread over this many channels (default 100)
#   SETTLE    wait before each memory reading (default 2s)
#   WORKERS   processes holding the connections, ≤ ~19,000 each (default 1)
#   PING      Herald's --client-ping-interval (default: Herald's own, 25s)
#   TLS       1 for wss://
#   OUT       JSON results (default target/bench/idle-ws[-tls].json); the server's
#             log goes beside it
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PORT="${PORT:-18000}"
STEPS="${STEPS:-2000,4000,6000,8000,10000}"
CHANNELS="${CHANNELS:-100}"
SETTLE="${SETTLE:-2s}"
WORKERS="${WORKERS:-1}"
PING="${PING:-}"
TLS="${TLS:-0}"
SUFFIX=""
[ "$TLS" = 1 ] && SUFFIX="-tls"
OUT="${OUT:-${CARGO_TARGET_DIR:-target}/bench/idle-ws$SUFFIX.json}"
WORK="$(dirname "$OUT")"
mkdir -p "$WORK"

# Each held connection is an open file, in herald-bench and in Herald alike.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open files: $(ulimit -n)" >&2

cargo build --release -p herald -p herald-bench
BIN="${CARGO_TARGET_DIR:-target}/release"

# Anonymous connections, and anonymous subscribers in the default namespace.
HERALD_ARGS=(--listen "127.0.0.1:$PORT" --allow-anonymous-connect --allow-anonymous)
[ -n "$PING" ] && HERALD_ARGS+=(--client-ping-interval "$PING")
SCHEME=ws
if [ "$TLS" = 1 ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
    HERALD_ARGS+=(--tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem")
    SCHEME=wss
fi

HERALD_LOG=warn "$BIN/herald" "${HERALD_ARGS[@]}" 2>"$WORK/herald-ws$SUFFIX.log" &
HERALD_PID=$!
stop() {
    kill "$HERALD_PID" 2>/dev/null || true
    wait "$HERALD_PID" 2>/dev/null || true
}
trap stop EXIT

HEALTH="http${SCHEME#ws}://127.0.0.1:$PORT/healthz"
for _ in $(seq 100); do
    curl -ksf "$HEALTH" >/dev/null && break
    kill -0 "$HERALD_PID" 2>/dev/null || { cat "$WORK/herald-ws$SUFFIX.log" >&2; exit 1; }
    sleep 0.1
done

"$BIN/herald-bench" idle \
    --url "$SCHEME://127.0.0.1:$PORT/connection/websocket" \
    --channel "bench-{i%$CHANNELS}" \
    --steps "$STEPS" --settle "$SETTLE" --workers "$WORKERS" \
    --server-pid "$HERALD_PID" --json "$OUT"

echo "results: $OUT" >&2
