#!/usr/bin/env python3
"""Side-by-side speed of kexloader and kexec-tools: wall time and peak RSS of whole processes.

    .venv/bin/python -m tools.bench [--sizes 1,32,128] [-n 5] [--json FILE] [--only WORK,...]

Every run is a child process started by a small C helper (tools/bench_spawn.c: fork, execve, wait4; wall
time around those, peak RSS from the child's rusage, which then holds the child's own pages only). Both
loaders run in paired, interleaved runs (the order flips every repetition) on the same files, command line
and memory map (this host's live /sys/firmware/memmap), and both run under the capture shim
(tools/kexec_tools_capture/shim.c: its seccomp filter refuses kexec_load, kexec_file_load and reboot in the
kernel):

- kexec-tools (Debian 12's 2.0.25, unpacked in the cache, never installed) runs to its syscall; the shim
  refuses it there (KT_CAPTURE_DIR unset: nothing is written, so no copy of the segments is timed) and says so
  on stderr, which is checked.
- kexloader runs its real command line path (``kexloader.cli.main``) in a child whose
  ``kexloader.backends.linux.raw_syscall`` is a recorder: everything up to the syscall runs, including the
  kexec_segment array; the recorder notes the call and returns success (for reboot: exits, as reboot would
  not return). The child refuses to start unless the shim's seccomp filter is active, and the parent checks
  that the expected syscall was recorded.

kexloader's child runs as Debian's /usr/sbin/kexloader does (debian/kexloader-command): on the system
interpreter (/usr/bin/python3) without ``site`` (``-S``), with PYTHONPATH set to the tree and the venv's
site-packages (same Python version) where the script appends Debian's dist-packages. It first tries the
command's own quick paths (kexloader/entry.py: a bare ``-S`` answered from sysfs, a bare ``-u`` or ``-e`` done by
the Linux backend, before the loader is imported), then the full command line. The floors are that interpreter's ``python3 -S -c pass`` (the quick paths' floor) and ``python3 -c pass``
(with ``site``: on this host a sandbox's .pth file imports certifi there, ~50 ms that a Debian machine does not
have, which is one reason the package's command starts without it).

This host's kernel has no kexec (no /sys/kernel/kexec_loaded): kexloader's ``-S`` and ``-e`` read a fake
sysfs root; kexec-tools' ``-S`` fails to read the file (exit 255) after the same start-up.
``-p`` needs a crash kernel region, which this host does not have: kexloader's host facts are read from a
snapshot with crashkernel= (``kexloader.system.read_facts`` replaced), and kexec-tools is not run (the shim
cannot fake /proc/iomem), so that row is kexloader alone. ``-e`` in kexloader sees a fake sysfs root that
says a kernel is loaded; kexec-tools 2.0.25 does not check and goes through sync and ifdown (refused by
seccomp) to reboot.

``--guest`` instead boots Debian 12's kernel once under QEMU (TCG; tools/vm) with crashkernel=384M and times,
inside the guest, each loader's ``-l``, ``-p`` and ``-S`` (kexec-tools and the libraries ldd finds for it are
copied into the image; the guest's loads are real, inside the VM).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
sys.path.insert(0, str(REPO / "tools"))

from kexec_tools_capture import capture as kt  # noqa: E402

SYS_KEXEC_LOAD, SYS_REBOOT = 246, 169
CMDLINE = "console=ttyS0 root=/dev/vda1 ro quiet"
SPAWN_SOURCE = REPO / "tools" / "bench_spawn.c"
CRASH_SNAPSHOT = REPO / "fixtures" / "snapshots" / "qemu-debian12-kdump-384m.json"
SHIM_REFUSED_LOAD = "kt-capture-shim: KT_CAPTURE_DIR is not set; refusing kexec_load"
SHIM_REFUSED_REBOOT = "kt-capture-shim: reboot refused"
SHIM_ACTIVE = "kt-capture-shim: seccomp filter installed"
CHILD_REFUSES = 97  # the kexloader child's exit code when the shim is not in place

# Run as `python -c CHILD ARGV...`. Kept free of kexloader imports until the guard has passed, and of imports
# kexloader does not make itself (the calls are written as plain text, not json), so that the child's start-up
# is kexloader's.
CHILD = r"""
import os, sys
def _seccomp():
    with open("/proc/self/status") as f:
        return next((l.split()[1] for l in f if l.startswith("Seccomp:")), "0")
