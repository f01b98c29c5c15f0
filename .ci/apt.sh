# Shared by the install scripts (sourced, not run): installing Debian
# packages idempotently and non-interactively, and checking that the
# commands they provide are there afterwards.

export DEBIAN_FRONTEND=noninteractive

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# The packages among "$@" that are not installed, one per line.
missing_packages() {
    local p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            echo "$p"
        fi
    done
}

# Install those of "$@" that are missing; nothing is fetched otherwise.
# Configuration files already on the machine are kept.
apt_install() {
    local missing
    mapfile -t missing < <(missing_packages "$@")
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing: ${missing[*]}"
        $SUDO apt-get update -qq
        $SUDO apt-get install -y -qq --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${missing[@]}"
    fi
}

# Fail, naming the script ($1), unless every command in the rest is found
# on PATH or in the sbin directories.
require_commands() {
    local script=$1 bin
    shift
    for bin in "$@"; do
        if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ] && [ ! -x "/sbin/$bin" ]; then
            echo "$script: $bin still missing after install" >&2
            exit 1
        fi
    done
}
