#!/usr/bin/env bash
# Installs the real SMTP server the alert tests send to: aiosmtpd, from
# Debian's python3-aiosmtpd (for the system Python, /usr/bin/python3).
#
# Idempotent and non-interactive: nothing is fetched when it is installed.
# The tests start their own server on a free loopback port; the package
# ships no system service.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
package=python3-aiosmtpd

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    echo "installing: $package"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "$package"
fi

if ! /usr/bin/python3 -c "import aiosmtpd.controller" 2>/dev/null; then
    echo "install-alerts: aiosmtpd still not importable by /usr/bin/python3" >&2
    exit 1
fi
echo "install-alerts: aiosmtpd ready ($(/usr/bin/python3 -m aiosmtpd --version 2>&1 | head -n1))"