if _seccomp() != "2" or "kexec_tools_capture/shim-" not in os.environ.get("LD_PRELOAD", ""):
    sys.stderr.write("bench child: the capture shim's seccomp filter is not active; refusing to run\n")
    os._exit(97)
trap = os.environ["KEXLOADER_BENCH_TRAP"]
calls = []
def record(nr, *args):
    calls.append(int(nr))
    if int(nr) == 169:  # reboot does not return
        save()
        os._exit(0)
    return 0
def save():
    with open(trap, "w") as f:
        f.write(" ".join(map(str, calls)))
root = os.environ.get("KEXLOADER_BENCH_ROOT")
from kexloader import entry  # the command's own quick paths (debian/kexloader-command), before site and the loader
if root:
    rc = entry.quick_status(sys.argv[1:], root)
    if rc is not None:
        save()
        sys.exit(rc)
import kexloader.backends.linux as linux
linux.raw_syscall = record
rc = entry.quick_unload(sys.argv[1:], root or "/")
if rc is None:
    rc = entry.quick_exec(sys.argv[1:], root or "/")
if rc is not None:
    save()
    sys.exit(rc)
snapshot = os.environ.get("KEXLOADER_BENCH_FACTS")
if snapshot:
    import kexloader.system as system
    system.read_facts = lambda *a, **k: system.load_snapshot(snapshot)
