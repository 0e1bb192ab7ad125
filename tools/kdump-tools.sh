#!/usr/bin/env bash
# Download Debian's kdump-tools (Debian 12's and Debian 13's) and unpack them, never installing them, for the
# VM test that lets Debian's own kdump-config drive kexloader (tests/vm/test_kdump_tools.py).
#
#   bash tools/kdump-tools.sh CACHE
#
# Needs the private apt configuration tools/apt-platforms.sh makes (CACHE/apt/apt.conf; it reaches bookworm
# and trixie). Result: CACHE/kdump-tools/bookworm/ and CACHE/kdump-tools/trixie/, each a `dpkg -x` of that
# release's kdump-tools (usr/sbin/kdump-config, etc/init.d/kdump-tools, usr/share/kdump-tools/kdump-tools.conf,
# etc/kdump/sysctl.conf, ...) and a file VERSION. Idempotent; no root.
set -euo pipefail

say() { printf 'kdump-tools: %s\n' "$*"; }
die() { printf 'kdump-tools: %s\n' "$*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: kdump-tools.sh CACHE"
cache=$(mkdir -p "$1" && cd "$1" && pwd)
# shellcheck source=tools/apt-fetch.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt-fetch.sh"
use_private_apt
mkdir -p "$cache/kdump-tools"
for rel in bookworm trixie; do
    version=$(version_in kdump-tools "$rel")
    [[ -n $version ]] || die "no kdump-tools in $rel (apt-get update with $APT_CONFIG?)"
    deb=$(fetch_deb kdump-tools "$version")
    dest=$cache/kdump-tools/$rel
    if [[ $(cat "$dest/VERSION" 2>/dev/null) != "$version" ]]; then
        rm -rf "$dest" "$dest.tmp"
        mkdir -p "$dest.tmp"
        say "dpkg -x $(basename "$deb")"
        dpkg -x "$deb" "$dest.tmp"
        echo "$version" >"$dest.tmp/VERSION"
        mv "$dest.tmp" "$dest"
    fi
    say "$rel: $dest/usr/sbin/kdump-config ($version)"
done
