#!/usr/bin/env python3
"""Record kexec-tools' x86-64 command line, option by option, in several kernels' worlds, behind the capture shim.

    python3 tools/kexec_tools_cli.py [--version 2.0.25|2.0.32 ...] [--out fixtures/kexec-tools-cli] [--only NAME]

For every row of ROWS (each option of kexec-tools' KEXEC_OPTIONS, KEXEC_ARCH_OPTIONS and the x86 loaders'
options, and the command shapes of Debian's kdump-tools and kexec-tools init script, Fedora's kdumpctl, SUSE's
kdump, systemd and petitboot) and every world of WORLDS it runs one kexec-tools release under the shim
(tools/kexec_tools_capture/shim.c) and writes what happened to fixtures/kexec-tools-cli/<version>.json: the argv
(paths as {KERNEL}, {INITRD}, ... placeholders), the exit code, stdout's first line and line count, stderr
(paths replaced, at most STDERR_LINES lines) and each kexec_load / kexec_file_load / reboot call the shim
answered, with its flags and the errno of the world.

Releases: 2.0.25 is Debian 12's package (apt-get download + dpkg -x, never installed); 2.0.32 is built from its
upstream tag into the cache (tools/kexec_tools_capture/build.py). Inputs: Debian's kernel from the cache
(install-deps' linux-image), a small initrd, a minimal flattened device tree and an ELF. Served instead of the
host's files (KT_REDIRECT): /proc/iomem with a 256 MiB "Crash kernel" region added and a /proc/kcore of ELF
headers only, so -p gets as far as the kernel; /sys/kernel/kexec_loaded and kexec_crash_loaded reading 1 (an
image is loaded), so -e gets as far as reboot(); /sys/kernel/crash_elfcorehdr_size reading 4096, so --hotplug
does too.

Safety: kexec-tools only runs with the shim preloaded. Its seccomp filter makes kexec_load, kexec_file_load,
reboot, execve (the shutdown of "no action") and ifdown's ioctl fail in the kernel; its interposer answers the
kexec calls as the world says and reboot with EPERM. So -e, -f, -u, -x, no action and kexec jump are safe to
record here, unlike in capture.py (which only captures loads and still refuses them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kexec_tools_capture import capture as kt  # noqa: E402
from kexec_tools_capture.build import build_kexec_tools  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "kexec-tools-cli"
VERSIONS = ("2.0.25", "2.0.32")
STDERR_LINES = 12
TIMEOUT = 10  # kexec-tools 2.0.32 spins in -c --load-preserve-context (recorded as "hang")

# The kernels kexec-tools talks to. "0": the call succeeds (the shim records it, nothing is loaded).
WORLDS = {
    "file-ok": {"KT_LOAD_ERRNO": "0", "KT_FILE_ERRNO": "0"},  # a kernel with both syscalls, root
    "lockdown": {"KT_LOAD_ERRNO": "EPERM", "KT_FILE_ERRNO": "0"},  # Secure Boot: kexec_load refused, file OK
    "no-file": {"KT_LOAD_ERRNO": "0", "KT_FILE_ERRNO": "ENOSYS"},  # a kernel without CONFIG_KEXEC_FILE
    "unprivileged": {"KT_LOAD_ERRNO": "EPERM", "KT_FILE_ERRNO": "EPERM"},  # no CAP_SYS_BOOT
}
ALL = tuple(WORLDS)
PARSE = ("file-ok",)  # rows that end before any syscall: one world is enough
ONE_WORLD = PARSE  # rows about what is loaded, not about the syscall's answer

APPEND = "console=ttyS0 root=/dev/vda"
# a user-space address of x86-64's 47-bit layout (heap 0x55…, mmap 0x7f…); the physical addresses kexec-tools prints
# have fewer digits on any machine with less than 16 TiB
USER_POINTER = re.compile(r"\b0x[0-9a-f]{12}\b")


@dataclass(frozen=True)
class Row:
    name: str
    argv: tuple[str, ...]
    worlds: tuple[str, ...] = ALL
    note: str = ""
    crash_region: bool = True  # False: /proc/iomem as the host has it, without a "Crash kernel" region


def _rows() -> list[Row]:
    k, i = "{KERNEL}", "--initrd={INITRD}"
    a = f"--append={APPEND}"
    rows = [
        # -------- actions and syscall choice (kexec/kexec.h KEXEC_OPTIONS)
        Row("load", ("-l", k)),
        Row("load-initrd-append", ("-l", k, i, a)),
        Row("load-c", ("-c", "-l", k, i, a)),
        Row("load-s", ("-s", "-l", k, i, a)),
        Row("load-a", ("-a", "-l", k, i, a)),
        Row("load-long", ("--kexec-syscall-auto", "--load", k, i)),
        Row("load-long-c", ("--kexec-syscall", "--load", k)),
        Row("load-long-s", ("--kexec-file-syscall", "--load", k)),
        Row("panic", ("-p", k, i, a)),
        Row("panic-c", ("-c", "-p", k, i, a)),
        Row("panic-s", ("-s", "-p", k, i, a)),
        Row("panic-long", ("--load-panic", k, i)),
        Row("unload", ("-u",)),
        Row("unload-c", ("-c", "-u")),
        Row("unload-s", ("-s", "-u")),
        Row("unload-panic", ("-p", "-u")),
        Row("unload-long", ("--unload",)),
        Row("exec", ("-e",)),
        Row("exec-long", ("--exec",)),
        Row("exec-no-sync", ("-y", "-e")),
        Row("exec-no-ifdown", ("-x", "-e")),
        Row("force", ("-f", k, i, a)),
        Row("force-long", ("--force", k)),
        Row("no-action", (k, i, a), note="load, then exec shutdown -r now (refused by the shim)"),
        Row("status", ("-S",)),
        Row("status-load", ("-S", "-l")),
        Row("status-panic", ("-S", "-p")),
        Row("status-long", ("--status",)),
        Row("help", ("-h",), PARSE),
        Row("help-long", ("--help",), PARSE),
        Row("usage-error", ("-?",), PARSE),
        Row("version", ("-v",), PARSE),
        Row("version-long", ("--version",), PARSE),
        Row("debug", ("-d", "-l", k, i, a)),
        Row("debug-long", ("--debug", "-l", k)),
        Row("no-sync-load", ("-y", "-l", k)),
        Row("no-sync-long", ("--no-sync", "-l", k)),
        Row("no-ifdown-long", ("--no-ifdown", "-l", k)),
        Row("no-checks", ("-i", "-l", k)),
        Row("no-checks-long", ("--no-checks", "-l", k)),
        Row("type-bzImage64", ("-t", "bzImage64", "-l", k)),
        Row("type-bzImage", ("--type=bzImage", "-l", k)),
        Row("type-elf", ("--type=elf-x86_64", "-l", k)),
        Row("type-multiboot", ("--type=multiboot-x86", "-l", k)),
        Row("type-bogus", ("--type=bogus", "-l", k)),
        Row("mem-min", ("--mem-min=0x1000000", "-l", k)),
        Row("mem-max", ("--mem-max=0xbfffffff", "-l", k)),
        Row("mem-min-4g", ("--mem-min=0x100000000", "-l", k)),
        Row("mem-min-bad", ("--mem-min=lots", "-l", k), PARSE),
        Row("reuseinitrd", ("--reuseinitrd", "-l", k)),
        Row("hotplug", ("--hotplug", "-p", k, i)),
        Row("panic-no-crash-region", ("-p", k, i, a), ONE_WORLD, crash_region=False),
        Row("panic-s-no-crash-region", ("-s", "-p", k, i, a), ONE_WORLD, crash_region=False),
        Row("unload-panic-no-crash-region", ("-p", "-u"), ONE_WORLD, crash_region=False),
        Row("print-ckr-size", ("--print-ckr-size",), PARSE),
        Row("load-preserve-context", ("--load-preserve-context", "--mem-max=0x7fffffff", k), PARSE,
            note="does not finish in TIMEOUT in any world: recorded once"),
        Row("load-preserve-context-c", ("-c", "--load-preserve-context", "--mem-max=0x7fffffff", k), PARSE,
            note="does not finish in TIMEOUT in any world: recorded once"),
        Row("load-preserve-context-no-max", ("-c", "--load-preserve-context", k)),
        Row("load-jump-back-helper", ("--load-jump-back-helper", "--entry=0x1000")),
        Row("load-jump-back-helper-c", ("-c", "--load-jump-back-helper", "--entry=0x1000")),
        Row("entry", ("--entry=0x1000000", "-l", k)),
        Row("entry-bad", ("--entry=here", "-l", k), PARSE),
        Row("load-live-update", ("--load-live-update", k), PARSE),
        Row("exec-live-update", ("--exec-live-update",), PARSE),
        # -------- x86-64 (kexec/arch/x86_64/include/arch/options.h KEXEC_ARCH_OPTIONS)
        Row("reset-vga", ("--reset-vga", "-l", k)),
        Row("serial", ("--serial=ttyS0", "-l", k)),
        Row("serial-port", ("--serial=0x3f8", "-l", k)),
        Row("serial-bogus", ("--serial=nowhere", "-l", k), PARSE),
        Row("serial-baud", ("--serial-baud=115200", "-l", k)),
        Row("serial-baud-bad", ("--serial-baud=1234", "-l", k), PARSE),
        Row("console-vga", ("--console-vga", "-l", k)),
        Row("console-serial", ("--console-serial", "-l", k)),
        Row("elf32-core-headers", ("--elf32-core-headers", "-p", k)),
        Row("elf64-core-headers", ("--elf64-core-headers", "-p", k)),
        Row("pass-memmap-cmdline", ("--pass-memmap-cmdline", "-l", k, a)),
        Row("noefi", ("--noefi", "-l", k, a)),
        Row("reuse-video-type", ("--reuse-video-type", "-l", k, a)),
        # kexec-tools' bzImage64 loader drops the command line when these come after --append (issue 13)
        Row("append-then-noefi", ("-l", k, a, "--noefi")),
        Row("append-then-pass-memmap-cmdline", ("-l", k, a, "--pass-memmap-cmdline")),
        Row("append-then-reuse-video-type", ("-l", k, a, "--reuse-video-type")),
        # ... which only shows on the kexec_load path (-c): the command line is read back from the captured zero page
        Row("noefi-then-append-c", ("-c", "--noefi", "-l", k, a), ONE_WORLD),
        Row("append-then-noefi-c", ("-c", "-l", k, a, "--noefi"), ONE_WORLD),
        Row("append-then-pass-memmap-cmdline-c", ("-c", "-l", k, a, "--pass-memmap-cmdline"), ONE_WORLD),
        Row("append-then-reuse-video-type-c", ("-c", "-l", k, a, "--reuse-video-type"), ONE_WORLD),
        # -------- the loaders' options (KEXEC_ALL_OPTIONS)
        Row("command-line", ("-l", k, "--command-line=quiet")),
        Row("append-twice", ("-l", k, "--append=one", "--append=two")),
        Row("reuse-cmdline", ("-l", k, "--reuse-cmdline")),
        Row("reuse-cmdline-append", ("-l", k, "--reuse-cmdline", "--append=extra")),
        Row("ramdisk", ("-l", k, "--ramdisk={INITRD}")),
        Row("args-elf", ("-l", k, "--args-elf")),
        Row("args-linux", ("-l", k, "--args-linux")),
        Row("args-none", ("-l", k, "--args-none")),
        Row("module", ("-l", k, "--module={INITRD}")),
        Row("real-mode", ("-l", k, "--real-mode")),
        Row("entry-32bit", ("-l", k, "--entry-32bit")),
        Row("dtb", ("-l", k, "--dtb={DTB}")),
        Row("elf-args-linux", ("-l", "{ELF}", "--args-linux", a)),
        # -------- what kexloader has and these releases do not
        Row("no-cma", ("--no-cma", "-s", "-l", k), PARSE),
        Row("force-dtb", ("--force-dtb", "-l", k), PARSE),
        Row("dry-run", ("--dry-run", "-l", k), PARSE),
        # -------- bad input and getopt_long's shapes
        Row("missing-kernel-file", ("-l", "{MISSING}")),
        Row("no-kernel", ("-l",)),
        Row("no-kernel-c", ("-c", "-l")),
        Row("two-kernels", ("-l", k, "{INITRD}")),
        Row("status-append", ("-S", "--append=x")),
        Row("unload-initrd", ("-u", i)),
        Row("exec-append", ("-e", "--append=x")),
        Row("unknown-option", ("--bogus", "-l", k), PARSE),
        Row("prefix", ("--load", k, "--app=quiet", "--init={INITRD}")),
        Row("separate-arguments", ("-l", k, "--append", "quiet", "--initrd", "{INITRD}")),
        Row("permutation", (k, "-l", i)),
        Row("cluster", ("-dl", k)),
        Row("double-dash", ("-l", "--", k)),
        Row("ambiguous-prefix", ("--load-p", k), PARSE),
        # -------- distro command shapes
        Row("debian-kdump-tools-load", ("-p", f"--command-line={APPEND} irqpoll nr_cpus=1", i, k),
            note="kdump-config kdump_load"),
        Row("debian-kdump-tools-load-secure", ("-p", "-s", f"--command-line={APPEND} irqpoll", i, k),
            note="kdump-config kdump_load under Secure Boot / securelevel"),
        Row("debian-kdump-tools-load-elf", ("-p", "--args-linux", f"--command-line={APPEND}", i, "{ELF}"),
            note="kdump-config kdump_load with a vmlinux"),
        Row("debian-kdump-tools-unload", ("-p", "-u"), note="kdump-config kdump_unload"),
        Row("debian-kdump-tools-unload-secure", ("-s", "-p", "-u"), note="kdump-config kdump_unload (secure)"),
        Row("debian-kexec-load-init", ("-l", k, i, a), note="/etc/init.d/kexec-load"),
        Row("fedora-kdumpctl-load", ("-s", "-d", "-p", f"--command-line={APPEND} irqpoll", i, k),
            note="kdumpctl: KEXEC_ARGS=-s, standard args -d -p"),
        Row("fedora-kdumpctl-load-c", ("-p", f"--command-line={APPEND}", i, k), note="kdumpctl without -s"),
        Row("fedora-kdumpctl-unload", ("-p", "-u"), note="kdumpctl stop"),
        Row("suse-kdump-load", ("-p", k, a, i), note="SUSE kdumptool load"),
        Row("suse-kdump-unload", ("-p", "-u"), note="SUSE kdump unload"),
        Row("systemd-load", ("--load", k, "--initrd={INITRD}", f"--append={APPEND}"),
            note="systemctl kexec with a boot entry"),
        Row("systemd-reuse-cmdline", ("--load", k, "--initrd={INITRD}", "--reuse-cmdline"),
            note="systemctl kexec without options"),
        Row("systemd-exec", ("-e",), note="systemd-shutdown's kexec -e"),
        Row("petitboot-load", ("-l", "--initrd={INITRD}", "--dtb={DTB}", f"--append={APPEND}", k),
            note="petitboot"),
        Row("petitboot-load-s", ("-s", "-l", "--initrd={INITRD}", f"--append={APPEND}", k),
            note="petitboot with kexec_file_load"),
    ]
    names = [r.name for r in rows]
    assert len(names) == len(set(names)), "row names must be unique"
    return rows


ROWS = _rows()


# ------------------------------------------------------------------------------------------------ inputs

def minimal_fdt() -> bytes:
    """A flattened device tree with an empty root node (devicetree specification §5)."""
    struct_block = struct.pack(">II", 1, 0) + struct.pack(">I", 2) + struct.pack(">I", 9)  # BEGIN_NODE "", END_NODE, END
    header_size, rsvmap = 40, bytes(16)  # one terminating reserve entry
    off_rsvmap = header_size
    off_struct = off_rsvmap + len(rsvmap)
    off_strings = off_struct + len(struct_block)
    total = off_strings
    header = struct.pack(">10I", 0xD00DFEED, total, off_struct, off_strings, off_rsvmap, 17, 16, 0, 0,
                         len(struct_block))
    return header + rsvmap + struct_block


def minimal_elf() -> bytes:
    """An x86-64 ELF executable with one PT_LOAD of 16 bytes at 16 MiB (enough for kexec-tools' probe)."""
    ehdr = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack(
        "<HHIQQQIHHHHHH", 2, 62, 1, 0x1000000, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0x1000, 0x1000000, 0x1000000, 16, 16, 0x1000)
    return (ehdr + phdr).ljust(0x1000, b"\0") + b"\xf4" * 16  # hlt


def minimal_kcore() -> bytes:
    """The ELF headers of a /proc/kcore (ET_CORE) whose PT_LOADs are a direct map and the kernel text mapping
    at 0xffffffff81000000: what kexec-tools -c -p reads to find the kernel's virtual addresses (this host's
    kernel has no /proc/kcore)."""
    loads = [(0xFFFF888000000000, 1 << 32), (0xFFFFFFFF81000000, 0x2000000)]
    ehdr = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack(
        "<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, len(loads), 64, 0, 0)
    phdrs = b"".join(struct.pack("<IIQQQQQQ", 1, 7, 0x1000 + i * 0x1000, vaddr, 0xFFFFFFFFFFFFFFFF, size, size,
                                 0x1000) for i, (vaddr, size) in enumerate(loads))
    return ehdr + phdrs


def debian_kernel() -> Path:
    """Debian's kernel from the cache (install-deps' linux-image package, unpacked)."""
    cache = kt.cache_dir()
    found = sorted(cache.glob("pkgs/linux-image-*/boot/vmlinuz-*")) + sorted(cache.glob("linux/boot/vmlinuz-*"))
    if not found:
        raise kt.Unavailable(f"no Debian kernel in {cache}/pkgs: run tools/install-deps.sh")
    return found[0]


def fake_iomem(real: str) -> str:
    """/proc/iomem with a 256 MiB "Crash kernel" child at the top of the largest System RAM range below 4 GiB."""
    best = None
    for line in real.splitlines():
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) : System RAM$", line)
        if m:
            start, end = int(m[1], 16), int(m[2], 16)
            if end < 1 << 32 and end - start >= 512 << 20 and (best is None or end - start > best[1] - best[0]):
                best = (start, end)
    if best is None:
        raise kt.CaptureError("no System RAM range of 512 MiB below 4 GiB in /proc/iomem to put a crash region in")
    crash_end = ((best[1] + 1) & ~((16 << 20) - 1)) - 1
    crash = f"  {crash_end + 1 - (256 << 20):08x}-{crash_end:08x} : Crash kernel"
    out = []
    for line in real.splitlines():
        out.append(line)
        if line.startswith(f"{best[0]:08x}-{best[1]:08x} : System RAM"):
            out.append(crash)
    return "\n".join(out) + "\n"


@dataclass
class Inputs:
    directory: Path
    kernel: Path
    placeholders: dict[str, str]  # {NAME} -> path

    def expand(self, argv: tuple[str, ...]) -> list[str]:
        return [self._sub(a) for a in argv]

    def _sub(self, text: str) -> str:
        for name, path in self.placeholders.items():
            text = text.replace("{" + name + "}", path)
        return text

    def normalise(self, text: str) -> str:
        """Paths back to placeholders (longest first), the scratch directory to {TMP}, and the user-space
        addresses of -d's log and of kexec_load's failure dump to <user address> (they change on every run)."""
        for name, path in sorted(self.placeholders.items(), key=lambda kv: -len(kv[1])):
            text = text.replace(path, "{" + name + "}")
        return USER_POINTER.sub("<user address>", text.replace(str(self.directory), "{TMP}"))


def make_inputs(directory: Path) -> Inputs:
    kernel = debian_kernel()
    initrd = directory / "initrd.img"
    initrd.write_bytes(bytes(range(256)) * 64)  # 16 KiB
    dtb = directory / "tiny.dtb"
    dtb.write_bytes(minimal_fdt())
    elf = directory / "vmlinux"
    elf.write_bytes(minimal_elf())
    host_iomem = Path("/proc/iomem").read_text()
    (directory / "iomem").write_text(fake_iomem(host_iomem))
    (directory / "iomem-no-crash").write_text("".join(line for line in host_iomem.splitlines(keepends=True)
                                                      if "Crash kernel" not in line))
    (directory / "loaded").write_text("1\n")
    (directory / "kcore").write_bytes(minimal_kcore())
    (directory / "elfcorehdr_size").write_text("4096\n")
    return Inputs(directory, kernel, {"KERNEL": str(kernel), "INITRD": str(initrd), "DTB": str(dtb), "ELF": str(elf),
                                      "MISSING": str(directory / "no-such-kernel")})


# ------------------------------------------------------------------------------------------------ running

def zero_page_cmdline(segments: list[tuple[int, bytes]]) -> str | None:
    """The command line a kexec_load segment list (physical address, bytes) hands a bzImage: the zero page's
    cmd_line_ptr (0x228, high half at 0xc8), read from whichever segment holds it. None without a zero page."""
    for _, data in segments:
        if len(data) >= 0x230 and data[0x202:0x206] == b"HdrS":
            ptr = struct.unpack_from("<I", data, 0x228)[0] | struct.unpack_from("<I", data, 0xC8)[0] << 32
            for mem, text in segments:
                if mem <= ptr < mem + len(text):
                    return text[ptr - mem:].split(b"\0", 1)[0].decode(errors="replace")
            return None
    return None


def kexec_for(version: str) -> tuple[Path, str | None]:
    if version == "2.0.25":
        kexec, ld_path = kt.debian_kexec()
        return kexec, ld_path
    return build_kexec_tools(version), None


def run_row(kexec: Path, ld_path: str | None, shim: Path, inputs: Inputs, row: Row, world: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="kt-cli-", dir=inputs.directory) as tmp:
        out = Path(tmp)
        redirect = ";".join(f"{src}={inputs.directory / dst}" for src, dst in (
            ("/proc/iomem", "iomem" if row.crash_region else "iomem-no-crash"), ("/sys/kernel/kexec_loaded", "loaded"),
            ("/sys/kernel/kexec_crash_loaded", "loaded"), ("/proc/kcore", "kcore"),
            ("/sys/kernel/crash_elfcorehdr_size", "elfcorehdr_size")))
        env = kt.shim_env(shim, out, ld_path, KT_REDIRECT=redirect, **WORLDS[world])
        argv = ["kexec", *inputs.expand(row.argv)]  # argv[0] as a distro calls it: getopt's messages name it
        try:
            proc = subprocess.run(argv, executable=kexec, env=env, capture_output=True, text=True, errors="replace", timeout=TIMEOUT,
                                  stdin=subprocess.DEVNULL, cwd=out)
            code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired:
            code, stdout, stderr = "hang", "", ""
        calls_file = out / "calls.jsonl"
        calls = [json.loads(line) for line in calls_file.read_text().splitlines()] if calls_file.exists() else []
        loaded = [c for c in calls if c["call"] == "kexec_load" and c["errno"] == 0]
        if loaded and (out / "capture.json").exists():
            cmdline = zero_page_cmdline([(seg.mem, seg.data()) for seg in kt.load_capture(out).segments])
            if cmdline is not None:
                loaded[-1]["cmdline"] = cmdline
    for c in calls:
        for key in ("kernel", "initrd", "cmdline"):
            if isinstance(c.get(key), str):
                c[key] = inputs.normalise(c[key])
    stderr_lines = [inputs.normalise(line) for line in stderr.splitlines() if not line.startswith("kt-capture-shim:")]
    if len(stderr_lines) > STDERR_LINES:
        stderr_lines = stderr_lines[:STDERR_LINES - 1] + [f"... {len(stderr_lines) - STDERR_LINES + 1} more lines"]
    stdout_lines = stdout.splitlines()
    return {"name": row.name, "world": world, "argv": list(row.argv), "exit": code,
            "stdout": {"lines": len(stdout_lines), "first": inputs.normalise(stdout_lines[0]) if stdout_lines else ""},
            "stderr": stderr_lines, "calls": calls, **({"note": row.note} if row.note else {}),
            **({} if row.crash_region else {"crash_region": False})}


def record(version: str, rows: list[Row], inputs: Inputs) -> dict:
    kexec, ld_path = kexec_for(version)
    shim = kt.build_shim()
    results = [run_row(kexec, ld_path, shim, inputs, row, world) for row in rows for world in row.worlds]
    return {
        "kexec_tools": version,
        "source": ("Debian 12's kexec-tools package (1:2.0.25-3+deb12u3), /sbin/kexec" if version == "2.0.25" else
                   f"built from the upstream tag v{version} (tools/kexec_tools_capture/build.py, --without-xen)"),
        "kernel": inputs.kernel.name,
        "worlds": WORLDS,
        "redirected": {"/proc/iomem": "the host's, with a 256 MiB Crash kernel region added",
                       "/proc/kcore": "ELF headers only: a direct map and the kernel text mapping",
                       "/sys/kernel/kexec_loaded": "1", "/sys/kernel/kexec_crash_loaded": "1",
                       "/sys/kernel/crash_elfcorehdr_size": "4096 (a kernel with CONFIG_CRASH_HOTPLUG)"},
        "rows": results,
    }


def to_json(data: dict) -> str:
    """Indented, but one line per run: the fixture diffs row by row when kexec-tools or a row changes."""
    head = json.dumps({k: v for k, v in data.items() if k != "rows"}, indent=1)[:-2]
    rows = ",\n".join("  " + json.dumps(r) for r in data["rows"])
    return f"{head},\n \"rows\": [\n{rows}\n ]\n}}\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", action="append", choices=VERSIONS, dest="versions")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--only", action="append", help="record only these rows (print them, write nothing)")
    args = ap.parse_args(argv)
    rows = [r for r in ROWS if not args.only or r.name in args.only]
    try:
        with tempfile.TemporaryDirectory(prefix="kt-cli-inputs-") as tmp:
            inputs = make_inputs(Path(tmp))
            for version in args.versions or VERSIONS:
                data = record(version, rows, inputs)
                if args.only:
                    print(json.dumps(data["rows"], indent=1))
                    continue
                args.out.mkdir(parents=True, exist_ok=True)
                path = args.out / f"{version}.json"
                path.write_text(to_json(data))
                print(f"{path}: {len(data['rows'])} runs")
    except kt.CaptureError as e:
        print(f"kexec_tools_cli: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