import kexloader.cli as cli
factory = (lambda: linux.LinuxKexecBackend(root=__import__("pathlib").Path(root))) if root else cli.default_backend
rc = cli.main(sys.argv[1:], backend_factory=factory)
save()
sys.exit(rc)
"""


class BenchError(Exception):
    """A run did not do what it must (did not reach its syscall, ran without the shim, failed)."""


@dataclasses.dataclass
class Sample:
    wall: float  # seconds
    rss: int  # peak RSS in bytes
    rc: int


@dataclasses.dataclass
class Runner:
    """How one side of a row is run, and what its run must show to count."""

    argv: list[str]
    env: dict[str, str]
    expect_syscall: int | None = None  # kexloader: the recorded call that must be there
    expect_stderr: tuple[str, ...] = ()  # kexec-tools: shim lines that must be there
    ok_rc: tuple[int, ...] = (0,)
    trap: Path | None = None
    label: str = ""  # for messages: the loader and its arguments

    def __post_init__(self):
        self.label = self.label or " ".join(self.argv)


@dataclasses.dataclass
class Work:
    name: str
    kexloader: Runner | None
    kexec_tools: Runner | None
    note: str = ""


def build_c(source_path: Path, flags: list[str], suffix: str = "", cache: Path | None = None) -> Path:
    """Compile one C file into the cache (keyed by its source and flags) unless that build is there."""
    key = hashlib.sha256(source_path.read_bytes() + " ".join(flags).encode()).hexdigest()[:16]
    out = (cache or kt.cache_dir()) / "bench" / f"{source_path.stem}-{key}{suffix}"
    if out.exists():
        return out
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        raise kt.Unavailable(f"gcc is needed to build {source_path.relative_to(REPO)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    subprocess.run([gcc, *flags, "-Wall", "-Wextra", "-Werror", "-o", str(tmp), str(source_path)], check=True)
    os.replace(tmp, out)
    return out


def build_spawner(cache: Path | None = None) -> Path:
    return build_c(SPAWN_SOURCE, ["-O2"], cache=cache)


def spawn(runner: Runner, scratch: Path, spawner: Path) -> Sample:
    """One child, started by bench_spawn (wall time around fork .. wait4, peak RSS of the child alone)."""
    out, err = scratch / "stdout", scratch / "stderr"
    if runner.trap is not None:
        runner.trap.unlink(missing_ok=True)
    env = [f"{k}={v}" for k, v in runner.env.items()]
    proc = subprocess.run([str(spawner), str(out), str(err), str(len(env)), *env, "--", *runner.argv],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise BenchError(f"bench_spawn failed ({proc.returncode}): {proc.stderr.strip()}")
    ns, rc, kib = (int(x) for x in proc.stdout.split())
    check(runner, rc, err.read_text(errors="replace"))
    return Sample(ns / 1e9, kib * 1024, rc)


def check(runner: Runner, rc: int, stderr: str) -> None:
    tail = " | ".join(stderr.strip().splitlines()[-3:])
    if rc == CHILD_REFUSES:
        raise BenchError(f"{runner.argv[0]}: the kexloader child refused to run without the shim: {tail}")
    if rc not in runner.ok_rc:
        raise BenchError(f"`{runner.label}` exited {rc}: {tail}")
    for line in runner.expect_stderr:
        if line not in stderr:
            raise BenchError(f"`{runner.label}` did not print {line!r} (shim not loaded, or it "
                             f"stopped before its syscall): {tail}")
    if runner.trap is not None:
        calls = [int(x) for x in runner.trap.read_text().split()] if runner.trap.exists() else None
        if runner.expect_syscall is None and calls:
            raise BenchError(f"`{runner.label}` made syscalls {calls}, none expected")
        if runner.expect_syscall is not None and runner.expect_syscall not in (calls or []):
            raise BenchError(f"`{runner.label}` did not reach syscall {runner.expect_syscall} "
                             f"(recorded: {calls}): {tail}")


# ---------------------------------------------------------------------------------------------- the rows

@dataclasses.dataclass
class Inputs:
    kernel: Path
    xen_gz: Path
    xen_elf: Path  # kexec-tools cannot read a gzipped multiboot image
    initrds: dict[int, Path]  # MiB -> file
    scratch: Path


def debian_inputs() -> tuple[Path, Path]:
    base = kt.cache_dir() / "platforms" / "deb12"
    kernels = sorted((base / "linux" / "boot").glob("vmlinuz-*"))
    xens = sorted((base / "xen" / "boot").glob("xen-*.gz"))
    if not kernels or not xens:
        raise kt.Unavailable(f"Debian 12's kernel and Xen are not in {base} (tools/apt-platforms.sh fetches them)")
    return kernels[-1], xens[-1]


def make_inputs(scratch: Path, sizes: list[int], kernel: Path | None = None, xen_gz: Path | None = None) -> Inputs:
    """Random initrds (incompressible, made once) and Xen decompressed for kexec-tools, in scratch."""
    if kernel is None or xen_gz is None:
        kernel, xen_gz = debian_inputs()
    initrds = {}
    for mib in sizes:
        path = scratch / f"initrd-{mib}M"
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
        initrds[mib] = path
    xen_elf = scratch / "xen.elf"
    xen_elf.write_bytes(zlib.decompress(xen_gz.read_bytes(), 16 + zlib.MAX_WBITS))
    return Inputs(kernel, xen_gz, xen_elf, initrds, scratch)


def kexec_tools_env(shim: Path, ld_path: str | None) -> dict[str, str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LD_PRELOAD": str(shim), "KT_SHIM_VERBOSE": "1"}
    if ld_path:
        env["LD_LIBRARY_PATH"] = ld_path
    return env  # KT_CAPTURE_DIR unset on purpose: the shim refuses kexec_load and writes nothing


def works(inp: Inputs, shim: Path, kexec: Path | None, ld_path: str | None,
          python: str | None = None) -> list[Work]:
    """The rows: (kexloader runner, kexec-tools runner) per work, same arguments on both sides."""
    python = python or packaged_python()
    trap = inp.scratch / "trap.txt"
    fake_root = inp.scratch / "loaded-root"
    (fake_root / "sys" / "kernel").mkdir(parents=True, exist_ok=True)
    (fake_root / "sys" / "kernel" / "kexec_loaded").write_text("1\n")
    (fake_root / "sys" / "kernel" / "kexec_crash_loaded").write_text("0\n")
    base_env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": str(shim), "KEXLOADER_BENCH_TRAP": str(trap),
                "PYTHONPATH": f"{REPO}:{sysconfig.get_paths()['purelib']}"}
    kt_env = kexec_tools_env(shim, ld_path)

    def kl(args, syscall=None, **env):
        return Runner([python, "-S", "-c", CHILD, *args], dict(base_env, **env), expect_syscall=syscall, trap=trap,
                      label=" ".join(["kexloader", *args]))

    def ktr(args, *expect, ok=(0, 1, 255)):
        # kexec-tools exits non-zero after the refused call; the shim's line proves it got there.
        if kexec is None:
            return None
        return Runner([str(kexec), *args], kt_env, expect_stderr=(SHIM_ACTIVE, *expect), ok_rc=ok,
                      label=" ".join(["kexec-tools", *args]))

    out = []
    k, app = str(inp.kernel), f"--append={CMDLINE}"
    for mib, initrd in inp.initrds.items():
        args = ["-c", "-l", k, f"--initrd={initrd}", app]
        out.append(Work(f"-l, {mib} MiB initrd", kl(args, SYS_KEXEC_LOAD), ktr(args, SHIM_REFUSED_LOAD)))
    small = min(inp.initrds)
    out.append(Work(f"-p, {small} MiB initrd (crash region from a snapshot)",
                    kl(["-c", "-p", k, f"--initrd={inp.initrds[small]}", app], SYS_KEXEC_LOAD,
                       KEXLOADER_BENCH_FACTS=str(CRASH_SNAPSHOT)), None,
                    note="kexec-tools not run: this host has no crash kernel region and the shim cannot fake "
                         "/proc/iomem"))
    loaded = {"KEXLOADER_BENCH_ROOT": str(fake_root)}
    out.append(Work("-S", dataclasses.replace(kl(["-S"], **loaded), ok_rc=(0, 1)), ktr(["-S"]),
                    note="this host's kernel has no kexec sysfs files: kexloader reads a fake sysfs root, "
                         "kexec-tools fails to read them (exit 255)"))
    out.append(Work("-u", kl(["-c", "-u"], SYS_KEXEC_LOAD), ktr(["-c", "-u"], SHIM_REFUSED_LOAD),
                    note="-c -u on both sides: the kexec_load unload, whatever each release's default syscall"))
    out.append(Work("-e (to the reboot call)", kl(["-e"], SYS_REBOOT, **loaded),
                    ktr(["-e"], SHIM_REFUSED_REBOOT),
                    note="both sync(); kexec-tools also tries ifdown (refused by seccomp)"))
    out.append(Work("--inspect kernel", kl([f"--inspect={k}"]), None, note="kexloader only"))
    mods = [f"--module={k} console=hvc0 {CMDLINE}", f"--module={inp.initrds[small]}"]
    xargs = ["-c", "-l", str(inp.xen_elf), "--command-line=dom0_mem=1024M console=com1", *mods]
    out.append(Work(f"Xen multiboot (xen ELF + dom0 + {small} MiB initrd)", kl(xargs, SYS_KEXEC_LOAD),
                    ktr(xargs, SHIM_REFUSED_LOAD)))
    out.append(Work("Xen multiboot from xen.gz", kl(["-c", "-l", str(inp.xen_gz), xargs[3], *mods], SYS_KEXEC_LOAD),
                    None, note="kexloader only: kexec-tools cannot read a gzipped multiboot image"))
    return out


def packaged_python() -> str:
    """The system interpreter when it is this one's version (the venv's packages then import in it), else this
    interpreter."""
    try:
        v = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                           text=True, timeout=30).stdout.strip()
    except OSError:
        return sys.executable
    return SYSTEM_PYTHON if v == str(sys.version_info[:2]) else sys.executable


def floors(python: str | None = None) -> list[Work]:
    python = python or packaged_python()
    env = {"PATH": "/usr/bin:/bin"}
    return [Work("floor: python3 -S -c pass", Runner([python, "-S", "-c", "pass"], env), None),
            Work("floor: python3 -c pass", Runner([python, "-c", "pass"], env), None)]


# ---------------------------------------------------------------------------------------------- measuring

def measure(rows: list[Work], reps: int, scratch: Path, spawner: Path,
            progress=None) -> dict[str, dict[str, list[Sample]]]:
    """Paired, interleaved: every repetition runs each row's two sides back to back, in alternating order."""
    samples: dict[str, dict[str, list[Sample]]] = {w.name: {"kexloader": [], "kexec-tools": []} for w in rows}
    for rep in range(reps):
        for w in rows:
            sides = [("kexloader", w.kexloader), ("kexec-tools", w.kexec_tools)]
            for side, runner in (sides if rep % 2 == 0 else sides[::-1]):
                if runner is not None:
                    samples[w.name][side].append(spawn(runner, scratch, spawner))
        if progress:
            progress(rep + 1)
    return samples


