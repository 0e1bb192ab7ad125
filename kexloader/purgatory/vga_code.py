"""--reset-vga: the purgatory puts the VGA back in text mode 3 (80x25 characters of 9x16 pixels, 720x400,
16 colours, text at 0xB8000) by writing the VGA registers, before the console and the checks.

A kernel that boots with no framebuffer driver of its own (vgacon on a machine whose first kernel left the
VGA in another mode, e.g. `vga=` 80x30/80x50 or a VGA graphics mode) then starts on a readable screen. The
values are mode 3's register set as IBM's VGA technical reference gives it (the BIOS parameter table of
mode 3; the register meanings as in the FreeVGA register reference). As in kexec-tools, the font is not
reloaded (plane 2 keeps whatever font was there) and a card left in a non-VGA mode by its own driver (a
VBE/DISPI linear framebuffer, a GPU's native mode) is not reached by VGA registers at all.
"""

from __future__ import annotations

from .asm import AL, EDX, Assembler

MISC_WRITE, INPUT_STATUS_1 = 0x3C2, 0x3DA  # reading input status 1 sets the attribute flip-flop to "index"
SEQ_INDEX, CRTC_INDEX, GC_INDEX, AC_INDEX = 0x3C4, 0x3D4, 0x3CE, 0x3C0  # data at index + 1 (AC: the same port)

MISC_OUTPUT = 0x67  # colour I/O at 0x3Dx, 28.322 MHz clock (720 pixels a line), RAM on, 400-line polarity
SEQUENCER = (0x03, 0x00, 0x03, 0x00, 0x02)  # reset off; 9-dot characters; planes 0-1; font 0; odd/even
CRTC = (0x5F, 0x4F, 0x50, 0x82, 0x55, 0x81, 0xBF, 0x1F, 0x00, 0x4F, 0x0D, 0x0E, 0x00, 0x00, 0x00, 0x00,
        0x9C, 0x8E, 0x8F, 0x28, 0x1F, 0x96, 0xB9, 0xA3, 0xFF)  # 80 columns, 400 scan lines, 16-line characters
GRAPHICS = (0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x0E, 0x00, 0xFF)  # odd/even, text, memory at 0xB8000-0xBFFFF
ATTRIBUTE = (0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D, 0x3E, 0x3F,
             0x0C, 0x00, 0x0F, 0x08, 0x00)  # the 16-colour palette; text, line graphics on; 4 planes; 9-dot pan
SEQ_SYNC_RESET = 0x01  # sequencer register 0 while the clock changes (bit 1 clear: synchronous reset)
CRTC_UNPROTECT = CRTC[0x11] & 0x7F  # register 0x11 with bit 7 clear: registers 0-7 writable
AC_ENABLE_DISPLAY = 0x20  # the attribute index port's PAS bit: the palette back to the display


def writes() -> list[tuple[int, int | None]]:
    """The port accesses in order: (port, byte) for OUT, (port, None) for an IN whose value is not used."""
    out: list[tuple[int, int | None]] = [(INPUT_STATUS_1, None), (AC_INDEX, 0x00)]  # display off while we write
    out += [(SEQ_INDEX, 0), (SEQ_INDEX + 1, SEQ_SYNC_RESET), (MISC_WRITE, MISC_OUTPUT)]
    for i, v in list(enumerate(SEQUENCER))[1:] + [(0, SEQUENCER[0])]:  # register 0 last: out of reset
        out += [(SEQ_INDEX, i), (SEQ_INDEX + 1, v)]
    out += [(CRTC_INDEX, 0x11), (CRTC_INDEX + 1, CRTC_UNPROTECT)]
    for table, port in ((CRTC, CRTC_INDEX), (GRAPHICS, GC_INDEX)):
        for i, v in enumerate(table):
            out += [(port, i), (port + 1, v)]
    out.append((INPUT_STATUS_1, None))
    for i, v in enumerate(ATTRIBUTE):  # index then value on one port; the flip-flop alternates by itself
        out += [(AC_INDEX, i), (AC_INDEX, v)]
    out += [(INPUT_STATUS_1, None), (AC_INDEX, AC_ENABLE_DISPLAY)]
    return out


def emit_reset_vga(a: Assembler) -> None:
    """Straight-line port I/O (about 600 bytes, only with --reset-vga). Clobbers eax and edx."""
    for port, value in writes():
        a.mov(EDX, port)
        if value is None:
            a.inb()
        else:
            a.mov(AL, value)
            a.outb()
