# Sourced by the bench scripts: starts Herald in the background, stops it when the
# script exits, and waits until it answers its health check.
#
#   start_herald LOG HEALTH_URL HERALD_BINARY [ARGS...]    # sets HERALD_PID
start_herald() {
    local log="$1" health="$2"
    shift 2
    HERALD_LOG=warn "$@" 2>"$log" &
    HERALD_PID=$!
    trap 'kill "$HERALD_PID" 2>/dev/null || true; wait "$HERALD_PID" 2>/dev/null || true' EXIT
    for _ in $(seq 100); do
        curl -ksf "$health" >/dev/null && return 0
        kill -0 "$HERALD_PID" 2>/dev/null || { cat "$log" >&2; exit 1; }
        sleep 0.1
    done
    echo "herald did not answer $health within 10 s; its log:" >&2
    cat "$log" >&2
    exit 1
}
