#!/usr/bin/env python3
"""Throughput of the purgatory's SHA-256 routines, run natively, next to hashlib on the same CPU.

    python tools/bench_sha256.py [--mib 256] [--repeat 3]

The generated routines (kexloader/purgatory/sha256_code.py) follow the System V calling convention, so they
are mapped executable in this process and called through ctypes over one buffer (whole regions driver,
padding included). Prints MB/s (10^6 bytes per second), best of --repeat runs.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import mmap
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kexloader.purgatory.sha256_code import WORKSPACE_SIZE, native_routines  # noqa: E402


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


class Native:
    """The routines mapped executable in this process."""

    def __init__(self) -> None:
        code, self.offsets = native_routines()
        self._map = mmap.mmap(-1, len(code), prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self._map.write(code)
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        proto = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_void_p)
        self._regions = proto(self.addr + self.offsets["sha256_regions"])

    def digest(self, data_addr: int, size: int, blocks: str) -> bytes:
        table = (ctypes.c_uint64 * 2)(data_addr, size)
        out = ctypes.create_string_buffer(32)
        ws = ctypes.create_string_buffer(WORKSPACE_SIZE)
        self._regions(table, 1, out, ws, ctypes.c_void_p(self.addr + self.offsets[blocks]))
        return out.raw


def best_of(repeat: int, fn) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=256, help="buffer size in MiB (default 256)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    size = args.mib << 20
    buf = bytearray(os.urandom(1 << 20)) * args.mib
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    native = Native()
    want = hashlib.sha256(buf).digest()

    print(f"CPU: {cpu_model()}  (sha_ni: {'yes' if has_sha_ni() else 'no'}), buffer {args.mib} MiB, "
          f"best of {args.repeat}")
    results = {"hashlib": size / best_of(args.repeat, lambda: hashlib.sha256(buf).digest()) / 1e6}
    routines = ["sha256_blocks_int"] + (["sha256_blocks_shani"] if has_sha_ni() else [])
    for name in routines:
        if native.digest(addr, size, name) != want:
            print(f"{name}: WRONG DIGEST", file=sys.stderr)
            return 1
        results[name] = size / best_of(args.repeat, lambda: native.digest(addr, size, name)) / 1e6
    for name, mbs in results.items():
        ratio = f"  ({mbs / results['hashlib']:.2f} x hashlib)" if name != "hashlib" else ""
        print(f"{name:22s} {mbs:9.1f} MB/s{ratio}")
    if not has_sha_ni():
        print("sha256_blocks_shani    skipped: this CPU does not report sha_ni")
    return 0


if __name__ == "__main__":
    sys.exit(main())
