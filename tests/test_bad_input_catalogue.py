"""The bad-input catalogue (issue 16): invocations a user can type, each giving exactly one line on stderr, the
exit code kexec-tools gives for the same case, no traceback and no load.

Most cases run in-process (cli.main with the recording backend, or a recorder whose kernel refuses); SUBPROCESS
repeats some through `python3 -m kexloader`, where argv is real bytes. KEXEC_TOOLS_2_0_25 holds kexec-tools'
codes, recorded on the development host with

    python3 tools/kexec_tools_exit_codes.py --json /tmp/kt.json

(Debian 12's kexec-tools 1:2.0.25-3+deb12u3 behind the capture shim: kexec_load captured, or EPERM for
`kernel-refuses-load`; kexec_file_load ENOSYS). A case that names one of them must give kexec-tools' code;
the cases where kexloader differs on purpose are in DIFFERENCES and in docs/exit-codes.md.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from kexloader import cli, plan as plans
from kexloader.backends.recording import RecordingBackend
from kexloader.errors import BackendError
from kexloader.model import Plan, Role, Segment

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
SNAP = FIX / "snapshots/devhost.json"
KDUMP_SNAP = FIX / "snapshots/qemu-debian12-kdump-384m.json"  # a 384 MiB crash region
BAD = os.fsdecode(b"\xff\xfe")  # bytes that are not UTF-8, as Python hands them over in argv

# kexec-tools 2.0.25's exit code per case of tools/kexec_tools_exit_codes.py ("hang": still running after 5 s;
# -8: killed by SIGFPE)
KEXEC_TOOLS_2_0_25: dict[str, int | str] = {
    "unknown-option": 1, "unknown-short": 1, "load-without-kernel": 255, "missing-kernel": 1, "missing-initrd": 1,
    "empty-kernel": 1, "directory-kernel": 1, "dev-null-kernel": 1, "garbage-kernel": 255, "truncated-bzimage": 255,
    "debian-head-only": 255, "bzimage-protocol-2.10": 0, "bzimage-32bit-only": 0, "gzip-of-garbage": 255,
    "i386-elf": 0, "dynamic-elf": 0, "directory-initrd": 1, "fifo-initrd": "hang", "fifo-kernel": "hang",
    "bad-serial": 255, "bad-serial-baud": 255, "serial-baud-not-a-number": -8, "bad-mem-min": 1,
    "mem-max-too-low": 1, "unknown-type": 255, "append-too-long": 255, "extra-positional": 0,
    "status-with-append": 1, "unload-with-initrd": 1, "crash-without-region": 1, "module-for-bzimage": 0,
    "multiboot-with-initrd": 0, "kernel-refuses-load": 255, "file-load-unavailable": 253, "file-load-vmlinux": 1,
    "file-load-garbage": 255, "auto-falls-back": 0, "load-preserve-context": 1, "file-load-missing-kernel": 255,
    "auto-missing-kernel": 255, "file-load-missing-initrd": 255, "file-load-empty-kernel": 1,
    "file-load-no-crash-region": 1, "unload-with-noefi": 1, "unload-with-module": 1, "unload-with-console-vga": 0,
    "unload-with-kernel": 0,
}
# where kexloader gives another code on purpose (docs/exit-codes.md says why)
DIFFERENCES = {
    "bzimage-protocol-2.10": 255, "bzimage-32bit-only": 255,  # kexloader boots protocol 2.12+ 64-bit kernels only
    "i386-elf": 1,  # a 32-bit ELF kernel: "not supported yet"
    "fifo-initrd": 1, "fifo-kernel": 1,  # refused up front instead of waiting forever
    "serial-baud-not-a-number": 255,  # kexec-tools divides by zero; the class of a bad baud rate
    "module-for-bzimage": 1, "multiboot-with-initrd": 255,  # refused, where kexec-tools warns and loads without it
    "file-load-missing-kernel": 1, "auto-missing-kernel": 1,  # as kexec-tools 2.0.32 ("Cannot open", 1)
}


class RefusingBackend(RecordingBackend):
    """A kernel that refuses: kexec_file_load fails with `err`, and so does kexec_load unless `err` is ENOSYS (a
    kernel without kexec_file_load, whose kexec_load works)."""

    def __init__(self, err: int = errno.EPERM) -> None:
        super().__init__()
        self.err = err

    def load(self, plan: Plan) -> None:
        if self.err == errno.ENOSYS:
            return super().load(plan)
        raise BackendError(f"kexec_load failed: {os.strerror(self.err)}", errno=self.err)

    def load_file(self, *a: object, **k: object) -> None:
        raise BackendError(f"kexec_file_load failed: {os.strerror(self.err)}", errno=self.err)

    def unload_file(self, crash: bool) -> None:
        raise BackendError(f"kexec_file_load failed: {os.strerror(self.err)}", errno=self.err)


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]
    code: int
    words: str = ""  # in the one line on stderr
    kt: str | None = None  # the case of KEXEC_TOOLS_2_0_25 it is
    dry: bool = True  # add --dry-run --facts SNAP (a load that plans for the devhost snapshot, loads nothing)
    backend: int | None = None  # errno the kernel answers with (RefusingBackend)


def c(name: str, *argv: str, code: int, words: str = "", kt: str | None = None, dry: bool = True,
      backend: int | None = None) -> Case:
    return Case(name, argv, code, words, kt, dry, backend)


CASES = [
    # ---- the command line (usage errors: 1, as kexec-tools' usage())
    c("unknown-option", "--bogus", code=1, words="option --bogus not recognized", kt="unknown-option", dry=False),
    c("unknown-short", "-Z", code=1, words="option -Z not recognized", kt="unknown-short", dry=False),
    c("short-with-glued-word", "-lK", code=1, words="not recognized", dry=False),
    c("append-without-value", "-l", "{TINY}", "--append", code=1, words="requires argument", dry=False),
    c("type-without-value", "-l", "{TINY}", "-t", code=1, words="requires argument", dry=False),
    c("ambiguous-prefix", "--re", code=1, words="not a unique prefix", dry=False),
    c("bad-mem-min", "-l", "{TINY}", "--mem-min=abc", code=1, words="not a number", kt="bad-mem-min"),
    c("bad-mem-max", "-l", "{TINY}", "--mem-max=zz", code=1, words="not a number"),
    c("negative-uki-profile", "-l", "{TINY}", "--uki-profile=-1", code=1, words="a profile is a number"),
    c("word-uki-profile", "-l", "{TINY}", "--uki-profile=x", code=1, words="not a number"),
    c("status-with-append", "-S", "--append=x", code=1, words="takes no image options", kt="status-with-append",
      dry=False),
    c("unload-with-initrd", "-u", "--initrd=x", code=1, words="takes no image options", kt="unload-with-initrd",
      dry=False),
    c("status-with-reuse-cmdline", "-S", "--reuse-cmdline", code=1, words="takes no image options", dry=False),
    c("unload-with-noefi", "-u", "--noefi", code=1, words="takes no image options", kt="unload-with-noefi",
      dry=False),
    c("unload-with-module", "-u", "--module=x", code=1, words="takes no image options", kt="unload-with-module",
      dry=False),
    c("unload-with-console-vga", "-u", "--console-vga", code=0, kt="unload-with-console-vga", dry=False),
    c("unload-with-kernel", "-u", "{TINY}", code=0, kt="unload-with-kernel", dry=False),
    c("exec-with-command-line", "-e", "--command-line=x", code=1, words="takes no image options", dry=False),
    c("load-preserve-context", "--load-preserve-context", "-l", "{TINY}", code=1, words="CONFIG_KEXEC_JUMP",
      kt="load-preserve-context"),
    c("load-jump-back-helper", "--load-jump-back-helper", code=1, words="CONFIG_KEXEC_JUMP", dry=False),
    c("entry", "-l", "{TINY}", "--entry=0x1000", code=1, words="CONFIG_KEXEC_JUMP"),
    c("reuseinitrd", "-l", "{TINY}", "--reuseinitrd", code=1, words="not implemented on x86"),
    # kexec-tools 2.0.32's default (-a) file loader refuses 16/32-bit entry with 255; with -c it loads (kexloader: 1)
    c("real-mode", "-l", "{TINY}", "--real-mode", code=255, words="no 16-bit or 32-bit entry"),
    c("real-mode-c", "-c", "-l", "{TINY}", "--real-mode", code=1, words="--real-mode is not supported yet"),
    c("dtb", "-l", "{TINY}", "--dtb={TINY}", code=255, words="not a flattened device tree"),  # an image, not a .dtb
    c("facts-without-dry-run", "-l", "{TINY}", "--facts={SNAP}", code=1, words="use it with --dry-run", dry=False),
    c("boot-entry-and-kernel", "-l", "{TINY}", "--boot-entry=x", code=1, words="--boot-entry names the kernel"),
    c("module-without-file", "-l", "{MB1}", "--module=  ", code=1, words="--module needs a file name"),
    c("exec-nothing-loaded", "-e", code=1, words="nothing has been loaded", dry=False),
    c("load-without-kernel", "-l", code=255, words="no kernel image given", kt="load-without-kernel"),
    c("file-load-without-kernel", "-s", "-l", code=255, words="no kernel image given"),
    c("extra-positional", "-l", "{TINY}", "{GARBAGE}", "/nonexistent", code=0, kt="extra-positional"),
    # ---- files that cannot be opened or read (1, kexec-tools' "Cannot open" / "Cannot read")
    c("missing-kernel", "-l", "/nonexistent/vmlinuz", code=1, words="No such file", kt="missing-kernel"),
    c("missing-initrd", "-l", "{TINY}", "--initrd=/nonexistent/initrd", code=1, words="No such file",
      kt="missing-initrd"),
    c("missing-module", "-l", "{MB1}", "--module=/nonexistent/m args", code=1, words="cannot read module"),
    c("missing-vmm", "-l", "--vmm=/nonexistent/xen", "{TINY}", code=1, words="No such file"),
    c("empty-kernel", "-l", "{EMPTY}", code=1, words="the file is empty", kt="empty-kernel"),
    c("directory-kernel", "-l", "{DIR}", code=1, words="a directory, not a regular file", kt="directory-kernel"),
    c("dev-null-kernel", "-l", "/dev/null", code=1, words="a character device", kt="dev-null-kernel"),
    c("dev-zero-kernel", "-l", "/dev/zero", code=1, words="a character device"),
    c("fifo-kernel", "-l", "{FIFO}", code=1, words="a FIFO, not a regular file", kt="fifo-kernel"),
    c("socket-kernel", "-l", "{SOCKET}", code=1, words="a socket, not a regular file"),
    c("socket-initrd", "-s", "-l", "{TINY}", "--initrd={SOCKET}", code=1, words="a socket"),
    c("directory-initrd", "-l", "{TINY}", "--initrd={DIR}", code=1, words="a directory", kt="directory-initrd"),
    c("fifo-initrd", "-l", "{TINY}", "--initrd={FIFO}", code=1, words="a FIFO", kt="fifo-initrd"),
    c("dev-zero-initrd", "-l", "{TINY}", "--initrd=/dev/zero", code=1, words="a character device"),
    c("link-to-dev-zero-initrd", "-l", "{TINY}", "--initrd={ZEROLINK}", code=1, words="a character device"),
    c("fifo-second-initrd", "-l", "{TINY}", "--initrd={TINY}", "--initrd={FIFO}", code=1, words="a FIFO"),
    c("fifo-module", "-l", "{MB1}", "--module={FIFO} x", code=1, words="a FIFO"),
    c("directory-module", "-l", "{MB1}", "--module={DIR}", code=1, words="a directory"),
    c("fifo-file-load-kernel", "-s", "-l", "{FIFO}", code=1, words="a FIFO"),
    c("file-load-empty-kernel", "-s", "-l", "{EMPTY}", code=1, words="the file is empty", kt="file-load-empty-kernel"),
    # kexec-tools 2.0.25's kexec_file_load path said "Failed to open file" with 255; 2.0.32 reads the kernel first
    # ("Cannot open", 1: its kexec-tools-cli recording) and kexloader follows 2.0.32 (see DIFFERENCES)
    c("file-load-missing-kernel", "-s", "-l", "/nonexistent/vmlinuz", code=1, words="No such file",
      kt="file-load-missing-kernel"),
    c("auto-missing-kernel", "-a", "-l", "/nonexistent/vmlinuz", code=1, words="No such file",
      kt="auto-missing-kernel"),
    c("file-load-missing-initrd", "-s", "-l", "{TINY}", "--initrd=/nonexistent/initrd", code=255,
      words="No such file", kt="file-load-missing-initrd"),
    c("file-load-no-crash-region", "-s", "-p", "{TINY}", code=1, words="no crash kernel region",
      kt="file-load-no-crash-region"),
    c("fifo-file-load-initrd", "-s", "-l", "{TINY}", "--initrd={FIFO}", code=1, words="a FIFO"),
    c("non-utf8-missing-kernel", "-l", "/nonexistent/" + BAD, code=1, words="/nonexistent/\\xff\\xfe"),
    c("non-utf8-missing-initrd", "-l", "{TINY}", "--initrd=" + BAD, code=1, words="\\xff\\xfe: No such file"),
    c("facts-missing", "-l", "{TINY}", "--dry-run", "--facts=/nonexistent.json", code=1, words="No such file",
      dry=False),
    c("facts-directory", "-l", "{TINY}", "--dry-run", "--facts={DIR}", code=1, words="a directory", dry=False),
    c("facts-fifo", "-l", "{TINY}", "--dry-run", "--facts={FIFO}", code=1, words="a FIFO", dry=False),
    c("facts-dev-zero", "-l", "{TINY}", "--dry-run", "--facts=/dev/zero", code=1, words="a character device",
      dry=False),
    c("plan-in-missing", "-l", "--plan-in=/nonexistent", code=1, words="No such file"),
    # ---- images that cannot be used (255, kexec-tools' "Cannot determine the file type" / "Cannot load")
    c("garbage-kernel", "-l", "{GARBAGE}", code=255, words="cannot determine the file type", kt="garbage-kernel"),
    c("truncated-bzimage", "-l", "{TRUNC}", code=255, words="truncated bzImage", kt="truncated-bzimage"),
    c("debian-head-only", "-l", "{HEAD}", code=255, words="truncated bzImage", kt="debian-head-only"),
    c("gzip-of-garbage", "-l", "{GZ}", code=255, words="cannot determine the file type", kt="gzip-of-garbage"),
    c("bzimage-protocol-2.10", "-l", "{OLD}", code=255, words="too old", kt="bzimage-protocol-2.10"),
    c("bzimage-32bit-only", "-l", "{BZ32}", code=255, words="32-bit-only", kt="bzimage-32bit-only"),
    c("i386-elf", "-l", "{I386}", code=1, words="not supported yet", kt="i386-elf"),
    c("dynamic-elf", "-l", "{DYN}", code=0, kt="dynamic-elf"),  # an ELF with a PT_DYNAMIC still loads
    c("bzimage-jump-byte-0", "-l", "{JUMP0}", code=255),
    c("bzimage-setup-sects-past-end", "-l", "{SETUP_PAST_END}", code=255),
    c("elf-magic-only", "-l", "{ELFMAGIC}", code=255),
    c("truncated-elf", "-l", "{ELFTRUNC}", code=255),
    c("elf-phoff-past-end", "-l", "{ELFPHOFF}", code=255),
    c("gzip-magic-then-garbage", "-l", "{BADGZ}", code=255, words="gzip"),
    c("truncated-xz-kernel", "-l", "{XZTRUNC}", code=255, words="xz"),
    c("unknown-type", "-l", "{TINY}", "-t", "nonsense", code=255, words="Unsupported kernel type nonsense",
      kt="unknown-type"),
    c("wrong-type", "-l", "{TINY}", "-t", "multiboot-x86", code=255, words="Wrong file type multiboot-x86"),
    c("non-utf8-type", "-l", "{TINY}", "-t", BAD, code=255, words="Unsupported kernel type"),
    c("append-too-long", "-l", "{TINY}", "--append=" + "x" * 3000, code=255, words="3000 bytes",
      kt="append-too-long"),
    c("bad-serial", "-l", "{TINY}", "--serial=bogus", code=255, words="--serial=bogus", kt="bad-serial"),
    c("serial-port-too-big", "-l", "{TINY}", "--serial=0x10000", code=255, words="not an I/O port"),
    c("non-utf8-serial", "-l", "{TINY}", "--serial=" + BAD, code=255, words="not a number"),
    c("bad-serial-baud", "-l", "{TINY}", "--serial-baud=12345", code=255, words="9600 and 115200",
      kt="bad-serial-baud"),
    c("serial-baud-not-a-number", "-l", "{TINY}", "--serial-baud=fast", code=255, words="not a number",
      kt="serial-baud-not-a-number"),
    c("multiboot-with-initrd", "-l", "{MB1}", "--initrd={TINY}", code=255, words="takes modules, not an initrd",
      kt="multiboot-with-initrd"),
    c("module-for-bzimage", "-l", "{TINY}", "--module={TINY}", code=1, words="--module is for multiboot",
      kt="module-for-bzimage"),
    c("args-none-with-initrd", "-l", "{ELF}", "--args-none", "--initrd={TINY}", code=255,
      words="no way to pass an initrd"),
    c("crash-from-multiboot", "-p", "{MB1}", "--dry-run", "--facts={KDUMP}", code=255, words="cannot be a crash kernel",
      dry=False),
    # ---- where the segments go (1: kexec-tools' locate_hole die()s)
    c("mem-max-too-low", "-l", "{TINY}", "--mem-max=0x100000", code=1, words="no free memory",
      kt="mem-max-too-low"),
    c("mem-min-above-ram", "-l", "{TINY}", "--mem-min=0x3f0000000000", code=1),
    c("crash-without-region", "-p", "{TINY}", code=1, words="no crash kernel region", kt="crash-without-region"),
    c("crash-initrd-does-not-fit", "-p", "{TINY}", "--initrd={HUGE}", "--dry-run", "--facts={KDUMP}", code=1,
      words="crash kernel region", dry=False),
    # ---- corrupt snapshots (--facts: 1, one line naming what is wrong)
    *[c(f"snapshot-{name}", "-l", "{TINY}", "--dry-run", "--facts={SNAP_" + name.upper().replace("-", "_") + "}",
        code=1, words=words, dry=False) for name, words in [
        ("not-json", "not JSON"), ("nan", "NaN is not a number"), ("deep", "nested too deeply"),
        ("memmap-string", "memmap: not a list"), ("short-boot-params", "boot_params: 3 bytes, expected 4096"),
        ("version-2", "snapshot version 2"), ("empty", "not JSON"), ("list", "not an object"),
        ("address-2-64", "is outside"), ("huge-integer", "not JSON kexloader writes"),
        ("float-address", "not an integer"), ("lone-surrogate", "not text"), ("no-ram", "no free memory")]],
    # ---- corrupt plan directories (--plan-in: 1)
    *[c(f"plan-{name}", "-l", "--plan-in={PLAN_" + name.upper().replace("-", "_") + "}", code=1, words=words)
      for name, words in [
        ("no-plan-json", "No such file"), ("not-json", "not JSON"), ("deep", "nested too deeply"),
        ("segments-dict", "segments: not a list"), ("no-sha256", "segments[0].sha256: missing"),
        ("wrong-sha256", "does not match its sha256"), ("segment-dev-zero", "a symbolic link"),
        ("segment-fifo", "a FIFO"), ("segment-size", "of segments[0].bufsz in plan.json"),
        ("file-name-escape", "is not of the form"), ("infinity-entry", "Infinity is not a number"),
        ("string-mem", "segments[0].mem: not an integer"), ("unknown-role", "unknown segment role"),
        ("entry-outside", "not inside any segment"), ("overlap", "overlaps"),
        ("outside-ram", "not inside usable memory"), ("unaligned", "not page aligned")]],
    c("plan-entry-outside-without-dry-run", "-l", "--plan-in={PLAN_ENTRY_OUTSIDE}", code=1,
      words="not inside any segment", dry=False),
    c("plan-fifo-without-dry-run", "-l", "--plan-in={PLAN_SEGMENT_FIFO}", code=1, words="a FIFO", dry=False),
    # ---- text that is not UTF-8 passes through byte for byte (as kexec-tools): no error at all
    c("non-utf8-append", "-l", "{TINY}", "--append=a" + BAD, code=0),
    c("non-utf8-module-args", "-l", "{MB1}", "--module={TINY} x=" + BAD, code=0),
    c("non-utf8-file-load-append", "-s", "-l", "{TINY}", "--append=" + BAD, code=0),
    # ---- the kernel's answers
    c("kernel-refuses-load", "-l", "{TINY}", code=255, words="Operation not permitted", kt="kernel-refuses-load",
      dry=False, backend=errno.EPERM),
    c("kernel-busy", "-l", "{TINY}", code=255, words="Device or resource busy", dry=False, backend=errno.EBUSY),
    c("file-load-unavailable", "-s", "-l", "{TINY}", code=253, words="kexec_file_load not available",
      kt="file-load-unavailable", dry=False, backend=errno.ENOSYS),
    c("file-unload-unavailable", "-s", "-u", code=253, words="kexec_file_load not available", dry=False,
      backend=errno.ENOSYS),
    c("file-load-signature-rejected", "-s", "-l", "{TINY}", code=255, words="kexec_file_load failed", dry=False,
      backend=errno.EKEYREJECTED),
    c("auto-signature-rejected", "-a", "-l", "{TINY}", code=255, words="kexec_file_load failed", dry=False,
      backend=errno.EKEYREJECTED),
    c("file-load-vmlinux", "-s", "-l", "{ELF}", code=1, words="kexec_file_load loads only a bzImage",
      kt="file-load-vmlinux"),
    c("file-load-vmlinux-dry-run", "-s", "-l", "{ELF}", "--dry-run", code=1, words="loads only a bzImage"),
    c("file-load-multiboot", "-s", "-l", "{MB1}", "--module={TINY}", code=253, words="multiboot"),
    c("file-load-garbage", "-s", "-l", "{GARBAGE}", code=255, words="cannot determine the file type",
      kt="file-load-garbage"),
    c("auto-falls-back", "-a", "-l", "{TINY}", code=0, kt="auto-falls-back", dry=False, backend=errno.ENOSYS),
    c("plan-in-refused-by-the-kernel", "-l", "--plan-in={PLAN_GOOD}", code=255, words="Operation not permitted",
      dry=False, backend=errno.EPERM),
]


def _write_plan(path: Path, edit=None, segment=None) -> None:
    """A plan that fits every fixture snapshot's RAM, written by write_dir, then edited."""
    plan = Plan(entry=0x1001000, flags=0x3E0000, segments=(Segment(Role.KERNEL, 0x1000000, 0x2000, b"k" * 5000),
                                                            Segment(Role.PURGATORY, 0x2000000, 0x1000, b"p" * 64)))
    plans.write_dir(plan, path)
    if edit is not None:
        doc = json.loads((path / "plan.json").read_text())
        edit(doc)
        (path / "plan.json").write_text(json.dumps(doc))
    if segment is not None:
        segment(path / "00-kernel-1000000.bin")


