#!/usr/bin/env bash
# The race: Herald, nginx + nchan and Pushpin side by side on this machine, in one
# run, with one load tool (herald-bench). Starts each server in turn, runs the
# same workloads against it, stops it, and writes a markdown summary (figures,
# ratios Herald/peer, exact commands, versions, machine) and one JSON per run.
# Not a test: it prints figures. Every server it started is stopped on exit,
# failure or not.
#
#   bench/install-peers.sh                      # once: nginx, nchan, pushpin, zurl
#   bench/race.sh                               # everything (about an hour)
#   QUICK=1 bench/race.sh                       # short version (fewer steps/rates)
#   SERVERS=herald,nchan WORKLOADS=fanout bench/race.sh
#
# Workloads (WORKLOADS, comma-separated):
#   idle    server memory per idle connection: RSS slope over IDLE_STEPS
#           connections, WebSocket and SSE, plain and TLS (IDLE_VARIANTS)
#   fanout  one channel x FANOUT_SUBSCRIBERS, FANOUT_SIZES-byte messages: the highest
#           deliveries/s with p99 <= MAX_P99 and no loss (a ladder of rates), then
#           server CPU per delivery at one offered load common to all servers
#           (each of FANOUT_CPU_DELIVERIES deliveries/s)
#   many    MANY_CHANNELS channels x 1 subscriber, publishes spread over them:
#           the same two figures (ladder, then MANY_CPU_RATE publishes/s)
#   storm   STORM_SUBSCRIBERS clients connecting and subscribing at once: time
#           until all are subscribed. Over ws, Herald also runs ws-one-request:
#           its /connection/uni_websocket with a token per client in the URL
#           (herald-bench's {token}), which connects and subscribes in one request
#           as nchan's and Pushpin's bare WebSockets do; the summary sets it
#           against their ws rows
#
# Environment (defaults in brackets):
#   SERVERS               herald,nchan,pushpin
#   WORKLOADS             idle,fanout,many,storm
#   QUICK                 1 for a short run [0]
#   PROTOCOLS             subscriber transports for fanout/many/storm: ws, sse [ws]
#   OUT                   results directory [target/bench/race]
#   HERALD_ARGS           extra arguments for Herald, e.g. "--write-coalesce 0s" []
#   HERALD_COMMIT         recorded as Herald's commit [git rev-parse HEAD, +dirty
#                         when crates/ differ from it]
#   BUILD                 0 to use already built binaries [1]
#   CHECK                 0 to skip the one-message check of each server before
#                         its workloads (bench/peers/check.mjs, needs node + npm ws) [1]
#   WORKERS               herald-bench processes holding connections [2]
#   IDLE_STEPS            [2000,6000,10000,14000,18000]; QUICK [1000,3000,5000]
#   IDLE_VARIANTS         [ws,sse,ws-tls,sse-tls]
#   FANOUT_SUBSCRIBERS    [1000,10000]
#   FANOUT_SIZES          [64,1024]; QUICK [64]
#   FANOUT_DELIVERIES     ladder in deliveries/s, turned into publish rates per size
#                         [10000,20000,50000,100000,200000,500000,1000000,2000000,5000000]
#                         QUICK [20000,100000,500000,2000000]
#   FANOUT_CPU_DELIVERIES common offered loads for the CPU figure, deliveries/s
#                         [100000,200000]
#   MANY_CHANNELS         [10000]
#   MANY_RATES            publishes/s [500,1000,2000,5000,10000,20000,30000,40000,50000];
#                         QUICK [1000,5000,20000]
#   MANY_CPU_RATE         common offered load for the CPU figure [2000]
#   PUBLISH_CONNECTIONS   keep-alive connections the publisher uses [4]; many
#                         channels: MANY_PUBLISH_CONNECTIONS [16]
#   STORM_SUBSCRIBERS     [10000]    STORM_CHANNELS [100]    STORM_REPEAT [3]; QUICK [1]
#   STORM_CONCURRENCY     connections opened at once in the storm, one storm per
#                         item: all (every subscriber at once) or a number [all,64]
#   SETUP_CONCURRENCY     connections opened at once before idle/fan-out measurements
#                         (not measured) [32]; Pushpin 1.36 answers 502 to some
#                         connections when ~128 or more open at once (see
#                         bench/peers/pushpin/pushpin.conf)
#   DURATION, WARMUP      each rate's measurement and warm-up [10s, 2s]; QUICK [3s, 1s]
#   MAX_P99               latency bound of a passing rate [50ms]
#   LADDER_RETRY          1: when a ladder fails at some rate, run the ladder once
#                         more from that rate on a fresh server (one noisy step on a
#                         shared machine does not end it); the best of both counts [1]
#
# Ports (loopback): Herald 18000; nchan 18080, TLS 18443; Pushpin 18999, TLS 19443,
# publish 18561, its GRIP origin 18090 (internal ZMQ ports 18560-18563).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PEERS="$ROOT/bench/peers"

