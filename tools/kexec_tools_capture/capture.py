#!/usr/bin/env python3
"""Run Debian's kexec-tools and capture, without loading anything, what it would hand to kexec_load(2).

    python3 tools/kexec_tools_capture/capture.py KERNEL [--initrd I] [--append A] [--out DIR] [-- EXTRA...]

What happens:

1. ``shim.c`` (beside this file) is compiled with gcc into the cache
   (``${KEXLOADER_CACHE:-~/.cache/kexloader}/kexec_tools_capture/shim-<hash>.so``); a changed source gives a
   new hash and a rebuild.
2. kexec-tools is fetched with ``apt-get download kexec-tools`` and unpacked with ``dpkg -x`` into
   ``<cache>/kexec-tools`` (never installed: Debian's package enables a service that loads a kernel at shutdown).
   Shared libraries it links (libxenctrl & co.) that this machine lacks are fetched and unpacked the same way.
3. ``kexec -c -l KERNEL [--initrd=I] [--append=A] EXTRA...`` runs with the shim preloaded and
   ``KT_CAPTURE_DIR`` set. The shim's seccomp filter makes kexec_load, kexec_file_load, reboot, execve and
   ifdown's ioctl fail in the kernel; its ``syscall()`` interposer writes each segment to
   ``seg-<index>-<mem hex>.bin`` and the segment table to ``capture.json`` and reports success.

Options that would make kexec-tools execute or unload an image (``-e``, ``-f``, ``-u``, no action at all, ...)
are refused here before anything runs; the shim would stop them anyway.

Library use: ``capture(kernel, initrd=..., append=..., extra_args=[...])`` returns a ``Capture``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIM_SOURCE = HERE / "shim.c"

KEXEC_ARCH_X86_64 = 62 << 16

# Libraries /sbin/kexec from Debian 12's kexec-tools 2.0.25 links (it is built with libxenctrl), and the
# packages that ship them. Only fetched when `ldd` says this machine lacks them.
DEBIAN_LIBRARY_PACKAGES = {
    "libxenctrl.so.4.17": "libxenmisc4.17",
    "libxenctrl.so.4.20": "libxenmisc4.20",  # Debian 13's kexec-tools 2.0.29
    "libxentoollog.so.1": "libxentoollog1",
    "libxencall.so.1": "libxencall1",
    "libxenevtchn.so.1": "libxenevtchn1",
    "libxengnttab.so.1": "libxengnttab1",
    "libxenforeignmemory.so.1": "libxenforeignmemory1",
    "libxendevicemodel.so.1": "libxendevicemodel1",
    "libxentoolcore.so.1": "libxentoolcore1",
    "libxenstore.so.4": "libxenstore4",
    "libxenhypfs.so.1": "libxenhypfs1",
    "libyajl.so.2": "libyajl2",
}

# Options that would make kexec-tools do something other than "load" (kexec-tools 2.0.25 `kexec/kexec.h`).
_REFUSED_LONG = {"--exec", "--force", "--unload", "--load-jump-back-helper", "--exec-live-update",
                 "--load-live-update", "--status", "--help", "--version", "--print-ckr-size"}
_REFUSED_SHORT = set("efuShv?")


class CaptureError(Exception):
    """Something stopped the capture; the message says what to do."""


class Unavailable(CaptureError):
    """A prerequisite (gcc, apt-get/dpkg, the kexec-tools package) is missing here."""


@dataclasses.dataclass
class CapturedSegment:
    index: int
    mem: int
    memsz: int
    bufsz: int
    path: Path

    def data(self) -> bytes:
        return self.path.read_bytes()


@dataclasses.dataclass
class Capture:
    directory: Path
    entry: int
    flags: int
    segments: list[CapturedSegment]
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def segment_at(self, addr: int) -> CapturedSegment | None:
        for s in self.segments:
            if s.mem <= addr < s.mem + s.memsz:
                return s
        return None

    def table(self) -> str:
        lines = [f"entry 0x{self.entry:x}  flags 0x{self.flags:x}  ({len(self.segments)} segments)",
                 f"{'#':>2}  {'mem':>18}  {'memsz':>10}  {'bufsz':>10}  file"]
        for s in self.segments:
            lines.append(f"{s.index:>2}  0x{s.mem:016x}  0x{s.memsz:08x}  0x{s.bufsz:08x}  {s.path.name}")
        return "\n".join(lines)


def iomem_has_addresses(path: str = "/proc/iomem") -> bool:
    """Whether /proc/iomem shows real addresses: to a process without CAP_SYS_ADMIN it reads all zeros, and
    kexec-tools then takes other paths (nothing to place a segment in) than the ones recorded as root."""
    try:
        text = Path(path).read_text()
    except OSError:
        return False
    return any(re.match(r"^0*[1-9a-f][0-9a-f]*-", line) or re.match(r"^[0-9a-f]+-0*[1-9a-f]", line)
               for line in text.splitlines())


def cache_dir() -> Path:
    return Path(os.environ.get("KEXLOADER_CACHE") or Path.home() / ".cache" / "kexloader")


# ---------------------------------------------------------------------------------------------- the shim

def build_shim(cache: Path | None = None) -> Path:
    """Compile shim.c into the cache unless a build of this exact source is there already."""
    cache = cache or cache_dir()
    source = SHIM_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    out_dir = cache / "kexec_tools_capture"
    out = out_dir / f"shim-{digest}.so"
    if out.exists():
        return out
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        raise Unavailable("gcc is needed to build the capture shim: apt-get install gcc")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    proc = subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(tmp),
                           str(SHIM_SOURCE), "-ldl"], capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise CaptureError(f"building the capture shim failed:\n{proc.stderr}")
    os.replace(tmp, out)
    for old in out_dir.glob("shim-*.so"):  # drop builds of older sources
        if old != out:
            old.unlink(missing_ok=True)
    return out


# -------------------------------------------------------------------------------------- kexec-tools

def _apt_download_unpack(packages: list[str], dest: Path, work: Path) -> None:
    if not (shutil.which("apt-get") and shutil.which("dpkg")):
        raise Unavailable("apt-get and dpkg are needed to fetch kexec-tools (a Debian machine)")
    work.mkdir(parents=True, exist_ok=True)
    for pkg in packages:
        before = set(work.glob("*.deb"))
        proc = subprocess.run(["apt-get", "download", pkg], cwd=work, capture_output=True, text=True)
        debs = sorted(set(work.glob("*.deb")) - before) or sorted(work.glob(f"{pkg}_*.deb"))
        if proc.returncode != 0 or not debs:
            raise Unavailable(f"`apt-get download {pkg}` failed (run apt-get update first?): "
                              f"{proc.stderr.strip().splitlines()[-1:] or ''}")
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(dest)], check=True)


def kexec_binary(root: Path) -> Path:
    """/sbin/kexec in Debian 12's package, /usr/sbin/kexec in Debian 13's (merged /usr)."""
    for rel in ("sbin/kexec", "usr/sbin/kexec"):
        if (root / rel).exists():
            return root / rel
    return root / "sbin" / "kexec"


def kexec_tools_root(cache: Path | None = None, fetch: bool = True) -> Path:
    """The directory Debian's kexec-tools package is unpacked into (fetched on first use)."""
    cache = cache or cache_dir()
    root = cache / "kexec-tools"
    if not kexec_binary(root).exists():
        if not fetch:
            raise Unavailable(f"kexec-tools is not unpacked in {root}")
        # Deliberately `apt-get download` + `dpkg -x`, never `apt-get install`.
        _apt_download_unpack(["kexec-tools"], root, cache / "debs")
    return root


