#!/usr/bin/env bash
# Installs what Herald's tests need, and only what is missing.
#
#   Debian packages : chromium (real browser for tests/browser), openssl (test certs)
#   Rust components : rustfmt, clippy (via rustup, when rustup is present)
#   npm packages    : tests/browser, tests/sdk/node (npm ci from the committed
#                     package-lock.json)
#   Python packages : tests/sdk/python/requirements.txt into ./.venv
#
# Idempotent: a second run with everything present does no network access and
# finishes in well under a second. Any failed install aborts with a non-zero exit.
#
# Never runs `npx playwright install`: the browser is Debian's chromium.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[install-test-deps] %s\n' "$*"; }
die() { printf '[install-test-deps] ERROR: %s\n' "$*" >&2; exit 1; }

# Run a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@" || die "sudo $* failed (is passwordless sudo configured?)"
    else
        die "need root to run: $* (not root and no sudo)"
    fi
}

# ---------------------------------------------------------------- Debian packages
CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"
apt_missing=()
[ -x "$CHROMIUM_BIN" ] || apt_missing+=(chromium)
command -v openssl >/dev/null 2>&1 || apt_missing+=(openssl)

if [ "${#apt_missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${apt_missing[*]} and apt-get is not available"
    log "installing Debian packages: ${apt_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Package lists may be absent (fresh image) or stale: refresh once before installing.
    as_root apt-get update -q || die "apt-get update failed"
    as_root apt-get install -y -q --no-install-recommends "${apt_missing[@]}" \
        || die "apt-get install ${apt_missing[*]} failed"
    [ -x "$CHROMIUM_BIN" ] || die "chromium installed but $CHROMIUM_BIN is missing"
    command -v openssl >/dev/null 2>&1 || die "openssl still missing after install"
else
    log "Debian packages present (chromium, openssl)"
fi

# ---------------------------------------------------------------- Rust components
for comp in rustfmt clippy; do
    case "$comp" in
        rustfmt) probe=(cargo fmt --version) ;;
        clippy) probe=(cargo clippy --version) ;;
    esac
    if ! "${probe[@]}" >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 || die "cargo $comp missing and rustup is not available"
        log "installing Rust component $comp"
        rustup component add "$comp" || die "rustup component add $comp failed"
    fi
done

# ---------------------------------------------------------------- npm (tests/browser, tests/sdk/node)
npm_hash() {
    local f
    for f in "$1/package.json" "$1/package-lock.json"; do
        if [ -f "$f" ]; then cat "$f"; fi
    done | sha256sum | cut -d' ' -f1
}

install_npm_dir() {
    local dir="$1"
    [ -f "$dir/package.json" ] || return 0
    command -v npm >/dev/null 2>&1 || die "npm is required for $dir"
    local stamp="$dir/node_modules/.herald-install-stamp"
    local want
    want="$(npm_hash "$dir")"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log "npm packages in $dir are up to date"
        return 0
    fi
    log "installing npm packages in $dir"
    # playwright-core downloads nothing by itself; this is belt and braces.
    export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
    if [ -f "$dir/package-lock.json" ]; then
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in $dir failed"
    else
        (cd "$dir" && npm install --no-audit --no-fund --loglevel=error) || die "npm install in $dir failed"
    fi
    # npm install may have just written package-lock.json: stamp what is there now.
    npm_hash "$dir" >"$stamp"
}
install_npm_dir "$ROOT/tests/browser"
install_npm_dir "$ROOT/tests/sdk/node"

# ---------------------------------------------------------------- Python (tests/sdk/python)
PY_REQ="$ROOT/tests/sdk/python/requirements.txt"
if [ -f "$PY_REQ" ]; then
    VENV="$ROOT/.venv"
    stamp="$VENV/.herald-install-stamp"
    want="$(sha256sum "$PY_REQ" | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
        log "Python packages in .venv are up to date"
    else
        command -v python3 >/dev/null 2>&1 || die "python3 is required for tests/sdk/python"
        log "installing Python packages from tests/sdk/python/requirements.txt into .venv"
        [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" \
            || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$PY_REQ" \
            || die "pip install -r tests/sdk/python/requirements.txt failed"
        "$VENV/bin/python" -c 'import centrifuge, cent, pytest, pytest_asyncio' \
            || die "Python SDKs installed in .venv but do not import"
        printf '%s\n' "$want" >"$stamp"
    fi
fi

log "all test dependencies present"
