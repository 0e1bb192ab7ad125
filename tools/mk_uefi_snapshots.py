#!/usr/bin/env python3
"""Build the synthetic UEFI snapshots under fixtures/snapshots/ from the real OVMF one (deterministic).

    python3 tools/mk_uefi_snapshots.py            # rewrite them
    python3 tools/mk_uefi_snapshots.py --check    # exit 1 if one differs from what this script builds

synthetic-uefi-e820-fragmented-kdump.json: fixtures/snapshots/ovmf-2g-kdump.json (Debian 12's kernel under
OVMF, 2 GiB, crashkernel=256M) with the RAM below the crash region cut by 1-page reserved holes into 150
pieces, as firmware that reports many small reservations does: 314 e820 entries (the zero page holds 128),
and a crash kernel map of more than 128 as well (the holes are kept as reserved). /proc/iomem's System RAM
entries are cut the same way. The EFI facts are OVMF's.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "fixtures" / "snapshots"
BASE = ROOT / "ovmf-2g-kdump.json"
PAGE = 4096
PIECES = 150


def fragment(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    crash = next(e for e in doc["iomem"] if e[2] == "Crash kernel")
    memmap, holes = [], []
    big = max((m for m in doc["memmap"] if m[2] == 1), key=lambda m: m[1])  # the largest RAM range
    for start, size, kind in doc["memmap"]:
        end = start + size
        if [start, size, kind] != big:
            memmap.append([start, size, kind])
            continue
        top = min(end, crash[0])  # cut below the crash region only
        step = (top - start) // PIECES // PAGE * PAGE
        at = start
        for _ in range(PIECES - 1):
            hole = at + step - PAGE
            memmap += [[at, hole - at, 1], [hole, PAGE, 2]]
            holes.append(hole)
            at = hole + PAGE
        memmap.append([at, end - at, 1])
    doc["memmap"] = sorted(memmap)
    iomem = []
    for start, last, name, depth in doc["iomem"]:
        if depth == 0 and name == "System RAM":
            inside = [h for h in holes if start <= h <= last]
            at = start
            for h in inside:
                iomem.append([at, h - 1, name, depth])
                iomem.append([h, h + PAGE - 1, "Reserved", depth])
                at = h + PAGE
            iomem.append([at, last, name, depth])
        else:
            iomem.append([start, last, name, depth])
    doc["iomem"] = iomem
    return doc


def main(argv) -> int:
    out = ROOT / "synthetic-uefi-e820-fragmented-kdump.json"
    text = json.dumps(fragment(json.loads(BASE.read_text())), indent=1) + "\n"
    if "--check" in argv:
        same = out.exists() and out.read_text() == text
        print(f"{out.name}: {'ok' if same else 'differs'}")
        return 0 if same else 1
    out.write_text(text)
    print(f"wrote {out} ({len(json.loads(text)['memmap'])} e820 entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