def summarize(rows: list[Work], samples: dict) -> list[dict]:
    out = []
    for w in rows:
        s = samples[w.name]
        row = {"work": w.name, "note": w.note}
        for side in ("kexloader", "kexec-tools"):
            row[side] = ({"wall": statistics.median(x.wall for x in s[side]),
                          "rss": statistics.median(x.rss for x in s[side]), "n": len(s[side])}
                         if s[side] else None)
        a, b = row["kexloader"], row["kexec-tools"]
        row["ratio"] = ({"wall": a["wall"] / b["wall"], "rss": a["rss"] / b["rss"] if b["rss"] else None}
                        if a and b else None)
        out.append(row)
    return out


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg": os.getloadavg(), "kernel": platform.release(),
            "python": platform.python_version(), "executable": sys.executable}


def _wall(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.3f} s"


def table(summary: list[dict], mach: dict, reps: int, load_before: tuple) -> str:
    def side(d):
        if d is None:
            return "-"
        return f"{_wall(d['wall'])}, {d['rss'] / 2**20:.1f} MiB" if d["rss"] else _wall(d["wall"])
    rows = [("work", "kexloader wall, RSS", "kexec-tools wall, RSS", "ratio wall, RSS")]
    for r in summary:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']['wall']:.2f}x" + (
            f", {r['ratio']['rss']:.2f}x" if r["ratio"]["rss"] is not None else "")
        rows.append((r["work"], side(r["kexloader"]), side(r["kexec-tools"]), ratio))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [" | ".join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * wd for wd in widths))
    notes = [f"  {r['work']}: {r['note']}" for r in summary if r["note"]]
    la = " ".join(f"{x:.2f}" for x in mach["loadavg"])
    lb = " ".join(f"{x:.2f}" for x in load_before)
    return "\n".join(
        [f"medians of {reps} paired run(s); ratio = kexloader / kexec-tools (below 1: kexloader is faster/smaller)",
         *lines, "notes:", *notes,
         f"machine: {mach['cpu']}, {mach['cores']} cores, Linux {mach['kernel']}, Python {mach['python']}; "
         f"load average {lb} before, {la} after"])


