#!/usr/bin/env python3
"""Build the small synthetic images under fixtures/ (deterministic; rerun after changing kexloader/formats/).

    python3 tools/mkfixtures.py            # rewrite the fixtures
    python3 tools/mkfixtures.py --check    # exit 1 if a fixture differs from what this script builds
"""

import hashlib
import sys
from pathlib import Path

from kexloader.formats import bzimage as bz

ROOT = Path(__file__).resolve().parent.parent / "fixtures"


def tiny_bzimage(*, version=0x020F, xloadflags=bz.XLF_KERNEL_64 | bz.XLF_CAN_BE_LOADED_ABOVE_4G,
                 relocatable=1, payload=b"", setup_sects=4) -> bytes:
    """A bzImage whose protected-mode part is `payload` (64-bit entry at +0x200) padded to 16 bytes."""
    payload = payload or (b"\xf4" * 0x200 + b"\xfa\xf4\xeb\xfd").ljust(0x400, b"\0")  # hlt ... ; cli; hlt; jmp $-1
    payload = payload.ljust((len(payload) + 15) // 16 * 16, b"\0")
    header = bz.SetupHeader.build(dict(
        setup_sects=setup_sects, root_flags=1, syssize=len(payload) // 16, ram_size=0, vid_mode=0xFFFF,
        root_dev=0, jump=0x66EB if version >= 0x020F else 0x62EB, version=version, realmode_swtch=0,
        start_sys_seg=0x1000, kernel_version=0x100, type_of_loader=0, loadflags=bz.LOADED_HIGH, setup_move_size=0x8000,
        code32_start=0x100000, ramdisk_image=0, ramdisk_size=0, bootsect_kludge=0, heap_end_ptr=0,
        ext_loader_ver=0, ext_loader_type=0, cmd_line_ptr=0, initrd_addr_max=0x7FFFFFFF,
        kernel_alignment=0x200000, relocatable_kernel=relocatable, min_alignment=21, xloadflags=xloadflags,
        cmdline_size=2047, hardware_subarch=0, hardware_subarch_data=0, payload_offset=0, payload_length=0,
        setup_data=0, pref_address=0x1000000, init_size=0x400000, handover_offset=0, kernel_info_offset=0))
    setup = bytearray(bz.setup_size(setup_sects))
    setup[bz.SETUP_HEADER_OFFSET:bz.SETUP_HEADER_OFFSET + len(header)] = header
    setup[0x100:0x100 + 32] = b"kexloader test bzImage fixture\0\0"
    return bytes(setup) + payload


def tiny_multiboot(*, mb1_flags=0x3, mb2=True, mb2_relocatable=True, paddr=0x200000) -> bytes:
    """An ELF32 EM_386 image shaped like Debian's xen: one PT_LOAD at `paddr` from file offset 0x80,
    a multiboot 1 header at 0x88 and a multiboot 2 header at 0x98, entry at the start of the load."""
    import struct
    body = bytearray(b"\xeb\x7e" + bytes(6))  # jmp over the headers
    body += struct.pack("<III", 0x1BADB002, mb1_flags, -(0x1BADB002 + mb1_flags) & 0xFFFFFFFF)
    while (0x80 + len(body)) % 8:
        body += b"\0"
    if mb2:
        tags = struct.pack("<HHIII", 1, 0, 16, 4, 6)  # info request (required): meminfo, mmap
        tags += struct.pack("<HHI", 6, 0, 8)  # module alignment
        if mb2_relocatable:
            tags += struct.pack("<HHIIIII", 10, 1, 24, 0x200000, 0xFFFFFFFF, 0x200000, 2)
        tags += struct.pack("<HHI", 0, 0, 8)
        length = 16 + len(tags)
        body += struct.pack("<IIII", 0xE85250D6, 0, length, -(0xE85250D6 + length) & 0xFFFFFFFF) + tags
    body = bytes(body).ljust(0x100, b"\xf4")
    filesz, memsz = len(body), 0x3000
    ehdr = struct.pack("<16sHHIIIIIHHHHHH", b"\x7fELF\x01\x01\x01" + bytes(9), 2, 3, 1, paddr, 52, 0, 0,
                       52, 32, 1, 0, 0, 0)
    phdr = struct.pack("<IIIIIIII", 1, 0x80, paddr, paddr, filesz, memsz, 7, 0x20)
    return (ehdr + phdr).ljust(0x80, b"\0") + body


FIXTURES = {
    "multiboot/tiny-mb12.elf": tiny_multiboot,
    "multiboot/tiny-mb1.elf": lambda: tiny_multiboot(mb2=False),
    "bzimage/tiny.bzImage": tiny_bzimage,
    "bzimage/tiny-32bit-only.bzImage": lambda: tiny_bzimage(xloadflags=0),
    "bzimage/tiny-protocol-2.10.bzImage": lambda: tiny_bzimage(version=0x020A, xloadflags=0),
}


# --- ELF kernels (issue 4: kexloader/images/vmlinux.py) ---------------------------------------------

def _note(name: bytes, kind: int, desc: bytes) -> bytes:
    """One ELF note: namesz, descsz, type, name and desc each padded to 4 bytes."""
    import struct
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name) + 1, len(desc), kind) + pad(name + b"\0") + pad(desc)


