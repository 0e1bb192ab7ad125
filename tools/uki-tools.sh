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
export APT_CONFIG=$cache/apt/apt.conf
[[ -f $APT_CONFIG ]] || die "no $APT_CONFIG: run tools/apt-platforms.sh $cache first"

# the newest version of PACKAGE in trixie (not the host's release, which the private pins prefer)
trixie_version() {
    apt-cache madison "$1" | awk -F' [|] ' '!done && $3 ~ / trixie(-updates|-security)?\// { print $2; done = 1 }'
}

dest=$cache/uki-tools
mkdir -p "$cache/debs"
debs=()
for pkg in systemd-ukify systemd-boot-efi; do
    version=$(trixie_version "$pkg")
    [[ -n $version ]] || die "no $pkg in trixie (apt-get update with $APT_CONFIG?)"
    deb=$(ls "$cache/debs/${pkg}_${version//:/%3a}_"*.deb 2>/dev/null | sed -n 1p || true)
    if [[ -z $deb ]]; then
        say "apt-get download $pkg=$version"
        (cd "$cache/debs" && apt-get download -qq "$pkg=$version")
        deb=$(ls "$cache/debs/${pkg}_${version//:/%3a}_"*.deb | sed -n 1p)
    fi
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
