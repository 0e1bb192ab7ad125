"""Debian's kdump-tools in a guest, driving kexloader as /sbin/kexec (tests/vm/test_kdump_tools.py).

tools/kdump-tools.sh unpacks the package of Debian 12 (bookworm) and of Debian 13 (trixie) into
$KEXLOADER_CACHE/kdump-tools/RELEASE; a platform's guest gets its own release's scripts:

    /usr/sbin/kdump-config        the package's, unchanged
    /etc/init.d/kdump-tools       the package's; what kdump-tools.service and kdump-tools-dump.service run
    /etc/default/kdump-tools      the package's kdump-tools.conf plus the settings given (as its postinst
                                  installs it with ucf, then an administrator edits it)
    /etc/kdump/sysctl.conf        the package's
    /lib/lsb/init-functions       the host's (sysvinit-utils, Essential on Debian: log_*_msg)
    /lib/init/vars.sh             the host's (sysvinit-utils; the init script sources it)
    /usr/bin/file + libmagic      the host's (the package depends on file; kdump-config runs it on the
                                  kernel and on its /var/lib/kdump links)
    /usr/bin/dash                 the host's; the stages make /bin/sh a link to it, as on Debian (busybox
                                  sh runs its own applets before looking at PATH, so `reboot -f` would skip
                                  the stand-in below and `command -v sysctl` would print no path)
    /usr/bin/hexdump              the host's (bsdextrautils, which the package depends on): kdump-config
                                  reads the SecureBoot and SetupMode variables with it

kexloader itself comes from its .deb (built by tools/build-deb), unpacked as dpkg would and configured by its
own postinst (tools/vm/debpackage.py).

Not there, with the stand-ins the test uses: systemd (the stage scripts run what the units' ExecStart run,
`/etc/init.d/kdump-tools start`), dpkg's update-alternatives (tools/vm/debpackage.py), syslog
(busybox's logger writes to a /dev/log nobody reads), the kernel postinst hook that builds the small kdump
initrd with mkinitramfs (kdump-config deletes /var/lib/kdump/initrd.img-VERSION whenever
/etc/kdump/sysctl.conf differs from the copy it keeps, and runs the hook to make it again: HOOK_STANDIN copies
the test's crash initrd, CRASH_INITRD, there instead), and `reboot -f` after savecore (REBOOT_STANDIN
records the call).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .debpackage import CONFIGURE
from .env import DEFAULT_PLATFORM, cache_dir
from .guest import Guest
from .pyruntime import ldd

FETCH_HINT = "bash tools/kdump-tools.sh ~/.cache/kexloader (run by sudo bash tools/install-deps.sh)"
RELEASE = {"deb12": "bookworm", "deb13": "trixie", "deb13-bpo": "trixie"}
HOST_SCRIPTS = ("/lib/lsb/init-functions", "/lib/init/vars.sh")
FILE = Path("/usr/bin/file")
MAGIC = Path("/usr/lib/file/magic.mgc")
MAGIC_IN_GUEST = "/usr/share/misc/magic.mgc"  # where libmagic looks (on Debian a link to MAGIC)
DASH = Path("/usr/bin/dash")
HEXDUMP = Path("/usr/bin/hexdump")  # bsdextrautils (a dependency of the package); busybox's keeps the "\ " of
# kdump-config's format '/1 "%d\ "', so its Secure Boot check would read "1\" and never add -s
KDUMP_DIR = "/var/lib/kdump"
CRASH_INITRD = "/usr/lib/kxm/kdump-initrd.img"
COREDIR = "/var/crash"

# /etc/kernel/postinst.d/kdump-tools as kdump-config calls it (KERNEL_VERSION): the package's runs mkinitramfs.
HOOK_STANDIN = f"""#!/bin/sh
set -eu
echo "kdump-tools: Generating {KDUMP_DIR}/initrd.img-$1 (stand-in: a copy of {CRASH_INITRD})"
cp {CRASH_INITRD} {KDUMP_DIR}/initrd.img-$1
"""

# A stage's first lines: Debian's /bin/sh (this stage itself goes on in busybox sh); kexloader's package
# configured by its own postinst, whose update-alternatives calls make /usr/sbin/kexec and vmcore-dmesg
# (tools/vm/debpackage.py; the guest's trees are Harness.deb_trees()); /sbin/kexec as on Debian, whose /sbin
# is /usr/sbin (merged /usr; kdump-tools runs /sbin/kexec); the directories the package ships.
SETUP = f"""ln -sf /usr/bin/dash /bin/sh
{CONFIGURE}mkdir -p {KDUMP_DIR} {COREDIR}
"""

# `reboot -f` as the init script calls it after savecore: record it and return, so the stage can report.
REBOOT_STANDIN = """#!/bin/sh
. /lib/kxm.sh
mark reboot_called "$*"
"""


@dataclass(frozen=True)
class KdumpTools:
    """One release's unpacked kdump-tools package."""

    root: Path
    release: str
    version: str

    def defaults(self, settings: dict[str, str]) -> str:
        """/etc/default/kdump-tools: the package's template, then the settings (later lines win when sourced)."""
        template = (self.root / "usr/share/kdump-tools/kdump-tools.conf").read_text()
        lines = [f'{name}="{value}"' for name, value in settings.items()]
        return template + "\n# set for the kexloader VM test\n" + "\n".join(lines) + "\n"

    def files(self, settings: dict[str, str]) -> dict[str, bytes | str | Path]:
        """The package's scripts and configuration, and the host's init helpers they source."""
        files: dict[str, bytes | str | Path] = {
            "/usr/sbin/kdump-config": self.root / "usr/sbin/kdump-config",
            "/etc/init.d/kdump-tools": self.root / "etc/init.d/kdump-tools",
            "/etc/kdump/sysctl.conf": self.root / "etc/kdump/sysctl.conf",
            "/etc/default/kdump-tools": self.defaults(settings),
            "/usr/lib/kxm/reboot": REBOOT_STANDIN,
            "/etc/kernel/postinst.d/kdump-tools": HOOK_STANDIN,
        }
        files.update({path: Path(path) for path in HOST_SCRIPTS})
        return files

    @staticmethod
    def executables() -> tuple[str, ...]:
        return ("/usr/sbin/kdump-config", "/etc/init.d/kdump-tools", "/usr/lib/kxm/reboot",
                "/etc/kernel/postinst.d/kdump-tools")


