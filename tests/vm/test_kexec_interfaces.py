"""The kernel's newer kexec interfaces in QEMU guests (issue 10 item 4): used on Debian's 7.3.4 (deb13-bpo),
refused in one line on Debian 12's 6.1 (deb12).

* status: 7.3 has /sys/kernel/kexec/{loaded,crash_loaded,crash_size,crash_elfcorehdr_size,crash_cma_ranges} and
  the old names as symlinks; kexloader -S / -S -p / --print-ckr-size answer from them.
* -d: -s -d sends KEXEC_FILE_DEBUG and prints the kernel's own messages about the load ("kernel: ...").
* --no-cma with -s: KEXEC_FILE_NO_CMA on 7.3; one line and exit 253 on 6.1.
* crashkernel=...,cma: the CMA range is left out of the vmcore's PT_LOADs and is RAM for the crash kernel.
* --hotplug: memory is hot-added (QEMU pc-dimm through the monitor) after the crash kernel is loaded; the
  kernel rewrites our elfcorehdr, the purgatory (which does not verify that segment) still hands over, and
  the crash kernel's /proc/vmcore has a PT_LOAD for the new memory. CPU hot-add cannot be shown here: with
  QEMU 7.2's ACPI tables 7.3 counts only the present CPUs as possible ("CPU topo: Allowing 1 present CPUs
  plus 0 hotplug CPUs", and "ACPI: Unable to map lapic to logical cpu number" on device_add, even with
  possible_cpus=2), so there is no CPU to add.
* 6.1: --hotplug is refused in one line, exit 1 (no CONFIG_CRASH_HOTPLUG files).
"""

from __future__ import annotations

import shlex

import pytest

from tools.vm import new_token

from kexloader.formats import elfcore

pytestmark = pytest.mark.vm

NEW = "deb13-bpo"  # Debian's 7.3.4
OLD = "deb12"  # Debian 12's 6.1
TIMEOUT = 480
HOTPLUG_BASE = 0x100000000  # where QEMU's first pc-dimm goes with -m 2G,slots=2,maxmem=4G (measured)
HOTPLUG_SIZE = 256 << 20

DUMP = r"""
mark_file cmdline /proc/cmdline
[ -e /proc/vmcore ] || die "no /proc/vmcore: this kernel was not booted as a kdump kernel"
head -c 65536 /proc/vmcore > /tmp/vmcore.head
mark_b64 vmcore_head /tmp/vmcore.head
mark_file iomem /proc/iomem
"""

KEXEC_FILES = r"""
mark kexec_dir "$(ls /sys/kernel/kexec 2>&1 | tr '\n' ' ')"
mark kexec_links "$(cd /sys/kernel && for f in kexec_* crash_elfcorehdr_size; do
    [ -e $f ] && printf '%s->%s ' $f "$(readlink $f)"; done)"
for f in loaded crash_loaded crash_size crash_elfcorehdr_size crash_cma_ranges; do
    mark "kexec:$f" "$(cat /sys/kernel/kexec/$f 2>/dev/null | tr '\n' ' ')"
done
mark osrelease "$(cat /proc/sys/kernel/osrelease)"
mark_file iomem0 /proc/iomem
"""

# 7.3: status, -d, --no-cma, then a crash kernel over crashkernel=...,cma
FIRST_NEW = KEXEC_FILES + r"""
run status0 kexloader -S -p
run ckr kexloader --print-ckr-size
run file_debug kexloader -s -d -l /boot/vmlinuz --append="console=ttyS0"
run status_l kexloader -S -l
run unload_file kexloader -s -u
run file_nocma kexloader -s --no-cma -l /boot/vmlinuz --append="console=ttyS0"
mark loaded_nocma "$(cat /sys/kernel/kexec/loaded)"
run classic_debug kexloader -c -d -l /boot/vmlinuz --append="console=ttyS0"
run load kexloader -c -p /boot/vmlinuz --initrd=/leaf.img --append="$APPEND" -d
run status1 kexloader -S -p
mark crash_loaded "$(cat /sys/kernel/kexec/crash_loaded)"
crash
mark crash_returned
"""

