#!/usr/bin/env bash
# Installs what the daemon's tests need beyond the Rust toolchain:
#   systemd   systemd-analyze (verify and rate the unit) and systemd-sysusers
#             (check the sysusers.d file); nothing is started or enabled
#   procps    kill(1), to send SIGHUP and SIGTERM to a running daemon
#
# Idempotent and non-interactive: nothing is fetched when all are installed.
set -euo pipefail

. "$(dirname "$0")/apt.sh"
packages=(systemd procps)
apt_install "${packages[@]}"
require_commands install-daemon systemd-analyze systemd-sysusers kill
echo "install-daemon: ready (${packages[*]})"
