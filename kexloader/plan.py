"""A Plan as people and files see it: the --dry-run table, and --plan-out's plan.json plus one file per segment."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from .errors import KexloaderError
from .model import LinuxEntry, MultibootEntry, Plan, Role, Segment


def segment_file_name(index: int, seg: Segment) -> str:
    return f"{index:02d}-{seg.role}-{seg.mem:x}.bin"


def to_json(plan: Plan, *, files: bool = True) -> dict[str, Any]:
    segs = []
    for i, seg in enumerate(plan.segments):
        entry = {"mem": seg.mem, "memsz": seg.memsz, "bufsz": seg.bufsz, "role": seg.role, "what": seg.what,
                 "sha256": hashlib.sha256(seg.data).hexdigest()}
        if files:
            entry["file"] = segment_file_name(i, seg)
        segs.append(entry)
    doc = {"entry": plan.entry, "flags": plan.flags, "segments": segs, "notes": list(plan.notes)}
    if plan.linux:
        doc["linux"] = {"boot_params": plan.linux.boot_params, "kernel_entry": plan.linux.kernel_entry}
    if plan.multiboot:
        doc["multiboot"] = {"magic": plan.multiboot.magic, "info": plan.multiboot.info, "entry": plan.multiboot.entry}
    return doc


def write_dir(plan: Plan, out: Path | str) -> None:
    """plan.json plus the bytes of every segment (its buffer; the zero fill is implied by memsz)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        doc = to_json(plan)
        for seg, entry in zip(plan.segments, doc["segments"]):
            (out / entry["file"]).write_bytes(seg.data)
        (out / "plan.json").write_text(json.dumps(doc, indent=1) + "\n")
    except OSError as e:
        raise KexloaderError(f"cannot write the plan to {out}: {e.strerror}") from e


def read_dir(src: Path | str) -> Plan:
    """A plan saved by write_dir, ready for a backend (the embedded-team flow: plan on a host, load on the target)."""
    src = Path(src)
    try:
        doc = json.loads((src / "plan.json").read_text())
        segs = []
        for entry in doc["segments"]:
            if not re.fullmatch(r"[\w.-]+", entry["file"]):
                raise ValueError(f"bad segment file name {entry['file']!r}")
            if not entry.get("sha256"):  # write_dir always records it: a plan without one was edited by hand
                raise ValueError(f"segment {entry['file']} has no sha256 in plan.json")
            data = (src / entry["file"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise ValueError(f"{entry['file']} does not match its sha256 in plan.json")
            segs.append(Segment(_role(entry["role"]), int(entry["mem"]), int(entry["memsz"]), data, entry.get("what", "")))
        linux = LinuxEntry(**doc["linux"]) if "linux" in doc else None
        mb = MultibootEntry(**doc["multiboot"]) if "multiboot" in doc else None
        return Plan(entry=int(doc["entry"]), flags=int(doc["flags"]), segments=tuple(segs), linux=linux,
                    multiboot=mb, notes=tuple(doc.get("notes", ())))
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise KexloaderError(f"{src}: not a usable saved plan: {e}") from e


def _role(name: object) -> Role:
    try:
        return Role(str(name))
    except ValueError:
        raise ValueError(f"unknown segment role {name!r}") from None


def describe(plan: Plan) -> str:
    """The --dry-run table: one row per segment in address order, then the entry and the notes."""
    rows = [f"{'role':<12} {'physical range':<37} {'size':>10} {'bufsz':>10}  holds"]
    for seg in sorted(plan.segments, key=lambda s: s.mem):
        rows.append(f"{seg.role:<12} [{seg.mem:#018x}, {seg.mem + seg.memsz:#018x}) {seg.memsz:>#10x} "
                    f"{seg.bufsz:>#10x}  {seg.what}")
    rows.append(f"entry {plan.entry:#x}  flags {plan.flags:#x}{'  (crash kernel)' if plan.crash else ''}")
    if plan.linux:
        rows.append(f"linux: boot_params {plan.linux.boot_params:#x}, 64-bit entry {plan.linux.kernel_entry:#x}")
    if plan.multiboot:
        mb = plan.multiboot
        rows.append(f"multiboot: eax {mb.magic:#x}, ebx {mb.info:#x}, entry {mb.entry:#x}")
    rows += [f"note: {n}" for n in plan.notes]
    return "\n".join(rows)
