"""The bzImage planner on the tiny fixture and saved snapshots: layout rules, zero page fields, bad input."""

import struct
from pathlib import Path

import pytest

from kexloader import api, system
from kexloader.errors import (MalformedImageError, PlacementError, UnknownFormatError, UnsupportedImageError,
                              UsageError)
from kexloader.formats import bootparams as bp
from kexloader.model import GiB, LoadRequest, MiB, PurgatoryOptions

ROOT = Path(__file__).resolve().parent.parent
TINY = (ROOT / "fixtures/bzimage/tiny.bzImage").read_bytes()
DEVHOST = system.load_snapshot(ROOT / "fixtures/snapshots/devhost.json")


def plan_for(kernel=TINY, facts=DEVHOST, **kw):
    return api.make_plan(LoadRequest(kernel=kernel, kernel_name="tiny", **kw), facts)


def by_role(plan):
    return {s.role: s for s in plan.segments}


def test_layout_follows_the_header():
    plan = plan_for(cmdline="console=ttyS0 token=abc", initrd=b"I" * 5000, initrd_name="initrd")
    segs = by_role(plan)
    assert set(segs) == {"kernel", "initrd", "cmdline", "boot-params", "purgatory"}
    kernel = segs["kernel"]
    assert kernel.mem % 0x200000 == 0 and kernel.mem >= 0x1000000  # kernel_alignment, pref_address
    assert kernel.memsz == 0x400000 and bytes(kernel.data) == TINY[5 * 512:]  # init_size; protected-mode part
    assert segs["initrd"].mem >= 16 * MiB and bytes(segs["initrd"].data) == b"I" * 5000
    for small in ("cmdline", "boot-params", "purgatory"):
        assert MiB <= segs[small].mem < 4 * GiB
    assert plan.linux.kernel_entry == kernel.mem + 0x200
    assert plan.linux.boot_params == segs["boot-params"].mem
    assert plan.flags == 62 << 16
    assert segs["purgatory"].mem <= plan.entry < segs["purgatory"].mem + segs["purgatory"].memsz


def test_zero_page_fields():
    plan = plan_for(cmdline="console=ttyS0 token=abc", initrd=b"I" * 5000, initrd_name="initrd")
    segs = by_role(plan)
    page = bp.BootParams.parse(bytes(segs["boot-params"].data))
    assert page.hdr.type_of_loader == 0xD0 and page.hdr.loadflags == 0
    assert page.hdr.cmd_line_ptr + (page.ext_cmd_line_ptr << 32) == segs["cmdline"].mem
    assert bytes(segs["cmdline"].data) == b"console=ttyS0 token=abc\0"
    assert page.hdr.ramdisk_image + (page.ext_ramdisk_image << 32) == segs["initrd"].mem
    assert page.hdr.ramdisk_size == 5000
    assert page.e820_entries == len(DEVHOST.memmap)
    assert [(e.addr, e.size, e.type) for e in page.e820_table[:page.e820_entries]] == \
        [(r.range.start, r.range.size, r.type) for r in DEVHOST.memmap]
    assert page.sentinel == 0
    assert page.screen_info == DEVHOST.boot_params[:0x40]
    assert page.hdr.version == 0x020F and page.hdr.cmdline_size == 2047
    assert bytes(segs["boot-params"].data)[0x26C:0x290] == bytes(0x24)  # nothing past the declared header


def test_zero_page_written_in_place_reads_back_through_the_struct():
    """build_zero_page writes fields at their offsets; construct's BootParams (the spec) reads every one back,
    including 64-bit addresses split into ext_ fields, more than 128 e820 entries, efi_info and the subarch."""
    from kexloader import bootparams
    from kexloader.model import MemRegion, Range

    image = bytearray(TINY)
    memmap = [MemRegion(Range(i * 0x10000, 0x8000), 1 + i % 4) for i in range(200)]
    running = bytearray(range(256)) * 16
    page = bootparams.build_zero_page(bytes(image), cmdline=Range(0x1_2345_6000, 10),
                                      initrd=Range(0x2_0000_0000, 0x1_0000_0001), memmap=memmap,
                                      running=bytes(running), acpi_rsdp=0xE0000, setup_data=0x9_8765_4000,
                                      efi_info=bytes(range(0x20)))
    p = bp.BootParams.parse(page)
    assert (p.hdr.cmd_line_ptr, p.ext_cmd_line_ptr) == (0x2345_6000, 1)
    assert (p.hdr.ramdisk_image, p.ext_ramdisk_image, p.hdr.ramdisk_size, p.ext_ramdisk_size) == (0, 2, 1, 1)
    assert p.hdr.setup_data == 0x9_8765_4000 and p.acpi_rsdp_addr == 0xE0000
    assert p.efi_info == bytes(range(0x20)) and p.screen_info == bytes(running[:0x40])
    assert (p.hdr.hardware_subarch, p.hdr.hardware_subarch_data) == struct.unpack_from("<IQ", running, 0x23C)
    assert p.e820_entries == 128
    assert [(e.addr, e.size, e.type) for e in p.e820_table] == \
        [(r.range.start, r.range.size, r.type) for r in memmap[:128]]
    assert p.alt_mem_k == 0x8000 >> 10  # entry 16 is RAM from 1 MiB, 32 KiB long
    assert p.hdr.type_of_loader == 0xD0 and p.hdr.loadflags == 0 and p.sentinel == 0
    assert p.hdr.version == struct.unpack_from("<H", image, 0x206)[0]
    image[0x1FE] ^= 1  # the boot flag
    with pytest.raises(MalformedImageError, match="boot flag"):
        bootparams.build_zero_page(bytes(image), cmdline=Range(0x10000, 1), initrd=None, memmap=[],
                                   running=None, acpi_rsdp=None)


