"""vmcore-dmesg: the crashed kernel's log from /proc/vmcore or a saved ELF vmcore, as kexec-tools prints it.

Everything comes from the core itself (Documentation/admin-guide/kdump/vmcoreinfo.rst):

* the VMCOREINFO note names the log's symbols and the layout of its structures (SYMBOL(prb), SIZE(prb_desc),
  OFFSET(printk_info.ts_nsec), ...), so no vmlinux is needed;
* a virtual address becomes a physical one by the kernel-image formula (`va - __START_KERNEL_map + phys_base`,
  NUMBER(phys_base)) or by walking the crashed kernel's own page tables from SYMBOL(init_top_pgt) (4 or 5
  levels, NUMBER(pgtable_l5_enabled), NUMBER(sme_mask)); when neither is known, by the PT_LOADs' p_vaddr as
  kexec-tools does;
* a physical address becomes a place in the file through the PT_LOADs' p_paddr.

Three log formats, chosen as kexec-tools chooses (VMCOREINFO says which): the lockless ring buffer of Linux
5.10+ (SYMBOL(prb); kernel/printk/printk_ringbuffer.h: a descriptor ring of prb_desc + printk_info and a text
data ring whose blocks start with the descriptor id), the record log of 3.5-5.9 (SYMBOL(log_first_idx):
struct printk_log headers, variable-length records, a zero-length record marks the wrap), and the plain
character ring of older kernels (SYMBOL(log_end)).

A core taken under Xen (kexloader's crash header for a dom0 carries dom0's own VMCOREINFO next to Xen's
VMCOREINFO_XEN) holds machine memory, while a PV dom0's kernel addresses are pseudo-physical: Xen's crash-info
note (name "Xen", XEN_ELFNOTE_CRASH_INFO) gives dom0_pfn_to_mfn_frame_list_list, the machine frame of the
top of dom0's three-level p2m tree (512 x 512 x 512 entries), through which every pseudo-physical page is
found; PV page tables hold machine frames already.

Output and exit codes are kexec-tools' (vmcore-dmesg/vmcore-dmesg.c, util_lib/elf_info.c): one line per
record, `[%5lu.%06lu] text`, bytes that are neither printable ASCII nor white space written as `\\xNN`. The
reading is through mmap (or pread where mmap is refused); a vmcore is as large as the crashed machine's RAM.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from .errors import KexloaderError
from .formats import elfcore

PROG = "vmcore-dmesg"
PAGE_SIZE = 4096
START_KERNEL_MAP = 0xFFFFFFFF80000000  # x86-64 __START_KERNEL_map
DEFAULT_KERNEL_IMAGE_SIZE = 512 << 20  # without KASLR; VMCOREINFO's NUMBER(KERNEL_IMAGE_SIZE) says otherwise
PTE_ADDR_MASK = ((1 << 52) - 1) & ~0xFFF
PTE_PRESENT, PTE_PSE = 0x1, 0x80
LOG_BUF_LEN_MAX = 1 << 31  # the most kexec-tools writes (and printk allows)
XEN_ELFNOTE_CRASH_INFO = 0x1000001
P2M_PER_PAGE = PAGE_SIZE // 8
P2M_INVALID = (1 << 64) - 1
P2M_FLAG_BITS = 3 << 62  # FOREIGN_FRAME_BIT, IDENTITY_FRAME_BIT of Linux's arch/x86/include/asm/xen/page.h

# kernel/printk/printk_ringbuffer.h: state_var = 2 state bits over the descriptor id (64-bit longs)
DESC_ID_MASK = (1 << 62) - 1
DESC_COMMITTED, DESC_FINALIZED = 1, 2

# Exit codes of kexec-tools' vmcore-dmesg (2.0.25-2.0.32).
EXIT_USAGE = 1
EXIT_OPEN = 2
EXIT_SHORT = 3  # e_ident cannot be read
EXIT_NO_MAGIC = 4
EXIT_ELF_VERSION = 5
EXIT_ELF_CLASS = 6
EXIT_ELF_DATA = 7
EXIT_EHDR = 10
EXIT_EHDR_VERSION = 11
EXIT_PHENTSIZE = 12
EXIT_PHDRS = 16
EXIT_NOTE_SIZE = 20
EXIT_NOTES = 22
EXIT_NO_MAPPING = 30  # "No program header covering vaddr ..."
EXIT_POINTER = 40
EXIT_VALUE = 41
EXIT_LEGACY_LOG_BUF, EXIT_LEGACY_LOG_END, EXIT_LEGACY_LEN, EXIT_LEGACY_CHARS = 50, 51, 52, 53
EXIT_REC_LOG_BUF, EXIT_REC_LEN, EXIT_REC_FIRST, EXIT_REC_NEXT = 60, 61, 62, 63
EXIT_REC_SIZE, EXIT_REC_TS, EXIT_REC_LENOFF, EXIT_REC_TEXTLEN = 64, 65, 66, 67
EXIT_REC_CYCLE, EXIT_REC_OUTSIDE = 68, 69
EXIT_RING_LAYOUT = 64  # kexec-tools: allocation of a ring failed (here: VMCOREINFO gives an unusable layout)
EXIT_RING_READ = 65
EXIT_TOO_BIG = 53
EXIT_WRITE = 54


class VmcoreError(KexloaderError):
    """A vmcore that cannot be read; exit_code is kexec-tools' vmcore-dmesg code for the same failure."""

    def __init__(self, message: str, exit_code: int, *, hint: str | None = None):
        super().__init__(message, hint=hint, exit_code=exit_code)


