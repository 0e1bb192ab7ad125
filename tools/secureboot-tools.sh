#!/usr/bin/env bash
# Install virt-firmware (virt-fw-vars) from PyPI into a private virtual environment in the cache, for the VM
# test that boots Debian's kernel under OVMF with Secure Boot on (tests/vm/test_secure_boot.py,
# tools/vm/secureboot.py). Debian 12 has no python3-virt-firmware, and Debian 13's needs python3-cryptography,
# which a test host need not have; the host's Python and apt are left alone.
#
#   bash tools/secureboot-tools.sh CACHE
#
# Result: CACHE/virt-firmware/bin/virt-fw-vars. Idempotent; no root.
set -euo pipefail

say() { printf 'secureboot-tools: %s\n' "$*"; }
die() { printf 'secureboot-tools: %s\n' "$*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: secureboot-tools.sh CACHE"
cache=$(mkdir -p "$1" && cd "$1" && pwd)
venv=$cache/virt-firmware
if [[ ! -x $venv/bin/virt-fw-vars ]]; then
    rm -rf "$venv"
    say "python3 -m venv $venv; pip install virt-firmware"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check virt-firmware
fi
say "$venv/bin/virt-fw-vars (virt-firmware $("$venv/bin/python" -m pip show virt-firmware 2>/dev/null | sed -n 's/^Version: //p'))"