def test_no_initrd_means_zero_ramdisk_fields():
    page = bp.BootParams.parse(bytes(by_role(plan_for())["boot-params"].data))
    assert page.hdr.ramdisk_image == page.hdr.ramdisk_size == page.ext_ramdisk_image == 0


def test_a_kernel_that_cannot_go_above_4g_stays_below():
    kernel = bytearray(TINY)
    kernel[0x236] = 0x01  # XLF_KERNEL_64 only
    plan = plan_for(bytes(kernel), initrd=b"I" * 100, initrd_name="i")
    segs = by_role(plan)
    assert segs["kernel"].range.end <= 4 * GiB and segs["initrd"].range.end <= 0x80000000


def test_the_plan_is_deterministic():
    a, b = plan_for(cmdline="x"), plan_for(cmdline="x")
    assert [(s.role, s.mem, bytes(s.data)) for s in a.segments] == [(s.role, s.mem, bytes(s.data)) for s in b.segments]


def test_no_checks_changes_only_the_purgatory():
    on, off = plan_for(), plan_for(purgatory=PurgatoryOptions(checks=False))
    assert {s.role: s.mem for s in on.segments if s.role != "purgatory"} == \
        {s.role: s.mem for s in off.segments if s.role != "purgatory"}
    assert bytes(by_role(on)["purgatory"].data) != bytes(by_role(off)["purgatory"].data)


@pytest.mark.parametrize("mutate, error, words", [
    (lambda k: b"#!/bin/sh\necho not a kernel\n" + bytes(4000), UnknownFormatError, "cannot determine the file type"),
    (lambda k: bytes(4096), UnknownFormatError, "cannot determine the file type"),
    (lambda k: k[:0x300], MalformedImageError, "truncated bzImage"),
    (lambda k: k[:-16], MalformedImageError, "truncated bzImage"),
    (lambda k: k[:0x236] + b"\0\0" + k[0x238:], UnsupportedImageError, "32-bit-only"),
    (lambda k: k[:0x206] + b"\x0a\x02" + k[0x208:], UnsupportedImageError, "boot protocol 2.10 is too old"),
    (lambda k: k[:0x260] + bytes(4) + k[0x264:], MalformedImageError, "corrupt setup header"),
])
def test_bad_kernels(mutate, error, words):
    with pytest.raises(error, match=words):
        plan_for(mutate(TINY))


def test_command_line_longer_than_cmdline_size():
    with pytest.raises(UsageError, match="2048 bytes; this kernel .* at most 2047"):
        plan_for(cmdline="x" * 2048)


def test_initrd_that_fits_nowhere():
    tight = system.facts_from_json({"version": 1, "memmap": [[0, 0x9FC00, 1], [0x100000, 0x3F00000, 1]]}, "tight")
    with pytest.raises(PlacementError, match="initrd"):
        plan_for(facts=tight, initrd=memoryview(bytearray(64 * MiB)), initrd_name="big")


def test_forced_type_that_does_not_match():
    with pytest.raises(UnknownFormatError, match="(?i)wrong file type multiboot-x86, file matches type bzImage64") as e:
        plan_for(image_type="multiboot-x86")
    assert e.value.exit_code == 255


def test_rng_seed_goes_in_a_setup_data_chain():
    seed = bytes(range(32))
    plan = plan_for(rng_seed=seed)
    segs = by_role(plan)
    page = bp.BootParams.parse(bytes(segs["boot-params"].data))
    assert page.hdr.setup_data == segs["setup-data"].mem
    assert bytes(segs["setup-data"].data) == struct.pack("<QII", 0, 9, 32) + seed  # last in chain, SETUP_RNG_SEED
    assert "setup-data" not in by_role(plan_for())  # no seed, no segment (golden plans stay deterministic)



def test_modules_for_a_bzimage_are_refused():
    from kexloader.model import Module
    with pytest.raises(UsageError, match="--module is for multiboot images"):
        plan_for(modules=(Module("m", b"x", "m"),))
