"""Segment roles are a StrEnum: plan.json, segment file names and --dry-run keep the same strings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kexloader.errors import KexloaderError
from kexloader.model import Plan, Role, Segment
from kexloader.plan import describe, read_dir, segment_file_name, to_json, write_dir

GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "golden"


def test_golden_roles_are_roles():
    seen = {s["role"] for p in GOLDEN.rglob("*.json") for s in json.loads(p.read_text()).get("segments", ())}
    assert seen and seen <= {r.value for r in Role}


def test_strings_kept():
    seg = Segment(Role.BOOT_PARAMS, 0x1000, 0x1000, b"x")
    assert segment_file_name(3, seg) == "03-boot-params-1000.bin"
    assert json.dumps(to_json(Plan(entry=0, flags=0, segments=(seg,)))["segments"][0]["role"]) == '"boot-params"'
    assert describe(Plan(entry=0, flags=0, segments=(seg,))).splitlines()[1].startswith("boot-params  [")
    assert Role.ELFCOREHDR == "elfcorehdr"  # image kinds that still compare with strings keep working


def test_read_dir_gives_roles_back(tmp_path):
    plan = Plan(entry=0x2000, flags=0, segments=(Segment(Role.KERNEL, 0x1000, 0x1000, b"k"),
                                                  Segment(Role.MAP_ONLY, 0, 0x1000, b"")))
    write_dir(plan, tmp_path)
    back = read_dir(tmp_path)
    assert [type(s.role) for s in back.segments] == [Role, Role]
    assert [s.role for s in back.segments] == [Role.KERNEL, Role.MAP_ONLY]


def test_read_dir_refuses_an_unknown_role(tmp_path):
    write_dir(Plan(entry=0, flags=0, segments=(Segment(Role.KERNEL, 0x1000, 0x1000, b"k"),)), tmp_path)
    doc = json.loads((tmp_path / "plan.json").read_text())
    doc["segments"][0]["role"] = "kernal"
    (tmp_path / "plan.json").write_text(json.dumps(doc))
    with pytest.raises(KexloaderError, match="not a usable saved plan: unknown segment role 'kernal'"):
        read_dir(tmp_path)
