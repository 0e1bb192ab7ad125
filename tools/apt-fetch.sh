# Shared by the download scripts (tools/uki-tools.sh, tools/kdump-tools.sh): sourced, not run. The caller defines
# say() and die() and sets `cache`; the private apt configuration is the one tools/apt-platforms.sh makes.

# use CACHE/apt/apt.conf (never the host's apt sources)
use_private_apt() {
    export APT_CONFIG=$cache/apt/apt.conf
    [[ -f $APT_CONFIG ]] || die "no $APT_CONFIG: run tools/apt-platforms.sh $cache first"
    mkdir -p "$cache/debs"
}

# the newest version of PACKAGE in RELEASE, its -updates and -security included (not the host's release, which
# the private pins prefer)
version_in() {
    apt-cache madison "$1" | awk -F' [|] ' -v rel="$2" \
        '!done && $3 ~ (" " rel "(-updates|-security)?/") { gsub(/ /, "", $2); print $2; done = 1 }'
}

# the path of PACKAGE_VERSION_*.deb in CACHE/debs, downloaded if it is not there yet
fetch_deb() {
    local pkg=$1 version=$2 deb
    deb=$(ls "$cache/debs/${pkg}_${version//:/%3a}_"*.deb 2>/dev/null | sed -n 1p || true)
    if [[ -z $deb ]]; then
        say "apt-get download $pkg=$version" >&2
        (cd "$cache/debs" && apt-get download -qq "$pkg=$version")
        deb=$(ls "$cache/debs/${pkg}_${version//:/%3a}_"*.deb | sed -n 1p)
    fi
    printf '%s\n' "$deb"
}
