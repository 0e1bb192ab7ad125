/*
 * Test helper for tests/tools/test_kexec_tools_capture.py: proves that the capture shim's seccomp filter
 * and syscall() interposer stop kexec_load / kexec_file_load / reboot, without ever letting one of those
 * calls reach the kernel even if the shim is broken.
 *
 * Before making any dangerous call, main() installs its own "safety net" seccomp filter that answers
 * SECCOMP_RET_TRACE for kexec_load, kexec_file_load and reboot.  With no tracer attached (checked) the
 * kernel then skips the call and returns ENOSYS.  Seccomp runs every installed filter and keeps the most
 * restrictive answer, and the shim's SECCOMP_RET_ERRNO(EPERM) is more restrictive than RET_TRACE, so:
 *   EPERM  -> the shim's filter stopped the call;
 *   ENOSYS -> the shim did not, the safety net did (the call was still never executed).
 * The arguments are also invalid on purpose (wrong reboot magic, an unknown kexec flag).
 *
 * usage: seccomp_probe calls          print "<name> <ret> <errno>" per check
 *        seccomp_probe x32            make an x32 getpid (the shim kills the process with SIGSYS)
 *        seccomp_probe deny-exec SHIM make seccomp() fail, then exec itself with SHIM preloaded
 *                                     (the shim must abort: it cannot install its filter)
 *        seccomp_probe noop           do nothing (used to check the shim loads)
 *        seccomp_probe net-exec PROG ARGS...
 *                                     install the safety net, then exec PROG with LD_PRELOAD taken from
 *                                     $KT_NET_PRELOAD (the filter stays on across exec), e.g. a Python that
 *                                     calls syscall() through ctypes as kexloader's backend does
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <unistd.h>

struct seg {
	const void *buf;
	size_t bufsz;
	const void *mem;
	size_t memsz;
};

static long raw6(long nr, long a1, long a2, long a3, long a4, long a5)
{
	long ret;
	register long r10 __asm__("r10") = a4;
	register long r8 __asm__("r8") = a5;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8)
			 : "rcx", "r11", "memory");
	return ret;
}

static int install(struct sock_filter *f, unsigned short n)
{
	struct sock_fprog prog = {.len = n, .filter = f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return -1;
	return (int)raw6(317 /* seccomp */, SECCOMP_SET_MODE_FILTER, 0, (long)&prog, 0, 0);
}

static int safety_net(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 246, 3, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 320, 2, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 169, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
	};
	return install(f, sizeof(f) / sizeof(f[0]));
}

static int traced(void)
{
	char line[256];
	FILE *f = fopen("/proc/self/status", "r");
	int pid = -1;
	if (!f)
		return 1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "TracerPid: %d", &pid) == 1)
			break;
	fclose(f);
	return pid != 0;
}

static void report(const char *name, long ret, int err)
{
	printf("%s %ld %d\n", name, ret, err);
}

/* raw syscalls return -errno */
static void report_raw(const char *name, long ret)
{
	if (ret < 0 && ret > -4096)
		report(name, -1, (int)-ret);
	else
		report(name, ret, 0);
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "calls";

	if (!strcmp(mode, "noop"))
		return 0;

	if (!strcmp(mode, "deny-exec") && argc > 2) {
		/* Make seccomp() itself fail with EPERM; execve stays allowed. */
		struct sock_filter f[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 317, 0, 1),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		if (install(f, sizeof(f) / sizeof(f[0])) != 0)
			return 3;
		setenv("LD_PRELOAD", argv[2], 1);
		char *args[] = {argv[0], "noop", NULL};
		execv("/proc/self/exe", args);
		return 4;
	}

	if (traced()) {
		printf("traced\n");
		return 77;
	}
	if (safety_net() != 0) {
		printf("no-safety-net\n");
		return 78;
	}

	if (!strcmp(mode, "net-exec") && argc > 2) {
		const char *preload = getenv("KT_NET_PRELOAD");
		if (preload)
			setenv("LD_PRELOAD", preload, 1);
		execv(argv[2], argv + 2);
		return 4;
	}

	if (!strcmp(mode, "x32")) {
		long r = raw6(0x40000000 | 39 /* x32 getpid */, 0, 0, 0, 0, 0);
		report_raw("x32_getpid", r);
		return 0;
	}

	/* Raw syscalls: only the seccomp layer can stop these. */
	report_raw("raw_reboot", raw6(169, 0, 0, 0, 0, 0));
	report_raw("raw_kexec_load", raw6(246, 0, 0, 0, 0x8000, 0));
	report_raw("raw_kexec_file_load", raw6(320, -1, -1, 0, 0, 0x80000000L));
	report_raw("raw_execve", raw6(59, (long)"/nonexistent/kt-probe", 0, 0, 0, 0));
	report_raw("raw_ioctl_siocsifflags", raw6(16, -1, 0x8914, 0, 0, 0));
	report_raw("raw_getppid", raw6(110, 0, 0, 0, 0, 0) > 0 ? 1 : raw6(110, 0, 0, 0, 0, 0));

	/* libc syscall(): the interposer answers these. */
	errno = 0;
	long r = syscall(169, 0L, 0L, 0L, 0L);
	report("libc_reboot", r, errno);
	errno = 0;
	r = syscall(320, -1L, -1L, 0L, 0L, 0x80000000L);
	report("libc_kexec_file_load", r, errno);
	static const char payload[] = "kt-probe-segment";
	struct seg segs[2] = {
		{payload, sizeof(payload), (const void *)0x100000, 0x1000},
		{NULL, 0, (const void *)0x200000, 0x2000},
	};
	errno = 0;
	r = syscall(246, 0x100010L, 2L, segs, 0x3e0000L);
	report("libc_kexec_load", r, errno);
	errno = 0;
	r = syscall(39 /* getpid */);
	report("libc_getpid_ok", r == getpid() ? 1 : r, errno);
	return 0;
}
