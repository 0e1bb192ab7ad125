"""The OVMF capture of kexec-tools 2.0.25 and kexloader's plan on the same guest (fixtures/kexec-tools-ovmf/,
recorded by tests/vm/test_kexec_tools_uefi.py), re-compared without a VM.

The kernel and initrd segments are kept as SHA-256 stand-ins; the kernel comes back from the cached Debian 12
kernel when its hash matches, the initrd is rebuilt (tools/vm/kexec_tools_guest.deterministic_initrd).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import compare_kexec_tools as cmp  # noqa: E402
from kexec_tools_capture import capture as kt  # noqa: E402

from tools.vm import kexec_tools_guest as ktg  # noqa: E402

FIXTURES = REPO / "fixtures" / "kexec-tools-ovmf"
RUNS = ["deb12-l", "deb12-p"]  # kexec -c -l and kexec -c -p (crashkernel=384M)


@pytest.fixture(scope="module", params=RUNS)
def fixture_dir(request) -> Path:
    return FIXTURES / request.param


@pytest.fixture(scope="module")
def inputs(fixture_dir) -> dict:
    return json.loads((fixture_dir / "inputs.json").read_text())


def cached_kernel(want: str) -> bytes | None:
    from tools.vm.env import find_inputs

    vmlinuz = find_inputs("deb12").vmlinuz
    if not vmlinuz or not Path(vmlinuz).exists():
        return None
    image = Path(vmlinuz).read_bytes()
    return image if hashlib.sha256(image).hexdigest() == want else None


@pytest.fixture(scope="module")
def rehydrated(fixture_dir, inputs, tmp_path_factory) -> tuple[Path, bytes, bytes]:
    image = cached_kernel(inputs["kernel_sha256"])
    if image is None:
        pytest.skip("the captured Debian 12 kernel is not in the cache (sudo bash tools/install-deps.sh; a newer "
                    "point release means re-recording: KEXLOADER_UPDATE_FIXTURES=1 pytest -m vm "
                    "tests/vm/test_kexec_tools_uefi.py)")
    initrd = ktg.deterministic_initrd(inputs["initrd_size"])
    assert hashlib.sha256(initrd).hexdigest() == inputs["initrd_sha256"]
    out = tmp_path_factory.mktemp("kt-ovmf") / fixture_dir.name
    shutil.copytree(fixture_dir, out)
    assert ktg.rehydrate(out, [image[cmp.kern16_size(image):], image, initrd]) == []
    return out, image, initrd


def test_initrd_is_rebuilt_from_its_recipe(inputs):
    assert hashlib.sha256(ktg.deterministic_initrd(inputs["initrd_size"])).hexdigest() == inputs["initrd_sha256"]


def test_stand_ins_name_only_big_segments(fixture_dir):
    stand_ins = sorted(fixture_dir.rglob("*.sha256"))
    assert stand_ins, "the fixture keeps the kernel and initrd as hashes"
    for s in stand_ins:
        digest, size = s.read_text().split()
        assert len(digest) == 64 and int(size) > ktg.BIG


def test_rehydrate_reports_what_no_source_explains(tmp_path):
    (tmp_path / "seg.bin.sha256").write_text(f"{hashlib.sha256(b'x').hexdigest()} 1\n")
    assert ktg.rehydrate(tmp_path, [b"y"]) == ["seg.bin.sha256"]
    assert ktg.rehydrate(tmp_path, [b"x"]) == []
    assert (tmp_path / "seg.bin").read_bytes() == b"x"
    (tmp_path / "zeros.bin.sha256").write_text(f"{hashlib.sha256(bytes(5)).hexdigest()} 5\n")
    assert ktg.rehydrate(tmp_path, []) == ["seg.bin.sha256"]
    assert (tmp_path / "zeros.bin").read_bytes() == bytes(5)


def test_crash_map_reason_needs_the_same_ram(fixture_dir, rehydrated):
    """The crash-map reason holds for the recorded pages and not once a RAM range moves."""
    out, image, initrd = rehydrated
    a = cmp.kexec_tools_side(kt.load_capture(out / "kexec-tools"), image, initrd)
    b = cmp.kexloader_side(out / "kexloader")
    if not a.flags & cmp.KEXEC_ON_CRASH:
        assert cmp.reason_for("e820_entries", a.zero_page, b.zero_page) is None
        return
    assert cmp.reason_for("e820_table[1]", a.zero_page, b.zero_page, crash=True)
    moved = bytearray(b.zero_page)
    first = 0x2D0  # e820_table[0].addr: kexloader's low-memory RAM range
    moved[first:first + 8] = (0x2000).to_bytes(8, "little")
    assert cmp.reason_for("e820_table[1]", a.zero_page, bytes(moved), crash=True) is None


def test_every_difference_is_explained(rehydrated, inputs):
    out, image, initrd = rehydrated
    res = cmp.compare(cmp.kexec_tools_side(kt.load_capture(out / "kexec-tools"), image, initrd),
                      cmp.kexloader_side(out / "kexloader"), image, initrd)
    assert res["unexplained"] == [], res["text"]
    assert res["ok"] and res["kernel"]["identical_bytes"], res["text"]
    if inputs["action"] == "-p":
        assert res["cmdline"]["same_user_words"] and res["cmdline"]["elfcorehdr_ok"], res["text"]
    else:
        assert res["cmdline"]["identical"], res["text"]
    assert res["initrd"]["kexec_tools_ok"] and res["initrd"]["kexloader_ok"], res["text"]
    efi = res["efi"]
    assert efi["same_systab"] and efi["same_runtime_map"] and efi["same_setup_efi"], res["text"]
    assert efi["kexec_tools"]["descriptors"] and efi["kexec_tools"]["setup_efi"], res["text"]
    # the recorded comparison is what the tool says today: a changed REASONS table or decoder shows here
    assert res["text"] + "\n" == (out / "compare.txt").read_text()


def test_efi_handover_is_the_snapshots(rehydrated):
    """The descriptors, systab and SETUP_EFI both loaders hand over are the guest's own, as its SystemFacts snapshot
    recorded them (runtime map: type, phys, virt, pages, attribute)."""
    out, image, initrd = rehydrated
    efi = json.loads((out / "snapshot.json").read_text())["efi"]
    for side in (cmp.kexec_tools_side(kt.load_capture(out / "kexec-tools"), image, initrd),
                 cmp.kexloader_side(out / "kexloader")):
        got = side.efi()
        assert got["descriptors"] == sorted(tuple(r) for r in efi["runtime_map"]), side.source
        assert (got["signature"], got["systab"]) == (efi["loader_signature"], efi["systab"]), side.source
        assert got["setup_efi"] == {"fw_vendor": efi["fw_vendor"], "runtime": efi["runtime"],
                                    "tables": efi["config_table"], "smbios": efi["smbios"]}, side.source


SETUP_RNG_SEED = 9


def test_offline_plan_from_the_snapshot_is_the_guests(rehydrated, tmp_path):
    """Golden plan: kexloader on this host with --facts snapshot.json plans what it planned in the guest, byte for
    byte but the RNG seed (fresh each run) and the purgatory (it holds the segments' SHA-256)."""
    out, image, initrd = rehydrated
    inputs = json.loads((out / "inputs.json").read_text())
    (tmp_path / "vmlinuz").write_bytes(image)
    (tmp_path / "initrd").write_bytes(initrd)
    plan_dir = tmp_path / "plan"
    proc = subprocess.run([sys.executable, "-m", "kexloader", "--dry-run", "--facts", str(out / "snapshot.json"),
                           "--plan-out", str(plan_dir), "-c", inputs["action"], str(tmp_path / "vmlinuz"),
                           f"--initrd={tmp_path / 'initrd'}", f"--append={inputs['append']}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    guest, here = (json.loads((d / "plan.json").read_text()) for d in (out / "kexloader", plan_dir))
    assert (here["entry"], here["flags"]) == (guest["entry"], guest["flags"])
    layout = [[(s["role"], s["mem"], s["memsz"], s["bufsz"]) for s in p["segments"]] for p in (guest, here)]
    assert layout[0] == layout[1]
    for g, h in zip(guest["segments"], here["segments"]):
        if g["role"] not in ("setup-data", "purgatory"):
            assert g["sha256"] == h["sha256"], g["role"]
    chains = [[(t, p) for _, t, p in cmp.kexloader_side(d).setup_data() if t != SETUP_RNG_SEED]
              for d in (out / "kexloader", plan_dir)]
    assert chains[0] == chains[1] and chains[0], chains
