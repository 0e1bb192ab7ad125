"""What a multiboot kernel (Xen) expects of a BIOS, for a UEFI machine that has none (issue 11 item 6).

Xen entered through multiboot 1 or 2 without EFI boot services (the only way after kexec: Xen's multiboot 2 entry
refuses an EFI64 system-table tag without the EFI boot-services tag, "ERR: Bootloader shutdown EFI x64 boot
services!", xen/arch/x86/boot/head.S) takes the legacy-BIOS path, which reads the BIOS data area in page 0:

* head.S `trampoline_bios_setup` puts its 64 KiB real-mode trampoline and stack below the EBDA (the segment word at
  0x40e, if in [0x4000, 0xa000), else the base-memory KiB at 0x413), or below multiboot's mem_lower when that is
  smaller. On UEFI page 0 is all zeros (OVMF leaves it so, measured), so the trampoline goes to 0 - 64 KiB, i.e.
  0xffff0000, the firmware flash: Xen hangs before it prints a byte (the silent Linux->Xen and Xen->Xen of the
  issue, for kexec-tools too).
* ACPI: without EFI, Xen finds the RSDP only by scanning the first KiB of the EBDA and 0xe0000-0xfffff
  (acpi_find_root_pointer); UEFI firmware puts it in EFI configuration tables only.
* Without `no-real-mode`, the trampoline calls the BIOS (int 0x10, 0x15, 0x13) in real mode: there is no BIOS.

So on a UEFI machine kexloader writes a BIOS data area: page 0 with the EBDA segment and the base memory size, and
an EBDA (the last KiB below mem_lower) holding an RSDP. The firmware's RSDP cannot be copied (it is in ACPI memory,
which /dev/mem refuses under CONFIG_IO_STRICT_DEVMEM, as in Debian's kernels), so the RSDP is kexloader's own: it
points at an XSDT of kexloader's that lists copies of the static tables of /sys/firmware/acpi/tables (FADT, MADT,
HPET, MCFG, SSDTs, ...; DSDT and FACS stay where the FADT points). The copies sit in one segment marked ACPI in
the map handed to Xen, and the EBDA reserved, as BIOSes do; Xen's command line gets `no-real-mode`.
Pure: facts in, bytes out.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .model import E820_RESERVED, MemRegion, Range, SystemFacts

PAGE = 0x1000
KiB = 1024
BDA_EBDA_SEGMENT = 0x40E  # word: EBDA address >> 4
BDA_BASE_MEMORY = 0x413  # word: KiB of conventional memory below the EBDA
EBDA_SIZE_KIB = 1  # first byte of the EBDA: its size in KiB
EBDA_RSDP_OFFSET = 0x10  # the RSDP must sit on a 16-byte boundary in the EBDA's first KiB (ACPI 5.2.5.1)
NO_REAL_MODE = "no-real-mode"
OEM_ID = b"KEXLDR"
RSDP_LENGTH = 36
E820_ACPI = 3


@dataclass(frozen=True)
class BiosArea:
    page0: bytes  # 4 KiB at physical 0: zero IVT, BDA with the EBDA segment and base memory size
    ebda_page: int  # physical page holding the EBDA
    ebda: int  # physical address of the EBDA (1 KiB)
    mem_lower: int  # KiB below the EBDA (what the multiboot information says too)
    tables: tuple[tuple[str, bytes], ...]  # the ACPI tables to copy (no DSDT, FACS), possibly none
    notes: tuple[str, ...]

    def ebda_page_data(self, xsdt: int | None) -> bytes:
        """4 KiB: zeros, then the EBDA (size byte, and the RSDP pointing at `xsdt` when there is one)."""
        data = bytearray(PAGE)
        at = self.ebda - self.ebda_page
        data[at] = EBDA_SIZE_KIB
        if xsdt is not None:
            rsdp = build_rsdp(xsdt)
            data[at + EBDA_RSDP_OFFSET:at + EBDA_RSDP_OFFSET + len(rsdp)] = rsdp
        return bytes(data)


def needed(facts: SystemFacts) -> bool:
    """A UEFI machine: the running system booted through EFI (Linux's /sys/firmware/efi, or a Xen dom0 whose Xen
    was started by EFI), so page 0 holds no BIOS data area."""
    return facts.efi is not None


def build(facts: SystemFacts, mem_lower_kib: int) -> BiosArea | None:
    """The BIOS data area for a machine whose RAM from 0 is `mem_lower_kib` KiB (multiboot's mem_lower), or None
    when there is no conventional memory to put an EBDA in."""
    if mem_lower_kib < 64 + 72:  # room for the EBDA and Xen's 64 KiB trampoline below it, with some margin
        return None
    ebda = (mem_lower_kib - EBDA_SIZE_KIB) * KiB
    page0 = bytearray(PAGE)
    struct.pack_into("<H", page0, BDA_EBDA_SEGMENT, ebda >> 4)
    struct.pack_into("<H", page0, BDA_BASE_MEMORY, ebda // KiB)
    tables = tuple(facts.efi.acpi_tables or ()) if facts.efi is not None else ()
    notes = [f"UEFI machine: BIOS data area written for the multiboot kernel (page 0: EBDA at {ebda:#x}, "
             f"{ebda // KiB} KiB base memory; Xen puts its trampoline below it)"]
    if tables:
        notes.append(f"UEFI machine: an RSDP in the EBDA at {ebda + EBDA_RSDP_OFFSET:#x} (where Xen's ACPI scan "
                     f"looks) and an XSDT over copies of {', '.join(n for n, _ in tables)}")
    else:
        notes.append("UEFI machine: no ACPI tables known (/sys/firmware/acpi/tables): Xen will find no ACPI")
    return BiosArea(bytes(page0), ebda & ~(PAGE - 1), ebda, ebda // KiB, tables, tuple(notes))


def _checksum(data: bytes | bytearray) -> int:
    return -sum(data) & 0xFF


def build_rsdp(xsdt: int) -> bytes:
    """ACPI 6.5 5.2.5.3: revision 2, no RSDT, the XSDT at `xsdt`, both checksums."""
    raw = bytearray(struct.pack("<8sB6sBIIQB3x", b"RSD PTR ", 0, OEM_ID, 2, 0, RSDP_LENGTH, xsdt, 0))
    raw[8] = _checksum(raw[:20])
    raw[32] = _checksum(raw)
    return bytes(raw)


def build_acpi_blob(tables: Sequence[tuple[str, bytes]], base: int) -> tuple[bytes, int]:
    """(the bytes at `base`: an XSDT listing copies of `tables`, then the copies, 16-byte aligned; the XSDT's
    address). ACPI 6.5 5.2.8: a table header then 64-bit physical addresses."""
    header = 36 + 8 * len(tables)
    body = bytearray()
    addrs: list[int] = []
    at = (header + 15) & ~15
    for _, data in tables:
        body += bytes(at - header - len(body))
        addrs.append(base + at)
        body += data
        at = (header + len(body) + 15) & ~15
    xsdt = bytearray(struct.pack("<4sIBB6s8sI4sI", b"XSDT", header, 1, 0, OEM_ID, b"KEXLOADR", 1, b"KXLR", 1))
    xsdt += b"".join(struct.pack("<Q", a) for a in addrs)
    xsdt[9] = _checksum(xsdt)
    return bytes(xsdt) + bytes(body), base


def memmap_for(memmap: Iterable[MemRegion], area: BiosArea, acpi: Range | None) -> list[MemRegion]:
    """`memmap` with page 0 and [ebda, 640 KiB or the end of that RAM range) reserved (BIOSes report their EBDA
    so), and the range holding the ACPI copies typed ACPI (reclaimable)."""
    out: list[MemRegion] = []
    for r in memmap:
        # page 0 reserved too: a PV dom0 reads the EBDA pointer through /dev/mem-style identity mappings, which it
        # gets only for non-RAM (its own RAM page 0 would read as zeros), and Linux reserves page 0 anyway
        cuts = [(0, PAGE, E820_RESERVED), (area.ebda, min(r.range.end, 640 * KiB), E820_RESERVED)]
        if acpi is not None:
            cuts.append((acpi.start, acpi.end, E820_ACPI))
        pieces = [r]
        for start, end, kind in cuts:
            nxt = []
            for q in pieces:
                if q.is_ram and q.range.start < end and start < q.range.end:
                    lo, hi = max(start, q.range.start), min(end, q.range.end)
                    if q.range.start < lo:
                        nxt.append(MemRegion(Range(q.range.start, lo - q.range.start), q.type))
                    nxt.append(MemRegion(Range(lo, hi - lo), kind))
                    if hi < q.range.end:
                        nxt.append(MemRegion(Range(hi, q.range.end - hi), q.type))
                else:
                    nxt.append(q)
            pieces = nxt
        out += pieces
    return out


def with_no_real_mode(cmdline: str) -> tuple[str, str | None]:
    """Xen's command line with `no-real-mode` (its real-mode setup calls the BIOS), and a note if it was added."""
    if NO_REAL_MODE in cmdline.split():
        return cmdline, None
    return (f"{cmdline} {NO_REAL_MODE}".strip(),
            f"UEFI machine: '{NO_REAL_MODE}' added to the command line (Xen's real-mode setup would call the BIOS)")
