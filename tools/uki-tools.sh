#!/usr/bin/env bash
# Download Debian 13's ukify and systemd-stub (systemd-ukify, systemd-boot-efi) and unpack them, never
# installing them, for the tests that build unified kernel images (tests/test_uki.py, tests/vm/test_uki.py).
#
#   bash tools/uki-tools.sh CACHE
#
# Needs the private apt configuration tools/apt-platforms.sh makes (CACHE/apt/apt.conf; it reaches trixie).
# Result: CACHE/uki-tools/usr/bin/ukify (a Python script: run it with a Python that has pefile) and
# CACHE/uki-tools/usr/lib/systemd/boot/efi/{linuxx64.efi.stub,addonx64.efi.stub}. Idempotent; no root.
set -euo pipefail

say() { printf 'uki-tools: %s\n' "$*"; }
die() { printf 'uki-tools: %s\n' "$*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: uki-tools.sh CACHE"
cache=$(mkdir -p "$1" && cd "$1" && pwd)
# shellcheck source=tools/apt-fetch.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt-fetch.sh"
use_private_apt

dest=$cache/uki-tools
debs=()
for pkg in systemd-ukify systemd-boot-efi; do
    version=$(version_in "$pkg" trixie)
    [[ -n $version ]] || die "no $pkg in trixie (apt-get update with $APT_CONFIG?)"
    deb=$(fetch_deb "$pkg" "$version")
    debs+=("$deb")
done
stamp=.unpacked-$(for d in "${debs[@]}"; do basename "$d"; done | sha256sum | cut -c1-16)
if [[ ! -f $dest/$stamp ]]; then
    rm -rf "$dest" "$dest.tmp"
    mkdir -p "$dest.tmp"
    for d in "${debs[@]}"; do
        say "dpkg -x $(basename "$d")"
        dpkg -x "$d" "$dest.tmp"
    done
    touch "$dest.tmp/$stamp"
    mv "$dest.tmp" "$dest"
fi
say "$dest/usr/bin/ukify, $dest/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