def _snapshot(path: Path, edit) -> None:
    doc = json.loads(SNAP.read_text())
    text = edit(doc)
    path.write_text(text if isinstance(text, str) else json.dumps(doc))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("catalogue")
    tiny = (FIX / "bzimage/tiny.bzImage").read_bytes()
    elf = (FIX / "elf/tiny-vmlinux.elf").read_bytes()
    made = {
        "EMPTY": b"", "GARBAGE": bytes(range(256)) * 64, "TRUNC": tiny[:0x300],
        "JUMP0": tiny[:0x201] + b"\0" + tiny[0x202:],
        "SETUP_PAST_END": tiny[:0x1F1] + b"\x7f" + tiny[0x1F2:],
        "ELFMAGIC": b"\x7fELF" + bytes(60), "ELFTRUNC": elf[:64],
        "ELFPHOFF": elf[:0x20] + (1 << 40).to_bytes(8, "little") + elf[0x28:],
        "BADGZ": b"\x1f\x8b\x08\x00" + bytes(range(256)) * 8,
        "XZTRUNC": (FIX / "compression/bzimage-xz.bin").read_bytes()[:600],
    }
    paths = {name: str(tmp / name.lower()) for name in made}
    for name, data in made.items():
        Path(paths[name]).write_bytes(data)
    (tmp / "dir").mkdir()
    os.mkfifo(tmp / "fifo")
    (tmp / "zerolink").symlink_to("/dev/zero")
    with open(tmp / "huge", "wb") as f:
        f.truncate(512 << 20)  # sparse: larger than the 384 MiB crash region
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp / "socket"))
    paths.update(DIR=str(tmp / "dir"), FIFO=str(tmp / "fifo"), ZEROLINK=str(tmp / "zerolink"),
                 HUGE=str(tmp / "huge"), SOCKET=str(tmp / "socket"), SNAP=str(SNAP), KDUMP=str(KDUMP_SNAP),
                 TINY=str(FIX / "bzimage/tiny.bzImage"), OLD=str(FIX / "bzimage/tiny-protocol-2.10.bzImage"),
                 BZ32=str(FIX / "bzimage/tiny-32bit-only.bzImage"),
                 HEAD=str(FIX / "bzimage/debian-6.1.0-56-amd64.head4096"), ELF=str(FIX / "elf/tiny-vmlinux.elf"),
                 I386=str(FIX / "elf/tiny-i386.elf"), DYN=str(FIX / "elf/tiny-dyn.elf"), MB1=str(FIX / "multiboot/tiny-mb1.elf"),
                 GZ=str(FIX / "compression/sample.gz"))
    snapshots = {
        "not-json": lambda d: "{memmap", "nan": lambda d: '{"version": 1, "memmap": [[0, NaN, 1]]}',
        "deep": lambda d: '{"version": 1, "memmap": ' + "[" * 50_000 + "]" * 50_000 + "}",
        "memmap-string": lambda d: d.update(memmap="all of it"),
        "short-boot-params": lambda d: d.update(boot_params="AAAA"), "version-2": lambda d: d.update(version=2),
        "empty": lambda d: "", "list": lambda d: "[]", "address-2-64": lambda d: d["memmap"][0].__setitem__(0, 1 << 64),
        "huge-integer": lambda d: '{"version": 1, "memmap": [[' + "7" * 5000 + ", 1, 1]]}",
        "float-address": lambda d: d["memmap"][0].__setitem__(0, 4096.0),
        "lone-surrogate": lambda d: json.dumps(d)[:-1] + ', "os_release": "\\ud800"}',
        "no-ram": lambda d: d.update(memmap=[[0, 4096, 2]], iomem=[]),
    }
    for name, edit in snapshots.items():
        key = "SNAP_" + name.upper().replace("-", "_")
        paths[key] = str(tmp / f"snapshot-{name}.json")
        _snapshot(Path(paths[key]), edit)

    def seg(i, **kv):
        return lambda d: d["segments"][i].update(kv)
    plan_dirs = {
        "good": (None, None),
        "no-plan-json": (lambda d: None, lambda f: f.parent.joinpath("plan.json").unlink()),
        "not-json": (None, lambda f: f.parent.joinpath("plan.json").write_text("{")),
        "deep": (None, lambda f: f.parent.joinpath("plan.json").write_text("[" * 50_000 + "]" * 50_000)),
        "segments-dict": (lambda d: d.update(segments={}), None),
        "no-sha256": (lambda d: d["segments"][0].pop("sha256"), None),
        "wrong-sha256": (seg(0, sha256="0" * 64), None),
        "segment-dev-zero": (None, lambda f: (f.unlink(), f.symlink_to("/dev/zero"))),
        "segment-fifo": (None, lambda f: (f.unlink(), os.mkfifo(f))),
        "segment-size": (seg(0, bufsz=4096), None),
        "file-name-escape": (seg(0, file="../../../etc/passwd"), None),
        "infinity-entry": (lambda d: d.update(entry=float("inf")), None),
        "string-mem": (seg(0, mem="0x1000000"), None),
        "unknown-role": (seg(0, role="kernal"), None),
        "entry-outside": (lambda d: d.update(entry=0x3000000), None),
        "overlap": (seg(1, mem=0x1001000), None),
        "outside-ram": (seg(1, mem=0x3F0000000000), None),
        "unaligned": (seg(1, mem=0x2000800), None),
    }
    for name, (edit, segment) in plan_dirs.items():
        key = "PLAN_" + name.upper().replace("-", "_")
        paths[key] = str(tmp / f"plan-{name}")
        _write_plan(Path(paths[key]), edit, segment)
    yield paths
    sock.close()