def upstream_version(root: Path) -> str | None:
    """The upstream release of the kexec-tools package unpacked at `root` ("2.0.25" for Debian 12's
    1:2.0.25-3+deb12u3), from its changelog's first line; None when it cannot be read. The recorded fixtures
    are Debian 12's 2.0.25: a Debian 13 machine's apt fetches another release."""
    import gzip
    import re
    try:
        with gzip.open(root / "usr/share/doc/kexec-tools/changelog.Debian.gz", "rt") as f:
            first = f.readline()
    except OSError:
        return None
    m = re.match(r"kexec-tools \((?:\d+:)?([\d.]+)-", first)
    return m.group(1) if m else None


def _library_path(kexec: Path, cache: Path, fetch: bool) -> str | None:
    """LD_LIBRARY_PATH for the libraries this machine lacks, fetched into the cache."""
    libroot = cache / "kexec-tools-libs"
    libdir = libroot / "usr" / "lib" / "x86_64-linux-gnu"
    env = dict(os.environ)
    if libdir.is_dir():
        env["LD_LIBRARY_PATH"] = str(libdir)
    missing = _missing_libraries(kexec, env)
    fetched: set[str] = set()
    # A library ldd cannot find hides its own dependencies, so fetch in rounds until nothing new is missing.
    while missing and fetch:
        unknown = [m for m in missing if m not in DEBIAN_LIBRARY_PACKAGES]
        if unknown:
            raise Unavailable(f"{kexec} needs libraries this machine lacks: {', '.join(unknown)}")
        wanted = sorted({DEBIAN_LIBRARY_PACKAGES[m] for m in missing} - fetched)
        if not wanted:
            break
        _apt_download_unpack(wanted, libroot, cache / "debs")
        fetched.update(wanted)
        env["LD_LIBRARY_PATH"] = str(libdir)
        missing = _missing_libraries(kexec, env)
    if missing:
        raise Unavailable(f"{kexec} needs libraries this machine lacks: {', '.join(missing)}")
    return env.get("LD_LIBRARY_PATH") if libdir.is_dir() else None


def _missing_libraries(binary: Path, env: dict) -> list[str]:
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env)
    return re.findall(r"^\s*(\S+) => not found", proc.stdout, re.M)


# ------------------------------------------------------------------------------------------ capture

