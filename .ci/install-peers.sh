#!/usr/bin/env bash
# Installs the real SIP peers the integration tests run against:
#   kamailio              the test PBX, its control tool and modules
#                         (htable, auth, registrar, uac, ctl, ...)
#   kamailio-tls-modules  the PBX's TLS listener
#   sip-tester            SIPp, playing the lines and the monitored endpoint
#   procps                kill(1), used to stop a peer's whole process group
#   tcpdump               captures loopback traffic for `inspect --pcap` tests
#   baresip               an independent softphone that dials the self-test
#                         number and records the early media it hears
#
# Idempotent and non-interactive: nothing is fetched when all are installed.
# The tests run their own PBX instances on ports they pick; the system
# service the package ships must not run (it would sit on 5060 and answer
# traffic meant for nobody), so it is kept from starting and stopped.
set -euo pipefail

. "$(dirname "$0")/apt.sh"
packages=(kamailio kamailio-tls-modules sip-tester procps tcpdump baresip)

mapfile -t missing < <(missing_packages "${packages[@]}")
if [ "${#missing[@]}" -gt 0 ]; then
    # Deny service starts during installation unless a policy already exists
    # (container images usually ship one that does the same).
    policy=/usr/sbin/policy-rc.d
    made_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
        made_policy=1
    fi
    cleanup() {
        if [ -n "$made_policy" ]; then
            $SUDO rm -f "$policy"
        fi
    }
    trap cleanup EXIT

    apt_install "${missing[@]}"
fi

# Stop and disable a system instance that may have been started by an
# earlier install.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now kamailio.service >/dev/null 2>&1 || true
elif [ -x /etc/init.d/kamailio ]; then
    $SUDO /etc/init.d/kamailio stop >/dev/null 2>&1 || true
fi

require_commands install-peers kamailio kamcmd sipp tcpdump baresip
if ! dpkg -L kamailio-tls-modules 2>/dev/null | grep -q '/tls\.so$'; then
    echo "install-peers: the PBX's tls module is missing" >&2
    exit 1
fi
echo "install-peers: peers ready (${packages[*]})"