QUICK="${QUICK:-0}"
SERVERS="${SERVERS:-herald,nchan,pushpin}"
WORKLOADS="${WORKLOADS:-idle,fanout,many,storm}"
PROTOCOLS="${PROTOCOLS:-ws}"
OUT="${OUT:-$ROOT/target/bench/race}"
BUILD="${BUILD:-1}"
CHECK="${CHECK:-1}"
WORKERS="${WORKERS:-2}"
MAX_P99="${MAX_P99:-50ms}"
LADDER_RETRY="${LADDER_RETRY:-1}"
IDLE_VARIANTS="${IDLE_VARIANTS:-ws,sse,ws-tls,sse-tls}"
FANOUT_SUBSCRIBERS="${FANOUT_SUBSCRIBERS:-1000,10000}"
FANOUT_CPU_DELIVERIES="${FANOUT_CPU_DELIVERIES:-100000,200000}"
MANY_CHANNELS="${MANY_CHANNELS:-10000}"
MANY_CPU_RATE="${MANY_CPU_RATE:-2000}"
PUBLISH_CONNECTIONS="${PUBLISH_CONNECTIONS:-4}"
MANY_PUBLISH_CONNECTIONS="${MANY_PUBLISH_CONNECTIONS:-16}"
STORM_SUBSCRIBERS="${STORM_SUBSCRIBERS:-10000}"
STORM_CHANNELS="${STORM_CHANNELS:-100}"
STORM_CONCURRENCY="${STORM_CONCURRENCY:-all,64}"
SETUP_CONCURRENCY="${SETUP_CONCURRENCY:-32}"
if [ "$QUICK" = 1 ]; then
    IDLE_STEPS="${IDLE_STEPS:-1000,3000,5000}"
    FANOUT_SIZES="${FANOUT_SIZES:-64}"
    FANOUT_DELIVERIES="${FANOUT_DELIVERIES:-20000,100000,500000,2000000}"
    MANY_RATES="${MANY_RATES:-1000,5000,20000}"
    STORM_REPEAT="${STORM_REPEAT:-1}"
    DURATION="${DURATION:-3s}"
    WARMUP="${WARMUP:-1s}"
else
    IDLE_STEPS="${IDLE_STEPS:-2000,6000,10000,14000,18000}"
    FANOUT_SIZES="${FANOUT_SIZES:-64,1024}"
    FANOUT_DELIVERIES="${FANOUT_DELIVERIES:-10000,20000,50000,100000,200000,500000,1000000,2000000,5000000}"
    MANY_RATES="${MANY_RATES:-500,1000,2000,5000,10000,20000,30000,40000,50000}"
    STORM_REPEAT="${STORM_REPEAT:-3}"
    DURATION="${DURATION:-10s}"
    WARMUP="${WARMUP:-2s}"
fi

API_KEY="race-$$"
# Herald verifies the tokens herald-bench mints with it (ws-one-request).
TOKEN_SECRET="race-token-$$"
HERALD_PORT=18000
NCHAN_PORT=18080
NCHAN_TLS_PORT=18443
PUSHPIN_PORT=18999
PUSHPIN_TLS_PORT=19443
PUSHPIN_PUBLISH_PORT=18561
ORIGIN_PORT=18090

