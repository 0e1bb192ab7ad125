#!/usr/bin/env python3
"""Record kexec-tools' exit code and last stderr line for bad invocations, behind the capture shim.

    python3 tools/kexec_tools_exit_codes.py [--json FILE] [NAME...]

Each case of CASES runs Debian's unpacked kexec-tools (tools/kexec_tools_capture fetches it; never installed)
with the capture shim preloaded, so kexec_load is captured and kexec_file_load answers ENOSYS; with
`load_fails` KT_CAPTURE_DIR is left unset and the shim answers kexec_load with EPERM, as a kernel that
refuses. Cases that would execute, reboot or shut down (-e, -f, no action) are not in the table. Paths in
the output are written back as the placeholders of the table ({TINY}, {EMPTY}, ...), so that tests can
compare them with kexloader's run of the same case. A case that runs more than 5 s is recorded as "hang".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kexec_tools_capture import capture as kt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = {
    "TINY": ROOT / "fixtures/bzimage/tiny.bzImage",
    "OLD": ROOT / "fixtures/bzimage/tiny-protocol-2.10.bzImage",
    "BZ32": ROOT / "fixtures/bzimage/tiny-32bit-only.bzImage",
    "HEAD": ROOT / "fixtures/bzimage/debian-6.1.0-56-amd64.head4096",
    "ELF": ROOT / "fixtures/elf/tiny-vmlinux.elf",
    "I386": ROOT / "fixtures/elf/tiny-i386.elf",
    "DYN": ROOT / "fixtures/elf/tiny-dyn.elf",
    "MB1": ROOT / "fixtures/multiboot/tiny-mb1.elf",
    "GZ": ROOT / "fixtures/compression/sample.gz",
}
HANG_SECONDS = 5


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]
    load_fails: bool = False  # kexec_load answers EPERM (a kernel that refuses the image)


CASES = (
    Case("unknown-option", ("--bogus",)),
    Case("unknown-short", ("-Z",)),
    Case("load-without-kernel", ("-l",)),
    Case("missing-kernel", ("-l", "/nonexistent/vmlinuz")),
    Case("missing-initrd", ("-l", "{TINY}", "--initrd=/nonexistent/initrd")),
    Case("empty-kernel", ("-l", "{EMPTY}")),
    Case("directory-kernel", ("-l", "{DIR}")),
    Case("dev-null-kernel", ("-l", "/dev/null")),
    Case("garbage-kernel", ("-l", "{GARBAGE}")),
    Case("truncated-bzimage", ("-l", "{TRUNC}")),
    Case("debian-head-only", ("-l", "{HEAD}")),
    Case("bzimage-protocol-2.10", ("-l", "{OLD}")),
    Case("bzimage-32bit-only", ("-l", "{BZ32}")),
    Case("gzip-of-garbage", ("-l", "{GZ}")),
    Case("i386-elf", ("-l", "{I386}")),
    Case("dynamic-elf", ("-l", "{DYN}")),
    Case("directory-initrd", ("-l", "{TINY}", "--initrd={DIR}")),
    Case("fifo-initrd", ("-l", "{TINY}", "--initrd={FIFO}")),
    Case("fifo-kernel", ("-l", "{FIFO}")),
    Case("bad-serial", ("-l", "{TINY}", "--serial=bogus")),
    Case("bad-serial-baud", ("-l", "{TINY}", "--serial-baud=12345")),
    Case("serial-baud-not-a-number", ("-l", "{TINY}", "--serial-baud=fast")),
    Case("bad-mem-min", ("-l", "{TINY}", "--mem-min=abc")),
    Case("mem-max-too-low", ("-l", "{TINY}", "--mem-max=0x100000")),
    Case("unknown-type", ("-l", "{TINY}", "-t", "nonsense")),
    Case("append-too-long", ("-l", "{TINY}", "--append=" + "x" * 3000)),
    Case("extra-positional", ("-l", "{TINY}", "{GARBAGE}")),
    Case("status-with-append", ("-S", "--append=x")),
    Case("unload-with-initrd", ("-u", "--initrd=x")),
    Case("crash-without-region", ("-p", "{TINY}")),
    Case("module-for-bzimage", ("-l", "{TINY}", "--module={TINY}")),
    Case("multiboot-with-initrd", ("-l", "{MB1}", "--initrd={TINY}")),
    Case("kernel-refuses-load", ("-l", "{TINY}"), load_fails=True),
    Case("file-load-unavailable", ("-s", "-l", "{TINY}")),
    Case("file-load-vmlinux", ("-s", "-l", "{ELF}")),
    Case("file-load-garbage", ("-s", "-l", "{GARBAGE}")),
    Case("auto-falls-back", ("-a", "-l", "{TINY}")),
    Case("load-preserve-context", ("--load-preserve-context", "-l", "{TINY}")),
    Case("file-load-missing-kernel", ("-s", "-l", "/nonexistent/vmlinuz")),
    Case("auto-missing-kernel", ("-a", "-l", "/nonexistent/vmlinuz")),
    Case("file-load-missing-initrd", ("-s", "-l", "{TINY}", "--initrd=/nonexistent/initrd")),
    Case("file-load-empty-kernel", ("-s", "-l", "{EMPTY}")),
    Case("file-load-no-crash-region", ("-s", "-p", "{TINY}")),
    Case("unload-with-noefi", ("-u", "--noefi")),
    Case("unload-with-module", ("-u", "--module=x")),
    Case("unload-with-console-vga", ("-u", "--console-vga")),
    Case("unload-with-kernel", ("-u", "{TINY}")),
)


def make_inputs(tmp: Path) -> dict[str, str]:
    """Placeholder -> path: the fixtures and the hostile files made here."""
    paths = {name: str(p) for name, p in FIXTURES.items()}
    (tmp / "empty").write_bytes(b"")
    (tmp / "garbage").write_bytes(bytes(range(256)) * 64)
    (tmp / "trunc").write_bytes(FIXTURES["TINY"].read_bytes()[:0x300])
    (tmp / "dir").mkdir()
    os.mkfifo(tmp / "fifo")
    paths.update(EMPTY=str(tmp / "empty"), GARBAGE=str(tmp / "garbage"), TRUNC=str(tmp / "trunc"),
                 DIR=str(tmp / "dir"), FIFO=str(tmp / "fifo"))
    return paths


def run_case(case: Case, kexec: Path, env: dict[str, str], paths: dict[str, str], capture_dir: Path) -> dict:
    argv = [a.format(**paths) for a in case.argv]
    env = dict(env)
    if not case.load_fails:
        env["KT_CAPTURE_DIR"] = str(capture_dir)
    try:
        proc = subprocess.run([str(kexec), *argv], env=env, capture_output=True, timeout=HANG_SECONDS,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"name": case.name, "argv": list(case.argv), "code": "hang", "stderr": ""}
    err = proc.stderr.decode(errors="replace")
    for name, path in sorted(paths.items(), key=lambda kv: -len(kv[1])):
        err = err.replace(path, "{" + name + "}")
    lines = [line for line in err.splitlines() if line.strip()]
    return {"name": case.name, "argv": list(case.argv), "code": proc.returncode,
            "stderr": lines[-1] if lines else ""}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="only these cases")
    ap.add_argument("--json", help="write the results here as well")
    args = ap.parse_args(argv)
    cache = kt.cache_dir()
    shim = kt.build_shim(cache)
    kexec = kt.kexec_binary(kt.kexec_tools_root(cache))
    ld_path = kt._library_path(kexec, cache, True)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR")}
    env["LD_PRELOAD"] = str(shim)
    if ld_path:
        env["LD_LIBRARY_PATH"] = ld_path
    results = []
    with tempfile.TemporaryDirectory(prefix="kt-codes-") as tmp:
        paths = make_inputs(Path(tmp))
        for case in CASES:
            if args.names and case.name not in args.names:
                continue
            capture_dir = Path(tmp) / f"capture-{case.name}"
            capture_dir.mkdir()
            results.append(run_case(case, kexec, env, paths, capture_dir))
            r = results[-1]
            print(f"{r['name']:<28} {r['code']!s:>5}  {r['stderr']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