# the kernel's own kexec_file_load over the same crashkernel=...,cma, for comparison; with --hotplug, which for
# kexec_file_load needs no flag (the kernel updates file-loaded crash images by itself)
FIRST_FILE_CMA = r"""
mark cma "$(cat /sys/kernel/kexec/crash_cma_ranges)"
mark_file iomem0 /proc/iomem
run load kexloader -s -p /boot/vmlinuz --initrd=/leaf.img --append="$APPEND" --hotplug -d
mark crash_loaded "$(cat /sys/kernel/kexec/crash_loaded)"
hp=/sys/devices/system
mark crash_hotplug "cpu=$(cat $hp/cpu/crash_hotplug) memory=$(cat $hp/memory/crash_hotplug)"
crash
mark crash_returned
"""

FIRST_HOTPLUG = r"""
dmesg -n 1  # the memory hot-add logs while markers are printed: keep kernel messages off the console
run load kexloader -c -p /boot/vmlinuz --initrd=/leaf.img --append="$APPEND" --hotplug -d
mark crash_loaded "$(cat /sys/kernel/kexec/crash_loaded)"
hp=/sys/devices/system
mark crash_hotplug "cpu=$(cat $hp/cpu/crash_hotplug) memory=$(cat $hp/memory/crash_hotplug)"
mark ready 1
i=0
while ! grep -q '^100000000-' /proc/iomem && [ $i -lt 300 ]; do sleep 1; i=$((i + 1)); done
mark_file iomem_after /proc/iomem
crash
mark crash_returned
"""

FIRST_OLD = KEXEC_FILES + r"""
mark old_files "$(ls /sys/kernel | grep -E 'kexec|crash' | tr '\n' ' ')"
run status0 kexloader -S -p
run ckr kexloader --print-ckr-size
run hotplug kexloader -c -p /boot/vmlinuz --initrd=/leaf.img --append="console=ttyS0" --hotplug
run s_hotplug kexloader -s -p /boot/vmlinuz --append="console=ttyS0" --hotplug
run nocma kexloader -s --no-cma -l /boot/vmlinuz --append="console=ttyS0"
run a_nocma kexloader -a --no-cma -l /boot/vmlinuz --append="console=ttyS0"
run status_l kexloader -S -l
run s_debug kexloader -s -d -l /boot/vmlinuz --append="console=ttyS0"
mark crash_loaded "$(cat /sys/kernel/kexec_crash_loaded)"
"""


def crash_append(token: str) -> str:
    return f"console=ttyS0 panic=-1 stage=dump irqpoll nr_cpus=1 reset_devices token={token}"


def guest(h, stage: str, append: str):
    leaf = h.leaf(stages={"dump": DUMP})
    return h.full(stages={"first": f"APPEND={shlex.quote(append)}\n{stage}\n"}, leaf=leaf)


def loads_of(t) -> list[elfcore.Phdr]:
    hdr = elfcore.parse_headers(t.b64("vmcore_head"))
    return [p for p in hdr.phdrs if p.p_type == elfcore.PT_LOAD]


def iomem_ram(text: str) -> list[tuple[int, int]]:
    out = []
    for line in text.splitlines():
        if line.endswith(": System RAM") and not line.startswith(" "):
            a, b = line.split(" : ")[0].split("-")
            out.append((int(a, 16), int(b, 16) + 1))
    return out


def one_line(t, name: str) -> str:
    lines = t.out(name).strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in t.out(name), t.out(name)
    return lines[0]


# ------------------------------------------------------------------------------------------- 7.3

@pytest.fixture(scope="module")
def new_kernel(harness_for):
    h = harness_for(NEW)
    append = crash_append(new_token())
    t = h.boot(guest(h, FIRST_NEW, append), f"stage=first token={new_token()} crashkernel=384M crashkernel=64M,cma",
               name="kexec-interfaces", timeout=TIMEOUT)
    t.append = append
    return t


def test_73_status_through_sys_kernel_kexec(new_kernel):
    t = new_kernel
    assert t.get("osrelease").startswith("7.3"), t.get("osrelease")
    assert t.get("kexec_dir").split() == ["crash_cma_ranges", "crash_elfcorehdr_size", "crash_loaded", "crash_size",
                                          "loaded"]
    links = t.get("kexec_links")
    assert "kexec_loaded->kexec/loaded" in links and "kexec_crash_loaded->kexec/crash_loaded" in links
    assert t.rc("status0") == 0, t.out("status0")  # nothing loaded
    assert t.rc("ckr") == 0 and int(t.out("ckr")) == 384 << 20 == int(t.get("kexec:crash_size"))
    assert t.rc("status_l") == 1, t.out("status_l")  # the -s -d load is there
    assert t.rc("status1") == 1 and t.get("crash_loaded") == "1"