die() { echo "race: $*" >&2; exit 1; }
say() { echo "race: $*" >&2; }
csv() { tr ',' ' ' <<<"$1"; }

for tool in curl openssl python3; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
case ",$SERVERS," in *,nchan,* | *,pushpin,*)
    command -v nginx >/dev/null || die "nginx missing: run bench/install-peers.sh" ;;
esac
case ",$SERVERS," in *,pushpin,*)
    command -v pushpin >/dev/null || die "pushpin missing: run bench/install-peers.sh" ;;
esac

# Each held connection is an open file, in herald-bench and in the servers alike.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
say "open files: $(ulimit -n)"

if [ "$BUILD" = 1 ]; then
    cargo build --release -p herald -p herald-bench
fi
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
BENCH="$BIN/herald-bench"
[ -x "$BIN/herald" ] && [ -x "$BENCH" ] || die "no $BIN/herald or $BENCH (BUILD=1?)"

mkdir -p "$OUT/json" "$OUT/logs"
RUNS="$OUT/runs.jsonl"
: >"$RUNS"
# A short path: Pushpin's ZMQ ipc:// sockets live under it (108-byte limit).
SCRATCH="$(mktemp -d /tmp/peers-race.XXXXXX)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
    -keyout "$SCRATCH/key.pem" -out "$SCRATCH/cert.pem" 2>/dev/null

# ---------------------------------------------------------------- servers

SERVER_PID=""   # the process tree herald-bench measures (--server-pid)
ORIGIN_PID=""   # Pushpin's GRIP origin (nginx), not part of the measured tree
SERVER_TLS=""
SERVER_NAME=""
STARTS=0        # servers started so far: names the saved logs

descendants() {
    local pid
    for pid in $(pgrep -P "$1" 2>/dev/null); do
        echo "$pid"
        descendants "$pid"
    done
}

# Stops one process tree we started: TERM to the top, then KILL to anything of
# that tree still alive after 10 s.
stop_tree() {
    local top="$1" tree pid
    [ -n "$top" ] || return 0
    tree="$top $(descendants "$top" | tr '\n' ' ')"
    kill -TERM "$top" 2>/dev/null || true
    for _ in $(seq 100); do
        local alive=0
        for pid in $tree; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in $tree; do kill -KILL "$pid" 2>/dev/null || true; done
    wait "$top" 2>/dev/null || true
}