# ---------------------------------------------------------------------------------------------- in the guest

GUEST_KEXEC = "/opt/kt/kexec"
GUEST_LIBS = "/opt/kt/lib"


def kexec_tools_files(kexec: Path, ld_path: str | None) -> dict[str, Path]:
    """kexec-tools and the libraries ldd resolves for it (the guest's Python runtime brings the loader)."""
    env = dict(os.environ, **({"LD_LIBRARY_PATH": ld_path} if ld_path else {}))
    out = subprocess.run(["ldd", str(kexec)], capture_output=True, text=True, env=env, check=True).stdout
    files = {GUEST_KEXEC: kexec}
    for name, path in re.findall(r"^\s*(\S+) => (/\S+)", out, re.M):
        files[f"{GUEST_LIBS}/{name}"] = Path(path)
    return files


def guest_script(reps: int, initrd: str) -> str:
    """One stage: per repetition each loader's -l, -p and -S (order flipped every repetition), each load
    undone before the next so both start from the same state. `run` marks NAME.secs from /proc/uptime."""
    kt_cmd = f"env LD_LIBRARY_PATH={GUEST_LIBS} {GUEST_KEXEC}"
    load = f'/boot/vmlinuz --initrd={initrd} --append="$APPEND"'
    sides = {"kexloader": ("kl", "kexloader"), "kexec-tools": ("kt", kt_cmd)}
    lines = ['APPEND="console=ttyS0 panic=-1 stage=report"']
    for rep in range(reps):
        order = list(sides.values()) if rep % 2 == 0 else list(sides.values())[::-1]
        for tag, cmd in order:
            lines += [f"run {tag}_l_{rep} {cmd} -c -l {load}", f"run {tag}_lu_{rep} {cmd} -u",
                      f"run {tag}_p_{rep} {cmd} -c -p {load}", f"run {tag}_pu_{rep} {cmd} -p -u",
                      f"run {tag}_S_{rep} {cmd} -S"]
    return "\n".join(lines) + "\n"