def test_73_s_d_sends_kexec_file_debug_and_shows_the_kernels_log(new_kernel):
    t = new_kernel
    assert t.rc("file_debug") == 0, t.out("file_debug")
    out = t.out("file_debug")
    assert "kexec_file_load flags 0x8" in out or "kexec_file_load flags 0xc" in out, out
    assert "kernel: kexec_file" in out, out  # kexec_dprintk messages of the load, read from /dev/kmsg


def test_73_no_cma_and_classic_debug(new_kernel):
    t = new_kernel
    assert t.rc("unload_file") == 0, t.out("unload_file")
    assert t.rc("file_nocma") == 0 and t.get("loaded_nocma") == "1", t.out("file_nocma")
    # 7.3 has no kexec_load debug flag: -c -d loads without it (kexec-tools' KEXEC_DEBUG would get EINVAL)
    assert t.rc("classic_debug") == 0, t.out("classic_debug")


def test_73_cma_ranges_are_out_of_the_dump_and_ram_for_the_crash_kernel(new_kernel):
    t = new_kernel
    assert t.rc("load") == 0, t.out("load")
    (start, last) = (int(x, 16) for x in t.get("kexec:crash_cma_ranges").split()[0].split("-"))
    cma = (start, last + 1)
    assert f"crash CMA [{start:#x}, {last + 1:#x})" in t.out("load"), t.out("load")
    assert t.stages() == ["first", "dump"], t.summary()
    assert not t.has("crash_returned")
    loads = loads_of(t)
    assert loads and all(p.p_paddr + p.p_memsz <= cma[0] or p.p_paddr >= cma[1] for p in loads), \
        [(hex(p.p_paddr), hex(p.p_memsz)) for p in loads]
    crash_ram = iomem_ram(t.b64("iomem").decode())
    assert any(a <= cma[0] and cma[1] <= b for a, b in crash_ram), crash_ram  # the crash kernel's RAM


def ram_loads(t) -> set[tuple[int, int]]:
    """(paddr, size) of the vmcore's RAM PT_LOADs (the kernel-text mapping left out: KASLR moves it)."""
    return {(p.p_paddr, p.p_memsz) for p in loads_of(t) if p.p_vaddr < 0xFFFFFFFF80000000}


def expected_ram_loads(t, cma_marker: str) -> set[tuple[int, int]]:
    """The rule of the kernel's kexec_file path (elf_header_exclude_ranges), from the first kernel's own
    /proc/iomem and crash_cma_ranges: System RAM minus [0, 1 MiB), the crash region and the CMA ranges."""
    text = t.b64("iomem0").decode()
    pieces = [(max(a, 1 << 20), b) for a, b in iomem_ram(text) if b > 1 << 20]
    holes = []
    for line in text.splitlines():
        if line.strip().endswith(": Crash kernel"):
            a, b = line.strip().split(" : ")[0].split("-")
            holes.append((int(a, 16), int(b, 16) + 1))
    for word in t.get(cma_marker).split():
        a, b = word.split("-")
        holes.append((int(a, 16), int(b, 16) + 1))
    for ha, hb in holes:
        pieces = [q for a, b in pieces for q in ((a, min(b, ha)), (max(a, hb), b)) if q[0] < q[1]]
    return {(a, b - a) for a, b in pieces}


