"""Xen's kexec and memory hypercall ABI as seen from a 64-bit dom0 (xen/include/public/kexec.h, memory.h,
include/uapi/xen/privcmd.h). Guest handles are 8-byte virtual addresses; everything is little endian."""

from construct import Int8ul, Int16ul, Int32sl, Int32ul, Int64ul, Padding, Struct

HYPERVISOR_memory_op = 12
HYPERVISOR_kexec_op = 37

KEXEC_CMD_kexec = 0
KEXEC_CMD_kexec_get_range = 3
KEXEC_CMD_kexec_load = 4
KEXEC_CMD_kexec_unload = 5
KEXEC_CMD_kexec_status = 6

KEXEC_TYPE_DEFAULT = 0
KEXEC_TYPE_CRASH = 1

KEXEC_RANGE_MA_CRASH = 0
KEXEC_RANGE_MA_XEN = 1
KEXEC_RANGE_MA_CPU = 2
KEXEC_RANGE_MA_VMCOREINFO = 6

KEXEC_SEGMENT_MAX = 15  # kexec_load rejects nr_segments >= 16
EM_386 = 3
EM_X86_64 = 62

XENMEM_machine_memory_map = 10

IOCTL_PRIVCMD_HYPERCALL = 0x00305000  # _IOC(_IOC_NONE, 'P', 0, sizeof(struct privcmd_hypercall))

PrivcmdHypercall = Struct("op" / Int64ul, "arg0" / Int64ul, "arg1" / Int64ul, "arg2" / Int64ul,
                          "arg3" / Int64ul, "arg4" / Int64ul)
assert PrivcmdHypercall.sizeof() == 48

XenKexecSegment = Struct(
    "buf" / Int64ul,  # dom0 virtual address of the data; 0 = map the destination only
    "buf_size" / Int64ul,
    "dest_maddr" / Int64ul,
    "dest_size" / Int64ul,
)
assert XenKexecSegment.sizeof() == 32

XenKexecLoad = Struct(
    "type" / Int8ul,
    Padding(1),
    "arch" / Int16ul,
    "nr_segments" / Int32ul,
    "segments" / Int64ul,  # dom0 virtual address of XenKexecSegment[nr_segments]
    "entry_maddr" / Int64ul,
)
assert XenKexecLoad.sizeof() == 24

XenKexecRange = Struct(
    "range" / Int32sl,
    "nr" / Int32sl,
    "size" / Int64ul,
    "start" / Int64ul,
)
assert XenKexecRange.sizeof() == 24

XenKexecExec = Struct("type" / Int32sl)
XenKexecType = Struct("type" / Int8ul)  # xen_kexec_unload_t and xen_kexec_status_t

XenMemoryMap = Struct(
    "nr_entries" / Int32ul,  # in: capacity; out: entries written
    Padding(4),
    "buffer" / Int64ul,
)
assert XenMemoryMap.sizeof() == 16

XenE820Entry = Struct("addr" / Int64ul, "size" / Int64ul, "type" / Int32ul)  # packed, 20 bytes
assert XenE820Entry.sizeof() == 20


# XENPF_firmware_info/XEN_FW_EFI_INFO (public/platform.h): what an EFI-booted Xen tells dom0 about the firmware
HYPERVISOR_platform_op = 7
XENPF_INTERFACE_VERSION = 0x03000001
XENPF_firmware_info = 50
XEN_FW_EFI_INFO = 4
XEN_FW_EFI_CONFIG_TABLE = 1  # u.cfg: addr (physical), nent
XEN_FW_EFI_MEM_INFO = 3  # u.mem: in addr, size; out size (to the descriptor's end), attr, type

XenPlatformEfiInfo = Struct(  # struct xen_platform_op with u.firmware_info, whose union is padded to 128 bytes
    "cmd" / Int32ul,
    "interface_version" / Int32ul,
    "type" / Int32ul,  # 8: xenpf_firmware_info.type
    "index" / Int32ul,
    "addr" / Int64ul,  # 16: cfg.addr / mem.addr
    "size" / Int64ul,  # 24: cfg.nent (low 32 bits) / mem.size
    "attr" / Int64ul,  # 32: mem.attr
    "mem_type" / Int32ul,  # 40: mem.type
    Padding(92),
)
assert XenPlatformEfiInfo.sizeof() == 136