def guest_bench(reps: int, initrd_mib: int, kexec: Path, ld_path: str | None, work: Path) -> tuple[list, dict]:
    """Boot deb12 under QEMU (TCG) once and time -l, -p, -S of both loaders inside it."""
    sys.path.insert(0, str(REPO))
    from tools.vm.harness import Harness

    h = Harness(work / "vm")
    initrd = "/bench-initrd.img"
    files = {initrd: os.urandom(initrd_mib << 20), **kexec_tools_files(kexec, ld_path)}
    guest = h.full(stages={"bench": guest_script(reps, initrd)}, files=files)
    guest.modes[GUEST_KEXEC] = 0o755
    t = h.boot(guest, "stage=bench crashkernel=384M", name="bench-guest", timeout=600 + 120 * reps)
    if t.timed_out is not None:
        raise BenchError(f"the guest did not finish: {t.timed_out}: {t.summary()}")
    rows = [Work(f"guest -l, {initrd_mib} MiB initrd", None, None),
            Work(f"guest -p, {initrd_mib} MiB initrd", None, None),
            Work("guest -S", None, None, note="exit 0: nothing loaded")]
    samples = {w.name: {"kexloader": [], "kexec-tools": []} for w in rows}
    for rep in range(reps):
        for side, tag in (("kexloader", "kl"), ("kexec-tools", "kt")):
            for w, op, ok in zip(rows, "lpS", ((0,), (0,), (0,))):
                name = f"{tag}_{op}_{rep}"
                if t.rc(name) not in ok:
                    raise BenchError(f"in the guest, {t.get(name + '.cmd')} exited {t.rc(name)}: "
                                     f"{t.out(name)[-300:]}")
                samples[w.name][side].append(Sample(t.secs(name), 0, t.rc(name)))
    return rows, samples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,32,128", help="initrd sizes in MiB, comma-separated (default 1,32,128)")
    ap.add_argument("-n", "--reps", type=int, default=5, help="paired repetitions (default 5)")
    ap.add_argument("--only", help="comma-separated prefixes of the works to run (e.g. '-l,-S,floor')")
    ap.add_argument("--json", help="write the raw samples, the medians and the machine to this file")
    ap.add_argument("--guest", action="store_true",
                    help="instead: in-guest wall time of -l, -p, -S of both loaders under QEMU (TCG, deb12, one "
                         "boot; the smallest --sizes initrd; no RSS)")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    try:
        shim = kt.build_shim()
        spawner = build_spawner()
        root = kt.kexec_tools_root(fetch=False)
        kexec = kt.kexec_binary(root)
        ld_path = kt._library_path(kexec, kt.cache_dir(), fetch=False)
    except kt.CaptureError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kexloader-bench-") as tmp:
        scratch = Path(tmp)
        if args.guest:
            try:
                rows, samples = guest_bench(args.reps, min(sizes), kexec, ld_path, scratch)
            except BenchError as e:
                print(f"bench: {e}", file=sys.stderr)
                return 1
            return report(rows, samples, args, sizes, load_before,
                          f"in a deb12 QEMU/TCG guest (2 vCPUs, 2 GiB, crashkernel=384M); guest seconds from "
                          f"/proc/uptime (10 ms steps); kexec-tools {kexec}")
        inp = make_inputs(scratch, sizes)
        rows = floors() + works(inp, shim, kexec, ld_path)
        if args.only:
            prefixes = [p.strip() for p in args.only.split(",")]
            rows = [w for w in rows if any(w.name.startswith(p) for p in prefixes)]
        try:
            samples = measure(rows, args.reps, scratch, spawner,
                              progress=lambda r: print(f"bench: repetition {r}/{args.reps} done", file=sys.stderr))
        except BenchError as e:
            print(f"bench: {e}", file=sys.stderr)
            return 1
    return report(rows, samples, args, sizes, load_before,
                  f"kernel {inp.kernel.name}, Xen {inp.xen_gz.name}, command line {CMDLINE!r}, kexec-tools {kexec}")


def report(rows, samples, args, sizes, load_before, heading: str) -> int:
    summary = summarize(rows, samples)
    mach = machine()
    print(heading)
    print(table(summary, mach, args.reps, load_before))
    if args.json:
        doc = {"machine": mach, "load_before": load_before, "reps": args.reps, "sizes_mib": sizes,
               "summary": summary, "samples": {name: {side: [dataclasses.asdict(x) for x in xs]
                                                      for side, xs in s.items()} for name, s in samples.items()}}
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
