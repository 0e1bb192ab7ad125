#!/usr/bin/env bash
# Download and unpack Debian's kernel and Xen for the VM test platforms, never installing them.
#
#   bash tools/apt-platforms.sh CACHE [PLATFORM...]      (default: deb12 deb13 deb13-bpo)
#
# Platforms:
#   deb12      linux-image-amd64 from bookworm (6.1),        xen-hypervisor-4.17-amd64
#   deb13      linux-image-amd64 from trixie (6.12),         xen-hypervisor-4.20-amd64
#   deb13-bpo  linux-image-amd64 from trixie-backports,      xen-hypervisor-4.20-amd64
#
# A private apt configuration under CACHE/apt (APT_CONFIG; its own sources, lists and pins, the
# host's release pinned highest) reaches both releases from either of them; it uses the Debian
# mirror the host's own apt is set up with, and never changes the host's sources. Result:
#   CACHE/pkgs/PACKAGE/                    dpkg -x of each package (Xen also gets xen.elf, inflated)
#   CACHE/platforms/NAME/{linux,xen}       links to the packages of that platform
#   CACHE/platforms/NAME/info              "kernel PACKAGE VERSION SUITE" and "xen PACKAGE VERSION"
#   CACHE/{linux,xen}                      links to deb12's (the default platform)
# Needs no root; idempotent (a package already unpacked at its candidate version is kept).
set -euo pipefail

say() { printf 'apt-platforms: %s\n' "$*"; }
die() { printf 'apt-platforms: %s\n' "$*" >&2; exit 1; }

