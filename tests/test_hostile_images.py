"""Hostile or damaged images: byte flips and cuts of every fixture kind may raise only KexloaderError."""

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kexloader import api, system
from kexloader.errors import KexloaderError, MalformedImageError, SystemFactsError
from kexloader.model import LoadRequest, Module, Range

ROOT = Path(__file__).resolve().parent.parent
FACTS = system.load_snapshot(ROOT / "fixtures/snapshots/qemu-2g.json")
IMAGES = {name: (ROOT / "fixtures" / name).read_bytes() for name in (
    "bzimage/tiny.bzImage", "multiboot/tiny-mb12.elf", "multiboot/tiny-mb1.elf", "probes/bzprobe.bzImage",
    "probes/mbprobe.elf")}


def plan(data: bytes):
    req = LoadRequest(kernel=data, kernel_name="mutant", cmdline="console=ttyS0",
                      modules=(Module("m", b"m" * 100, "m arg"),))
    try:
        api.make_plan(req, FACTS)
    except KexloaderError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(IMAGES)), flips=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)),
                                                           min_size=1, max_size=8))
def test_byte_flips_raise_only_kexloader_errors(name, flips):
    data = bytearray(IMAGES[name])
    for pos, value in flips:
        data[pos % len(data)] = value
    plan(bytes(data))


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(IMAGES)), cut=st.integers(0, 1 << 16))
def test_truncations_raise_only_kexloader_errors(name, cut):
    plan(IMAGES[name][:cut % (len(IMAGES[name]) + 1)])


def test_jump_byte_that_ends_the_header_early_is_a_malformed_image():
    """0x201 is the jump's displacement: the header ends at 0x202 + it; 0 puts the end before 'HdrS'."""
    for end_byte in (0x00, 0x03, 0x61):
        bad = bytearray(IMAGES["bzimage/tiny.bzImage"])
        bad[0x201] = end_byte
        with pytest.raises(MalformedImageError, match="jump"):
            api.make_plan(LoadRequest(kernel=bytes(bad), kernel_name="jump"), FACTS)
    ok = bytearray(IMAGES["bzimage/tiny.bzImage"])
    ok[0x201] = 0x62  # ends at 0x264: init_size is in
    api.make_plan(LoadRequest(kernel=bytes(ok), kernel_name="jump"), FACTS)


def test_more_core_header_entries_than_elf_can_count_is_one_error():
    """A snapshot the schema accepts (65535 CPU notes) whose kdump ELF header would need more than 65534
    program headers: a SystemFactsError, not the format layer's ElfCoreError (found by tools/fuzz)."""
    kdump = system.load_snapshot(ROOT / "fixtures/snapshots/qemu-debian12-kdump-384m.json")
    notes = tuple((cpu, Range(0x10000000 + 0x1000 * cpu, 0x100)) for cpu in range(65535))
    req = LoadRequest(kernel=IMAGES["bzimage/tiny.bzImage"], kernel_name="tiny", crash=True)
    with pytest.raises(SystemFactsError, match="ELF core header"):
        api.make_plan(req, dataclasses.replace(kdump, crash_notes=notes))


def test_zero_page_builder_takes_a_2_06_header_and_refuses_one_before_its_version():
    """build_zero_page needs the header up to the version (0x208); vmlinux's synthetic header ends at 0x23c."""
    from kexloader import bootparams
    from kexloader.images.vmlinux import synthetic_setup
    from kexloader.model import Range

    setup = bytearray(synthetic_setup())
    page = bootparams.build_zero_page(bytes(setup), cmdline=Range(0x10000, 1), initrd=None, memmap=[],
                                      running=None, acpi_rsdp=None)
    assert page[0x202:0x206] == b"HdrS"
    setup[0x201] = 0x04  # ends at 0x206: "HdrS" but no version
    with pytest.raises(MalformedImageError, match="before its version"):
        bootparams.build_zero_page(bytes(setup), cmdline=Range(0x10000, 1), initrd=None, memmap=[],
                                   running=None, acpi_rsdp=None)
