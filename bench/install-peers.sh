#!/usr/bin/env bash
# Installs the benchmark peers from Debian's packages, only what is missing:
# nginx with libnginx-mod-nchan, and pushpin with zurl (pushpin's own packaging
# starts zurl, condure or connmgr from its config; zurl is a separate package).
# Also openssl and curl, which bench/race.sh uses. Idempotent: a second run
# installs nothing. apt does not start services here (no systemd, policy-rc.d or
# not); bench/race.sh starts each server itself, in the foreground.
#
#   bench/install-peers.sh
set -euo pipefail

PACKAGES=(nginx libnginx-mod-nchan pushpin zurl openssl curl)

SUDO=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "install-peers: not root and no sudo" >&2; exit 1; }
    SUDO=(sudo)
fi

missing=()
for package in "${PACKAGES[@]}"; do
    if [ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]; then
        missing+=("$package")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-peers: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -q || { echo "install-peers: apt-get update failed" >&2; exit 1; }
    # --no-install-recommends keeps out extras; pushpin's Depends already list what
    # its runner needs (python3, its own condure/connmgr binaries where packaged).
    if ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        echo "install-peers: apt-get install ${missing[*]} FAILED" >&2
        exit 1
    fi
fi

# Check that what the race needs is really there.
fail=0
for tool in nginx pushpin zurl openssl curl; do
    command -v "$tool" >/dev/null || { echo "install-peers: $tool not on PATH" >&2; fail=1; }
done
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so
[ -f "$NCHAN_MODULE" ] || { echo "install-peers: $NCHAN_MODULE missing" >&2; fail=1; }
[ "$fail" = 0 ] || exit 1

# apt's postinst may have started nginx on :80 where a service manager exists; we
# leave any such instance alone (the race uses its own ports and prefix).
{
    nginx -v 2>&1
    dpkg-query -W -f='${Package} ${Version}\n' libnginx-mod-nchan pushpin zurl
} >&2
echo "install-peers: ok" >&2
