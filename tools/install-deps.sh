#!/usr/bin/env bash
# Install everything kexloader's tests need on a Debian 12 or 13 machine, VM tests included.
#
#   sudo bash tools/install-deps.sh        (or as root: bash tools/install-deps.sh)
#   .venv/bin/python -m pytest             (then: every test)
#
# Idempotent: a second run only re-checks. It installs
#   - Debian packages for the tests and the QEMU guests (never kexec-tools: Debian's package
#     enables a service that loads a kernel at shutdown; the host must never kexec),
#   - a project virtual environment, .venv/ in the checkout, made with the release's own
#     /usr/bin/python3 (3.11 on Debian 12, 3.13 on 13; Debian's Python is externally managed, so
#     nothing is installed into it) holding this project editable with its test extras; under sudo
#     it belongs to the invoking user,
#   - Debian's kernels and Xen for the VM platforms, downloaded (never installed) through a
#     private apt configuration (tools/apt-platforms.sh; the host's own sources are not touched)
#     and unpacked into ${KEXLOADER_CACHE:-$HOME/.cache/kexloader}/platforms/NAME/{linux,xen}:
#       deb12      Debian 12's kernel (6.1) and Xen 4.17
#       deb13      Debian 13's kernel (6.12) and Xen 4.20
#       deb13-bpo  the newest kernel in trixie-backports and Xen 4.20
#   - Debian's kdump-tools (12's and 13's, unpacked the same way) and virt-firmware from PyPI (in its own
#     venv in the cache) for the kdump-tools and Secure Boot VM tests
set -euo pipefail

say() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: %s\n' "$*" >&2; exit 1; }

retry() {  # retry CMD...: three tries, for transient mirror errors
    local n
    for n in 1 2 3; do
        "$@" && return 0
        say "attempt $n of '$*' failed"
        sleep $((n * 5))
    done
    return 1
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

[[ $(id -u) -eq 0 ]] || die "run as root (sudo bash tools/install-deps.sh)"
[[ -r /etc/os-release ]] && . /etc/os-release
case "${VERSION_CODENAME:-}" in
    bookworm|trixie) ;;
    *) die "this script knows Debian 12 (bookworm) and 13 (trixie); this is '${PRETTY_NAME:-unknown}'" ;;
esac

# Under sudo, the venv and the cache belong to the caller: the tests run as that user.
if [[ -n ${SUDO_USER:-} && ${SUDO_USER} != root ]]; then
    user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    cache=${KEXLOADER_CACHE:-$user_home/.cache/kexloader}
    run_as_user() { sudo -u "$SUDO_USER" -H env "PATH=$PATH" ${KEXLOADER_CACHE:+"KEXLOADER_CACHE=$KEXLOADER_CACHE"} "$@"; }
else
    cache=${KEXLOADER_CACHE:-$HOME/.cache/kexloader}
    run_as_user() { "$@"; }
fi

# --- Debian packages -------------------------------------------------------------------------
apt_packages=(
    # the project's virtual environment; gcc + libc6-dev build the tests' small C helpers
    python3 python3-venv gcc libc6-dev ca-certificates
    # the QEMU guests: the emulator, busybox and cpio for the initramfs, the packers
    qemu-system-x86 busybox-static cpio gzip zstd xz-utils makedumpfile
    # UEFI guests: OVMF firmware, and an ESP image (FAT) for Xen's EFI binary
    ovmf dosfstools mtools
    # downloads of kernels and Xen through a private apt configuration
    debian-archive-keyring
    # the generated man pages are rendered by the tests (man --warnings, groff)
    man-db
    # the Debian package (tools/build-deb, tests/test_debian_package.py): the build tools, lintian, and
    # the four runtime dependencies for the build's smoke test and the test's runs with Debian's python3
    build-essential debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools python3-wheel
    lintian python3-construct python3-lz4 python3-pyelftools python3-zstandard
    # kexec-tools 2.0.32 built from its tag into the cache (tools/kexec_tools_capture/build.py), when its source is here
    autoconf automake make
    # virt-firmware (tools/secureboot-tools.sh) on Python 3.13+ needs crypt_r, built from source: Python.h
    python3-dev
)
export DEBIAN_FRONTEND=noninteractive
say "apt-get update"
retry apt-get update -qq
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if ((${#missing[@]})); then
    say "apt-get install ${missing[*]}"
    retry apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    say "Debian packages already installed"
fi
if dpkg-query -W -f='${Status}\n' kexec-tools 2>/dev/null | grep -q '^install ok installed$'; then
    say "WARNING: kexec-tools is installed on this host; kexloader's tests never need it here"
fi

# --- the project's virtual environment ---------------------------------------------------------
venv=$repo/.venv
if [[ -x $venv/bin/python && $("$venv/bin/python" -c 'import sys; print(sys.base_prefix)' 2>/dev/null) != /usr ]]; then
    say "$venv was not made from /usr/bin/python3: making it again"
    rm -rf "$venv"
fi
if [[ ! -x $venv/bin/python ]]; then
    say "python3 -m venv $venv ($(/usr/bin/python3 --version))"
    run_as_user /usr/bin/python3 -m venv "$venv"
fi
say "pip install -e '.[test]' into $venv"
retry run_as_user "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$repo[test]"

# --- Debian's kernels and Xen, downloaded and unpacked into the cache ---------------------------
run_as_user mkdir -p "$cache"
retry run_as_user bash "$repo/tools/apt-platforms.sh" "$cache" deb12 deb13 deb13-bpo
# Debian 13's ukify and systemd-stub, unpacked, for the tests that build unified kernel images
retry run_as_user bash "$repo/tools/uki-tools.sh" "$cache"
# Debian 12's and 13's kdump-tools, unpacked, for the test where kdump-config drives kexloader
retry run_as_user bash "$repo/tools/kdump-tools.sh" "$cache"
# virt-firmware (virt-fw-vars) in a private venv, for the Secure Boot test's OVMF variables
retry run_as_user bash "$repo/tools/secureboot-tools.sh" "$cache"
say "done: run the tests with  $venv/bin/python -m pytest"
