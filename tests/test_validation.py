"""Snapshots and saved plans are checked before use: one error naming the field, never a traceback; segment files
must be regular files of the recorded size and digest; a plan read back passes memory.validate for its machine."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from kexloader import api, schema
from kexloader.errors import KexloaderError, PlacementError, SystemFactsError
from kexloader.model import Plan, Role, Segment
from kexloader.plan import read_dir, write_dir
from kexloader.snapshot import facts_from_json, load_snapshot

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOTS = ROOT / "fixtures/snapshots"
DEVHOST = json.loads((SNAPSHOTS / "devhost.json").read_text())
XEN = json.loads((SNAPSHOTS / "xen-dom0-2g.json").read_text())
OVMF = json.loads((SNAPSHOTS / "ovmf-2g-kdump.json").read_text())


def edited(doc: dict, path: tuple, value: object) -> dict:
    """A deep copy of doc with doc[path...] = value (a value of ... deletes it)."""
    doc = copy.deepcopy(doc)
    where = doc
    for key in path[:-1]:
        where = where[key]
    if value is ...:
        del where[path[-1]]
    else:
        where[path[-1]] = value
    return doc


@pytest.mark.parametrize("doc, words", [
    (edited(DEVHOST, ("memmap",), ...), "memmap: missing"),
    (edited(DEVHOST, ("memmap",), "lots"), "memmap: not a list"),
    (edited(DEVHOST, ("memmap", 1, 0), "0x100000"), "memmap[1][0]: not an integer"),
    (edited(DEVHOST, ("memmap", 1, 0), 1.5), "memmap[1][0]: not an integer"),
    (edited(DEVHOST, ("memmap", 1, 0), True), "memmap[1][0]: not an integer"),
    (edited(DEVHOST, ("memmap", 1, 0), 1 << 64), "memmap[1][0]: 0x10000000000000000 is outside"),
    (edited(DEVHOST, ("memmap", 1, 1), -1), "memmap[1][1]: -0x1 is outside"),
    (edited(DEVHOST, ("memmap", 1), [(1 << 64) - 4096, 8192, 1]), "memmap[1]: [0xfffffffffffff000, +0x2000) ends past"),
    (edited(DEVHOST, ("memmap", 1), [0, 4096]), "memmap[1]: 2 values, expected 3"),
    (edited(DEVHOST, ("memmap",), [[0, 4096, 1]] * 70000), "memmap: 70000 entries"),
    (edited(DEVHOST, ("iomem", 0, 2), ["nested"]), "iomem[0][2]: not a string"),
    (edited(DEVHOST, ("iomem", 0), [0x2000, 0x1000, "x", 0]), "iomem[0]: ends at 0x1000, before its start"),
    (edited(DEVHOST, ("boot_params",), "AAAA"), "boot_params: 3 bytes, expected 4096"),
    (edited(DEVHOST, ("boot_params",), "not base64!"), "boot_params: not base64"),
    (edited(DEVHOST, ("cmdline",), 42), "cmdline: not a string"),
    (edited(DEVHOST, ("cmdline",), "x" * 70000), "cmdline: a string of 70000 characters"),
    (edited(DEVHOST, ("cmdline",), "\ud800"), "cmdline: not text"),
    (edited(DEVHOST, ("acpi_rsdp",), "0xf5a40"), "acpi_rsdp: not an integer"),
    (edited(DEVHOST, ("version",), 2), "snapshot version 2, expected 1"),
    (edited(DEVHOST, ("version",), "1"), "version: not an integer"),
    (edited(XEN, ("xen", "crash_area"), [1, 2, 3]), "xen.crash_area: 3 values, expected 2"),
    (edited(XEN, ("xen", "cpu_notes", 0, 0), -1), "xen.cpu_notes[0][0]: -0x1 is outside"),
    (edited(XEN, ("xen",), []), "xen: not an object"),
    (edited(OVMF, ("efi", "systab"), "high"), "efi.systab: not an integer"),
    (edited(OVMF, ("efi", "runtime_map", 0), [1, 2]), "efi.runtime_map[0]: 2 values, expected 5"),
    (edited(OVMF, ("efi", "acpi_tables", 0, 1), "xyz"), "efi.acpi_tables[0][1]: 'xyz' is not of the form"),
    (edited(DEVHOST, ("kexec",), {"loaded": "yes"}), "kexec.loaded: not true or false"),
    (edited(DEVHOST, ("kexec",), {"crash_cma_ranges": [[0, 1 << 64]]}), "kexec.crash_cma_ranges[0][1]: "),
    (edited(DEVHOST, ("kernel_text",), [1, 2]), "kernel_text: 2 values, expected 3"),
    ([DEVHOST], "not an object"),
])
def test_a_wrong_snapshot_field_is_named(doc, words):
    with pytest.raises(SystemFactsError) as e:
        facts_from_json(doc, "snapshot s.json")
    assert str(e.value).startswith("snapshot s.json: not a kexloader snapshot: ") and words in str(e.value)


@pytest.mark.parametrize("text, words", [
    ('{"version": 1, "memmap": [[0, NaN, 1]]}', "NaN is not a number kexloader writes"),
    ('{"version": 1, "memmap": [[0, Infinity, 1]]}', "Infinity is not a number"),
    ('{"version": 1, "memmap": [[0, 1e400, 1]]}', "memmap[0][1]: not an integer"),
    ('{"version": 1, "memmap": [[0, ' + "9" * 5000 + ', 1]]}', "not JSON kexloader writes"),
    ('{"version": 1, "memmap": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ('{"version": 1, "memmap": ' + "[" * 200 + "]" * 200 + "}", "memmap[0]: 1 values, expected 3"),
    ('{"version": 1, "memmap": [}', "not JSON: Expecting value"),
    ("", "not JSON"),
])
def test_a_snapshot_file_that_is_not_our_json(text, words, tmp_path):
    path = tmp_path / "s.json"
    path.write_text(text)
    with pytest.raises(SystemFactsError) as e:
        load_snapshot(path)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_every_fixture_snapshot_passes():
    for path in sorted(SNAPSHOTS.glob("*.json")):
        assert load_snapshot(path).memmap


@pytest.mark.parametrize("make", [
    lambda p: os.mkfifo(p),
    lambda p: p.mkdir(),
    lambda p: p.symlink_to("/dev/zero"),
])
def test_a_snapshot_that_is_not_a_regular_file_is_refused_unread(make, tmp_path):
    path = tmp_path / "s.json"
    make(path)
    with pytest.raises(SystemFactsError, match="not a regular file"):  # a FIFO must not block here
        load_snapshot(path)


# ------------------------------------------------------------------------------------------------ plans

def small_plan() -> Plan:
    return Plan(entry=0x101000, flags=0x3E0000, segments=(
        Segment(Role.KERNEL, 0x100000, 0x2000, b"k" * 5000, "kernel"),
        Segment(Role.PURGATORY, 0x200000, 0x1000, b"p" * 100, "purgatory")))


def saved(tmp_path: Path, plan: Plan | None = None) -> tuple[Path, dict]:
    out = tmp_path / "p"
    write_dir(plan or small_plan(), out)
    return out, json.loads((out / "plan.json").read_text())


@pytest.mark.parametrize("path, value, words", [
    (("segments", 1, "mem"), "0x200000", "plan.json: segments[1].mem: not an integer"),
    (("segments", 0, "memsz"), 1 << 64, "segments[0].memsz: 0x10000000000000000 is outside"),
    (("segments", 0, "sha256"), ..., "segments[0].sha256: missing"),
    (("segments", 0, "sha256"), "00", "segments[0].sha256: '00' is not of the form"),
    (("segments", 0, "file"), "../../etc/passwd", "segments[0].file: '../../etc/passwd' is not of the form"),
    (("segments", 0, "role"), ["kernel"], "segments[0].role: not a string"),
    (("segments", 0, "role"), "kernal", "unknown segment role 'kernal'"),
    (("segments",), {}, "segments: not a list"),
    (("entry",), float("inf"), "plan.json: Infinity is not a number kexloader writes"),
    (("entry",), 0x1000 * 1.0, "plan.json: entry: not an integer"),
    (("entry",), ..., "entry: missing"),
    (("flags",), 1 << 40, "flags: 0x10000000000 is outside"),
    (("notes",), [[]], "notes[0]: not a string"),
    (("linux",), {"boot_params": 1}, "linux.kernel_entry: missing"),
    (("multiboot",), {"magic": "2BADB002", "info": 0, "entry": 0}, "multiboot.magic: not an integer"),
    (("segments", 0, "bufsz"), 4999, "is 5000 bytes, not the 4999 of segments[0].bufsz in plan.json"),
])
def test_a_wrong_plan_field_is_named(path, value, words, tmp_path):
    out, doc = saved(tmp_path)
    (out / "plan.json").write_text(json.dumps(edited(doc, path, value)))
    with pytest.raises(KexloaderError) as e:
        read_dir(out)
    assert "not a usable saved plan: " in str(e.value) and words in str(e.value)


@pytest.mark.parametrize("replace, words", [
    (lambda f: (f.unlink(), f.symlink_to("/dev/zero")), "a symbolic link"),
    (lambda f: (f.unlink(), os.mkfifo(f)), "a FIFO, not a regular file"),
    (lambda f: (f.unlink(), f.mkdir()), "a directory, not a regular file"),
    (lambda f: f.unlink(), "No such file"),
    (lambda f: f.write_bytes(b"K" + f.read_bytes()[1:]), "does not match its sha256"),
])
def test_a_segment_file_must_be_the_one_written(replace, words, tmp_path):
    out, doc = saved(tmp_path)
    replace(out / doc["segments"][0]["file"])
    with pytest.raises(KexloaderError, match=words):
        read_dir(out)


def test_fields_a_newer_writer_adds_are_ignored(tmp_path):
    out, doc = saved(tmp_path)
    doc.update(linux={"boot_params": 0x1000, "kernel_entry": 0x100200, "new": 1}, future={"x": [1]})
    doc["segments"][0]["new"] = "y"
    (out / "plan.json").write_text(json.dumps(doc))
    assert read_dir(out).linux.kernel_entry == 0x100200


def test_a_plan_read_back_is_checked_for_its_machine(tmp_path):
    facts = api.load_facts(SNAPSHOTS / "qemu-2g.json")
    out, doc = saved(tmp_path)
    assert api.read_plan(out, facts).entry == 0x101000  # inside RAM, page aligned, entry in a segment
    for path, value, words in [(("segments", 1, "mem"), 0x100000, "overlaps"),
                               (("segments", 1, "mem"), 0x200800, "not page aligned"),
                               (("segments", 1, "mem"), 0xFFFFF000, "not inside usable memory"),
                               (("entry",), 0x300000, "not inside any segment"),
                               (("flags",), 0x3E0002, "flags 0x3e0002"),  # KEXEC_PRESERVE_CONTEXT: not ours
                               (("flags",), 0x30000, "flags 0x30000")]:  # another architecture
        (out / "plan.json").write_text(json.dumps(edited(doc, path, value)))
        with pytest.raises(PlacementError, match=words):
            api.read_plan(out, facts)
        assert api.read_plan(out).segments  # without facts: read, not checked
    crash = edited(doc, ("flags",), doc["flags"] | 1)  # KEXEC_ON_CRASH: the crash region, not RAM
    (out / "plan.json").write_text(json.dumps(crash))
    with pytest.raises(KexloaderError, match="crash"):
        api.read_plan(out, facts)


def test_schema_checkers_name_nested_paths():
    spec = schema.obj({"a": schema.list_of(schema.obj({"b": schema.integer(0, 9)}), 3)})
    assert schema.check({"a": [{"b": 1}]}, spec) == {"a": [{"b": 1}]}
    with pytest.raises(schema.SchemaError, match=r"^a\[1\]\.b: 0xa is outside \[0x0, 0x9\]$"):
        schema.check({"a": [{"b": 1}, {"b": 10}]}, spec)
    with pytest.raises(schema.SchemaError, match=r"^a: 4 entries \(at most 3\)$"):
        schema.check({"a": [{}] * 4}, spec)
