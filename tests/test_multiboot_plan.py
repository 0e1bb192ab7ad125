"""Multiboot 1 and 2 planning on a tiny Xen-shaped ELF: placement rules and the boot information bytes."""

import struct
from pathlib import Path

import pytest

from kexloader import api, cli, images, system
from kexloader.errors import UnsupportedImageError
from kexloader.formats import multiboot as mb
from kexloader.images import multiboot
from kexloader.model import GiB, LoadRequest, MiB, Module

ROOT = Path(__file__).resolve().parent.parent
MB12 = (ROOT / "fixtures/multiboot/tiny-mb12.elf").read_bytes()
MB1 = (ROOT / "fixtures/multiboot/tiny-mb1.elf").read_bytes()
FACTS = system.load_snapshot(ROOT / "fixtures/snapshots/devhost.json")
MODS = (Module("vmlinuz", b"K" * 10000, "vmlinuz console=hvc0 token=T"), Module("initrd.img", b"I" * 5000, "initrd.img"))


def plan_for(kernel=MB12, image_type=None, **kw):
    return api.make_plan(LoadRequest(kernel=kernel, kernel_name="xen.gz", cmdline="console=com1",
                                     modules=MODS, image_type=image_type, **kw), FACTS)


def segment_at(plan, addr):
    return next(s for s in plan.segments if s.mem <= addr < s.mem + s.memsz)


def read_str(plan, addr):
    seg = segment_at(plan, addr)
    data = bytes(seg.data)[addr - seg.mem:]
    return data[:data.index(b"\0")].decode()


def test_probe_order_prefers_multiboot2():
    assert images.detect(MB12, "x").name == "multiboot2-x86"
    assert images.detect(MB1, "x").name == "multiboot-x86"
    assert images.detect(MB12, "x", "multiboot-x86").name == "multiboot-x86"


def test_bad_checksum_is_not_multiboot():
    bad = bytearray(MB12)
    bad[0x98 + 12] ^= 1  # MB2 checksum
    assert multiboot.find_mb2(bytes(bad)) is None
    bad[0x88 + 8] ^= 1  # MB1 checksum
    assert multiboot.find_mb1(bytes(bad)) is None


def test_mb2_placement_and_info():
    plan = plan_for()
    assert plan.multiboot.magic == mb.MB2_BOOTLOADER_MAGIC and plan.multiboot.entry == 0x200000
    for seg in plan.segments:
        assert MiB <= seg.mem and seg.mem + seg.memsz <= 4 * GiB, seg
    kernel = next(s for s in plan.segments if s.role == "kernel")
    assert kernel.mem == 0x200000 and kernel.memsz == 0x3000
    info = bytes(segment_at(plan, plan.multiboot.info).data)
    total, _ = struct.unpack_from("<II", info)
    tags, off = {}, 8
    while off < total:
        kind, size = struct.unpack_from("<II", info, off)
        tags.setdefault(kind, []).append(info[off + 8:off + size])
        off += (size + 7) & ~7
    assert set(tags) == {0, 1, 2, 3, 4, 6, 21}
    assert tags[1][0].rstrip(b"\0") == b"xen.gz console=com1"  # image name first: Xen drops the first word
    assert b"GRUB" not in tags[2][0]
    assert struct.unpack("<I", tags[21][0])[0] == 0x200000  # the image's own base, not the purgatory's
    entry_size, version = struct.unpack_from("<II", tags[6][0])
    assert (entry_size, version) == (24, 0) and (len(tags[6][0]) - 8) // 24 == len(FACTS.memmap)
    mods = [struct.unpack_from("<II", m) + (m[8:].rstrip(b"\0").decode(),) for m in tags[3]]
    assert [m[2] for m in mods] == ["vmlinuz console=hvc0 token=T", "initrd.img"]
    for (start, end, _), module in zip(mods, MODS):
        assert start % 4096 == 0 and end - start == len(module.data)
        assert bytes(segment_at(plan, start).data) == module.data


def test_mb1_info():
    plan = plan_for(MB1)
    assert plan.multiboot.magic == mb.MB1_BOOTLOADER_MAGIC
    info_addr = plan.multiboot.info
    seg = segment_at(plan, info_addr)
    info = mb.MB1Info.parse(bytes(seg.data)[info_addr - seg.mem:][:116])
    assert info.flags == mb.MBI_MEMLIMITS | mb.MBI_CMDLINE | mb.MBI_MODULES | mb.MBI_MEMMAP | mb.MBI_LOADERNAME
    assert info.mem_lower == 0x9FC00 >> 10 and info.mem_upper == (0xC0000000 - MiB) >> 10
    assert read_str(plan, info.cmdline) == "xen.gz console=com1"
    assert read_str(plan, info.boot_loader_name).startswith("kexloader")
    assert info.mods_count == 2 and info.mmap_length == 24 * len(FACTS.memmap)
    raw = bytes(seg.data)[info.mods_addr - seg.mem:]
    first = mb.MB1Module.parse(raw[:16])
    assert read_str(plan, first.string) == "vmlinuz console=hvc0 token=T"
    assert first.mod_end - first.mod_start == 10000 and first.mod_start % 4096 == 0


def test_required_info_we_cannot_give_is_refused():
    bad = bytearray(MB12)
    tag = 0x98 + 16
    struct.pack_into("<I", bad, tag + 12, 9)  # ask for ELF sections (type 9), still required
    with pytest.raises(UnsupportedImageError, match=r"requires multiboot 2 information tags \[9\]"):
        plan_for(bytes(bad))


@pytest.mark.parametrize("argv, kernel, line, modules", [
    (["-l", "xen.gz", "--command-line=no-real-mode", "--module=vmlinuz console=hvc0", "--module", "initrd.img"],
     "xen.gz", "no-real-mode", ["vmlinuz console=hvc0", "initrd.img"]),
    (["-l", "--append", "no-real-mode", "--vmm=/boot/xen.gz", "/boot/vmlinuz.gz"],
     "/boot/xen.gz", "no-real-mode", ["/boot/vmlinuz.gz"]),
    (["-l", "--append=dom0_mem=512M -- console=hvc0 root=/dev/ram", "--vmm=x.gz", "vmlinuz", "--initrd=i.img"],
     "x.gz", "dom0_mem=512M", ["vmlinuz console=hvc0 root=/dev/ram", "i.img"]),
])
def test_both_xen_syntaxes(argv, kernel, line, modules, monkeypatch):
    seen = {}

    def fake_read_request(kernel, **kw):
        seen.update(kernel=kernel, **kw)
        raise SystemExit(0)

    monkeypatch.setattr(api, "read_request", fake_read_request)
    with pytest.raises(SystemExit):
        api.build_request(cli.intent(cli.parse_args(argv)), api.load_facts(ROOT / "fixtures/snapshots/devhost.json"))
    assert seen["kernel"] == kernel and seen["cmdline"] == line and seen["modules"] == modules
    assert seen.get("initrd") is None and not seen["initrds"]  # an initrd goes in as a module


def test_an_initrd_for_a_multiboot_image_is_refused_not_lost():
    from kexloader.errors import UsageError
    with pytest.raises(UsageError, match="takes modules, not an initrd"):
        plan_for(initrd=b"x" * 10, initrd_name="initrd.img")
