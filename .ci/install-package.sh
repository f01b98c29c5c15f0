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

. "$(dirname "$0")/apt.sh"
packages=(dpkg-dev fakeroot binutils)
cargo_deb_version=3.8.0
apt_install "${packages[@]}"

if ! cargo deb --version >/dev/null 2>&1; then
    echo "installing: cargo-deb $cargo_deb_version (cargo install, a few minutes)"
    cargo install cargo-deb --version "$cargo_deb_version" --locked
fi

require_commands install-package dpkg-deb dpkg-shlibdeps strip
if ! cargo deb --version >/dev/null 2>&1; then
    echo "install-package: cargo deb still not runnable after install" >&2
    exit 1
fi
echo "install-package: ready ($(cargo deb --version 2>&1 | head -n1))"
