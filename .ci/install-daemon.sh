#!/usr/bin/env bash
# Installs what the daemon's tests need beyond the Rust toolchain:
#   systemd   systemd-analyze (verify and rate the unit) and systemd-sysusers
#             (check the sysusers.d file); nothing is started or enabled
#   procps    kill(1), to send SIGHUP and SIGTERM to a running daemon
#
# Idempotent and non-interactive: nothing is fetched when all are installed.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
packages=(systemd procps)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}"
fi

for bin in systemd-analyze systemd-sysusers kill; do
    if ! command -v "$bin" >/dev/null 2>&1; then
        echo "install-daemon: $bin still missing after install" >&2
        exit 1
    fi
done
echo "install-daemon: ready (${packages[*]})"
