"""The UKI part of `kexloader --inspect`: sections, profiles, .osrel, .uname, .cmdline (pure)."""

from __future__ import annotations

from typing import Any

from .errors import KexloaderError
from .images import uki
from .memory import SegmentData


def report(data: SegmentData, name: str) -> dict[str, Any] | None:
    """A JSON-able description of a PE image's UKI sections, or None when it is not a PE image."""
    if not uki.is_pe(data):
        return None
    try:
        img = uki.read_pe(data, name)
    except KexloaderError as e:
        return {"error": str(e)}
    out: dict[str, Any] = {
        "machine": img.machine,
        "sections": [{"index": s.index, "name": s.name, "offset": s.file_offset, "size": s.file_size,
                      "vaddr": s.vaddr, "vsize": s.vsize} for s in img.sections],
        "is_uki": img.has(".linux"),
    }
    base = {s.name: s for s in reversed(img.base)}
    osrel = uki.text(data, base.get(".osrel"))
    if osrel is not None:
        out["osrel"] = uki.key_values(osrel)
    for key in (".uname", ".cmdline"):
        value = uki.text(data, base.get(key))
        if value is not None:
            out[key[1:]] = uki.mangle_cmdline(value) if key == ".cmdline" else value.strip()
    profiles: list[dict[str, Any]] = []
    for n, run in enumerate(img.profiles):
        own = {s.name: s for s in reversed(run)}
        info = uki.key_values(uki.text(data, own[".profile"]))
        entry: dict[str, Any] = {"index": n, "id": info.get("ID"), "title": info.get("TITLE"),
                 "sections": [s.name for s in run[1:]]}
        if ".cmdline" in own:
            entry["cmdline"] = uki.mangle_cmdline(uki.text(data, own[".cmdline"]) or "")
        profiles.append(entry)
    out["profiles"] = profiles
    if img.has(".linux"):
        try:
            linux = uki.contents(data, name).kernel
            out["linux"] = {"offset": base[".linux"].file_offset if ".linux" in base else None, "size": len(linux)}
            out["_linux_data"] = linux  # for the bzImage report; removed before output
        except KexloaderError as e:
            out["error"] = str(e)
    return out


def text_rows(u: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if "osrel" in u:
        rows.append(("  .osrel", u["osrel"].get("PRETTY_NAME") or " ".join(f"{k}={v}" for k, v in u["osrel"].items())))
    if "uname" in u:
        rows.append(("  .uname", u["uname"]))
    if "cmdline" in u:
        rows.append(("  .cmdline", u["cmdline"]))
    for s in u["sections"]:
        rows.append((f"  section {s['index']}", f"{s['name']:<9} offset {s['offset']:#x} size {s['size']:#x} "
                                                f"vaddr {s['vaddr']:#x} vsize {s['vsize']:#x}"))
    for p in u["profiles"]:
        rows.append((f"  profile {p['index']}", f"ID={p['id'] or '-'} TITLE={p['title'] or '-'}; sections "
                                                f"{' '.join(p['sections']) or '(none)'}"
                     + (f"; cmdline {p['cmdline']}" if "cmdline" in p else "")))
    return rows
