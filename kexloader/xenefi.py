"""EFI facts of a machine whose Xen was started by UEFI, as its dom0 can learn them (issue 11 item 5).

A dom0 of an EFI-booted Xen has /sys/firmware/efi, but no efi_info, no runtime map and no system table: Xen
called ExitBootServices and owns the runtime services. For the Linux that Xen -> Linux (or Xen's kdump) starts to
keep them, it needs what a kexec'd kernel gets on bare UEFI (kexloader/efiboot.py): the system table, the runtime
regions and the physical fw_vendor, configuration table and runtime services table. Here they come from:

* Xen's platform hypercall XENPF_firmware_info/XEN_FW_EFI_INFO (public/platform.h): the configuration table's
  physical address and entry count (XEN_FW_EFI_CONFIG_TABLE), and the descriptor of the firmware's EFI memory
  map that holds a given address (XEN_FW_EFI_MEM_INFO: type, attribute, bytes to its end) — walked over the
  machine memory map, descriptor after descriptor;
* the system table itself, which the UEFI specification places in EfiRuntimeServicesData memory: found by its
  signature in those regions (read through a dom0's /dev/mem) and accepted only when its header CRC is right
  and its configuration table is the one Xen reports.

Xen runs the firmware 1:1: Xen 4.17 and 4.20 do not call SetVirtualAddressMap (CONFIG_EFI_SET_VIRTUAL_ADDRESS_MAP
defaults to n), later Xen calls it with every virtual address equal to the physical one. So each runtime region's
"virtual" address is its physical one, and the next kernel, told so through the kexec hand-off, maps the
regions 1:1 and calls the firmware where Xen did. A system table whose runtime services pointer lies in no
runtime region (a firmware moved elsewhere) is not handed over.

Pure: the hypercall and the memory reads are passed in (kexloader/system.py passes the live ones).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from .formats import efi as fe
from .model import EfiFacts, EfiRuntimeRegion, MemRegion

MemInfo = Callable[[int], "tuple[int, int, int] | None"]  # addr -> (type, attribute, bytes to the end) or None
ReadPhysical = Callable[[int, int], "bytes | None"]  # (address, size) -> bytes, or None when unreadable

PAGE = fe.EFI_PAGE_SIZE
MAX_DESCRIPTORS = 4096  # firmware maps hold a few hundred; a walk past this is Xen answering nonsense


class XenEfiError(ValueError):
    """What Xen or the memory answered cannot be an EFI memory map or system table."""


def walk_memory_map(memmap: Sequence[MemRegion], mem_info: MemInfo) -> list[EfiRuntimeRegion]:
    """The firmware's descriptors that cover the machine map's ranges, in address order, each with its
    virtual address equal to its physical one. A runtime descriptor that begins below a range's start (Xen may
    trim a range) is followed back to its first page, at most 64 MiB."""
    found: list[EfiRuntimeRegion] = []
    covered = 0
    for region in sorted(memmap, key=lambda m: m.range.start):
        addr = max(region.range.start, covered)
        while addr < region.range.end:
            got = mem_info(addr)
            if got is None:
                break  # no descriptor here: the rest of this range is not the firmware's
            kind, attr, size = got
            if size <= 0 or size % PAGE or addr % PAGE:
                raise XenEfiError(f"Xen reported an EFI descriptor at {addr:#x} of {size:#x} bytes, "
                                  f"not whole {PAGE}-byte pages")
            start = addr
            if attr & fe.EFI_MEMORY_RUNTIME:  # only the regions handed over need their true start
                start = _first_page(addr, kind, attr, size, mem_info, floor=covered)
            end = addr + size
            found.append(EfiRuntimeRegion(kind, start, start, (end - start) // PAGE, attr))
            if len(found) > MAX_DESCRIPTORS:
                raise XenEfiError(f"Xen reported more than {MAX_DESCRIPTORS} EFI descriptors")
            addr = covered = end
    return found


MAX_PAGES_BACK = 1 << 14  # 64 MiB: runtime regions are a few MiB


def _first_page(addr: int, kind: int, attr: int, size: int, mem_info: MemInfo, floor: int) -> int:
    """Where the descriptor holding `addr` starts: a page below belongs to it when Xen gives it the same type
    and attribute and a size one page longer."""
    for _ in range(MAX_PAGES_BACK):
        if addr - PAGE < floor or addr < PAGE or mem_info(addr - PAGE) != (kind, attr, size + PAGE):
            return addr
        addr, size = addr - PAGE, size + PAGE
    raise XenEfiError(f"Xen reported a runtime EFI descriptor reaching more than {MAX_PAGES_BACK * PAGE >> 20} MiB "
                      f"below {addr:#x}")


def runtime_regions(descriptors: Sequence[EfiRuntimeRegion]) -> tuple[EfiRuntimeRegion, ...]:
    """The descriptors the runtime services need (EFI_MEMORY_RUNTIME set)."""
    return tuple(d for d in descriptors if d.attribute & fe.EFI_MEMORY_RUNTIME)


def find_system_table(regions: Sequence[EfiRuntimeRegion], read: ReadPhysical,
                      config_table: tuple[int, int]) -> tuple[int, object] | None:
    """(physical address, parsed SystemTable64) of the system table in the runtime data regions whose
    configuration table is `config_table` (address, entries) and whose header CRC is right; None if none."""
    want_addr, want_count = config_table
    signature = fe.SYSTEM_TABLE_SIGNATURE.to_bytes(8, "little")
    for r in regions:
        if r.type != fe.RUNTIME_SERVICES_DATA:
            continue
        data = read(r.phys_addr, r.num_pages * PAGE)
        if not data:
            continue
        at = data.find(signature)
        while at >= 0:
            table = data[at:at + fe.SYSTEM_TABLE_SIZE + 0x100]  # the header may declare a longer table
            if at % 8 == 0 and len(table) >= fe.SYSTEM_TABLE_SIZE:
                st = fe.SystemTable64.parse(table)
                if (st.tables == want_addr and st.nr_tables == want_count
                        and fe.system_table_crc_ok(data[at:at + st.header_size])):
                    return r.phys_addr + at, st
            at = data.find(signature, at + 1)
    return None


def efi_facts(base: EfiFacts | None, descriptors: Sequence[EfiRuntimeRegion], system_table: tuple[int, object] | None
              ) -> tuple[EfiFacts | None, str | None]:
    """dom0's EFI facts (`base`, from /sys/firmware/efi) completed with the firmware's system table and runtime
    regions, so that kexloader/efiboot.py can hand them on; or `base` unchanged and a note saying why not."""
    if base is None:
        return None, None
    runtime = runtime_regions(descriptors)
    if not runtime:
        return base, "Xen reported no EFI runtime regions"
    if system_table is None:
        return base, "no EFI system table found in the firmware's runtime data (through /dev/mem)"
    systab, st = system_table
    fw_vendor, runtime_services = getattr(st, "fw_vendor"), getattr(st, "runtime")
    for name, addr in (("runtime services table", runtime_services), ("firmware vendor string", fw_vendor)):
        if not any(r.phys_addr <= addr < r.range.end for r in runtime):
            return base, (f"the EFI system table's {name} at {addr:#x} is in no runtime region: the firmware "
                          f"does not run 1:1")
    return replace(base, loader_signature=fe.EFI64_LOADER_SIGNATURE.decode(), systab=systab,
                   memdesc_size=fe.MEMORY_DESCRIPTOR_SIZE, memdesc_version=fe.MEMORY_DESCRIPTOR_VERSION, memmap=0,
                   memmap_size=len(descriptors) * fe.MEMORY_DESCRIPTOR_SIZE, fw_vendor=fw_vendor,
                   runtime=runtime_services, config_table=getattr(st, "tables"), platform_size=64,
                   runtime_map=runtime), None
