"""kexloader's Debian package in a guest (tests/vm/test_kdump_tools.py; issue 13, item 5).

`build` makes the .deb from the working tree with tools/build-deb (the README's command). `stage` lays out a
tree to merge at / in the guest, as dpkg would leave it after unpacking:

    the package's files             dpkg-deb -x: /usr/lib/python3/dist-packages/kexloader, /usr/sbin/kexloader,
                                    /usr/sbin/kexloader-vmcore-dmesg, man pages, completion, copyright
    its maintainer scripts          dpkg-deb -e, in /var/lib/dpkg/info/kexloader.{postinst,prerm,...}
    the packages it depends on      the files of Debian's python3-pyelftools, -construct, -lz4 and -zstandard
                                    as this host has them installed (`dpkg -L`): the guest's interpreter is
                                    this host's (tools/vm/pyruntime.py), so these are the builds it needs;
                                    and the shared libraries their extension modules link (liblz4, libzstd)
    update-alternatives             a stand-in (the guest has no dpkg): what the real one does for a sole
                                    alternative in auto mode, /etc/alternatives/NAME -> PATH and LINK ->
                                    /etc/alternatives/NAME, for the master and each --slave; every call is
                                    logged to ALTERNATIVES_LOG

The guest then runs the package's own postinst (`configure`), so `kexec` and `vmcore-dmesg` come from its
update-alternatives calls, not from links the test makes; the dh_python3 part skips (no py3compile) and
Python compiles the modules when they are first imported.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .env import REPO, work_dir
from .pyruntime import Staged, _copy_lib, _publish, ldd

DEPENDS = ("python3-pyelftools", "python3-construct", "python3-lz4", "python3-zstandard")
POSTINST = "/var/lib/dpkg/info/kexloader.postinst"
ALTERNATIVES_LOG = "/var/log/update-alternatives.calls"
# A stage's lines that configure the package: its postinst (the kexec and vmcore-dmesg alternatives), then
# /sbin/kexec as on Debian, whose /sbin is /usr/sbin (merged /usr; scripts run /sbin/kexec).
CONFIGURE = f"""run postinst {POSTINST} configure
ln -s /usr/sbin/kexec /sbin/kexec
"""

UPDATE_ALTERNATIVES = f"""#!/bin/sh
# Stand-in for dpkg's update-alternatives (tools/vm/debpackage.py): --install LINK NAME PATH PRIORITY
# [--slave LINK NAME PATH]... links as the real one does for a sole alternative in auto mode. The links
# are made under $UA_ROOT (unset in the guest; a test's directory on the host), pointing at the real paths.
R=${{UA_ROOT:-}}
mkdir -p "$R$(dirname {ALTERNATIVES_LOG})"
echo "$*" >> "$R{ALTERNATIVES_LOG}"
[ "$1" = --install ] || exit 0
[ $# -ge 5 ] || {{ echo "update-alternatives: --install needs <link> <name> <path> <priority>" >&2; exit 2; }}
link=$2 name=$3 path=$4
shift 5
mkdir -p "$R/etc/alternatives"
while :; do
    mkdir -p "$R$(dirname "$link")"
    ln -sfn "$path" "$R/etc/alternatives/$name"
    ln -sfn "/etc/alternatives/$name" "$R$link"
    [ "${{1:-}}" = --slave ] || break
    [ $# -ge 4 ] || {{ echo "update-alternatives: --slave needs <link> <name> <path>" >&2; exit 2; }}
    link=$2 name=$3 path=$4
    shift 4
done
"""


class Unavailable(Exception):
    """Something the staging needs is not on this host; the message says what and how to get it."""


def build(out_dir: Path) -> Path:
    """The .deb of the working tree (tools/build-deb OUT_DIR, ~10 s)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["bash", str(REPO / "tools/build-deb"), str(out_dir)], capture_output=True, text=True)
    if r.returncode != 0:
        raise Unavailable(f"tools/build-deb failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return Path(r.stdout.strip().splitlines()[-1])


def dependency_files(packages: tuple[str, ...] = DEPENDS) -> list[Path]:
    """The regular files that Debian's packages of kexloader's dependencies installed on this host."""
    r = subprocess.run(["dpkg", "-L", *packages], capture_output=True, text=True)
    if r.returncode != 0:
        raise Unavailable(f"{r.stderr.strip()} (sudo bash tools/install-deps.sh installs {' '.join(packages)})")
    return sorted(p for p in map(Path, r.stdout.split()) if p.is_file() and not p.is_symlink())


def stage(deb: Path) -> Staged:
    """The guest tree for `deb` (cached under the VM work directory by the .deb's digest and this file)."""
    key = hashlib.sha256(deb.read_bytes() + Path(__file__).read_bytes()).hexdigest()[:16]
    root = work_dir() / f"deb-{key}"
    if (root / ".complete").exists():
        os.utime(root)
        return Staged(root, key)
    if root.exists():
        shutil.rmtree(root)
    tmp = Path(tempfile.mkdtemp(prefix="deb-", dir=work_dir()))
    try:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        control = tmp / "control.tmp"
        subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True)
        info = tmp / POSTINST.lstrip("/").rsplit("/", 1)[0]
        info.mkdir(parents=True, exist_ok=True)
        for script in sorted(control.iterdir()):
            shutil.copy2(script, info / f"kexloader.{script.name}")
        shutil.rmtree(control)
        for path in dependency_files():
            dest = tmp / path.relative_to("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        # Debian's lz4 and zstandard link the system's liblz4 and libzstd, which the runtime may not have
        for lib in ldd(sorted(tmp.rglob("*.so"))):
            _copy_lib(lib, tmp)
        ua = tmp / "usr/bin/update-alternatives"
        ua.parent.mkdir(parents=True, exist_ok=True)
        ua.write_text(UPDATE_ALTERNATIVES)
        ua.chmod(0o755)
        (tmp / ".complete").write_text(deb.name + "\n")
        _publish(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return Staged(root, key)
