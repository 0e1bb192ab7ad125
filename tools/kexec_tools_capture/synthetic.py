"""A tiny synthetic 64-bit bzImage: a valid setup header and a recognisable payload, nothing bootable.

Enough for kexec-tools' bzImage64 probe (protocol >= 2.12, LOADED_HIGH, XLF_KERNEL_64 |
XLF_CAN_BE_LOADED_ABOVE_4G) and loader, so captures can be tested without a multi-megabyte Debian kernel.
"""

from __future__ import annotations

import struct


def make_bzimage(payload_size: int = 64 * 1024, setup_sects: int = 1, init_size: int = 0x400000,
                 kernel_alignment: int = 0x200000, pref_address: int = 0x1000000, cmdline_size: int = 2047,
                 xloadflags: int = 0x3, version: int = 0x020F) -> bytes:
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    struct.pack_into("<H", setup, 0x1FE, 0xAA55)
    setup[0x200] = 0xEB            # jmp rel8 ...
    setup[0x201] = 0x6C - 0x02     # ... to 0x26c: the header ends after kernel_info_offset (0x268 + 4)
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    setup[0x211] = 0x01            # loadflags: LOADED_HIGH
    struct.pack_into("<I", setup, 0x214, 0x100000)  # code32_start
    struct.pack_into("<I", setup, 0x22C, 0x7FFFFFFF)  # initrd_addr_max
    struct.pack_into("<I", setup, 0x230, kernel_alignment)
    setup[0x234] = 1               # relocatable_kernel
    setup[0x235] = 21              # min_alignment
    struct.pack_into("<H", setup, 0x236, xloadflags)
    struct.pack_into("<I", setup, 0x238, cmdline_size)
    struct.pack_into("<Q", setup, 0x258, pref_address)
    struct.pack_into("<I", setup, 0x260, init_size)
    payload = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(payload_size))
    struct.pack_into("<I", setup, 0x1F4, (payload_size + 15) // 16)  # syssize
    return bytes(setup) + payload
