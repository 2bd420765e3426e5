#!/usr/bin/env bash
# Herald's one test command: runs every test, in order, and stops at the first
# failure. On a fresh Debian machine it first installs what the tests need
# (only what is missing; see scripts/install-test-deps.sh).
#
#   ./scripts/test.sh                 # everything
#   ./scripts/test.sh fmt clippy      # only the named stages, in the usual order
#
# Stages: deps fmt clippy test build browser sdk bench
#
# Environment:
#   HERALD_BIN     herald binary for the browser and SDK tests
#                  (default: ${CARGO_TARGET_DIR:-target}/release/herald)
#   CHROMIUM_BIN   browser for the browser tests (default: /usr/bin/chromium)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ALL_STAGES=(deps fmt clippy test build browser sdk bench)
if [ "$#" -gt 0 ]; then
    for s in "$@"; do
        case " ${ALL_STAGES[*]} " in
            *" $s "*) ;;
            *) echo "unknown stage '$s' (stages: ${ALL_STAGES[*]})" >&2; exit 2 ;;
        esac
    done
    WANT=" $* "
else
    WANT=" ${ALL_STAGES[*]} "
fi
wanted() { [[ "$WANT" == *" $1 "* ]]; }

START=$SECONDS
CURRENT_STAGE=""
finish() {
    local rc=$?
    local total=$((SECONDS - START))
    echo
    if [ "$rc" -eq 0 ]; then
        printf '==> PASSED (stages:%s) in %dm%02ds\n' "${WANT% }" $((total / 60)) $((total % 60))
    else
        printf '==> FAILED at stage "%s" (exit %d) after %dm%02ds\n' \
            "${CURRENT_STAGE:-setup}" "$rc" $((total / 60)) $((total % 60)) >&2
    fi
}
trap finish EXIT

# stage NAME DESCRIPTION -- runs the rest of the arguments as one command.
stage() {
    local name="$1" desc="$2"
    shift 2
    CURRENT_STAGE="$name"
    local t0=$SECONDS
    echo
    echo "================================================================"
    echo "==> [$name] $desc"
    echo "    \$ $*"
    echo "================================================================"
    "$@"
    echo "==> [$name] ok ($((SECONDS - t0))s)"
}

if wanted deps; then
    stage deps "install missing test dependencies" ./scripts/install-test-deps.sh
fi

if wanted fmt; then
    stage fmt "rustfmt" cargo fmt --all --check
fi

if wanted clippy; then
    stage clippy "clippy, warnings are errors" \
        cargo clippy --workspace --all-targets -- -D warnings
fi

if wanted test; then
    if cargo nextest --version >/dev/null 2>&1; then
        stage test "unit and integration tests (nextest)" \
            cargo nextest run --workspace --no-fail-fast --no-tests=warn
        stage test "doc tests" cargo test --doc --workspace
    else
        stage test "unit, integration and doc tests" cargo test --workspace --no-fail-fast
    fi
fi

if wanted build; then
    stage build "release build of the herald binary" cargo build --release -p herald
fi

if wanted browser; then
    export HERALD_BIN="${HERALD_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/herald}"
    [ -x "$HERALD_BIN" ] || {
        echo "herald binary not found at $HERALD_BIN (run the build stage or set HERALD_BIN)" >&2
        CURRENT_STAGE=browser
        exit 1
    }
    [ -d tests/browser/node_modules/playwright-core ] || {
        echo "tests/browser/node_modules missing: run ./scripts/install-test-deps.sh" >&2
        CURRENT_STAGE=browser
        exit 1
    }
    shopt -s nullglob
    browser_tests=(tests/browser/*.test.mjs)
    shopt -u nullglob
    [ "${#browser_tests[@]}" -gt 0 ] || { echo "no browser tests found" >&2; exit 1; }
    stage browser "browser tests (headless Chromium, HERALD_BIN=$HERALD_BIN)" \
        node --test --test-concurrency=1 "${browser_tests[@]}"
fi

if wanted sdk; then
    # Third-party SDKs against the real binary: npm centrifuge (Node, over
    # WebSocket, HTTP-streaming and SSE emulation), PyPI centrifuge-python and cent.
    export HERALD_BIN="${HERALD_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/herald}"
    CURRENT_STAGE=sdk
    [ -x "$HERALD_BIN" ] || {
        echo "herald binary not found at $HERALD_BIN (run the build stage or set HERALD_BIN)" >&2
        exit 1
    }
    [ -d tests/sdk/node/node_modules/centrifuge ] || {
        echo "tests/sdk/node/node_modules missing: run ./scripts/install-test-deps.sh" >&2
        exit 1
    }
    [ -x .venv/bin/python ] && .venv/bin/python -c 'import centrifuge, cent' 2>/dev/null || {
        echo ".venv lacks the Python SDKs: run ./scripts/install-test-deps.sh" >&2
        exit 1
    }
    shopt -s nullglob
    sdk_node_tests=(tests/sdk/node/*.test.mjs)
    shopt -u nullglob
    [ "${#sdk_node_tests[@]}" -gt 0 ] || { echo "no SDK tests found in tests/sdk/node" >&2; exit 1; }
    stage sdk "npm centrifuge SDK tests (Node, HERALD_BIN=$HERALD_BIN)" \
        node --test --test-concurrency=1 "${sdk_node_tests[@]}"
    stage sdk "centrifuge-python and cent SDK tests (pytest)" \
        .venv/bin/python -m pytest -c tests/sdk/python/pytest.ini tests/sdk/python
fi

if wanted bench; then
    # herald-bench against the real binary: a short fanout over Centrifuge and SSE
    # and a small storm; fails if any delivery is lost or duplicated.
    stage bench "benchmark smoke test (bench/smoke.sh)" ./bench/smoke.sh
fi
