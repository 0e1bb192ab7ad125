"""Image kinds, probed in kexec-tools' order (kexec/arch/x86_64/kexec-x86_64.c file_type[]).

Each kind module has `probe(data) -> bool` and `plan(req, facts, usable) -> Plan`.
"""

from __future__ import annotations

from ..errors import NotSupportedYet, UnknownFormatError, UsageError
from . import bzimage

ELF_MAGIC = b"\x7fELF"
MB1_MAGIC = (0x1BADB002).to_bytes(4, "little")
MB2_MAGIC = (0xE85250D6).to_bytes(4, "little")

# (name, module or None when not built yet, a cheap test for "this is that kind")
KINDS = [
    ("multiboot2-x86", None, lambda d: MB2_MAGIC in bytes(d[:32768])),
    ("elf-x86_64", None, lambda d: bytes(d[:4]) == ELF_MAGIC and d[4] == 2),
    ("multiboot-x86", None, lambda d: MB1_MAGIC in bytes(d[:8192])),
    ("elf-x86", None, lambda d: bytes(d[:4]) == ELF_MAGIC and d[4] == 1),
    ("bzImage64", bzimage, bzimage.probe),
    ("bzImage", None, bzimage.probe),
]
NAMES = [name for name, _, _ in KINDS]


def detect(data, name: str, forced: str | None = None):
    """The module that will plan this image, in probe order, or the one --type names."""
    if forced is not None:
        if forced not in NAMES:
            raise UsageError(f"unknown image type {forced!r}; known types: {', '.join(NAMES)}")
        actual = next((n for n, _, test in KINDS if test(data)), None)
        if actual != forced:
            # kexec-tools: "Wrong file type X, file matches type Y" and exit 255
            raise UnknownFormatError(f"{name}: wrong file type {forced}, file matches type {actual or 'none'}",
                                     exit_code=255)
    for kind, module, test in KINDS:
        if test(data):
            if forced and kind != forced:
                continue
            if module is None:
                raise NotSupportedYet(f"{name}: {kind} images are not supported yet")
            return module
    raise UnknownFormatError(f"{name}: cannot determine the file type (not a bzImage, ELF or multiboot image)")
