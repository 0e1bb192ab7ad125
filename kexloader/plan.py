"""A Plan as people and files see it: the --dry-run table, and --plan-out's plan.json plus one file per segment."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from . import schema
from .errors import KexloaderError
from .files import open_regular, read_small, replace_directory
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


PLAN_JSON_LIMIT = 1 << 20  # bytes; plan.json lists at most a few dozen segments
SEGMENT_FILE = r"[\w.-]{1,200}"
_A = schema.ADDRESS
_SEGMENT = schema.obj({
    "mem": _A, "memsz": _A, "bufsz": _A, "role": schema.string(32), "what": schema.string(4096),
    "sha256": schema.string(64, r"[0-9a-f]{64}"), "file": schema.string(200, SEGMENT_FILE),
}, required=("mem", "memsz", "bufsz", "role", "sha256", "file"))
PLAN_SCHEMA = schema.obj({
    "entry": _A, "flags": schema.integer(0, (1 << 32) - 1),
    "segments": schema.list_of(_SEGMENT, 256),  # the kernel's own limit (16) is memory.validate's to say
    "notes": schema.list_of(schema.string(4096), 1024),
    "linux": schema.optional(schema.obj({"boot_params": _A, "kernel_entry": _A},
                                        required=("boot_params", "kernel_entry"))),
    "multiboot": schema.optional(schema.obj({"magic": schema.integer(0, (1 << 32) - 1), "info": _A, "entry": _A},
                                            required=("magic", "info", "entry"))),
}, required=("entry", "flags", "segments"))


def write_dir(plan: Plan, out: Path | str) -> None:
    """plan.json plus the bytes of every segment (its buffer; the zero fill is implied by memsz), built in a
    temporary sibling and renamed into place: an interrupt or a failed write leaves `out` as it was."""
    out = Path(out)
    doc = to_json(plan)

    def fill(tmp: Path) -> None:
        for seg, entry in zip(plan.segments, doc["segments"]):
            with open(tmp / entry["file"], "xb") as f:
                f.write(seg.data)
        (tmp / "plan.json").write_text(json.dumps(doc, indent=1) + "\n")

    try:
        replace_directory(out, fill, _is_plan_dir)
    except OSError as e:
        raise KexloaderError(f"cannot write the plan to {out}: {e.strerror or e}") from e


def _is_plan_dir(path: Path) -> bool:
    """Only plan.json and segment files (regular files, no subdirectories): what write_dir may replace."""
    names = {p.name: p for p in path.iterdir()}
    return "plan.json" in names and all(
        p.is_file() and not p.is_symlink() and (n == "plan.json" or re.fullmatch(r"\d+-" + SEGMENT_FILE + r"\.bin", n))
        for n, p in names.items())


def read_dir(src: Path | str) -> Plan:
    """A plan saved by write_dir, ready for a backend (the embedded-team flow: plan on a host, load on the target).
    plan.json is checked against PLAN_SCHEMA; every segment file must be a regular file (not a link), of the
    size plan.json gives, with the SHA-256 it gives. Whether the segments fit a machine is memory.validate's."""
    src = Path(src)
    try:
        doc = schema.check(schema.parse(read_small(src / "plan.json", "plan", PLAN_JSON_LIMIT)), PLAN_SCHEMA)
        segs = tuple(_segment(src, i, entry) for i, entry in enumerate(doc["segments"]))
        lx, mb = doc.get("linux"), doc.get("multiboot")  # fields a newer writer adds are left out
        linux = LinuxEntry(boot_params=lx["boot_params"], kernel_entry=lx["kernel_entry"]) if lx else None
        multiboot = MultibootEntry(magic=mb["magic"], info=mb["info"], entry=mb["entry"]) if mb else None
        return Plan(entry=doc["entry"], flags=doc["flags"], segments=segs, linux=linux, multiboot=multiboot,
                    notes=tuple(doc.get("notes", ())))
    except schema.SchemaError as e:
        raise KexloaderError(f"{src}: not a usable saved plan: plan.json: {e}") from e
    except ValueError as e:
        raise KexloaderError(f"{src}: not a usable saved plan: {e}") from e


def _segment(src: Path, index: int, entry: dict[str, Any]) -> Segment:
    name = entry["file"]
    fd = open_regular(src / name, "segment file", follow_links=False)
    try:
        size = os.fstat(fd).st_size
        if size != entry["bufsz"]:
            raise ValueError(f"{name} is {size} bytes, not the {entry['bufsz']} of segments[{index}].bufsz in plan.json: "
                             f"not the file whose sha256 it records")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(size + 1)
    except OSError as e:
        raise KexloaderError(f"cannot read segment file {src / name}: {e.strerror}") from e
    finally:
        os.close(fd)
    if len(data) != size or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ValueError(f"{name} does not match its sha256 in plan.json")
    return Segment(_role(entry["role"]), entry["mem"], entry["memsz"], data, entry.get("what", ""))


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
