#!/usr/bin/env bash
# Install everything kexloader's tests need on a Debian 12 machine, VM tests included.
#
#   sudo bash tools/install-deps.sh
#
# Idempotent: a second run only re-checks. It installs
#   - Debian packages for the QEMU tests (never kexec-tools: Debian's package enables a service
#     that loads a kernel at shutdown; the host must never kexec),
#   - the project itself, editable, with its test extras, into the first `python3` on PATH
#     (the user's; under sudo, the invoking user's python3 is looked up first),
#   - Debian's kernel and Xen packages, downloaded (not installed) and unpacked into the cache:
#     ${KEXLOADER_CACHE:-$HOME/.cache/kexloader}/{debs,linux,xen}.
set -euo pipefail

say() { printf 'install-deps: %s\n' "$*"; }

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

if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: run as root (sudo bash tools/install-deps.sh)" >&2
    exit 1
fi

# Under sudo, keep the caller's cache and Python: the tests run as that user.
if [[ -n ${SUDO_USER:-} && ${SUDO_USER} != root ]]; then
    user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    cache=${KEXLOADER_CACHE:-$user_home/.cache/kexloader}
    run_as_user() { sudo -u "$SUDO_USER" -H env "PATH=$PATH" "$@"; }
else
    cache=${KEXLOADER_CACHE:-$HOME/.cache/kexloader}
    run_as_user() { "$@"; }
fi

# --- Debian packages -------------------------------------------------------------------------
apt_packages=(
    qemu-system-x86 busybox-static cpio zstd xz-utils makedumpfile
    python3.11 python3-minimal gcc ca-certificates
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

# --- the project, editable, with test extras --------------------------------------------------
if [[ -n ${SUDO_USER:-} && ${SUDO_USER} != root ]]; then
    # sudo resets PATH: ask the user's login shell which python3 the user runs.
    python=$(sudo -u "$SUDO_USER" -H bash -lc 'command -v python3' 2>/dev/null || command -v python3)
else
    python=$(command -v python3)
fi
say "pip install -e '.[test]' with $python ($("$python" --version 2>&1))"
retry run_as_user "$python" -m pip install -q --disable-pip-version-check -e "$repo[test]"

# --- Debian's kernel and Xen, downloaded and unpacked into the cache ---------------------------
run_as_user mkdir -p "$cache/debs"
kernel_pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1)
if [[ -z $kernel_pkg ]]; then
    echo "install-deps: cannot resolve the kernel package from 'apt-cache depends linux-image-amd64'" >&2
    exit 1
fi
xen_pkg=xen-hypervisor-4.17-amd64

fetch_and_unpack() {  # $1 package, $2 destination directory under the cache
    local pkg=$1 dest=$2 version deb old
    version=$(apt-cache policy "$pkg" | sed -n 's/^ *Candidate: //p')
    deb=$(ls "$cache/debs/${pkg}_"*.deb 2>/dev/null | grep -F "_${version//:/%3a}_" | head -n1 || true)
    if [[ -z $deb ]]; then
        say "apt-get download $pkg=$version"
        (cd "$cache/debs" && retry run_as_user apt-get download -q "$pkg=$version")
        deb=$(ls "$cache/debs/${pkg}_"*.deb | grep -F "_${version//:/%3a}_" | head -n1)
    fi
    # Older versions of the same package are not needed any more.
    for old in "$cache/debs/${pkg}_"*.deb; do
        [[ $old == "$deb" ]] || rm -f "$old"
    done
    if [[ ! -f $dest/.unpacked-$(basename "$deb") ]]; then
        say "dpkg -x $(basename "$deb") $dest"
        rm -rf "$dest"
        run_as_user mkdir -p "$dest"
        run_as_user dpkg -x "$deb" "$dest"
        run_as_user touch "$dest/.unpacked-$(basename "$deb")"
    else
        say "$pkg $version already unpacked in $dest"
    fi
}
fetch_and_unpack "$kernel_pkg" "$cache/linux"
fetch_and_unpack "$xen_pkg" "$cache/xen"

# The decompressed Xen ELF: QEMU's multiboot loader (and kexec-tools) need it.
xen_gz=$(ls "$cache"/xen/boot/xen-*-amd64.gz | head -n1)
if [[ ! -f $cache/xen/xen.elf || $xen_gz -nt $cache/xen/xen.elf ]]; then
    run_as_user sh -c "gzip -dc '$xen_gz' > '$cache/xen/xen.elf.tmp' && mv '$cache/xen/xen.elf.tmp' '$cache/xen/xen.elf'"
fi

vmlinuz=$(ls "$cache"/linux/boot/vmlinuz-* | head -n1)
say "kernel: $vmlinuz"
say "xen:    $xen_gz (decompressed: $cache/xen/xen.elf)"
say "done"