[[ $# -ge 1 ]] || die "usage: apt-platforms.sh CACHE [deb12|deb13|deb13-bpo ...]"
cache=$(mkdir -p "$1" && cd "$1" && pwd); shift
platforms=("$@")
((${#platforms[@]})) || platforms=(deb12 deb13 deb13-bpo)

. /etc/os-release
host=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}

# The host's Debian mirror, as its apt knows it (the archive, and the security archive if any).
policy=$(apt-cache policy 2>/dev/null)
uri_of() { sed -n "s|^ *[0-9]* \([a-z+]*://[^ ]*\) $1/main amd64 Packages\$|\1|p" <<<"$policy" | head -n1; }
mirror=$(uri_of "$host")
security=$(uri_of "$host-security")
[[ -n $mirror ]] || die "no Debian mirror for '$host/main' in apt's configuration (run apt-get update)"

apt_dir=$cache/apt
mkdir -p "$apt_dir"/{lists/partial,archives/partial,preferences.d,sources.list.d}
[[ -f $apt_dir/status ]] || : >"$apt_dir/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
{
    for rel in bookworm trixie; do
        echo "deb [signed-by=$keyring] $mirror $rel main"
        echo "deb [signed-by=$keyring] $mirror $rel-updates main"
        [[ -z $security ]] || echo "deb [signed-by=$keyring] $security $rel-security main"
    done
    echo "deb [signed-by=$keyring] $mirror trixie-backports main"
} >"$apt_dir/sources.list"
printf 'Package: *\nPin: release n=%s\nPin-Priority: 990\n' "$host" >"$apt_dir/preferences"
cat >"$apt_dir/apt.conf" <<EOF
Dir::Etc::SourceList "$apt_dir/sources.list";
Dir::Etc::SourceParts "$apt_dir/sources.list.d";
Dir::Etc::Preferences "$apt_dir/preferences";
Dir::Etc::PreferencesParts "$apt_dir/preferences.d";
Dir::State::Lists "$apt_dir/lists";
Dir::State::status "$apt_dir/status";
Dir::Cache "$apt_dir";
Dir::Cache::archives "$apt_dir/archives";
APT::Architecture "amd64";
APT::Sandbox::User "root";
EOF
export APT_CONFIG=$apt_dir/apt.conf
say "apt-get update (private configuration $APT_CONFIG; mirror $mirror)"
apt-get update -qq

mkdir -p "$cache/debs" "$cache/pkgs" "$cache/platforms"

# newest VERSION of PACKAGE whose suite matches the regex SUITE: "VERSION SUITE"
newest_in() {  # (no early exit in the pipe: pipefail would see apt-cache's SIGPIPE)
    apt-cache madison "$1" | awk -F' [|] ' -v re="$2" '
        !done { split($3, a, " "); split(a[2], s, "/"); if (s[1] ~ re) { print $2, s[1]; done = 1 } }'
}

download() {  # PACKAGE VERSION -> prints the .deb in CACHE/debs (older versions removed)
    local pkg=$1 version=$2 deb old
    deb=$(ls "$cache/debs/${pkg}_"*.deb 2>/dev/null | grep -F "_${version//:/%3a}_" | sed -n 1p || true)
    if [[ -z $deb ]]; then
        say "apt-get download $pkg=$version" >&2
        (cd "$cache/debs" && apt-get download -qq "$pkg=$version" >&2)
        deb=$(ls "$cache/debs/${pkg}_"*.deb | grep -F "_${version//:/%3a}_" | sed -n 1p)
    fi
    for old in "$cache/debs/${pkg}_"*.deb; do
        [[ $old == "$deb" ]] || rm -f "$old"
    done
    echo "$deb"
}

unpack() {  # DEST DEB... -> dpkg -x every DEB into CACHE/pkgs/DEST, unless already done
    local dest=$cache/pkgs/$1 stamp deb; shift
    stamp=.unpacked-$(for deb in "$@"; do basename "$deb"; done | sha256sum | cut -c1-16)
    if [[ ! -f $dest/$stamp ]]; then
        rm -rf "$dest" "$dest.tmp"
        mkdir -p "$dest.tmp"
        for deb in "$@"; do
            say "dpkg -x $(basename "$deb")" >&2
            dpkg -x "$deb" "$dest.tmp"
        done
        touch "$dest.tmp/$stamp"
        mv "$dest.tmp" "$dest"
    fi
}

# The package itself and, since Debian's 7.x kernels, the parts it depends on of the same ABI
# (linux-binary-*, linux-modules-*, linux-base-*), each at the version it asks for.
kernel_parts() {  # PACKAGE VERSION -> "PACKAGE VERSION" lines
    local abi=${1#linux-image-}
    echo "$1 $2"
    apt-cache show "$1=$2" | sed -n 's/^Depends: //p' | tr ',' '\n' |
        sed -n "s/^ *\(linux-[a-z]*-${abi//+/[+]}\) (= \([^)]*\)).*/\1 \2/p"
}

for name in "${platforms[@]}"; do
    case $name in
        deb12)     suite='^bookworm(-updates|-security)?$';  xen_pkg=xen-hypervisor-4.17-amd64 ;;
        deb13)     suite='^trixie(-updates|-security)?$';    xen_pkg=xen-hypervisor-4.20-amd64 ;;
        deb13-bpo) suite='^trixie-backports$';               xen_pkg=xen-hypervisor-4.20-amd64 ;;
        *) die "unknown platform '$name' (deb12, deb13, deb13-bpo)" ;;
    esac
    read -r meta_version meta_suite < <(newest_in linux-image-amd64 "$suite") ||
        die "$name: no linux-image-amd64 in a suite matching $suite"
    kernel_pkg=$(apt-cache show "linux-image-amd64=$meta_version" |
                 sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,]*-amd64\).*/\1/p' | sed -n 1p)
    [[ -n $kernel_pkg ]] || die "$name: cannot resolve the kernel package of linux-image-amd64=$meta_version"
    read -r kernel_version _ < <(newest_in "$kernel_pkg" "$suite") ||
        die "$name: no $kernel_pkg in a suite matching $suite"
    read -r xen_version _ < <(newest_in "$xen_pkg" '.') || die "$name: no $xen_pkg"

    debs=()
    while read -r part part_version; do
        debs+=("$(download "$part" "$part_version")")
    done < <(kernel_parts "$kernel_pkg" "$kernel_version")
    unpack "$kernel_pkg" "${debs[@]}"
    unpack "$xen_pkg" "$(download "$xen_pkg" "$xen_version")"
    linux_dir=$cache/pkgs/$kernel_pkg xen_dir=$cache/pkgs/$xen_pkg
    # One shape for every release: boot/vmlinuz-VERSION (7.x ships usr/lib/modules/VERSION/vmlinuz)
    # and lib/modules (13 ships merged-/usr usr/lib/modules, .ko.xz).
    [[ -e $linux_dir/lib || ! -d $linux_dir/usr/lib ]] || ln -s usr/lib "$linux_dir/lib"
    for m in "$linux_dir"/lib/modules/*/vmlinuz; do
        [[ -f $m ]] || continue
        v=$(basename "$(dirname "$m")")
        mkdir -p "$linux_dir/boot"
        [[ -e $linux_dir/boot/vmlinuz-$v ]] || ln -s "../lib/modules/$v/vmlinuz" "$linux_dir/boot/vmlinuz-$v"
    done
    xen_gz=$(ls "$xen_dir"/boot/xen-*-amd64.gz | head -n1)
    if [[ ! -f $xen_dir/xen.elf || $xen_gz -nt $xen_dir/xen.elf ]]; then
        gzip -dc "$xen_gz" >"$xen_dir/xen.elf.tmp" && mv "$xen_dir/xen.elf.tmp" "$xen_dir/xen.elf"
    fi

    p=$cache/platforms/$name
    mkdir -p "$p"
    ln -sfn "../../pkgs/$kernel_pkg" "$p/linux"
    ln -sfn "../../pkgs/$xen_pkg" "$p/xen"
    printf 'kernel %s %s %s\nxen %s %s\n' "$kernel_pkg" "$kernel_version" "$meta_suite" \
        "$xen_pkg" "$xen_version" >"$p/info"
    say "$name: $(ls "$linux_dir"/boot/vmlinuz-*) + $xen_gz"
done

# The default platform keeps the old places (CACHE/linux, CACHE/xen).
if [[ -d $cache/platforms/deb12 ]]; then
    for d in linux xen; do
        [[ -L $cache/$d || ! -e $cache/$d ]] || rm -rf "${cache:?}/$d"
        ln -sfn "platforms/deb12/$d" "$cache/$d"
    done
fi

# Packages no platform links to any more (an older kernel ABI) are removed.
for d in "$cache"/pkgs/*/; do
    d=${d%/}
    used=0
    for l in "$cache"/platforms/*/{linux,xen}; do
        [[ $(readlink -f "$l") == "$(readlink -f "$d")" ]] && used=1
    done
    ((used)) || { say "removing unused $(basename "$d")"; rm -rf "$d"; }
done
