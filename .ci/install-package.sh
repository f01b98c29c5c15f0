#!/usr/bin/env bash
# Installs what building and checking the Debian package needs:
#   cargo-deb   `cargo deb` (not in Debian bookworm; from crates.io, pinned
#               to a version that builds with the project's toolchain)
#   dpkg-dev    dpkg-shlibdeps, for the package's automatic Depends
#   fakeroot    not needed by cargo-deb itself, but by anyone rebuilding
#               the package with Debian's own tools
#   binutils    strip, for the packaged binary
#
# Idempotent and non-interactive: nothing is fetched or built when all are
# installed. cargo-deb takes a few minutes to build the first time.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
packages=(dpkg-dev fakeroot binutils)
cargo_deb_version=3.8.0

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
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! cargo deb --version >/dev/null 2>&1; then
    echo "installing: cargo-deb $cargo_deb_version (cargo install, a few minutes)"
    cargo install cargo-deb --version "$cargo_deb_version" --locked
fi

for bin in dpkg-deb dpkg-shlibdeps strip; do
    if ! command -v "$bin" >/dev/null 2>&1; then
        echo "install-package: $bin still missing after install" >&2
        exit 1
    fi
done
if ! cargo deb --version >/dev/null 2>&1; then
    echo "install-package: cargo deb still not runnable after install" >&2
    exit 1
fi
echo "install-package: ready ($(cargo deb --version 2>&1 | head -n1))"
