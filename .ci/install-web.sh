#!/usr/bin/env bash
# Installs what the dashboard's browser test needs: Debian's Chromium and
# its WebDriver (chromedriver). The test drives a real headless browser
# against the dashboard on loopback.
#
# Idempotent and non-interactive: nothing is fetched when all are installed.
set -euo pipefail

. "$(dirname "$0")/apt.sh"
# fonts-liberation: readable text in the screenshots the test saves.
packages=(chromium chromium-driver fonts-liberation)
apt_install "${packages[@]}"
require_commands install-web chromium chromedriver
echo "install-web: ready (${packages[*]})"
