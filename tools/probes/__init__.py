"""Probe kernels: tiny synthetic kernels that print, in one line on COM1, exactly what they were handed.

    python3 tools/probes/build.py            # (re)write fixtures/probes/*
    python3 tools/probes/build.py --check    # exit 1 if the fixtures differ from what the builder makes

* `bzprobe.bzImage` — a bzImage (boot protocol 2.15, 64-bit entry at +0x200, relocatable, loadable above
  4 GiB) whose real-mode setup code also works, so QEMU's own `-kernel` loader (which runs the setup in real
  mode) reaches the same reporting code as a kexec loader that enters at +0x200.
* `mbprobe.elf` — an ELF32 with a multiboot 1 and a multiboot 2 header (Xen's layout) that reports the
  multiboot 1 or 2 information it finds in ebx.

The report line (decoded by `tools.probes.report`):

    @KXP1 kind=bz path=64 r.rax=<hex> ... m.zp@<addr>=<hex bytes> m.cmdline@<addr>=<hex bytes> ... end@

Values are hexadecimal; `m.NAME@ADDR=HEX` is a dump of memory at ADDR. The probe interprets as little as it
can (it follows the pointers it must follow to find the data) and the host decodes the rest. Afterwards it
writes EXIT_VALUE to an `isa-debug-exit` device at port 0xf4 (QEMU then exits with status 2*EXIT_VALUE+1)
and, if there is none, triple-faults, which ends QEMU when it runs with -no-reboot.
"""

REPORT_START = "@KXP1"
REPORT_END = "end@"
DEBUG_EXIT_PORT = 0xF4
EXIT_VALUE = 0x10
QEMU_EXIT_STATUS = 2 * EXIT_VALUE + 1  # what `-device isa-debug-exit,iobase=0xf4,iosize=0x04` makes QEMU return
DEBUG_EXIT_DEVICE = ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
COM1 = 0x3F8
MAX_DUMP = 16 << 20  # an initrd or module is dumped up to this many bytes (the report says the real size)
MAX_STRING = 4096  # command lines and other strings: at most this many bytes before the NUL