def tiny_elf64(*, e_type=2, machine=62, entry=0x1000000, loads=None, notes=(), interp=False) -> bytes:
    """An ELF64 image: `loads` = [(paddr, vaddr, data, memsz, p_flags)], a PT_NOTE with `notes`
    = [(name, type, desc)], and a PT_INTERP if asked. Data follows the headers, unaligned in the file."""
    import struct
    if loads is None:
        code = (b"\xf4\xeb\xfd").ljust(0x200, b"\xf4")  # hlt; jmp $-1
        loads = [(0x1000000, 0xFFFFFFFF81000000, code, 0x3000, 5),
                 (0x1200000, 0xFFFFFFFF81200000, b"kexloader fixture data\0", 0x1000, 6)]
    phdrs = [("load", ld) for ld in loads]
    note_blob = b"".join(_note(n, t, d) for n, t, d in notes)
    if notes:
        phdrs.append(("note", note_blob))
    if interp:
        phdrs.append(("interp", b"/lib64/ld-linux-x86-64.so.2\0"))
    offset = 64 + 56 * len(phdrs)
    body, table = b"", b""
    for kind, item in phdrs:
        data = item[2] if kind == "load" else item
        at = offset + len(body)
        if kind == "load":
            paddr, vaddr, _, memsz, flags = item
            table += struct.pack("<IIQQQQQQ", 1, flags, at, vaddr, paddr, len(data), memsz, 0x200000)
        else:
            table += struct.pack("<IIQQQQQQ", 4 if kind == "note" else 3, 4, at, 0, 0, len(data), len(data), 4)
        body += data + bytes(-len(data) % 8)
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), e_type, machine, 1, entry, 64, 0,
                       0, 64, 56, len(phdrs), 64, 0, 0)
    return ehdr + table + body


LINUX_NOTES = ((b"Xen", 6, b"linux\0"), (b"Linux", 0x100, b"6.1.0-kexloader-fixture\0"))

FIXTURES.update({
    "elf/tiny-vmlinux.elf": lambda: tiny_elf64(notes=LINUX_NOTES),
    "elf/tiny-banner.elf": lambda: tiny_elf64(loads=[
        (0x1000000, 0xFFFFFFFF81000000, b"\xf4\xeb\xfd".ljust(0x100, b"\xf4"), 0x2000, 5),
        (0x1200000, 0xFFFFFFFF81200000, b"Linux version 6.1.0-banner (fixture) #1 SMP\n\0", 0x1000, 6)]),
    "elf/tiny-plain.elf": lambda: tiny_elf64(entry=0xFFFFFFFF81000000),  # no Linux marks; virtual e_entry
    "elf/tiny-dyn.elf": lambda: tiny_elf64(e_type=3, entry=0x10, loads=[(0, 0, b"\xf4" * 0x100, 0x2000, 7)]),
    "elf/tiny-interp.elf": lambda: tiny_elf64(interp=True),
    "elf/tiny-i386.elf": lambda: tiny_multiboot(mb1_flags=0, mb2=False)[:0x88] + bytes(12)
    + tiny_multiboot(mb1_flags=0, mb2=False)[0x94:],  # the multiboot 1 header wiped: a plain i386 ELF
})


def main(argv):
    check = "--check" in argv
    bad = 0
    for name, make in FIXTURES.items():
        path = ROOT / name
        data = make()
        if check:
            if not path.exists() or path.read_bytes() != data:
                print(f"{name}: differs from what tools/mkfixtures.py builds")
                bad = 1
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            print(f"{name}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    return bad


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