stop_server() {
    stop_tree "$SERVER_PID"
    stop_tree "$ORIGIN_PID"
    # Keep the peers' own logs (they live in the scratch directory).
    case "$SERVER_NAME" in
    nchan) cp "$SCRATCH/nchan/error.log" "$OUT/logs/nchan-$STARTS-error.log" 2>/dev/null || true ;;
    pushpin)
        mkdir -p "$OUT/logs/pushpin-$STARTS"
        cp "$SCRATCH"/pushpin/log/*.log "$SCRATCH/pushpin/origin-error.log" \
            "$OUT/logs/pushpin-$STARTS/" 2>/dev/null || true
        ;;
    esac
    SERVER_NAME=""
    SERVER_PID=""
    ORIGIN_PID=""
    SERVER_TLS=""
}

cleanup() {
    stop_server
    rm -rf "$SCRATCH"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; }

wait_ports_free() {
    local port
    for port in "$@"; do
        for _ in $(seq 100); do
            port_free "$port" && break
            sleep 0.1
        done
        port_free "$port" || die "port $port still in use (another server running?)"
    done
}

# wait_up URL LOG: until URL answers 2xx, or the server died.
wait_up() {
    for _ in $(seq 150); do
        curl -ksf -m 2 -o /dev/null "$1" && return 0
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            tail -20 "$2" >&2
            die "server exited at start (log: $2)"
        fi
        sleep 0.1
    done
    tail -20 "$2" >&2
    die "$1 did not answer within 15 s (log: $2)"
}

# start_server NAME TLS(0/1): one fresh server; sets SERVER_PID.
start_server() {
    local name="$1" tls="$2" log="$OUT/logs/$1.log"
    stop_server
    STARTS=$((STARTS + 1))
    SERVER_NAME="$name"
    echo "=== $(date -u +%FT%TZ) start #$STARTS $name tls=$tls" >>"$log"
    case "$name" in
    herald)
        wait_ports_free "$HERALD_PORT"
        local args=(--listen "127.0.0.1:$HERALD_PORT" --allow-anonymous
            --allow-anonymous-connect --api-key "$API_KEY" --token-hmac-secret "$TOKEN_SECRET")
        local scheme=http
        if [ "$tls" = 1 ]; then
            args+=(--tls-cert "$SCRATCH/cert.pem" --tls-key "$SCRATCH/key.pem")
            scheme=https
        fi
        # shellcheck disable=SC2206 # HERALD_ARGS is a list of words
        args+=(${HERALD_ARGS:-})
        HERALD_LOG=warn "$BIN/herald" "${args[@]}" >>"$log" 2>&1 &
        SERVER_PID=$!
        wait_up "$scheme://127.0.0.1:$HERALD_PORT/healthz" "$log"
        ;;
    nchan)
        # Both ports at once: TLS changes nothing for the plain port.
        wait_ports_free "$NCHAN_PORT" "$NCHAN_TLS_PORT"
        local dir="$SCRATCH/nchan"
        rm -rf "$dir"
        mkdir -p "$dir/tmp"
        cp "$PEERS/nchan/nginx.conf" "$SCRATCH/cert.pem" "$SCRATCH/key.pem" "$dir/"
        nginx -p "$dir/" -c "$dir/nginx.conf" >>"$log" 2>&1 &
        SERVER_PID=$!
        wait_up "http://127.0.0.1:$NCHAN_PORT/healthz" "$log"
        ;;
    pushpin)
        wait_ports_free "$PUSHPIN_PORT" "$PUSHPIN_TLS_PORT" "$PUSHPIN_PUBLISH_PORT" "$ORIGIN_PORT" \
            18560 18562 18563
        local dir="$SCRATCH/pushpin"
        rm -rf "$dir"
        mkdir -p "$dir/tmp" "$dir/run" "$dir/log" "$dir/runner/certs"
        cp "$PEERS/pushpin/pushpin.conf" "$PEERS/pushpin/routes" "$PEERS/pushpin/origin.conf" "$dir/"
        sed -i "s|@DIR@|$dir|g" "$dir/pushpin.conf"
        cp "$SCRATCH/cert.pem" "$dir/runner/certs/default_$PUSHPIN_TLS_PORT.crt"
        cp "$SCRATCH/key.pem" "$dir/runner/certs/default_$PUSHPIN_TLS_PORT.key"
        nginx -p "$dir/" -c "$dir/origin.conf" >>"$log" 2>&1 &
        ORIGIN_PID=$!
        pushpin --config "$dir/pushpin.conf" >>"$log" 2>&1 &
        SERVER_PID=$!
        # Through condure, the proxy and zurl to the origin's /healthz; then until
        # a held stream is answered (the proxy hands it to the handler, which
        # answers 500 until its ZMQ sockets are connected).
        wait_up "http://127.0.0.1:$PUSHPIN_PORT/healthz" "$log"
        local code=""
        for _ in $(seq 50); do
            code="$(curl -s -m 0.5 -o /dev/null -w '%{http_code}' \
                "http://127.0.0.1:$PUSHPIN_PORT/sub/race-ready" || true)"
            [ "$code" = 200 ] && ! port_free "$PUSHPIN_PUBLISH_PORT" && break
            sleep 0.2
        done
        [ "$code" = 200 ] || die "pushpin does not hold streams (HTTP $code; logs: $log)"
        ;;
    *) die "unknown server $name" ;;
    esac
    SERVER_TLS="$tls"
    say "$name started (pid $SERVER_PID${ORIGIN_PID:+, origin $ORIGIN_PID}, tls=$tls)"
}

# ---------------------------------------------------------------- targets

# Sets, for server $1, transport $2 (ws|sse; Herald also ws-one-request), TLS
# $3: PROTO, SUB_URL (with {channel} or {token}), PUB_URL, PUB_BODY, PUB_HEADERS
# (array of --publish-header arguments), TOKEN_ARGS (array: --token-secret for
# a SUB_URL with {token}).
target() {
    local server="$1" transport="$2" tls="$3" s=""
    [ "$tls" = 1 ] && s=s
    PUB_HEADERS=()
    TOKEN_ARGS=()
    case "$server" in
    herald)
        case "$transport" in
        ws)
            PROTO=centrifuge
            SUB_URL="ws$s://127.0.0.1:$HERALD_PORT/connection/websocket"
            ;;
        ws-one-request)
            # cf_connect={"token":"{token}"}, URL-encoded around the placeholder.
            PROTO=ws
            SUB_URL="ws$s://127.0.0.1:$HERALD_PORT/connection/uni_websocket?cf_connect=%7B%22token%22%3A%22{token}%22%7D"
            TOKEN_ARGS=(--token-secret "$TOKEN_SECRET")
            ;;
        *)
            PROTO=sse
            SUB_URL="http$s://127.0.0.1:$HERALD_PORT/events?channel={channel}"
            ;;
        esac
        PUB_URL="http$s://127.0.0.1:$HERALD_PORT/api/publish"
        PUB_BODY='{"channel":"{channel}","data":"{payload}"}'
        PUB_HEADERS=(--publish-header "X-API-Key: $API_KEY")
        ;;
    nchan)
        local port=$NCHAN_PORT
        [ "$tls" = 1 ] && port=$NCHAN_TLS_PORT
        PROTO="$transport"
        if [ "$transport" = ws ]; then
            SUB_URL="ws$s://127.0.0.1:$port/sub/{channel}"
        else
            SUB_URL="http$s://127.0.0.1:$port/sub/{channel}"
        fi
        PUB_URL="http://127.0.0.1:$NCHAN_PORT/pub/{channel}"
        PUB_BODY='{payload}'
        ;;
    pushpin)
        local port=$PUSHPIN_PORT
        [ "$tls" = 1 ] && port=$PUSHPIN_TLS_PORT
        PROTO="$transport"
        if [ "$transport" = ws ]; then
            SUB_URL="ws$s://127.0.0.1:$port/sub/{channel}"
        else
            SUB_URL="http$s://127.0.0.1:$port/sub/{channel}"
        fi
        PUB_URL="http://127.0.0.1:$PUSHPIN_PUBLISH_PORT/publish/"
        PUB_BODY='{"items":[{"channel":"{channel}","formats":{"http-stream":{"content":"data: {payload}\n\n"},"ws-message":{"content":"{payload}"}}}]}'
        ;;
    esac
}

# check SERVER TRANSPORT TLS: one subscriber, one publish, one delivery; tried
# twice. Fails (non-zero) when the server does not deliver.
check() {
    [ "$CHECK" = 1 ] || return 0
    command -v node >/dev/null || { say "no node: skipping the check"; return 0; }
    [ -d "$ROOT/tests/sdk/node/node_modules/ws" ] || [ -n "${WS_MODULE:-}" ] || {
        say "no npm ws (npm ci in tests/sdk/node): skipping the check"
        return 0
    }
    target "$1" "$2" "$3"
    local header=()
    [ "${#PUB_HEADERS[@]}" -gt 0 ] && header=("${PUB_HEADERS[1]}")
    node "$PEERS/check.mjs" "$PROTO" "$SUB_URL" "$PUB_URL" "$PUB_BODY" "${header[@]}" >&2 && return 0
    sleep 1
    node "$PEERS/check.mjs" "$PROTO" "$SUB_URL" "$PUB_URL" "$PUB_BODY" "${header[@]}" >&2 && return 0
    say "$1 failed the delivery check ($2, tls=$3)"
    return 1
}

# checked SERVER WORKLOAD VARIANT TRANSPORT TLS: the check, recorded as a failed
# run (exit 98) when it fails, so the race goes on with the next run.
checked() {
    check "$1" "$4" "$5" && return 0
    record "$1" "$2" "$3" "" 98 "bench/peers/check.mjs (delivery check failed)"
    stop_server
    return 1
}

# ---------------------------------------------------------------- runs

# record SERVER WORKLOAD VARIANT JSON STATUS COMMAND...
record() {
    local server="$1" workload="$2" variant="$3" json="$4" status="$5"
    shift 5
    python3 - "$server" "$workload" "$variant" "$json" "$status" "$@" >>"$RUNS" <<'EOF'
import json, shlex, sys
server, workload, variant, path, status, *cmd = sys.argv[1:]
print(json.dumps({"server": server, "workload": workload, "variant": variant,
                  "json": path, "status": int(status), "command": shlex.join(cmd)}))
EOF
}

# bench SERVER WORKLOAD VARIANT herald-bench ARGS...: runs, records, never aborts
# the race on a failed run (a server that cannot keep up is a result).
bench() {
    local server="$1" workload="$2" variant="$3"
    shift 3
    local json="$OUT/json/$server-$workload-$variant.json" log="$OUT/logs/$server-$workload-$variant.log"
    local cmd=("$BENCH" "$@" --server-pid "$SERVER_PID" --json "$json")
    rm -f "$json"
    say "$server $workload $variant"
    local status=0
    # (errexit is off inside a || list, so a failed run only sets status)
    { "${cmd[@]}" 2>&1 | tee "$log" >&2; status="${PIPESTATUS[0]}"; } || true
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        say "$server died during $workload $variant"
        status=99
    fi
    # The command as written in the summary: the pid and paths are per run.
    local shown=("${cmd[@]}")
    shown[0]="herald-bench"
    record "$server" "$workload" "$variant" "$json" "$status" "${shown[@]}"
    [ "$status" = 0 ] || say "$server $workload $variant: exit $status (recorded)"
    return 0
}

workload_idle() {
    local server="$1" variant transport tls
    for variant in $(csv "$IDLE_VARIANTS"); do
        transport="${variant%-tls}"
        tls=0
        [ "$variant" != "$transport" ] && tls=1
        start_server "$server" "$tls"
        checked "$server" idle "$variant" "$transport" "$tls" || continue
        target "$server" "$transport" "$tls"
        # Fresh server per variant: memory freed by an earlier run would absorb
        # the next run's growth. 100 channels, as bench/idle.sh.
        local channel='bench-{i%100}'
        local url="${SUB_URL//'{channel}'/$channel}"
        local extra=()
        [ "$PROTO" = centrifuge ] && extra=(--channel 'bench-{i%100}')
        bench "$server" idle "$variant" idle --url "$url" --protocol "$PROTO" "${extra[@]}" \
            --steps "$IDLE_STEPS" --workers "$WORKERS" --concurrency "$SETUP_CONCURRENCY"
        stop_server
    done
}

# ladder SUBSCRIBERS SIZE: publish rates for FANOUT_DELIVERIES, at least 1/s.
ladder() {
    local subscribers="$1" rates="" d r
    for d in $(csv "$FANOUT_DELIVERIES"); do
        r=$((d / subscribers))
        [ "$r" -ge 1 ] || continue
        case ",$rates," in *",$r,"*) continue ;; esac
        rates="${rates:+$rates,}$r"
    done
    echo "$rates"
}

# fanout_run SERVER WORKLOAD VARIANT SUBSCRIBERS CHANNELS SIZE RATES [extra args]
fanout_run() {
    local server="$1" workload="$2" variant="$3" subscribers="$4" channels="$5" size="$6" rates="$7"
    shift 7
    bench "$server" "$workload" "$variant" fanout --url "$SUB_URL" --protocol "$PROTO" \
        --subscribers "$subscribers" --channels "$channels" --channel-name 'bench-{c}' \
        --publish-url "$PUB_URL" --publish-body "$PUB_BODY" "${PUB_HEADERS[@]}" \
        --size "$size" --rates "$rates" --duration "$DURATION" --warmup "$WARMUP" \
        --workers "$WORKERS" --concurrency "$SETUP_CONCURRENCY" --chart "$OUT/json/$server-$workload-$variant.svg" "$@"
}

# failed_rates JSON RATES: the rates from the ladder's first failing step on
# (comma-separated), nothing when every step passed or there are no results.
failed_rates() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
try:
    steps = json.load(open(sys.argv[1]))["steps"]
except (OSError, ValueError, KeyError):
    sys.exit(0)
rates = sys.argv[2].split(",")
failed = [s["rate"] for s in steps if not s.get("pass")]
if failed:
    at = [i for i, r in enumerate(rates) if abs(float(r) - failed[0]) < 1e-9]
    if at:
        print(",".join(rates[at[0]:]))
EOF
}

# ladder_run SERVER WORKLOAD VARIANT SUBSCRIBERS CHANNELS SIZE RATES PUBLISH_CONNECTIONS:
# the ladder on the running server (stops at the first failing step), then with
# LADDER_RETRY once more from the failing step on a fresh server, recorded as
# VARIANT~retry.
ladder_run() {
    local server="$1" workload="$2" variant="$3" subscribers="$4" channels="$5" size="$6"
    local rates="$7" connections="$8" rest
    fanout_run "$server" "$workload" "$variant" "$subscribers" "$channels" "$size" "$rates" \
        --publish-connections "$connections" --max-p99 "$MAX_P99" --stop-on-fail
    [ "$LADDER_RETRY" = 1 ] || return 0
    rest="$(failed_rates "$OUT/json/$server-$workload-$variant.json" "$rates")"
    [ -n "$rest" ] || return 0
    say "$server $workload $variant: retrying from the failing step ($rest) on a fresh server"
    start_server "$server" 0
    fanout_run "$server" "$workload" "$variant~retry" "$subscribers" "$channels" "$size" "$rest" \
        --publish-connections "$connections" --max-p99 "$MAX_P99" --stop-on-fail
}

workload_fanout() {
    local server="$1" transport subscribers size
    for transport in $(csv "$PROTOCOLS"); do
        for subscribers in $(csv "$FANOUT_SUBSCRIBERS"); do
            for size in $(csv "$FANOUT_SIZES"); do
                local variant="$transport-$subscribers-${size}B"
                # The ladder: highest deliveries/s within MAX_P99 and no loss.
                start_server "$server" 0
                checked "$server" fanout "$variant" "$transport" 0 || continue
                target "$server" "$transport" 0
                ladder_run "$server" fanout "$variant" "$subscribers" 1 "$size" \
                    "$(ladder "$subscribers")" "$PUBLISH_CONNECTIONS"
                # CPU per delivery at one load common to every server.
                local rates="" load rate
                for load in $(csv "$FANOUT_CPU_DELIVERIES"); do
                    rate=$((load / subscribers))
                    [ "$rate" -ge 1 ] || rate=1
                    rates="${rates:+$rates,}$rate"
                done
                start_server "$server" 0
                target "$server" "$transport" 0
                fanout_run "$server" fanout-cpu "$variant" "$subscribers" 1 "$size" "$rates" \
                    --publish-connections "$PUBLISH_CONNECTIONS" --max-p99 "$MAX_P99"
                stop_server
            done
        done
    done
}

workload_many() {
    local server="$1" transport
    for transport in $(csv "$PROTOCOLS"); do
        local variant="$transport-$MANY_CHANNELS"
        start_server "$server" 0
        checked "$server" many "$variant" "$transport" 0 || continue
        target "$server" "$transport" 0
        ladder_run "$server" many "$variant" "$MANY_CHANNELS" "$MANY_CHANNELS" 64 "$MANY_RATES" \
            "$MANY_PUBLISH_CONNECTIONS"
        start_server "$server" 0
        target "$server" "$transport" 0
        fanout_run "$server" many-cpu "$variant" "$MANY_CHANNELS" "$MANY_CHANNELS" 64 "$MANY_CPU_RATE" \
            --publish-connections "$MANY_PUBLISH_CONNECTIONS" --max-p99 "$MAX_P99"
        stop_server
    done
}

workload_storm() {
    local server="$1" transport concurrency n kind
    for transport in $(csv "$PROTOCOLS"); do
        # Herald's WebSocket that connects and subscribes in one request, as the
        # peers' do, besides its Centrifuge one (connect, then subscribe).
        local kinds="$transport"
        [ "$server" = herald ] && [ "$transport" = ws ] && kinds="ws ws-one-request"
        for concurrency in $(csv "$STORM_CONCURRENCY"); do
            local spread=()
            [ "$concurrency" = all ] || spread=(--concurrency "$concurrency")
            for n in $(seq "$STORM_REPEAT"); do
                for kind in $kinds; do
                    local variant="$kind-$STORM_SUBSCRIBERS-all-at-once-run$n"
                    [ "$concurrency" = all ] ||
                        variant="$kind-$STORM_SUBSCRIBERS-$concurrency-at-a-time-run$n"
                    start_server "$server" 0
                    # (the check speaks the transport's usual protocol: check.mjs
                    # mints no tokens; the storm's probe checks the rest)
                    checked "$server" storm "$variant" "$transport" 0 || continue
                    target "$server" "$kind" 0
                    bench "$server" storm "$variant" storm --url "$SUB_URL" --protocol "$PROTO" \
                        "${TOKEN_ARGS[@]}" --subscribers "$STORM_SUBSCRIBERS" \
                        --channels "$STORM_CHANNELS" --channel-name 'bench-{c}' \
                        --workers "$WORKERS" "${spread[@]}" \
                        --publish-url "$PUB_URL" --publish-body "$PUB_BODY" "${PUB_HEADERS[@]}"
                    stop_server
                done
            done
        done
    done
}

# ---------------------------------------------------------------- main

# The commit Herald was built from (HERALD_COMMIT for a tree outside git, e.g. a
# `git archive` export).
if [ -z "${HERALD_COMMIT:-}" ]; then
    HERALD_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    git diff --quiet HEAD -- crates Cargo.lock 2>/dev/null || HERALD_COMMIT="$HERALD_COMMIT+dirty"
fi

{
    echo "{"
    echo "  \"started\": \"$(date -u +%FT%TZ)\","
    echo "  \"quick\": $([ "$QUICK" = 1 ] && echo true || echo false),"
    echo "  \"servers\": \"$SERVERS\", \"workloads\": \"$WORKLOADS\", \"protocols\": \"$PROTOCOLS\","
    echo "  \"max_p99\": \"$MAX_P99\", \"duration\": \"$DURATION\", \"warmup\": \"$WARMUP\","
    echo "  \"workers\": $WORKERS, \"idle_steps\": \"$IDLE_STEPS\","
    echo "  \"fanout_cpu_deliveries\": \"$FANOUT_CPU_DELIVERIES\", \"many_cpu_rate\": $MANY_CPU_RATE,"
    echo "  \"herald_commit\": \"$HERALD_COMMIT\", \"herald_args\": \"${HERALD_ARGS:-}\","
    echo "  \"nginx\": \"$(nginx -v 2>&1 | sed 's/^nginx version: //')\","
    echo "  \"nchan\": \"$(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null)\","
    echo "  \"pushpin\": \"$(dpkg-query -W -f='${Version}' pushpin 2>/dev/null)\","
    echo "  \"condure\": \"$(dpkg-query -W -f='${Version}' condure 2>/dev/null)\","
    echo "  \"zurl\": \"$(dpkg-query -W -f='${Version}' zurl 2>/dev/null)\","
    echo "  \"rustc\": \"$(rustc --version 2>/dev/null)\","
    echo "  \"nproc\": $(nproc),"
    echo "  \"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')\","
    echo "  \"kernel\": \"$(uname -r)\","
    echo "  \"memory\": \"$(free -g | awk '/^Mem:/ {print $2 " GiB"}')\","
    echo "  \"loadavg_at_start\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
    echo "  \"open_files\": $(ulimit -n)"
    echo "}"
} >"$OUT/meta.json"

for server in $(csv "$SERVERS"); do
    for workload in $(csv "$WORKLOADS"); do
        case "$workload" in
        idle | fanout | many | storm) "workload_$workload" "$server" ;;
        *) die "unknown workload $workload" ;;
        esac
    done
    stop_server
done

cut -d' ' -f1-3 /proc/loadavg >"$OUT/loadavg-at-end"
python3 "$PEERS/summarize.py" "$OUT" >"$OUT/RESULTS-race.md"
cat "$OUT/RESULTS-race.md"
say "results: $OUT/RESULTS-race.md (JSON per run in $OUT/json)"
