"""tools/kexec_tools_exit_codes.py: kexec-tools 2.0.25, run behind the capture shim, still gives the codes the
bad-input catalogue (tests/test_bad_input_catalogue.py) holds for it. Skips when gcc or the kexec-tools package
cannot be had, as the capture tests do. Slow-ish: two cases wait 5 s for kexec-tools to hang on a FIFO."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))

import kexec_tools_exit_codes as codes  # noqa: E402
from kexec_tools_capture import capture as kt  # noqa: E402
from test_bad_input_catalogue import KEXEC_TOOLS_2_0_25  # noqa: E402


def test_the_tool_and_the_catalogue_name_the_same_cases():
    assert [c.name for c in codes.CASES] == list(KEXEC_TOOLS_2_0_25)


def test_kexec_tools_gives_the_recorded_codes(tmp_path):
    if not (shutil.which("gcc") or shutil.which("cc")):
        pytest.skip("gcc is not available")
    try:
        root = kt.kexec_tools_root(kt.cache_dir())
    except kt.Unavailable as e:
        pytest.skip(str(e))
    if kt.upstream_version(root) != "2.0.25":
        pytest.skip(f"this machine's apt gives kexec-tools {kt.upstream_version(root)}; the codes were recorded "
                    "with Debian 12's 2.0.25")
    if not kt.iomem_has_addresses():
        pytest.skip("/proc/iomem reads zeros to this user: the recorded codes were taken as root")
    out = tmp_path / "codes.json"
    assert codes.main(["--json", str(out)]) == 0
    got = {r["name"]: r["code"] for r in json.loads(out.read_text())}
    assert got == KEXEC_TOOLS_2_0_25
