#!/usr/bin/env bash
# Installs what the dashboard's browser test needs: Debian's Chromium and
# its WebDriver (chromedriver). The test drives a real headless browser
# against the dashboard on loopback.
#
# Idempotent and non-interactive: nothing is fetched when all are installed.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
# fonts-liberation: readable text in the screenshots the test saves.
packages=(chromium chromium-driver fonts-liberation)

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

for bin in chromium chromedriver; do
    if ! command -v "$bin" >/dev/null 2>&1; then
        echo "install-web: $bin still missing after install" >&2
        exit 1
    fi
done
echo "install-web: ready (${packages[*]})"
