#!/usr/bin/env bash
# CI smoke test of herald-bench against Herald: starts Herald on a free loopback
# port, runs a short fanout over the Centrifuge WebSocket and one over SSE (two
# rates, 2 s each, 200 subscribers), the same over HTTP/2 (h2c; one rate), a
# small storm, and a small storm over the WebSocket that connects and subscribes
# in one request (uni_websocket, a token per client in the URL: {token}), and
# fails loudly if any delivery is lost, duplicated or missing.
# Not a measurement: the figures it prints are a sanity check on a shared CI
# machine. Always stops the server it started.
#
#   bench/smoke.sh
#
# Environment:
#   HERALD_BIN        herald binary (default: ${CARGO_TARGET_DIR:-target}/release/herald)
#   HERALD_BENCH_BIN  herald-bench binary (default: beside it)
#                     Either one not given is built first (cargo build --release).
#   OUT               results, charts and the server's log
#                     (default: ${CARGO_TARGET_DIR:-target}/bench/smoke)
#   PORT              Herald's loopback port (default: a free one)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

RELEASE="${CARGO_TARGET_DIR:-$ROOT/target}/release"
BUILD=()
[ -n "${HERALD_BIN:-}" ] || BUILD+=(-p herald)
[ -n "${HERALD_BENCH_BIN:-}" ] || BUILD+=(-p herald-bench)
# Incremental: cheap when the build stage already built herald.
[ "${#BUILD[@]}" -eq 0 ] || cargo build --release "${BUILD[@]}"
HERALD_BIN="${HERALD_BIN:-$RELEASE/herald}"
BENCH="${HERALD_BENCH_BIN:-$RELEASE/herald-bench}"
OUT="${OUT:-${CARGO_TARGET_DIR:-$ROOT/target}/bench/smoke}"
mkdir -p "$OUT"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
PORT="${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
KEY="smoke-$RANDOM$RANDOM"
TOKEN_SECRET="smoke-token-$RANDOM$RANDOM"
LOG="$OUT/herald.log"

# shellcheck source=bench/start-herald.sh
. "$ROOT/bench/start-herald.sh"
start_herald "$LOG" "http://127.0.0.1:$PORT/healthz" "$HERALD_BIN" --listen "127.0.0.1:$PORT" \
    --api-key "$KEY" --allow-anonymous --allow-anonymous-connect --token-hmac-secret "$TOKEN_SECRET"

PUBLISH=(--publish-url "http://127.0.0.1:$PORT/api/publish"
    --publish-body '{"channel":"{channel}","data":"{payload}"}'
    --publish-header "X-API-Key: $KEY"
    --server-pid "$HERALD_PID" --require-no-loss)
FANOUT=(--subscribers 200 --channels 4 --rates 200,1000 --duration 2s --warmup 500ms
    --drain-timeout 5s)
H2_FANOUT=(--http 2 --subscribers 200 --channels 4 --rates 1000 --duration 2s --warmup 500ms
    --drain-timeout 5s)

PASSED=0
FAILED=()
# check NAME COMMAND...: runs one benchmark; a failure is reported at the end.
check() {
    local name="$1"
    shift
    echo "==> $name" >&2
    if "$@"; then
        PASSED=$((PASSED + 1))
    else
        FAILED+=("$name")
        echo "==> $name FAILED" >&2
    fi
}

check "fanout, Centrifuge WebSocket" \
    "$BENCH" fanout --url "ws://127.0.0.1:$PORT/connection/websocket" --protocol centrifuge \
    "${FANOUT[@]}" "${PUBLISH[@]}" --json "$OUT/fanout-centrifuge.json" \
    --chart "$OUT/fanout-centrifuge.svg"
check "fanout, SSE" \
    "$BENCH" fanout --url "http://127.0.0.1:$PORT/events?channel={channel}" --protocol sse \
    "${FANOUT[@]}" "${PUBLISH[@]}" --json "$OUT/fanout-sse.json" --chart "$OUT/fanout-sse.svg"
check "fanout, Centrifuge WebSocket over HTTP/2 (h2c, extended CONNECT)" \
    "$BENCH" fanout --url "ws://127.0.0.1:$PORT/connection/websocket" --protocol centrifuge \
    "${H2_FANOUT[@]}" "${PUBLISH[@]}" --json "$OUT/fanout-centrifuge-h2.json"
check "fanout, SSE over HTTP/2 (h2c, 8 streams per connection)" \
    "$BENCH" fanout --url "http://127.0.0.1:$PORT/events?channel={channel}" --protocol sse \
    "${H2_FANOUT[@]}" --streams-per-connection 8 "${PUBLISH[@]}" \
    --json "$OUT/fanout-sse-h2.json"
check "storm, Centrifuge WebSocket" \
    "$BENCH" storm --url "ws://127.0.0.1:$PORT/connection/websocket" --protocol centrifuge \
    --subscribers 1000 --channels 10 --workers 2 "${PUBLISH[@]}" \
    --json "$OUT/storm-centrifuge.json"
# cf_connect={"token":"{token}"}, URL-encoded around the placeholder.
UNI_URL="ws://127.0.0.1:$PORT/connection/uni_websocket?cf_connect=%7B%22token%22%3A%22{token}%22%7D"
check "storm, WebSocket in one request (uni_websocket, a token per client)" \
    "$BENCH" storm --url "$UNI_URL" --protocol ws --token-secret "$TOKEN_SECRET" \
    --subscribers 300 --channels 10 --workers 2 "${PUBLISH[@]}" \
    --json "$OUT/storm-uni-websocket.json"
kill -0 "$HERALD_PID" 2>/dev/null || FAILED+=("herald exited during the benchmarks")

echo "results in $OUT; server log $LOG" >&2
echo "bench: $PASSED passed, ${#FAILED[@]} failed"
if [ "${#FAILED[@]}" -gt 0 ]; then
    printf 'bench smoke FAILED: %s\n' "${FAILED[@]}" >&2
    exit 1
fi
