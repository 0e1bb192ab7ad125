"""Golden plans: a saved machine (snapshot) plus an image must give exactly the recorded plan.

Every segment is recorded with its address, sizes and the SHA-256 of its bytes, so any change to a
zero page, boot information, purgatory or placement shows up here. After a deliberate change:
    python3 -m pytest tests/test_golden.py --update-golden
and review the diff of fixtures/golden/ like code.
"""

import json
from pathlib import Path

import pytest

from kexloader import api, plan as plans, system
from kexloader.model import LoadRequest, Module

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "fixtures/golden"
SNAPSHOTS = sorted((ROOT / "fixtures/snapshots").glob("*.json"))


def fixture(name):
    return (ROOT / "fixtures" / name).read_bytes()


CASES = {
    "tiny-bzimage": lambda: LoadRequest(kernel=fixture("bzimage/tiny.bzImage"), kernel_name="tiny.bzImage",
                                        cmdline="console=ttyS0 root=/dev/vda", initrd=b"initrd" * 1000,
                                        initrd_name="initrd.img"),
    "tiny-mb2": lambda: LoadRequest(kernel=fixture("multiboot/tiny-mb12.elf"), kernel_name="xen.gz",
                                    cmdline="no-real-mode console=com1",
                                    modules=(Module("vmlinuz", b"K" * 5000, "vmlinuz console=hvc0"),
                                             Module("initrd.img", b"I" * 3000, "initrd.img"))),
    "tiny-mb1": lambda: LoadRequest(kernel=fixture("multiboot/tiny-mb1.elf"), kernel_name="xen.gz",
                                    cmdline="no-real-mode", modules=(Module("vmlinuz", b"K" * 5000, "vmlinuz"),)),
}


@pytest.mark.parametrize("snapshot", SNAPSHOTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("case", list(CASES))
def test_golden_plan(case, snapshot, request):
    facts = system.load_snapshot(snapshot)
    doc = plans.to_json(api.make_plan(CASES[case](), facts), files=False)
    doc["notes"] = [n for n in doc["notes"] if not n.startswith("facts:")]
    path = GOLDEN / f"{case}@{snapshot.stem}.json"
    if request.config.getoption("--update-golden"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")
    assert path.exists(), f"no golden plan {path.name}: run pytest --update-golden and review it"
    assert doc == json.loads(path.read_text())