def check_extra_args(args: list[str]) -> None:
    """Refuse anything that would make kexec-tools do more than load."""
    for a in args:
        if a == "--":
            break
        if a.startswith("--"):
            name = a.split("=", 1)[0]
            if name in _REFUSED_LONG:
                raise CaptureError(f"refusing to pass {name} to kexec-tools: the capture only loads")
        elif a.startswith("-") and len(a) > 1:
            # A short-option cluster; option arguments glued on ("-tbzImage64") are read as letters here, so
            # write them as --type=... instead.
            bad = _REFUSED_SHORT & set(a[1:])
            if bad:
                raise CaptureError(f"refusing to pass {a!r} to kexec-tools (it contains -{''.join(sorted(bad))}); "
                                   "the capture only loads (use the --long=value form for option arguments)")


def shim_env(shim: Path, capture_dir: Path, ld_path: str | None = None, **world: str) -> dict[str, str]:
    """The environment kexec-tools runs in: a few of ours, the shim preloaded, its capture directory, and the
    world's KT_* choices (shim.c: KT_LOAD_ERRNO, KT_FILE_ERRNO, KT_REDIRECT)."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR")}
    env["LD_PRELOAD"] = str(shim)
    env["KT_CAPTURE_DIR"] = str(Path(capture_dir).resolve())
    if ld_path:
        env["LD_LIBRARY_PATH"] = ld_path
    for name, value in world.items():
        if not name.startswith("KT_"):
            raise ValueError(f"{name}: the shim reads only KT_* variables")
        env[name] = value
    return env


def debian_kexec(cache: Path | None = None, fetch: bool = True) -> tuple[Path, str | None]:
    """Debian's /sbin/kexec (fetched and unpacked on first use) and the LD_LIBRARY_PATH it needs here."""
    cache = cache or cache_dir()
    kexec = kexec_binary(kexec_tools_root(cache, fetch=fetch))
    return kexec, _library_path(kexec, cache, fetch)


def capture(kernel: str | os.PathLike, initrd: str | os.PathLike | None = None, append: str | None = None,
            extra_args: list[str] | tuple = (), out_dir: str | os.PathLike | None = None, debug: bool = False,
            fetch: bool = True, timeout: float = 300) -> Capture:
    """Run kexec-tools under the shim and return what it would have loaded."""
    extra_args = list(extra_args)
    check_extra_args(extra_args)
    cache = cache_dir()
    shim = build_shim(cache)
    kexec, ld_path = debian_kexec(cache, fetch)

    if out_dir is None:
        out = Path(tempfile.mkdtemp(prefix="kt-capture-"))
    else:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for old in list(out.glob("seg-*.bin")) + [out / "capture.json", out / "calls.jsonl"]:
            old.unlink(missing_ok=True)

    argv = [str(kexec), "-c", "-l", os.fspath(kernel)]
    if debug:
        argv.insert(1, "-d")
    if initrd is not None:
        argv.append(f"--initrd={os.fspath(initrd)}")
    if append is not None:
        argv.append(f"--append={append}")
    argv += extra_args

    env = shim_env(shim, out, ld_path)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    (out / "kexec.stdout").write_text(proc.stdout)
    (out / "kexec.stderr").write_text(proc.stderr)

    meta = out / "capture.json"
    if not meta.exists():
        raise CaptureError(f"kexec-tools exited {proc.returncode} without calling kexec_load:\n"
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return load_capture(out, returncode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)


def load_capture(directory: str | os.PathLike, returncode: int = 0, stdout: str = "", stderr: str = "") -> Capture:
    """Read a capture directory written by the shim."""
    directory = Path(directory)
    meta = json.loads((directory / "capture.json").read_text())
    segs = []
    for s in meta["segments"]:
        path = directory / s["file"]
        if path.stat().st_size != s["bufsz"]:
            raise CaptureError(f"{path}: {path.stat().st_size} bytes, capture.json says {s['bufsz']}")
        segs.append(CapturedSegment(s["index"], s["mem"], s["memsz"], s["bufsz"], path))
    if not stdout and (directory / "kexec.stderr").exists():
        stdout = (directory / "kexec.stdout").read_text()
        stderr = (directory / "kexec.stderr").read_text()
    return Capture(directory, meta["entry"], meta["flags"], segs, meta.get("argv", []), returncode, stdout, stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Arguments after -- are passed to kexec-tools unchanged.")
    ap.add_argument("kernel")
    ap.add_argument("--initrd")
    ap.add_argument("--append")
    ap.add_argument("--out", help="capture directory (default: a new temporary directory)")
    ap.add_argument("-d", "--debug", action="store_true", help="run kexec-tools with -d (its log is kept)")
    ap.add_argument("--json", action="store_true", help="print capture.json instead of the table")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.extra = extra
    try:
        cap = capture(args.kernel, args.initrd, args.append, args.extra, args.out, debug=args.debug)
    except CaptureError as e:
        print(f"capture: {e}", file=sys.stderr)
        return 2
    if args.json:
        print((cap.directory / "capture.json").read_text(), end="")
    else:
        print(f"kexec-tools: {' '.join(cap.argv)}  (exit {cap.returncode})")
        print(cap.table())
        print(f"captured in {cap.directory}")
    return 0 if cap.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
