"""kexec_load's flags (include/uapi/linux/kexec.h), shared by the plans and the Linux backend.

Imports nothing: `kexloader -u` reaches the Linux backend without the plan model (kexloader/entry.py).
"""

KEXEC_ON_CRASH = 0x1
KEXEC_UPDATE_ELFCOREHDR = 0x4  # Linux 6.5+: the kernel may rewrite the elfcorehdr segment on CPU/memory hotplug
KEXEC_ARCH_X86_64 = 62 << 16
KEXEC_SEGMENT_MAX = 16