def _argv(case: Case, inputs: dict[str, str]) -> list[str]:
    argv = [a.format(**inputs) if "{" in a else a for a in case.argv]
    return argv + (["--dry-run", f"--facts={SNAP}"] if case.dry else [])


def test_the_catalogue_is_large_and_named_once():
    assert len(CASES) >= 100
    assert len({case.name for case in CASES}) == len(CASES)
    assert {case.kt for case in CASES if case.kt} == set(KEXEC_TOOLS_2_0_25)  # every measured case is here


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_one_line_and_the_exit_code(case, inputs, capsys):
    backend = RefusingBackend(case.backend) if case.backend else RecordingBackend()
    code = cli.main(_argv(case, inputs), backend_factory=lambda: backend, prog="kexec")
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    if case.code == 0:
        assert code == 0 and err == "", err
        return
    assert (code, err.count("\n")) == (case.code, 1), err
    assert err.startswith("kexec: ") and case.words in err, err
    assert not backend.plans and not getattr(backend, "file_loads", [])  # never a partial load


@pytest.mark.parametrize("case", [case for case in CASES if case.kt], ids=lambda case: case.name)
def test_the_code_is_kexec_tools_code(case):
    assert case.code == DIFFERENCES.get(case.kt, KEXEC_TOOLS_2_0_25[case.kt])  # type: ignore[index]
    assert case.kt not in DIFFERENCES or DIFFERENCES[case.kt] != KEXEC_TOOLS_2_0_25[case.kt]  # a real difference


SUBPROCESS = ["unknown-option", "missing-kernel", "fifo-initrd", "fifo-kernel", "dev-zero-initrd", "bzimage-jump-byte-0",
              "snapshot-deep", "snapshot-nan", "plan-deep", "plan-segment-dev-zero", "unload-with-initrd",
              "non-utf8-missing-kernel", "non-utf8-append", "file-load-vmlinux-dry-run", "facts-fifo"]


@pytest.mark.parametrize("name", SUBPROCESS)
def test_through_a_real_process(name, inputs):
    """argv as bytes (the non-UTF-8 cases are real bytes), stdin closed, a FIFO must not hang (timeout)."""
    case = next(case for case in CASES if case.name == name)
    argv = [os.fsencode(a) for a in _argv(case, inputs)]
    proc = subprocess.run([sys.executable, "-m", "kexloader", *argv], cwd=ROOT, capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL, env={**os.environ, "LC_ALL": "C.UTF-8"})
    err = proc.stderr.decode("utf-8", "replace")
    assert b"Traceback" not in proc.stderr and proc.returncode == case.code, err
    assert err.count("\n") == (case.code != 0) and case.words in err, err
