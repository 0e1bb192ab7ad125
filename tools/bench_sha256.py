#!/usr/bin/env python3
"""Speed of the purgatory's checks at -e: its generated code run natively, hashlib, and a portable C SHA-256.

    .venv/bin/python -m tools.bench_sha256 [--mib 64] [--repeat 5] [--initrd-mib 128] [--kernel VMLINUZ]
                                            [--no-emulate]

1. Throughput over one --mib buffer: hashlib; tools/sha256_portable.c, a portable C SHA-256 in the shape
   of kexec-tools' purgatory (util_lib/sha256.c), built with its purgatory's x86-64 flags (-O2, no SSE);
   the generated sha256_blocks_int and sha256_blocks_shani through sha256_regions; zero_regions over zeros.
2. The check the purgatory makes at -e for a real plan: Debian 12's kernel (tools/apt-platforms.sh puts it
   in the cache) and a random --initrd-mib initrd, planned on fixtures/snapshots/devhost.json. Every
   checked segment is copied into this process at its memsz, then timed: kexloader's purgatory now (the
   zero fills tested for zeros, the buffers hashed), the same code hashing the fills too (as before), and
   the portable C over every byte (what kexec-tools' purgatory hashes); on the host side, hashlib over the
   buffers (kexloader -l now) and over buffers and fills (before).
3. Instructions the whole purgatory executes from its entry to the hand-off, counted in unicorn
   (tests/purgatory/purgatory_emu.py, one count per instruction) on small layouts and extrapolated: the count
   is c0 + a * (bytes hashed) + b * (bytes of zero fill) exactly (fixed code per 64-byte block or step), so
   three runs give c0, a and b, a fourth checks the fit, and the plan of part 2 gives the bytes.

The generated routines follow the System V calling convention, so they are mapped executable in this process
and called through ctypes. Times are this thread's CPU time (time.thread_time), best of --repeat: on a
shared machine wall time would count other processes too. MB/s is 10^6 bytes per second.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import mmap
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tools")]

import bench  # noqa: E402
from kexloader.handoff import segments_digest, zero_fills  # noqa: E402
from kexloader.model import LoadRequest, Role, Segment  # noqa: E402
from kexloader.purgatory.sha256_code import WORKSPACE_SIZE, native_routines  # noqa: E402

PORTABLE_SOURCE = REPO / "tools" / "sha256_portable.c"
# kexec-tools' purgatory/Makefile: sha256.o gets -O2; x86_64_PURGATORY_EXTRA_CFLAGS; the purgatory's own flags
PORTABLE_FLAGS = ["-O2", "-mcmodel=large", "-march=x86-64", "-mno-mmx", "-mno-sse", "-mno-sse2", "-mno-avx",
                  "-fno-builtin", "-ffreestanding", "-fno-stack-protector", "-fPIC", "-shared"]
SNAPSHOT = REPO / "fixtures" / "snapshots" / "devhost.json"

Spans = Sequence[tuple[int, int]]  # (address, length) in this process


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def has_sha_ni() -> bool:
    try:
        return " sha_ni" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _table(spans: Spans) -> ctypes.Array[ctypes.c_uint64]:
    flat = [v for span in spans for v in span]
    return (ctypes.c_uint64 * max(2, len(flat)))(*flat)


def address(buf: bytearray) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


class Native:
    """The generated routines mapped executable in this process, and the portable C build."""

    def __init__(self, portable: Path | None) -> None:
        code, self.offsets = native_routines()
        self._map = mmap.mmap(-1, len(code), prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self._map.write(code)
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        self._regions = ctypes.CFUNCTYPE(None, vp, sz, vp, vp, vp)(self.addr + self.offsets["sha256_regions"])
        self._zero = ctypes.CFUNCTYPE(ctypes.c_uint64, vp, sz)(self.addr + self.offsets["zero_regions"])
        self._portable = None
        if portable is not None:
            self._portable = ctypes.CDLL(str(portable)).sha256_portable_regions
            self._portable.argtypes, self._portable.restype = [vp, sz, vp], None

    def digest(self, spans: Spans, blocks: str) -> bytes:
        out = ctypes.create_string_buffer(32)
        ws = ctypes.create_string_buffer(WORKSPACE_SIZE)
        self._regions(_table(spans), len(spans), out, ws, ctypes.c_void_p(self.addr + self.offsets[blocks]))
        return out.raw

    def all_zero(self, spans: Spans) -> bool:
        return self._zero(_table(spans), len(spans)) == 0

    def portable(self, spans: Spans) -> bytes:
        assert self._portable is not None
        out = ctypes.create_string_buffer(32)
        self._portable(_table(spans), len(spans), out)
        return out.raw


def build_portable() -> Path | None:
    try:
        return bench.build_c(PORTABLE_SOURCE, PORTABLE_FLAGS, ".so")
    except (bench.kt.CaptureError, OSError) as e:
        print(f"bench_sha256: no portable C build ({e})", file=sys.stderr)
        return None


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t)
    return best


def routines() -> list[str]:
    return ["sha256_blocks_int"] + (["sha256_blocks_shani"] if has_sha_ni() else [])


# ------------------------------------------------------------------------------------------- 1. throughput


def throughput(native: Native, mib: int, repeat: int) -> dict[str, float]:
    """MB/s over one buffer of `mib` MiB, every implementation checked against hashlib first."""
    size = mib << 20
    buf = bytearray(os.urandom(1 << 20)) * mib
    whole = [(address(buf), size)]
    want = hashlib.sha256(buf).digest()
    results = {"hashlib": size / best_of(repeat, lambda: hashlib.sha256(buf).digest()) / 1e6}
    if native._portable is not None:
        assert native.portable(whole) == want, "portable C: wrong digest"
        results["portable C (kexec-tools' shape)"] = size / best_of(repeat, lambda: native.portable(whole)) / 1e6
    for name in routines():
        assert native.digest(whole, name) == want, f"{name}: wrong digest"
        results[name] = size / best_of(repeat, lambda: native.digest(whole, name)) / 1e6
    zeros = bytearray(size)
    zspan = [(address(zeros), size)]
    assert native.all_zero(zspan)
    results["zero_regions"] = size / best_of(repeat, lambda: native.all_zero(zspan)) / 1e6
    return results


# ------------------------------------------------------------------------------------------- 2. at -e


@dataclass
class Layout:
    """The checked segments of a plan, copied into this process at their memsz."""

    hashed: list[tuple[int, int]]  # the buffers: what kexloader hashes now
    zeros: list[tuple[int, int]]  # the zero fills: what its purgatory tests for zeros
    whole: list[tuple[int, int]]  # buffers and fills: what was hashed before, and what kexec-tools hashes
    views: list[memoryview]  # the buffers as the host hashes them
    digest: bytes  # the digest in the plan's purgatory
    memory: list[bytearray]  # keeps the copies alive

    @property
    def hashed_bytes(self) -> int:
        return sum(n for _, n in self.hashed)

    @property
    def zero_bytes(self) -> int:
        return sum(n for _, n in self.zeros)


def plan_layout(kernel: Path, initrd_mib: int) -> tuple[Layout, str]:
    from kexloader.api import make_plan
    from kexloader.snapshot import load_snapshot

    req = LoadRequest(kernel=kernel.read_bytes(), kernel_name=kernel.name, cmdline=bench.CMDLINE,
                      initrd=os.urandom(initrd_mib << 20), initrd_name=f"{initrd_mib} MiB random")
    plan = make_plan(req, load_snapshot(SNAPSHOT))
    (purgatory,) = [s for s in plan.segments if s.role == Role.PURGATORY]
    checked = sorted((s for s in plan.segments if s.role not in (Role.PURGATORY, Role.MAP_ONLY)),
                     key=lambda s: s.mem)
    _, digest = segments_digest(checked)
    assert digest in bytes(purgatory.data), "the checked segments are not the ones the plan's purgatory checks"
    memory, hashed, zeros, whole, views = [], [], [], [], []
    for s in checked:
        copy = bytearray(s.memsz)
        copy[:s.bufsz] = s.data
        memory.append(copy)
        at = address(copy)
        whole.append((at, s.memsz))
        if s.bufsz:
            hashed.append((at, s.bufsz))
            views.append(memoryview(copy)[:s.bufsz])
        if s.memsz > s.bufsz:
            zeros.append((at + s.bufsz, s.memsz - s.bufsz))
    rows = "; ".join(f"{s.role} {_size(s.bufsz)} of {_size(s.memsz)}" for s in checked)
    return Layout(hashed, zeros, whole, views, digest, memory), rows


def _size(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 1 << 20 else f"{n / 2**10:.1f} KiB"


def check_at_exec(native: Native, lay: Layout, repeat: int) -> list[tuple[str, float]]:
    """Seconds of each way to check the layout, each checked for the right answer first."""
    def host(views: Sequence[memoryview | bytes]) -> bytes:
        h = hashlib.sha256()
        for v in views:
            h.update(v)
        return h.digest()

    fill_views = [memoryview(bytes(n)) for _, n in lay.zeros]  # the host hashed the fills as zeros
    whole_digest = host([memoryview(m) for m in lay.memory])
    assert host(lay.views) == lay.digest
    out = [("host: hashlib over the buffers (kexloader -l now)", best_of(repeat, lambda: host(lay.views))),
           ("host: hashlib over buffers and fills (before)",
            best_of(repeat, lambda: (host(lay.views), host(fill_views))))]
    assert native.all_zero(lay.zeros)
    out.append(("purgatory: zero_regions over the fills", best_of(repeat, lambda: native.all_zero(lay.zeros))))
    for name in routines():
        path = "SHA-NI" if name.endswith("shani") else "integer"
        assert native.digest(lay.hashed, name) == lay.digest and native.digest(lay.whole, name) == whole_digest
        out.append((f"purgatory, {path}: fills tested + buffers hashed (now)",
                    best_of(repeat, lambda: (native.all_zero(lay.zeros), native.digest(lay.hashed, name)))))
        out.append((f"purgatory, {path}: every byte hashed (before)",
                    best_of(repeat, lambda: native.digest(lay.whole, name))))
    if native._portable is not None:
        assert native.portable(lay.whole) == whole_digest
        out.append(("kexec-tools' purgatory (portable C, every byte hashed)",
                    best_of(repeat, lambda: native.portable(lay.whole))))
    return out


# ------------------------------------------------------------------------------------------- 3. unicorn


PURGATORY_AT, KERNEL_AT = 0x100000, 0x1000000


def emulated_instructions(hashed: int, zero: int, sha_ni: bool) -> int:
    """Instructions the purgatory runs from its entry to the kernel's, over one segment of `hashed` random
    bytes and `zero` bytes of fill. SHA-NI: the CPU model says SHA and the emulator supplies the SHA
    instructions (unicorn lacks them); each counts as one."""
    sys.path.insert(0, str(REPO / "tests"))
    from unicorn import UC_HOOK_CODE

    from kexloader.purgatory.program import Linux64Handoff, build_purgatory
    from purgatory.purgatory_emu import PROBE, Machine

    kernel = bytearray(random.Random(hashed * 7 + zero).randbytes(hashed))
    kernel[0x200:0x200 + len(PROBE)] = PROBE  # the 64-bit entry; the emulator stops there
    segs = [Segment(Role.KERNEL, KERNEL_AT, hashed + zero, bytes(kernel))]
    handoff = Linux64Handoff(boot_params=0x90000, kernel_entry=KERNEL_AT + 0x200)
    regions, digest = segments_digest(segs)
    img = build_purgatory(PURGATORY_AT, handoff, regions=regions, zeros=zero_fills(segs), digest=digest)
    m = Machine(sha_ni=sha_ni, emulate_sha=sha_ni)
    m.write(KERNEL_AT, bytes(kernel))
    m.write(PURGATORY_AT, img.code)
    count = [0]

    def one(*_: object) -> None:
        count[0] += 1

    m.uc.hook_add(UC_HOOK_CODE, one)
    out = m.run(img.entry, handoff.kernel_entry, probe_mode=False, max_insns=1 << 30)
    if not out.reached:
        raise RuntimeError(f"the emulated purgatory did not hand over: {out.error}")
    return count[0]


@dataclass
class Fit:
    c0: float  # instructions besides the per-byte work
    per_hashed: float  # per byte hashed
    per_zero: float  # per byte of zero fill tested
    check: tuple[int, int]  # (predicted, counted) at a fourth point

    def predict(self, hashed: int, zero: int) -> float:
        return self.c0 + self.per_hashed * hashed + self.per_zero * zero


def fit_instructions(sha_ni: bool, h: int = 8192, z: int = 8192) -> Fit:
    n1 = emulated_instructions(h, z, sha_ni)
    a = (emulated_instructions(2 * h, z, sha_ni) - n1) / h
    b = (emulated_instructions(h, 2 * z, sha_ni) - n1) / z
    c0 = n1 - a * h - b * z
    counted = emulated_instructions(3 * h, 3 * z, sha_ni)
    return Fit(c0, a, b, (round(c0 + a * 3 * h + b * 3 * z), counted))


# ------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--mib", type=int, default=64, help="buffer size for the throughput part (default 64)")
    p.add_argument("--repeat", type=int, default=5, help="runs of each timing; the best counts (default 5)")
    p.add_argument("--initrd-mib", type=int, default=128, help="initrd size for the -e part (default 128)")
    p.add_argument("--kernel", type=Path, help="bzImage for the -e part (default: Debian 12's, from the cache)")
    p.add_argument("--no-emulate", action="store_true", help="skip the unicorn instruction counts")
    args = p.parse_args(argv)
    native = Native(build_portable())
    print(f"CPU: {cpu_model()} (sha_ni: {'yes' if has_sha_ni() else 'no'}), load average "
          f"{os.getloadavg()[0]:.2f}; CPU time of this thread, best of {args.repeat}")

    print(f"\n1. throughput over one {args.mib} MiB buffer")
    res = throughput(native, args.mib, args.repeat)
    portable = res.get("portable C (kexec-tools' shape)")
    for name, mbs in res.items():
        vs = ""
        if name == "sha256_blocks_shani":
            vs = f"  ({mbs / res['hashlib']:.2f} x hashlib)"
        elif name == "sha256_blocks_int" and portable:
            vs = f"  ({mbs / portable:.2f} x the portable C)"
        print(f"   {name:34s} {mbs:9.1f} MB/s{vs}")
    if not has_sha_ni():
        print("   sha256_blocks_shani                skipped: this CPU does not report sha_ni")

    try:
        kernel = args.kernel or bench.debian_inputs()[0]
    except bench.kt.CaptureError as e:
        print(f"\n2., 3. skipped: {e}")
        return 0
    lay, rows = plan_layout(kernel, args.initrd_mib)
    print(f"\n2. the check at -e: {kernel.name} + {args.initrd_mib} MiB initrd on {SNAPSHOT.name}: "
          f"{lay.hashed_bytes / 2**20:.1f} MiB handed over, {lay.zero_bytes / 2**20:.1f} MiB of zero fill "
          f"(bufsz of memsz: {rows})")
    for what, secs in check_at_exec(native, lay, args.repeat):
        print(f"   {what:58s} {secs * 1e3:8.1f} ms")

    if not args.no_emulate:
        print("\n3. instructions executed by the whole purgatory, entry to hand-off (unicorn; fitted on 8-24 KiB)")
        for sha_ni in (False, True):
            f = fit_instructions(sha_ni)
            predicted, counted = f.check
            now = f.predict(lay.hashed_bytes, lay.zero_bytes)
            before = f.predict(lay.hashed_bytes + lay.zero_bytes, 0)
            print(f"   {'SHA-NI' if sha_ni else 'integer'}: {f.per_hashed * 64:.0f} per 64 bytes hashed, "
                  f"{f.per_zero * 64:.1f} per 64 bytes of fill, {f.c0:.0f} besides (fit check: {predicted} "
                  f"predicted, {counted} counted); this plan: {now / 1e6:.1f} M now, {before / 1e6:.1f} M "
                  f"if the fills were hashed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