def test_73_cma_dump_ranges_are_the_kernels_own(harness_for, new_kernel):
    """The same machine and command line, the crash kernel loaded by the kernel's kexec_file_load (-s): its
    elfcorehdr and ours both have exactly the RAM PT_LOADs System RAM minus the first MiB, the crash region
    and the CMA ranges, each on its own boot."""
    h = harness_for(NEW)
    append = crash_append(new_token())
    line = f"stage=first token={new_token()} crashkernel=384M crashkernel=64M,cma"
    t = h.boot(guest(h, FIRST_FILE_CMA, append), line, name="kexec-file-cma", timeout=TIMEOUT)
    assert t.rc("load") == 0 and t.get("crash_loaded") == "1", t.out("load")
    assert "kexec_file_load flags 0xa" in t.out("load")  # ON_CRASH | DEBUG: no hotplug flag exists for -s
    assert t.get("crash_hotplug") == "cpu=1 memory=1"  # yet the kernel will update it
    assert t.stages() == ["first", "dump"], t.summary()
    # CMA and the kernel move between boots (KASLR): both headers follow the same rule on their own machine
    assert ram_loads(t) == expected_ram_loads(t, "cma"), (sorted(ram_loads(t)), t.get("cma"))
    assert ram_loads(new_kernel) == expected_ram_loads(new_kernel, "kexec:crash_cma_ranges"), \
        (sorted(ram_loads(new_kernel)), new_kernel.get("kexec:crash_cma_ranges"))
    (start, last) = (int(x, 16) for x in t.get("cma").split()[0].split("-"))
    crash_ram = iomem_ram(t.b64("iomem").decode())
    assert any(a <= start and last < b for a, b in crash_ram), crash_ram  # the kernel gives it as RAM too


def test_73_hotplug_memory_reaches_the_dump(harness_for):
    h = harness_for(NEW)
    append = crash_append(new_token())
    vm = h.start(guest(h, FIRST_HOTPLUG, append), f"stage=first token={new_token()} crashkernel=384M",
                 name="kexec-hotplug", timeout=TIMEOUT, memory="2G,slots=2,maxmem=4G", monitor=True)
    try:
        vm.wait_for_marker("ready", timeout=TIMEOUT)
        vm.monitor(f"object_add memory-backend-ram,id=hp1,size={HOTPLUG_SIZE}")
        vm.monitor("device_add pc-dimm,id=dimm1,memdev=hp1")
        t = vm.wait()
    finally:
        vm.kill()
    assert t.rc("load") == 0, t.out("load")
    assert "room for hotplug" in t.out("load") and "flags 0x3e0005" in t.out("load"), t.out("load")
    assert t.get("crash_loaded") == "1"
    assert t.get("crash_hotplug") == "cpu=1 memory=1"  # the kernel will update our image
    assert (HOTPLUG_BASE, HOTPLUG_BASE + HOTPLUG_SIZE) in iomem_ram(t.b64("iomem_after").decode())
    assert t.stages() == ["first", "dump"], t.summary()  # the purgatory handed over with a rewritten header
    loads = loads_of(t)
    assert any(p.p_paddr == HOTPLUG_BASE and p.p_memsz == HOTPLUG_SIZE for p in loads), \
        [(hex(p.p_paddr), hex(p.p_memsz)) for p in loads]


# ------------------------------------------------------------------------------------------- 6.1

def test_61_refuses_hotplug_and_no_cma_in_one_line(harness_for):
    h = harness_for(OLD)
    t = h.boot(guest(h, FIRST_OLD, crash_append(new_token())), f"stage=first token={new_token()} crashkernel=384M",
               name="kexec-interfaces-old", timeout=TIMEOUT)
    assert t.timed_out is None, t.summary()
    assert t.get("osrelease").startswith("6.1."), t.get("osrelease")
    assert "No such file" in t.get("kexec_dir") or not t.get("kexec_dir").strip()
    assert "kexec_loaded" in t.get("old_files") and "crash_elfcorehdr_size" not in t.get("old_files")
    assert t.rc("status0") == 0 and t.rc("ckr") == 0 and int(t.out("ckr")) == 384 << 20
    assert t.rc("hotplug") == 1 and "CONFIG_CRASH_HOTPLUG" in one_line(t, "hotplug")
    assert t.rc("s_hotplug") == 1 and "CONFIG_CRASH_HOTPLUG" in one_line(t, "s_hotplug")
    assert t.rc("nocma") == 253 and "KEXEC_FILE_NO_CMA" in one_line(t, "nocma")
    assert t.rc("a_nocma") == 0, t.out("a_nocma")  # -a falls back to kexec_load, which never uses CMA
    assert t.rc("status_l") == 1
    assert t.rc("s_debug") == 0, t.out("s_debug")  # no KEXEC_FILE_DEBUG before 6.7: loaded without it
    assert "kexec_file_load flags 0x4" in t.out("s_debug"), t.out("s_debug")
    assert t.get("crash_loaded") == "0"
