#!/usr/bin/env bash
# Memory per idle connection: builds release binaries, starts Herald on a loopback
# port, holds idle SSE streams or WebSockets in steps with herald-bench and reports
# the growth of Herald's resident memory per connection (least-squares slope). Not
# a test: it prints figures and always stops the server it started.
#
#   bench/idle.sh                          # 10,000 SSE streams over plain HTTP/1.1
#   TRANSPORT=ws bench/idle.sh             # 10,000 WebSockets (connected, subscribed)
#   TLS=1 bench/idle.sh                    # over TLS (a fresh self-signed certificate)
#   STEPS=500,1000,2000 bench/idle.sh      # other steps
#
# Environment:
#   TRANSPORT sse (default) or ws
#   PORT      Herald's port (default 18000)
#   STEPS     connection counts measured (default 2000,4000,6000,8000,10000)
#   CHANNELS  connections are spread over this many channels (default 100)
#   SETTLE    wait before each memory reading (default 2s)
#   WORKERS   processes holding the connections, ≤ ~19,000 each (default 1)
#   PING      Herald's client ping interval for ws (default: Herald's, 25s); the
#             bench answers pings
#   TLS       1 for https:// / wss://
#   OUT       JSON results (default target/bench/idle-<transport>[-tls].json); the
#             server's log goes beside it
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TRANSPORT="${TRANSPORT:-sse}"
PORT="${PORT:-18000}"
STEPS="${STEPS:-2000,4000,6000,8000,10000}"
CHANNELS="${CHANNELS:-100}"
SETTLE="${SETTLE:-2s}"
WORKERS="${WORKERS:-1}"
PING="${PING:-}"
TLS="${TLS:-0}"
case "$TRANSPORT" in
    sse | ws) ;;
    *) echo "TRANSPORT must be sse or ws, not '$TRANSPORT'" >&2; exit 2 ;;
esac
NAME="idle-$TRANSPORT"
[ "$TLS" = 1 ] && NAME="$NAME-tls"
OUT="${OUT:-${CARGO_TARGET_DIR:-target}/bench/$NAME.json}"
WORK="$(dirname "$OUT")"
LOG="$WORK/herald-$NAME.log"
mkdir -p "$WORK"

# Each held connection is an open file, in herald-bench and in Herald alike.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open files: $(ulimit -n)" >&2

cargo build --release -p herald -p herald-bench
BIN="${CARGO_TARGET_DIR:-target}/release"

# Anonymous subscribers in the default namespace (and, for ws, anonymous connects).
HERALD_ARGS=(--listen "127.0.0.1:$PORT" --allow-anonymous)
SCHEME=http
if [ "$TLS" = 1 ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
    HERALD_ARGS+=(--tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem")
    SCHEME=https
fi
if [ "$TRANSPORT" = ws ]; then
    HERALD_ARGS+=(--allow-anonymous-connect)
    [ -n "$PING" ] && HERALD_ARGS+=(--client-ping-interval "$PING")
    TARGET=(--url "${SCHEME/http/ws}://127.0.0.1:$PORT/connection/websocket"
        --channel "bench-{i%$CHANNELS}")
else
    TARGET=(--url "$SCHEME://127.0.0.1:$PORT/events?channel=bench-{i%$CHANNELS}")
fi

# shellcheck source=bench/start-herald.sh
. "$ROOT/bench/start-herald.sh"
start_herald "$LOG" "$SCHEME://127.0.0.1:$PORT/healthz" "$BIN/herald" "${HERALD_ARGS[@]}"

"$BIN/herald-bench" idle "${TARGET[@]}" \
    --steps "$STEPS" --settle "$SETTLE" --workers "$WORKERS" \
    --server-pid "$HERALD_PID" --json "$OUT"

echo "results: $OUT" >&2
