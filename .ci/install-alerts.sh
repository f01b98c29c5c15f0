#!/usr/bin/env bash
# Installs the real SMTP server the alert tests send to: aiosmtpd, from
# Debian's python3-aiosmtpd (for the system Python, /usr/bin/python3).
#
# Idempotent and non-interactive: nothing is fetched when it is installed.
# The tests start their own server on a free loopback port; the package
# ships no system service.
set -euo pipefail

. "$(dirname "$0")/apt.sh"
apt_install python3-aiosmtpd

if ! /usr/bin/python3 -c "import aiosmtpd.controller" 2>/dev/null; then
    echo "install-alerts: aiosmtpd still not importable by /usr/bin/python3" >&2
    exit 1
fi
echo "install-alerts: aiosmtpd ready ($(/usr/bin/python3 -m aiosmtpd --version 2>&1 | head -n1))"
