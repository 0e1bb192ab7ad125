"""The EFI hand-off to a Linux kernel (issue 11 item 2): what a kexec'd kernel needs to keep EFI runtime
services, for -l and -p, decided from the running system's EFI facts.

A kernel that declares XLF_EFI_KEXEC (xloadflags bit 4) and finds, in its zero page and setup_data,

* `efi_info` with the loader signature "EL64", the firmware's system table (physical), and a memory map of
  only the runtime regions, each descriptor carrying the *virtual* address the first kernel gave the region
  (SetVirtualAddressMap can be called once per boot; the next kernel maps the regions at the same addresses
  instead: arch/x86/platform/efi/efi.c kexec_enter_virtual_mode);
* a `SETUP_EFI` setup_data (`struct efi_setup_data`): the *physical* fw_vendor and configuration table
  (the system table's own fields hold virtual addresses after SetVirtualAddressMap) and the SMBIOS entry
  point (the kernel writes it back into the SMBIOS configuration table entry, which some firmware
  virtualises: arch/x86/platform/efi/quirks.c efi_reuse_config),

keeps EFI runtime services (variables, reset, RTC). This is what kexec-tools' setup_efi_info() hands over, and
what the kernel's own kexec_file_load builds (setup_efi_state()); docs/kexec-tools-differences.md says where
kexloader differs. Everything else (no XLF_EFI_KEXEC, --noefi, a 32-bit firmware, missing or inconsistent
facts) boots the next kernel without EFI, and the plan says why in one note.

Pure: facts and bytes in, bytes and notes out; `place` records one segment in a Layout.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .formats import bzimage as bz
from .formats import efi as fe
from .memory import Layout
from .model import EfiFacts, EfiRuntimeRegion, MemRegion, Range, Role, SystemFacts

XLOADFLAGS_SINCE = 0x020C  # boot protocol that introduced xloadflags
FIRMWARE_RUNTIME_TYPES = (fe.RUNTIME_SERVICES_CODE, fe.RUNTIME_SERVICES_DATA)


@dataclass(frozen=True)
class EfiHandover:
    """What the next kernel gets: efi_info (without the memory map's address, known once placed), the EFI
    memory map of the runtime regions, and the SETUP_EFI payload."""

    efi: EfiFacts
    memmap: bytes  # descriptors of the runtime regions, efi.memdesc_size bytes apart
    count: int
    setup_data: bytes  # struct efi_setup_data

    def efi_info(self, memmap_at: int) -> bytes:
        """The 32 bytes of boot_params.efi_info once the memory map sits at `memmap_at`."""
        info: bytes = fe.EfiInfo.build(dict(
            efi_loader_signature=fe.EFI64_LOADER_SIGNATURE, efi_systab=self.efi.systab & 0xFFFFFFFF,
            efi_systab_hi=self.efi.systab >> 32, efi_memdesc_size=self.efi.memdesc_size,
            efi_memdesc_version=self.efi.memdesc_version, efi_memmap=memmap_at & 0xFFFFFFFF,
            efi_memmap_hi=memmap_at >> 32, efi_memmap_size=len(self.memmap)))
        return info


def xloadflags(header_page: bytes) -> int:
    """The setup header's xloadflags, or 0 before boot protocol 2.12 (and for a synthetic 2.06 header)."""
    version = struct.unpack_from("<H", header_page, 0x206)[0]
    return struct.unpack_from("<H", header_page, 0x236)[0] if version >= XLOADFLAGS_SINCE else 0


def decide(facts: SystemFacts, *, kernel_flags: int, noefi: bool, what: str,
           memmap: Sequence[MemRegion]) -> tuple[EfiHandover | None, str | None]:
    """(the hand-over, or None; one note for --dry-run, or None on a machine without EFI).

    kernel_flags: the target's xloadflags; memmap: the e820 map the target will get (the runtime regions
    must not be RAM in it)."""
    efi = facts.efi
    if efi is None:
        return None, None
    without = "the next kernel boots without EFI runtime services"
    if noefi:
        return None, f"EFI: --noefi: no efi_info and no SETUP_EFI; {without} (ACPI through acpi_rsdp_addr)"
    if not kernel_flags & bz.XLF_EFI_KEXEC:
        return None, f"EFI: {what} does not declare XLF_EFI_KEXEC: {without}"
    if efi.platform_size == 32 or efi.loader_signature == fe.EFI32_LOADER_SIGNATURE.decode():
        return None, f"EFI: 32-bit firmware (fw_platform_size 32, mixed mode): {without}"
    if facts.xen is not None and not efi.runtime_map:
        return None, (f"EFI: the firmware's system table and runtime regions are unknown (dom0 learns them from "
                      f"Xen's XEN_FW_EFI_INFO and /dev/mem): {without}")
    if efi.loader_signature != fe.EFI64_LOADER_SIGNATURE.decode() or not efi.memmap_size:
        return None, (f"EFI: the running kernel's boot_params carry no EFI memory map (efi_info "
                      f"{efi.loader_signature or 'empty'}): {without}")
    if efi.memdesc_version != fe.MEMORY_DESCRIPTOR_VERSION:
        return None, f"EFI: memory descriptor version {efi.memdesc_version} is not 1: {without}"
    if efi.memdesc_size < fe.MEMORY_DESCRIPTOR_SIZE:
        return None, f"EFI: memory descriptor size {efi.memdesc_size} is below {fe.MEMORY_DESCRIPTOR_SIZE}: {without}"
    missing = [name for name in ("fw_vendor", "runtime", "config_table") if getattr(efi, name) is None]
    if missing:
        return None, f"EFI: /sys/firmware/efi/{{{','.join(missing)}}} unknown: {without}"
    if not efi.runtime_map:
        return None, (f"EFI: no runtime map (/sys/firmware/efi/runtime-map; CONFIG_EFI_RUNTIME_MAP, efi=noruntime): "
                      f"{without}")
    problem = runtime_map_problem(efi.runtime_map, memmap)
    if problem:
        return None, f"EFI: {problem}: {without}"
    descriptors = [dict(type=r.type, phys_addr=r.phys_addr, virt_addr=r.virt_addr, num_pages=r.num_pages,
                        attribute=r.attribute) for r in efi.runtime_map]
    memmap_bytes = fe.build_memmap(descriptors, efi.memdesc_size)
    payload = fe.EfiSetupData.build(dict(fw_vendor=efi.fw_vendor, runtime=efi.runtime, tables=efi.config_table,
                                         smbios=efi.smbios or 0, reserved=[0] * 8))
    handover = EfiHandover(efi, memmap_bytes, len(descriptors), payload)
    return handover, (f"EFI: efi_info EL64 systab {efi.systab:#x}, {len(descriptors)} runtime regions in the EFI "
                      f"memory map, SETUP_EFI fw_vendor {efi.fw_vendor:#x} tables {efi.config_table:#x} smbios "
                      f"{efi.smbios or 0:#x}: the next kernel keeps EFI runtime services")


def runtime_map_problem(regions: Iterable[EfiRuntimeRegion], memmap: Sequence[MemRegion]) -> str | None:
    """Why a runtime map cannot be handed over with `memmap`, or None: two regions overlap, or a region of the
    firmware's runtime code or data is RAM in the map (the next kernel would allocate over the firmware). Boot
    services regions tagged EFI_MEMORY_RUNTIME by Linux itself (efi_mem_reserve: ESRT, TPM log, ...) may be
    RAM in the firmware map, as they are in the running kernel's."""
    ordered = sorted(regions, key=lambda r: r.phys_addr)
    for a, b in zip(ordered, ordered[1:]):
        if a.range.overlaps(b.range):
            return f"runtime map entries {a.range} and {b.range} overlap"
    for r in ordered:
        if not r.num_pages:
            return f"runtime map entry at {r.phys_addr:#x} has no pages"
        if r.type in FIRMWARE_RUNTIME_TYPES:
            for m in memmap:
                if m.is_ram and m.range.overlaps(r.range):
                    return (f"runtime region {r.range} ({fe.MEMORY_TYPES[r.type]}) is RAM in the memory map "
                            f"({m.range}): the runtime map disagrees with the memory map")
    return None


def place(layout: Layout, handover: EfiHandover, window: Range) -> bytes:
    """Put the EFI memory map in `layout`; the efi_info that points at it."""
    seg = layout.place(Role.EFI_MEMMAP, handover.memmap, window=window,
                       what=f"EFI memory map: {handover.count} runtime regions")
    return handover.efi_info(seg.mem)
