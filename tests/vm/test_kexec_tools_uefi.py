"""kexec-tools 2.0.25 and kexloader on the same OVMF guest (issue 11: "for the same OVMF snapshot every difference
from kexec-tools is explained").

In one UEFI guest (OVMF, Debian 12's kernel through its EFI stub, `-vga std`), Debian's /sbin/kexec runs as
`kexec -c -l KERNEL --initrd=I --append=A` under the capture shim (nothing is loaded: the shim writes the
segments it would hand to kexec_load), kexloader plans the same load with `--dry-run --plan-out`, and
`python3 -m kexloader.system save` snapshots the guest (tools/vm/kexec_tools_guest.py). The three come out as
one tarball; tools/compare_kexec_tools.py compares them here. The result is written to
`fixtures/kexec-tools-ovmf/` when KEXLOADER_UPDATE_FIXTURES=1 (tests/tools/test_kexec_tools_ovmf.py re-compares
that without a VM).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from tools.vm import kexec_tools_guest as ktg
from tools.vm import new_token

from tests.vm.test_uefi import QUIET, VGA, require_ovmf

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import compare_kexec_tools as cmp  # noqa: E402
from kexec_tools_capture import capture as kt  # noqa: E402

FIXTURE = REPO / "fixtures" / "kexec-tools-ovmf"
APPEND = "console=ttyS0 panic=-1 root=/dev/ram0 kexec-tools-vs-kexloader"


ACTIONS = {"l": "", "p": "crashkernel=384M"}  # -p: the first kernel reserves a crash region


@pytest.fixture(scope="module", params=sorted(ACTIONS))
def ovmf_capture(request, vm_harness, tmp_path_factory):
    action = request.param
    require_ovmf()
    h = vm_harness
    try:
        staged = ktg.files()
    except kt.CaptureError as e:
        from tests.vm.conftest import _unavailable

        _unavailable(f"kexec-tools cannot be staged: {e}")
    initrd = ktg.deterministic_initrd()
    stage = f"ACTION=-{action}\nAPPEND={shlex.quote(APPEND)}\n{ktg.STAGE}"
    guest = h.full(stages={"capture": stage}, files={**staged, "/initrd.bin": initrd})
    guest.modes["/opt/kt/kexec"] = 0o755
    t = h.boot(guest, f"console=ttyS0 panic=-1 {QUIET} stage=capture token={new_token()} {ACTIONS[action]}",
               base_append="", name=f"kexec-tools-uefi-{action}", firmware="ovmf", extra_args=VGA, timeout=900,
               idle_timeout=300)
    assert t.rc("kexec_tools") == 0, t.out("kexec_tools") + t.summary()
    assert t.rc("kexloader") == 0, t.out("kexloader")
    assert t.rc("save") == 0, t.out("save")
    out = ktg.unpack(t.blob("captures"), tmp_path_factory.mktemp("kt-ovmf") / action)
    image = h.vmlinuz.read_bytes()
    kept = out.parent / "kept"
    shutil.copytree(out, kept)  # as it came out of the guest (hashes for the kernel and initrd): the fixture
    missing = ktg.rehydrate(out, [image[cmp.kern16_size(image):], image, initrd])
    assert not missing, f"segments no input explains: {missing}"
    return action, out, kept, image, initrd


def compare(out: Path, image: bytes, initrd: bytes) -> dict:
    a = cmp.kexec_tools_side(kt.load_capture(out / "kexec-tools"), image, initrd)
    b = cmp.kexloader_side(out / "kexloader")
    return cmp.compare(a, b, image, initrd)


def test_kexec_tools_and_kexloader_agree_on_ovmf(ovmf_capture):
    action, out, kept, image, initrd = ovmf_capture
    res = compare(out, image, initrd)
    print(res["text"])
    assert res["unexplained"] == [], res["text"]
    assert res["kernel"]["identical_bytes"], res["text"]
    assert res["initrd"]["kexec_tools_ok"] and res["initrd"]["kexloader_ok"], res["text"]
    if action == "p":  # each adds elfcorehdr= (and kexloader acpi_rsdp=); the rest is the user's
        assert res["cmdline"]["same_user_words"] and res["cmdline"]["elfcorehdr_ok"], res["text"]
    else:
        assert res["cmdline"]["identical"], res["text"]
    assert res["ok"], res["text"]
    efi = res["efi"]
    assert efi["kexec_tools"]["memmap_size"] and efi["kexloader"]["memmap_size"], "one side hands over no EFI map"
    assert efi["same_systab"] and efi["kexec_tools"]["systab"], res["text"]
    assert efi["same_runtime_map"] and efi["kexec_tools"]["descriptors"], res["text"]
    assert efi["same_setup_efi"] and efi["kexec_tools"]["setup_efi"], res["text"]
    # the runtime descriptors and SETUP_EFI are the guest's own, as its snapshot recorded them
    snap = json.loads((out / "snapshot.json").read_text())["efi"]
    assert efi["kexec_tools"]["descriptors"] == sorted(tuple(r) for r in snap["runtime_map"])
    assert efi["kexec_tools"]["setup_efi"] == {"fw_vendor": snap["fw_vendor"], "runtime": snap["runtime"],
                                               "tables": snap["config_table"], "smbios": snap["smbios"]}
    if os.environ.get("KEXLOADER_UPDATE_FIXTURES") == "1":
        write_fixture(action, kept, image, initrd, res)


def write_fixture(action: str, kept: Path, image: bytes, initrd: bytes, res: dict) -> None:
    dest = FIXTURE / f"deb12-{action}"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(kept, dest)
    (dest / "inputs.json").write_text(json.dumps({
        "append": APPEND, "action": f"-{action}",
        "kernel_sha256": hashlib.sha256(image).hexdigest(), "kernel_size": len(image),
        "initrd_sha256": hashlib.sha256(initrd).hexdigest(), "initrd_size": len(initrd),
        "unexplained": res["unexplained"]}, indent=1) + "\n")
    (dest / "compare.txt").write_text(res["text"] + "\n")