# ----------------------------------------------------------------------------------------------- the file

@dataclass(frozen=True, slots=True)
class Note:
    name: bytes
    type: int
    desc: bytes


def parse_vmcoreinfo(desc: bytes) -> dict[str, str]:
    """KEY=VALUE lines (the last one, CRASHTIME, may lack its newline)."""
    info = {}
    for line in desc.split(b"\0", 1)[0].decode("ascii", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            info[key.strip()] = value.strip()
    return info


class CoreBuffer(Protocol):
    """What a Core reads of its buffer (bytes, an mmap, a memoryview): its length and slices."""

    def __len__(self) -> int: ...
    def __getitem__(self, s: slice, /) -> bytes | memoryview: ...


class Core:
    """An ELF64 little-endian core in a buffer (mmap, bytes): its PT_LOADs and its notes."""

    def __init__(self, buf: CoreBuffer, name: str = "vmcore"):
        self.buf = buf
        self.name = name
        self.size = len(buf)
        ident = self._file(0, 16, "e_ident", EXIT_SHORT)
        if ident[:4] != elfcore.ELF_MAGIC:
            raise VmcoreError(f"{name}: not an ELF file (no ELF signature)", EXIT_NO_MAGIC)
        if ident[6] != elfcore.EV_CURRENT:
            raise VmcoreError(f"{name}: bad ELF version {ident[6]}", EXIT_ELF_VERSION)
        if ident[4] != elfcore.ELFCLASS64:
            raise VmcoreError(f"{name}: ELF class {ident[4]}: only ELF64 (x86-64) cores are read", EXIT_ELF_CLASS)
        if ident[5] != elfcore.ELFDATA2LSB:
            raise VmcoreError(f"{name}: ELF data order {ident[5]}: only little-endian cores are read", EXIT_ELF_DATA)
        eh = elfcore.Elf64_Ehdr.parse(self._file(0, elfcore.EHDR_SIZE, "the ELF header", EXIT_EHDR))
        if eh.e_version != elfcore.EV_CURRENT:
            raise VmcoreError(f"{name}: bad ELF header version {eh.e_version}", EXIT_EHDR_VERSION)
        if eh.e_phnum and eh.e_phentsize != elfcore.PHDR_SIZE:
            raise VmcoreError(f"{name}: program header size {eh.e_phentsize}, expected {elfcore.PHDR_SIZE}",
                              EXIT_PHENTSIZE)
        table = self._file(eh.e_phoff, eh.e_phnum * elfcore.PHDR_SIZE, "the program headers", EXIT_PHDRS)
        self.phdrs = tuple(elfcore.Phdr(*struct.unpack_from("<IIQQQQQQ", table, i * elfcore.PHDR_SIZE))
                           for i in range(eh.e_phnum))
        self.loads = tuple(sorted((p for p in self.phdrs if p.p_type == elfcore.PT_LOAD), key=lambda p: p.p_paddr))
        self.notes = tuple(self._read_notes())

    def _file(self, offset: int, size: int, what: str, code: int) -> bytes:
        if size < 0 or offset < 0 or offset + size > self.size:
            raise VmcoreError(f"{self.name}: cannot read {what}: {size:#x} bytes at file offset {offset:#x} pass "
                              f"the end of the file ({self.size:#x} bytes; truncated?)", code)
        return bytes(self.buf[offset:offset + size])

    def _read_notes(self) -> Iterator[Note]:
        for p in self.phdrs:
            if p.p_type != elfcore.PT_NOTE:
                continue
            if p.p_filesz >= 1 << 63:
                raise VmcoreError(f"{self.name}: a note segment of {p.p_filesz} bytes", EXIT_NOTE_SIZE)
            blob = self._file(p.p_offset, p.p_filesz, "a note segment", EXIT_NOTES)
            try:  # kexec-tools keeps the notes before one that runs past the segment
                for n in elfcore.iter_notes(blob):
                    yield Note(n.name, n.type, n.desc)
            except elfcore.ElfCoreError:
                pass

    def note(self, name: bytes, type_: int = 0) -> Note | None:
        return next((n for n in self.notes if n.name == name and n.type == type_), None)

    # -- memory by physical (machine) address --------------------------------------------------------

    def _load_at(self, paddr: int) -> elfcore.Phdr | None:
        for p in self.loads:
            if p.p_paddr <= paddr < p.p_paddr + p.p_memsz:
                return p
        return None

    def phys(self, paddr: int, size: int, what: str, code: int) -> bytes:
        """`size` bytes of the crashed machine's memory at physical `paddr` (zeros past a PT_LOAD's p_filesz)."""
        out = bytearray()
        while size > 0:
            p = self._load_at(paddr)
            if p is None:
                raise VmcoreError(f"{self.name}: {what}: physical address {paddr:#x} is in no PT_LOAD of the core",
                                  EXIT_NO_MAPPING)
            delta = paddr - p.p_paddr
            n = min(size, p.p_memsz - delta)
            infile = max(0, min(n, p.p_filesz - delta))
            if infile:
                out += self._file(p.p_offset + delta, infile, what, code)
            out += bytes(n - infile)
            paddr += n
            size -= n
        return bytes(out)

    def by_vaddr(self, vaddr: int) -> tuple[int, int] | None:
        """(paddr, bytes left in the PT_LOAD) for a virtual address by the PT_LOADs' p_vaddr (kexec-tools' way)."""
        for p in self.loads:
            if p.p_vaddr <= vaddr < p.p_vaddr + p.p_memsz:
                return p.p_paddr + (vaddr - p.p_vaddr), p.p_vaddr + p.p_memsz - vaddr
        return None


# ------------------------------------------------------------------------------------------ address spaces

class P2M:
    """A Xen PV domain's pseudo-physical -> machine frame map, from the top of its three-level frame tree
    (shared_info.arch.pfn_to_mfn_frame_list_list: a page of mid-page frames, each a page of leaf-page frames,
    each a page of 512 machine frame numbers)."""

    def __init__(self, core: Core, top_mfn: int):
        self.core = core
        self.top_mfn = top_mfn
        self._leaves: dict[int, int] = {}

    def _entry(self, mfn: int, index: int, what: str) -> int:
        entry: int = struct.unpack("<Q", self.core.phys(mfn * PAGE_SIZE + index * 8, 8, what, EXIT_POINTER))[0]
        return entry

    def __call__(self, paddr: int) -> int:
        pfn = paddr // PAGE_SIZE
        if pfn >= P2M_PER_PAGE ** 3:
            raise VmcoreError(f"{self.core.name}: pseudo-physical {paddr:#x} is beyond dom0's p2m", EXIT_NO_MAPPING)
        leaf = self._leaves.get(pfn // P2M_PER_PAGE)
        if leaf is None:
            mid = self._entry(self.top_mfn, pfn // P2M_PER_PAGE ** 2, "dom0's p2m tree (top)")
            leaf = self._entry(mid & ~P2M_FLAG_BITS, (pfn // P2M_PER_PAGE) % P2M_PER_PAGE, "dom0's p2m tree (mid)")
            self._leaves[pfn // P2M_PER_PAGE] = leaf = leaf & ~P2M_FLAG_BITS
        mfn = self._entry(leaf, pfn % P2M_PER_PAGE, "dom0's p2m")
        if mfn == P2M_INVALID:
            raise VmcoreError(f"{self.core.name}: dom0's p2m has no machine frame for pseudo-physical {paddr:#x}",
                              EXIT_NO_MAPPING)
        return (mfn & ~P2M_FLAG_BITS) * PAGE_SIZE + paddr % PAGE_SIZE


def _number(info: dict[str, str], key: str, base: int = 10) -> int | None:
    value = info.get(key)
    if value is None:
        return None
    try:
        return int(value, base)
    except ValueError:
        return int(value, 16) if base == 10 and re.fullmatch(r"(0x)?[0-9a-fA-F]+", value) else None


class KernelMemory:
    """The crashed kernel's virtual address space, read from a Core.

    to_phys(): the kernel image by __pa_symbol's formula; anything else by a walk of the kernel's page tables
    (the entries hold machine addresses under Xen PV); the PT_LOADs' p_vaddr when VMCOREINFO names neither.
    `pfn_to_machine` turns a (pseudo-)physical address of the kernel into the core's (machine) address."""

    def __init__(self, core: Core, info: dict[str, str], pfn_to_machine: Callable[[int], int] | None = None):
        self.core = core
        self.info = info
        self.to_machine = pfn_to_machine or (lambda a: a)
        self.phys_base = _number(info, "NUMBER(phys_base)")
        self.image_size = _number(info, "NUMBER(KERNEL_IMAGE_SIZE)") or DEFAULT_KERNEL_IMAGE_SIZE
        self.levels = 5 if _number(info, "NUMBER(pgtable_l5_enabled)") else 4
        self.sme_mask = _number(info, "NUMBER(sme_mask)") or 0
        pgd = symbol(info, "init_top_pgt") or symbol(info, "init_level4_pgt")
        self.root = None
        if pgd is not None and self.phys_base is not None and self._in_image(pgd):
            self.root = self.to_machine(pgd - START_KERNEL_MAP + self.phys_base)
        self._pages: dict[int, int] = {}

    def _in_image(self, va: int) -> bool:
        return START_KERNEL_MAP <= va < START_KERNEL_MAP + self.image_size

    def _walk(self, va: int) -> int | None:
        table = self.root
        if table is None:  # no page tables known (callers check)
            return None
        for level in range(self.levels, 0, -1):
            shift = 12 + 9 * (level - 1)
            entry: int = struct.unpack("<Q", self.core.phys(table + ((va >> shift) & 511) * 8, 8,
                                                       "a page table", EXIT_POINTER))[0]
            if not entry & PTE_PRESENT:
                return None
            addr = entry & PTE_ADDR_MASK & ~self.sme_mask
            if level in (2, 3) and entry & PTE_PSE:
                span = 1 << shift
                return (addr & ~(span - 1)) + (va & (span - 1))
            table = addr
        return table + (va & 0xFFF)

    def machine(self, va: int, what: str) -> int:
        """The core (machine) address of virtual `va`."""
        page = va & ~0xFFF
        base = self._pages.get(page)
        if base is None:
            if self._in_image(va) and self.phys_base is not None:
                base = self.to_machine(page - START_KERNEL_MAP + self.phys_base)
            elif self.root is not None and (got := self._walk(page)) is not None:
                base = got
            elif (hit := self.core.by_vaddr(page)) is not None:
                base = hit[0]
            else:
                raise VmcoreError(f"{self.core.name}: {what}: no program header or page table maps virtual address "
                                  f"{va:#x}", EXIT_NO_MAPPING)
            self._pages[page] = base
        return base + (va & 0xFFF)

    def read(self, va: int, size: int, what: str, code: int = EXIT_RING_READ) -> bytes:
        out = bytearray()
        while size > 0:
            n = min(size, PAGE_SIZE - (va & 0xFFF))
            out += self.core.phys(self.machine(va, what), n, what, code)
            va = (va + n) % (1 << 64)
            size -= n
        return bytes(out)

    def u64(self, va: int, what: str) -> int:
        value: int = struct.unpack("<Q", self.read(va, 8, what, EXIT_POINTER))[0]
        return value

    def u32(self, va: int, what: str) -> int:
        value: int = struct.unpack("<I", self.read(va, 4, what, EXIT_VALUE))[0]
        return value


def symbol(info: dict[str, str], name: str) -> int | None:
    return _number(info, f"SYMBOL({name})", 16)


def _required_symbol(info: dict[str, str], name: str, code: int) -> int:
    """SYMBOL(name), which must be there and non-zero."""
    value = symbol(info, name)
    if not value:
        raise VmcoreError(f"VMCOREINFO has no SYMBOL({name})", code)
    return value


# ------------------------------------------------------------------------------------------ the log formats

def timestamp(ts_nsec: int) -> bytes:
    sec, rem = divmod(ts_nsec, 1_000_000_000)
    return b"[%5d.%06d] " % (sec, rem // 1000)


_UNPRINTABLE = re.compile(rb"[^\x20-\x7e\t\n\v\f\r]")


def escape(text: bytes) -> bytes:
    """kexec-tools' escaping: bytes that are not isprint() or isspace() in the C locale become \\xNN."""
    return _UNPRINTABLE.sub(lambda m: b"\\x%02x" % m[0][0], text)


class Layout:
    """SIZE()/OFFSET() values of VMCOREINFO, each required."""

    def __init__(self, info: dict[str, str], code: int):
        self.info = info
        self.code = code

    def __call__(self, key: str) -> int:
        value = _number(self.info, key)
        if value is None or value < 0:
            raise VmcoreError(f"VMCOREINFO has no {key}: cannot walk the printk ring buffer", self.code)
        return value


def lockless_records(mem: KernelMemory, info: dict[str, str]) -> Iterator[bytes]:
    """Linux 5.10+: the lines of the printk ring buffer SYMBOL(prb) points at."""
    L = Layout(info, EXIT_RING_LAYOUT)
    prb = mem.u64(_required_symbol(info, "prb", EXIT_RING_LAYOUT), "the prb pointer")
    rb = mem.read(prb, L("SIZE(printk_ringbuffer)"), "the printk_ringbuffer")
    dr, tr, counter = L("OFFSET(printk_ringbuffer.desc_ring)"), L("OFFSET(printk_ringbuffer.text_data_ring)"), \
        L("OFFSET(atomic_long_t.counter)")

    def field(blob: bytes, offset: int, fmt: str = "<Q") -> int:
        if offset + struct.calcsize(fmt) > len(blob):
            raise VmcoreError(f"VMCOREINFO's offsets point past SIZE() of their structure ({offset})",
                              EXIT_RING_LAYOUT)
        value: int = struct.unpack_from(fmt, blob, offset)[0]
        return value

    count_bits = field(rb, dr + L("OFFSET(prb_desc_ring.count_bits)"), "<I")
    size_bits = field(rb, tr + L("OFFSET(prb_data_ring.size_bits)"), "<I")
    if not (count_bits <= size_bits and 4 <= size_bits <= 31):  # the kernel: count_bits = size_bits - 5
        raise VmcoreError(f"the printk ring buffer claims 2^{count_bits} descriptors and 2^{size_bits} bytes of text: "
                          "corrupt", EXIT_RING_LAYOUT)
    count, data_size = 1 << count_bits, 1 << size_bits
    descs = field(rb, dr + L("OFFSET(prb_desc_ring.descs)"))
    infos = field(rb, dr + L("OFFSET(prb_desc_ring.infos)"))
    data = field(rb, tr + L("OFFSET(prb_data_ring.data)"))
    head = field(rb, dr + L("OFFSET(prb_desc_ring.head_id)") + counter)
    tail = field(rb, dr + L("OFFSET(prb_desc_ring.tail_id)") + counter)
    desc_size, info_size = L("SIZE(prb_desc)"), L("SIZE(printk_info)")
    state_at = L("OFFSET(prb_desc.state_var)") + counter
    lpos = L("OFFSET(prb_desc.text_blk_lpos)")
    begin_at, next_at = lpos + L("OFFSET(prb_data_blk_lpos.begin)"), lpos + L("OFFSET(prb_data_blk_lpos.next)")
    ts_at, len_at = L("OFFSET(printk_info.ts_nsec)"), L("OFFSET(printk_info.text_len)")

    for what, base, size in (("the descriptor ring", descs, count * desc_size), ("the printk_info ring",
                             infos, count * info_size), ("the text data ring", data, data_size)):
        mem.machine(base + size - 1, what)  # all of it mapped: a corrupt size fails here, not in a long loop
    n = ((head - tail) & DESC_ID_MASK) + 1
    first = tail if n <= count else (head - count + 1) & DESC_ID_MASK  # a corrupt tail: the last `count` ids
    for i in range(min(n, count)):
        rid = (first + i) & DESC_ID_MASK
        index = rid % count
        desc = mem.read(descs + index * desc_size, desc_size, "a printk descriptor")
        state = field(desc, state_at)
        if state & DESC_ID_MASK != rid or state >> 62 not in (DESC_COMMITTED, DESC_FINALIZED):
            continue  # reserved by a writer, reusable, or overwritten: not a record to show
        rec = mem.read(infos + index * info_size, info_size, "a printk_info")
        line = timestamp(field(rec, ts_at))
        begin, nxt = field(desc, begin_at), field(desc, next_at)
        if not (begin & 1 and nxt & 1):  # LPOS_DATALESS: no text
            if begin >> size_bits == nxt >> size_bits:
                start, size = begin % data_size, nxt - begin
            elif (begin + data_size) >> size_bits == nxt >> size_bits:  # a wrapping block sits at the start
                start, size = 0, nxt % data_size
            else:
                start, size = 0, 0
            if size >= 8 and start + size <= data_size:  # the block begins with its descriptor id
                text_len = min(field(rec, len_at, "<H"), size - 8)
                line += escape(mem.read(data + start + 8, text_len, "a printk text block"))
        yield line + b"\n"


def record_log(mem: KernelMemory, info: dict[str, str]) -> Iterator[bytes]:
    """Linux 3.5-5.9: struct printk_log records from log_first_idx to log_next_idx in log_buf."""
    log_buf_at = _required_symbol(info, "log_buf", EXIT_REC_LOG_BUF)
    log_buf_len_at = _required_symbol(info, "log_buf_len", EXIT_REC_LEN)
    log_first_idx_at = _required_symbol(info, "log_first_idx", EXIT_REC_FIRST)
    log_next_idx_at = _required_symbol(info, "log_next_idx", EXIT_REC_NEXT)

    def layout(names: Sequence[str], code: int) -> int:
        for key in names:
            if (value := _number(info, key)) is not None:
                return value
        raise VmcoreError(f"VMCOREINFO has no {names[-1]}", code)

    log_sz = layout(("SIZE(log)", "SIZE(printk_log)"), EXIT_REC_SIZE)
    ts_at = layout(("OFFSET(log.ts_nsec)", "OFFSET(printk_log.ts_nsec)"), EXIT_REC_TS)
    len_at = layout(("OFFSET(log.len)", "OFFSET(printk_log.len)"), EXIT_REC_LENOFF)
    text_len_at = layout(("OFFSET(log.text_len)", "OFFSET(printk_log.text_len)"), EXIT_REC_TEXTLEN)
    if not 0 < log_sz <= 4096 or max(ts_at + 8, len_at + 2, text_len_at + 2) > log_sz:
        raise VmcoreError(f"VMCOREINFO's struct printk_log layout is unusable (size {log_sz})", EXIT_REC_SIZE)
    log_buf = mem.u64(log_buf_at, "the log_buf pointer")
    buf_len = mem.u32(log_buf_len_at, "log_buf_len")
    first, nxt = mem.u32(log_first_idx_at, "log_first_idx"), mem.u32(log_next_idx_at, "log_next_idx")
    buf_len = buf_len if buf_len < 1 << 31 else 0  # an int in the kernel
    idx, wrapped = first, False
    while idx != nxt:
        if idx > buf_len - log_sz:
            raise VmcoreError(f"index {idx:#x} outside log_buf at {log_buf:#x} ({buf_len} bytes): the printk log "
                              "is corrupt", EXIT_REC_OUTSIDE)
        hdr = mem.read(log_buf + idx, log_sz, "a printk_log record", EXIT_REC_TS)
        length = struct.unpack_from("<H", hdr, len_at)[0]
        if not length:  # the end-of-buffer marker: wrap to the start (the kernel shows no line for it)
            if wrapped:
                raise VmcoreError(f"cycle in log_buf at {log_buf:#x} (index {idx:#x}): the printk log is corrupt",
                                  EXIT_REC_CYCLE)
            idx, wrapped = 0, True
            continue
        text_len = struct.unpack_from("<H", hdr, text_len_at)[0]
        text = mem.read(log_buf + idx + log_sz, min(text_len, max(0, buf_len - idx - log_sz)),
                        "a printk_log text", EXIT_REC_TS)
        yield timestamp(struct.unpack_from("<Q", hdr, ts_at)[0]) + escape(text) + b"\n"
        idx += length


def char_log(mem: KernelMemory, info: dict[str, str]) -> Iterator[bytes]:
    """Linux before 3.5: log_buf is a ring of characters ending at log_end."""
    log_buf_at = _required_symbol(info, "log_buf", EXIT_LEGACY_LOG_BUF)
    log_end_at = _required_symbol(info, "log_end", EXIT_LEGACY_LOG_END)
    log_buf_len_at = _required_symbol(info, "log_buf_len", EXIT_LEGACY_LEN)
    _required_symbol(info, "logged_chars", EXIT_LEGACY_CHARS)
    log_buf = mem.u64(log_buf_at, "the log_buf pointer")
    end = mem.u32(log_end_at, "log_end")
    buf_len = mem.u32(log_buf_len_at, "log_buf_len")
    if not 0 < buf_len <= LOG_BUF_LEN_MAX:
        raise VmcoreError(f"log_buf_len is {buf_len}: the printk log is corrupt", EXIT_LEGACY_LEN)
    chars = min(end, buf_len)
    start = (end - chars) % buf_len
    first = min(chars, buf_len - start)
    yield mem.read(log_buf + start, first, "log_buf", EXIT_LEGACY_LEN)
    if chars > first:
        yield mem.read(log_buf, chars - first, "log_buf", EXIT_LEGACY_LEN)


# ------------------------------------------------------------------------------------------------- a vmcore

def kernel_memory(core: Core) -> tuple[KernelMemory, dict[str, str]]:
    """The crashed Linux kernel's memory and VMCOREINFO; under Xen, dom0's through its p2m."""
    note = core.note(b"VMCOREINFO")
    xen = core.note(b"VMCOREINFO_XEN")
    if note is None:
        if xen is not None:
            raise VmcoreError(f"{core.name}: the core has Xen's VMCOREINFO_XEN but not dom0's VMCOREINFO, so the "
                              "dom0 kernel's log cannot be found", EXIT_LEGACY_LOG_BUF,
                              hint="load the crash kernel with kexloader, whose core header for a Xen dom0 carries "
                                   "dom0's VMCOREINFO")
        raise VmcoreError(f"{core.name}: no VMCOREINFO note: the log's symbols are unknown", EXIT_LEGACY_LOG_BUF)
    info = parse_vmcoreinfo(note.desc)
    to_machine = None
    crash_info = core.note(b"Xen", XEN_ELFNOTE_CRASH_INFO)
    if crash_info is not None:  # a Xen host: dom0 (PV) addresses are pseudo-physical
        at = 72 if len(crash_info.desc) >= 80 else 64  # crash_xen_info_t with/without xen_phys_start
        if len(crash_info.desc) < at + 8:
            raise VmcoreError(f"{core.name}: Xen's crash-info note is {len(crash_info.desc)} bytes, too short to "
                              "hold dom0's p2m", EXIT_NO_MAPPING)
        top = struct.unpack_from("<Q", crash_info.desc, at)[0]
        if top in (0, P2M_INVALID):
            raise VmcoreError(f"{core.name}: Xen recorded no p2m frame list for dom0 ({top:#x}): dom0's "
                              "pseudo-physical memory cannot be found in the machine's", EXIT_NO_MAPPING)
        to_machine = P2M(core, top)
    return KernelMemory(core, info, to_machine), info


def dmesg(core: Core) -> Iterator[bytes]:
    """The crashed kernel's log as kexec-tools' vmcore-dmesg prints it, a chunk at a time."""
    mem, info = kernel_memory(core)
    if symbol(info, "prb"):
        return lockless_records(mem, info)
    if symbol(info, "log_first_idx"):
        return record_log(mem, info)
    return char_log(mem, info)


class _Pread:
    """A read-only buffer over a file that cannot be mapped (len() and slices only)."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, s: slice) -> bytes:
        return os.pread(self.fd, s.stop - s.start, s.start)


def open_core(path: str) -> tuple[Core, Callable[[], None]]:
    """(Core, closer): the file mapped read-only (or read with pread when mmap is refused)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise VmcoreError(f"cannot open {path}: {e.strerror}", EXIT_OPEN) from None
    try:
        size = os.fstat(fd).st_size
        buf: mmap.mmap | _Pread
        try:
            buf = mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else _Pread(fd, 0)
        except (OSError, ValueError):
            buf = _Pread(fd, size)

        def close() -> None:
            if isinstance(buf, mmap.mmap):
                buf.close()
            os.close(fd)
        return Core(buf, path), close
    except BaseException:
        os.close(fd)
        raise


def main(argv: Sequence[str] | None = None, out: BinaryIO | None = None) -> int:
    """kexec-tools' `vmcore-dmesg FILE`: the log on stdout, or one line on stderr and its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv in (["-h"], ["--help"]):
        print(f"usage: {PROG} <kernel core file>\nPrint the kernel log of a crashed Linux kernel from /proc/vmcore "
              "or a saved ELF vmcore (also one taken from a Xen dom0 by kexloader).")
        return 0
    if len(argv) != 1:
        print(f"usage: {PROG} <kernel core file>", file=sys.stderr)
        return EXIT_USAGE
    out = out if out is not None else sys.stdout.buffer
    closer = None
    try:
        core, closer = open_core(argv[0])
        _write_all(dmesg(core), out)
        return 0
    except VmcoreError as e:
        print(f"{PROG}: {e}" + (f" ({e.hint})" if e.hint else ""), file=sys.stderr)
        return e.exit_code
    except OSError as e:  # /proc/vmcore refusing a read (EIO, EFAULT)
        print(f"{PROG}: {argv[0]}: read failed: {e.strerror or e}", file=sys.stderr)
        return EXIT_RING_READ
    finally:
        if closer is not None:
            closer()


def _write_all(chunks: Iterator[bytes], out: BinaryIO) -> None:
    """Write as the chunks come (a partial log is still worth having), as kexec-tools does."""
    written = 0
    try:
        for chunk in chunks:
            written += len(chunk)
            if written > LOG_BUF_LEN_MAX:
                raise VmcoreError("the log is over 2 GiB in size: not supported", EXIT_TOO_BIG)
            out.write(chunk)
        out.flush()
    except VmcoreError:
        _flush_quietly(out)
        raise
    except OSError as e:
        if isinstance(e, BrokenPipeError):  # `vmcore-dmesg ... | head`: stop quietly
            _silence_stdout()
        raise VmcoreError(f"failed to write out the log: {e.strerror or e}", EXIT_WRITE) from None


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _flush_quietly(out: BinaryIO) -> None:
    try:
        out.flush()
    except OSError:
        pass


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
