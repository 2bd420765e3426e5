#!/usr/bin/env bash
# Memory per idle SSE connection: builds release binaries, starts Herald on a loopback
# port, holds idle SSE streams in steps with herald-bench and reports the growth of
# Herald's resident memory per connection (least-squares slope). Not a test: it
# prints figures and always stops the server it started.
#
#   bench/idle-sse.sh                      # 10,000 streams over plain HTTP/1.1
#   TLS=1 bench/idle-sse.sh                # over TLS (a fresh self-signed certificate)
#   STEPS=500,1000,2000 bench/idle-sse.sh  # other steps
#
# Environment:
#   PORT      Herald's port (default 18000)
#   STEPS     connection counts measured (default 2000,4000,6000,8000,10000)
#   CHANNELS  streams are spread over this many channels (default 100)
#   SETTLE    wait before each memory reading (default 2s)
#   WORKERS   processes holding the connections, ≤ ~19,000 each (default 1)
#   TLS       1 for HTTPS
#   OUT       JSON results (default target/bench/idle-sse[-tls].json); the server's
#             log goes beside it
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PORT="${PORT:-18000}"
STEPS="${STEPS:-2000,4000,6000,8000,10000}"
CHANNELS="${CHANNELS:-100}"
SETTLE="${SETTLE:-2s}"
WORKERS="${WORKERS:-1}"
TLS="${TLS:-0}"
SUFFIX=""
[ "$TLS" = 1 ] && SUFFIX="-tls"
OUT="${OUT:-${CARGO_TARGET_DIR:-target}/bench/idle-sse$SUFFIX.json}"
WORK="$(dirname "$OUT")"
mkdir -p "$WORK"

# Each held connection is an open file, in herald-bench and in Herald alike.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open files: $(ulimit -n)" >&2

cargo build --release -p herald -p herald-bench
BIN="${CARGO_TARGET_DIR:-target}/release"

HERALD_ARGS=(--listen "127.0.0.1:$PORT" --allow-anonymous)
SCHEME=http
if [ "$TLS" = 1 ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
    HERALD_ARGS+=(--tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem")
    SCHEME=https
fi

HERALD_LOG=warn "$BIN/herald" "${HERALD_ARGS[@]}" 2>"$WORK/herald$SUFFIX.log" &
HERALD_PID=$!
stop() {
    kill "$HERALD_PID" 2>/dev/null || true
    wait "$HERALD_PID" 2>/dev/null || true
}
trap stop EXIT

for _ in $(seq 100); do
    curl -ksf "$SCHEME://127.0.0.1:$PORT/healthz" >/dev/null && break
    kill -0 "$HERALD_PID" 2>/dev/null || { cat "$WORK/herald$SUFFIX.log" >&2; exit 1; }
    sleep 0.1
done

"$BIN/herald-bench" idle \
    --url "$SCHEME://127.0.0.1:$PORT/events?channel=bench-{i%$CHANNELS}" \
    --steps "$STEPS" --settle "$SETTLE" --workers "$WORKERS" \
    --server-pid "$HERALD_PID" --json "$OUT"

echo "results: $OUT" >&2