def settings(cmdline_append: str) -> dict[str, str]:
    """What an administrator sets in /etc/default/kdump-tools: the kernel and initrd as the links kdump-config
    makes (KDUMP_DIR/vmlinuz to /boot/vmlinuz-VERSION, KDUMP_DIR/initrd.img to KDUMP_DIR/initrd.img-VERSION),
    the dump directory and what goes after the first kernel's command line for the crash kernel."""
    return {"USE_KDUMP": "1", "KDUMP_KERNEL": f"{KDUMP_DIR}/vmlinuz", "KDUMP_INITRD": f"{KDUMP_DIR}/initrd.img",
            "KDUMP_COREDIR": COREDIR, "KDUMP_CMDLINE_APPEND": cmdline_append}


def find(platform: str = DEFAULT_PLATFORM) -> KdumpTools | None:
    """The kdump-tools of the platform's Debian release, or None when tools/kdump-tools.sh has not run."""
    release = RELEASE[platform]
    root = cache_dir() / "kdump-tools" / release
    if not (root / "usr/sbin/kdump-config").is_file():
        return None
    return KdumpTools(root, release, (root / "VERSION").read_text().strip())


def missing_host_files() -> list[str]:
    return [str(p) for p in (*map(Path, HOST_SCRIPTS), FILE, MAGIC, DASH, HEXDUMP) if not p.is_file()]


def host_programs(*programs: Path) -> dict[str, bytes | str | Path]:
    """Host executables and every library ldd names for them, at the same paths in the guest."""
    files: dict[str, bytes | str | Path] = {str(p): p for p in programs}
    for lib in ldd(programs):
        files[str(lib)] = lib.resolve()
    return files


def file_command() -> dict[str, bytes | str | Path]:
    """`file` with libmagic and its compiled database."""
    return {**host_programs(FILE), MAGIC_IN_GUEST: MAGIC}


def install(guest: Guest, kt: KdumpTools, settings: dict[str, str], *, kernel: tuple[str, Path] | None = None,
            crash_initrd: bytes | Path | None = None) -> None:
    """Put kdump-tools into a guest (stages start with SETUP): the package's files, dash, and for a guest that
    loads (not the crash kernel's) `file`, kernel=(VERSION, vmlinuz) as /boot/vmlinuz-VERSION and the crash
    initrd that the hook stand-in copies."""
    programs = host_programs(DASH, HEXDUMP)
    if kernel or crash_initrd is not None:
        programs.update(file_command())
    guest.files.update({**kt.files(settings), **programs})
    if kernel:
        guest.files[f"/boot/vmlinuz-{kernel[0]}"] = kernel[1]
    if crash_initrd is not None:
        guest.files[CRASH_INITRD] = crash_initrd
    guest.modes.update({path: 0o755 for path in (*kt.executables(), *programs) if path != MAGIC_IN_GUEST})
