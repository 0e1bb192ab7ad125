/*
 * kexec-tools capture shim (kexloader developer tool).
 *
 * An LD_PRELOAD library for running Debian's /sbin/kexec on a development
 * machine WITHOUT loading anything into the running kernel.  It records the
 * segment list that kexec-tools hands to kexec_load(2) so kexloader's plans
 * can be compared with it byte for byte.
 *
 * Two independent layers keep the host safe:
 *
 *  1. Before anything else (the constructor runs before kexec's main()) a
 *     seccomp-BPF filter is installed that makes kexec_load (246),
 *     kexec_file_load (320), reboot (169), execve/execveat (kexec-tools runs
 *     /sbin/shutdown when no action is given), the SIOCSIFFLAGS ioctl
 *     (kexec-tools' ifdown()) and the Xen privcmd hypercall ioctl fail with
 *     EPERM.  A foreign architecture or an x32 syscall kills the process.  If
 *     the filter cannot be installed the process aborts: nothing of kexec-tools
 *     ever runs unfiltered.
 *
 *  2. libc's syscall() is interposed: kexec_load is captured (segments are
 *     written to $KT_CAPTURE_DIR) and reported as successful; kexec_file_load
 *     answers ENOSYS, which makes kexec-tools fall back to its userspace
 *     loader; reboot answers EPERM.  reboot(3) and libxenctrl's xc_kexec_*
 *     are interposed too and refuse.  Everything else is forwarded.
 *
 *     To play a kernel with other answers ("worlds"), the environment may
 *     choose them; nothing here ever forwards one of these calls:
 *       KT_LOAD_ERRNO  kexec_load's answer: 0 (default) captures and succeeds,
 *                      a name (EPERM) or number fails with that errno;
 *       KT_FILE_ERRNO  kexec_file_load's: ENOSYS (default); 0 records its
 *                      flags, command line and the fds' names and succeeds.
 *     Every kexec_load, kexec_file_load and reboot is appended to
 *     $KT_CAPTURE_DIR/calls.jsonl with its flags and the errno it got.
 *
 *  3. Read-only opens of chosen files are redirected, so kexec-tools sees a
 *     crash kernel region or a loaded image the host does not have:
 *       KT_REDIRECT="/proc/iomem=/tmp/iomem;/sys/kernel/kexec_loaded=/tmp/one"
 *
 * Even if the interposition fails (a static binary, an inlined syscall) the
 * filter of layer 1 still stops the call in the kernel.
 *
 * Written from scratch for kexloader.  x86-64 Linux only.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#if !defined(__x86_64__) || defined(__ILP32__)
#error "the kexec-tools capture shim is for x86-64 (LP64) only"
#endif

#define NR_IOCTL 16
#define NR_EXECVE 59
#define NR_REBOOT 169
#define NR_KEXEC_LOAD 246
#define NR_EXECVEAT 322
#define NR_KEXEC_FILE_LOAD 320
#define NR_SECCOMP 317
#define X32_SYSCALL_BIT 0x40000000u

#define IOCTL_SIOCSIFFLAGS 0x8914u       /* linux/sockios.h */
#define IOCTL_PRIVCMD_HYPERCALL 0x305000u /* _IOC(_IOC_NONE, 'P', 0, sizeof(struct privcmd_hypercall) = 48) */

/* struct kexec_segment, include/uapi/linux/kexec.h (user-space view). */
struct kt_kexec_segment {
	const void *buf;
	size_t bufsz;
	const void *mem;
	size_t memsz;
};

static void shim_message(const char *msg)
{
	/* write(2) only: safe in a constructor and after a failed filter. */
	ssize_t r = write(2, msg, strlen(msg));
	(void)r;
}

/* A raw syscall that does not go through our own syscall() interposer. */
static long raw_syscall3(long nr, long a1, long a2, long a3)
{
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a1), "S"(a2), "d"(a3)
			 : "rcx", "r11", "memory");
	return ret;
}

#define DENY (SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))
#define ARG_LO(n) (offsetof(struct seccomp_data, args) + 8 * (n)) /* little endian: low 32 bits */

static void install_filter(void)
{
	struct sock_filter filter[] = {
		/* [0] Only the x86-64 ABI may make syscalls at all. */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		/* [3] x32 syscalls (the x32 kexec_load is 528) are not allowed either. */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, X32_SYSCALL_BIT, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		/* [6] The calls that could load, start or reboot something. */
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NR_KEXEC_LOAD, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, DENY),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NR_KEXEC_FILE_LOAD, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, DENY),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NR_REBOOT, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, DENY),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NR_EXECVE, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, DENY),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NR_EXECVEAT, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, DENY),
		/* [16] ioctl: refuse interface down and Xen hypercalls. */
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NR_IOCTL, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(1)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IOCTL_SIOCSIFFLAGS, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, DENY),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IOCTL_PRIVCMD_HYPERCALL, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, DENY),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {
		.len = (unsigned short)(sizeof(filter) / sizeof(filter[0])),
		.filter = filter,
	};

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		shim_message("kt-capture-shim: prctl(PR_SET_NO_NEW_PRIVS) failed; aborting\n");
		abort();
	}
	if (raw_syscall3(NR_SECCOMP, SECCOMP_SET_MODE_FILTER, 0, (long)&prog) != 0) {
		shim_message("kt-capture-shim: seccomp(SECCOMP_SET_MODE_FILTER) failed; aborting\n");
		abort();
	}
}

/* Priority 101: before any other constructor of ours; the ELF loader runs
 * preloaded libraries' constructors before the program's own. */
__attribute__((constructor(101))) static void kt_shim_init(void)
{
	install_filter();
	if (getenv("KT_SHIM_VERBOSE"))
		shim_message("kt-capture-shim: seccomp filter installed\n");
}

/* ---- capture ---------------------------------------------------------- */

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int write_file(const char *dir, const char *name, const void *buf, size_t len)
{
	char path[4096];
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return -1;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	int rc = write_all(fd, buf, len);
	if (close(fd) != 0)
		rc = -1;
	return rc;
}

/* Append a JSON string (escaped) to a FILE*. */
static void json_string(FILE *f, const char *s, size_t n)
{
	fputc('"', f);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void json_argv(FILE *f)
{
	char buf[65536];
	int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf)) : -1;
	if (fd >= 0)
		close(fd);
	fputc('[', f);
	if (n > 0) {
		size_t start = 0;
		int first = 1;
		for (size_t i = 0; i < (size_t)n; i++) {
			if (buf[i] == '\0') {
				if (!first)
					fputs(", ", f);
				json_string(f, buf + start, i - start);
				first = 0;
				start = i + 1;
			}
		}
	}
	fputc(']', f);
}


/* ---- worlds: the answers the environment chooses ---------------------- */

static const struct {
	const char *name;
	int value;
} errno_names[] = {
	{"EPERM", EPERM}, {"ENOENT", ENOENT}, {"EIO", EIO}, {"EBADF", EBADF}, {"ENOMEM", ENOMEM},
	{"EACCES", EACCES}, {"EFAULT", EFAULT}, {"EBUSY", EBUSY}, {"EINVAL", EINVAL}, {"ENOSYS", ENOSYS},
	{"ENOEXEC", ENOEXEC}, {"EOPNOTSUPP", EOPNOTSUPP}, {"EADDRNOTAVAIL", EADDRNOTAVAIL},
	{"EBADMSG", EBADMSG}, {"EKEYREJECTED", EKEYREJECTED}, {"ENOKEY", ENOKEY}, {"ENOPKG", ENOPKG},
	{"ELIBBAD", ELIBBAD}, {"EMSGSIZE", EMSGSIZE},
};

/* The errno $var asks for: 0 means "succeed"; unset gives dflt; unknown
 * text gives EPERM (a refusal is always the safe reading). */
static int chosen_errno(const char *var, int dflt)
{
	const char *v = getenv(var);
	if (!v || !*v)
		return dflt;
	if (v[0] >= '0' && v[0] <= '9') {
		char *end;
		long n = strtol(v, &end, 10);
		return (*end || n < 0 || n > 4095) ? EPERM : (int)n;
	}
	for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++)
		if (strcmp(v, errno_names[i].name) == 0)
			return errno_names[i].value;
	return EPERM;
}

/* "/proc/self/fd/N"'s target as a JSON string, or null. */
static void json_fd_name(FILE *f, long fd)
{
	char link[64], target[4096];
	ssize_t n = -1;
	if (fd >= 0 && fd <= INT_MAX) {
		snprintf(link, sizeof(link), "/proc/self/fd/%ld", fd);
		n = readlink(link, target, sizeof(target));
	}
	if (n < 0)
		fputs("null", f);
	else
		json_string(f, target, (size_t)n);
}

/* One line of $KT_CAPTURE_DIR/calls.jsonl; `fields` is the call's own JSON. */
static FILE *calls_log_open(void)
{
	const char *dir = getenv("KT_CAPTURE_DIR");
	char path[4096];
	if (!dir || !*dir || (size_t)snprintf(path, sizeof(path), "%s/calls.jsonl", dir) >= sizeof(path))
		return NULL;
	return fopen(path, "ae");
}

static void log_simple_call(const char *call, unsigned long flags, int err)
{
	FILE *f = calls_log_open();
	if (!f)
		return;
	fprintf(f, "{\"call\": \"%s\", \"flags\": %lu, \"errno\": %d}\n", call, flags, err);
	fclose(f);
}

static long capture_kexec_load(unsigned long entry, unsigned long nr,
			       const struct kt_kexec_segment *segs, unsigned long flags)
{
	const char *dir = getenv("KT_CAPTURE_DIR");
	char name[128], path[4096], tmp[4096];

	if (!dir || !*dir) {
		shim_message("kt-capture-shim: KT_CAPTURE_DIR is not set; refusing kexec_load\n");
		errno = EPERM;
		return -1;
	}
	if (nr > 64 || (nr && !segs)) {
		errno = EINVAL;
		return -1;
	}
	for (unsigned long i = 0; i < nr; i++) {
		snprintf(name, sizeof(name), "seg-%lu-%lx.bin", i, (unsigned long)(uintptr_t)segs[i].mem);
		if (write_file(dir, name, segs[i].buf, segs[i].buf ? segs[i].bufsz : 0) != 0) {
			shim_message("kt-capture-shim: cannot write a segment file\n");
			errno = EIO;
			return -1;
		}
	}
	snprintf(path, sizeof(path), "%s/capture.json", dir);
	snprintf(tmp, sizeof(tmp), "%s/capture.json.tmp", dir);
	FILE *f = fopen(tmp, "we");
	if (!f) {
		errno = EIO;
		return -1;
	}
	fprintf(f, "{\n  \"syscall\": \"kexec_load\",\n  \"entry\": %lu,\n  \"flags\": %lu,\n"
		   "  \"nr_segments\": %lu,\n  \"argv\": ",
		entry, flags, nr);
	json_argv(f);
	fputs(",\n  \"segments\": [", f);
	for (unsigned long i = 0; i < nr; i++) {
		snprintf(name, sizeof(name), "seg-%lu-%lx.bin", i, (unsigned long)(uintptr_t)segs[i].mem);
		fprintf(f, "%s\n    {\"index\": %lu, \"mem\": %lu, \"memsz\": %zu, \"bufsz\": %zu, \"file\": \"%s\"}",
			i ? "," : "", i, (unsigned long)(uintptr_t)segs[i].mem, segs[i].memsz,
			segs[i].buf ? segs[i].bufsz : (size_t)0, name);
	}
	fputs(nr ? "\n  ]\n}\n" : "]\n}\n", f);
	if (fclose(f) != 0 || rename(tmp, path) != 0) {
		errno = EIO;
		return -1;
	}
	if (getenv("KT_SHIM_VERBOSE"))
		shim_message("kt-capture-shim: kexec_load captured, nothing loaded\n");
	return 0;
}


/* kexec_file_load: its arguments, in calls.jsonl and (when it succeeds) in
 * capture.json.  Nothing is loaded either way. */
static long answer_kexec_file_load(long kernel_fd, long initrd_fd, unsigned long cmdline_len,
				   const char *cmdline, unsigned long flags)
{
	int err = chosen_errno("KT_FILE_ERRNO", ENOSYS);
	size_t shown = cmdline ? (cmdline_len < 65536 ? cmdline_len : 65536) : 0;
	const char *dir = getenv("KT_CAPTURE_DIR");
	char path[4096], tmp[4096];
	FILE *logf = calls_log_open();

	if (shown && cmdline[shown - 1] == '\0')
		shown--; /* the kernel's cmdline_len counts the NUL */
	for (int pass = 0; pass < 2; pass++) {
		FILE *f = logf;
		if (pass == 1) {
			f = NULL;
			if (err == 0 && dir && *dir &&
			    (size_t)snprintf(path, sizeof(path), "%s/capture.json", dir) < sizeof(path) &&
			    (size_t)snprintf(tmp, sizeof(tmp), "%s/capture.json.tmp", dir) < sizeof(tmp))
				f = fopen(tmp, "we");
		}
		if (!f)
			continue;
		fprintf(f, pass ? "{\n  \"syscall\": \"kexec_file_load\",\n  \"entry\": 0,\n  \"nr_segments\": 0,\n"
				  "  \"segments\": [],\n  \"argv\": " : "{\"call\": \"kexec_file_load\", ");
		if (pass)
			json_argv(f);
		fprintf(f, pass ? ",\n  \"flags\": %lu, \"errno\": 0, \"kernel\": " : "\"flags\": %lu, \"errno\": %d, \"kernel\": ",
			flags, err);
		json_fd_name(f, kernel_fd);
		fputs(", \"initrd\": ", f);
		json_fd_name(f, initrd_fd);
		fprintf(f, ", \"cmdline_len\": %lu, \"cmdline\": ", cmdline_len);
		if (cmdline)
			json_string(f, cmdline, shown);
		else
			fputs("null", f);
		fputs(pass ? "\n}\n" : "}\n", f);
		if (fclose(f) != 0 || (pass == 1 && rename(tmp, path) != 0))
			err = err ? err : EIO;
	}
	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}

/* ---- interposed entry points ------------------------------------------ */

typedef long (*syscall_fn)(long, ...);

long syscall(long number, ...)
{
	static syscall_fn real_syscall;
	long a[6];
	va_list ap;

	va_start(ap, number);
	for (int i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);

	switch (number) {
	case NR_KEXEC_LOAD: {
		int err = chosen_errno("KT_LOAD_ERRNO", 0);
		log_simple_call("kexec_load", (unsigned long)a[3], err);
		if (err) {
			errno = err;
			return -1;
		}
		return capture_kexec_load((unsigned long)a[0], (unsigned long)a[1],
					  (const struct kt_kexec_segment *)a[2], (unsigned long)a[3]);
	}
	case NR_KEXEC_FILE_LOAD:
		/* ENOSYS by default: kexec-tools then falls back to its own loader */
		return answer_kexec_file_load(a[0], a[1], (unsigned long)a[2], (const char *)a[3],
					      (unsigned long)a[4]);
	case NR_REBOOT:
		log_simple_call("reboot", (unsigned long)a[2], EPERM);
		shim_message("kt-capture-shim: reboot refused\n");
		errno = EPERM;
		return -1;
	default:
		break;
	}
	if (!real_syscall) {
		real_syscall = (syscall_fn)dlsym(RTLD_NEXT, "syscall");
		if (!real_syscall) {
			errno = ENOSYS;
			return -1;
		}
	}
	return real_syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}

int reboot(int cmd)
{
	log_simple_call("reboot", (unsigned long)(unsigned int)cmd, EPERM);
	shim_message("kt-capture-shim: reboot refused\n");
	errno = EPERM;
	return -1;
}

/* libxenctrl (kexec-tools under a Xen PV dom0).  Never reached on a normal
 * host, refused if it is. */
int xc_kexec_load(void *xch, uint8_t type, uint16_t arch, uint64_t entry_maddr,
		  uint32_t nr_segments, void *segments)
{
	(void)xch; (void)type; (void)arch; (void)entry_maddr; (void)nr_segments; (void)segments;
	shim_message("kt-capture-shim: xc_kexec_load refused (Xen capture is not supported)\n");
	errno = EPERM;
	return -1;
}

int xc_kexec_exec(void *xch, int type)
{
	(void)xch; (void)type;
	shim_message("kt-capture-shim: xc_kexec_exec refused\n");
	errno = EPERM;
	return -1;
}

int xc_kexec_unload(void *xch, int type)
{
	(void)xch; (void)type;
	errno = EPERM;
	return -1;
}

/* ---- read-only redirects ($KT_REDIRECT) ------------------------------- */

/* The replacement for `path` if $KT_REDIRECT names it ("FROM=TO;FROM=TO"),
 * copied into buf; else path itself. */
static const char *redirected(const char *path, char *buf, size_t size)
{
	const char *spec = getenv("KT_REDIRECT");
	size_t plen = path ? strlen(path) : 0;
	while (spec && *spec && plen) {
		const char *end = strchr(spec, ';');
		size_t len = end ? (size_t)(end - spec) : strlen(spec);
		const char *eq = memchr(spec, '=', len);
		if (eq && (size_t)(eq - spec) == plen && memcmp(spec, path, plen) == 0) {
			size_t tlen = len - plen - 1;
			if (tlen < size) {
				memcpy(buf, eq + 1, tlen);
				buf[tlen] = '\0';
				return buf;
			}
		}
		spec = end ? end + 1 : NULL;
	}
	return path;
}

typedef int (*open_fn)(const char *, int, ...);
typedef FILE *(*fopen_fn)(const char *, const char *);

static int open_redirected(const char *sym, const char *path, int flags, mode_t mode)
{
	char buf[4096];
	open_fn real = (open_fn)dlsym(RTLD_NEXT, sym);
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	if ((flags & O_ACCMODE) == O_RDONLY && !(flags & O_CREAT))
		path = redirected(path, buf, sizeof(buf));
	return real(path, flags, mode);
}

#define OPEN_WRAPPER(name)                                   \
	int name(const char *path, int flags, ...)           \
	{                                                    \
		mode_t mode = 0;                             \
		if (flags & (O_CREAT | O_TMPFILE)) {         \
			va_list ap;                          \
			va_start(ap, flags);                 \
			mode = (mode_t)va_arg(ap, int);      \
			va_end(ap);                          \
		}                                            \
		return open_redirected(#name, path, flags, mode); \
	}
OPEN_WRAPPER(open)
OPEN_WRAPPER(open64)

static FILE *fopen_redirected(const char *sym, const char *path, const char *mode)
{
	char buf[4096];
	fopen_fn real = (fopen_fn)dlsym(RTLD_NEXT, sym);
	if (!real) {
		errno = ENOSYS;
		return NULL;
	}
	if (mode && mode[0] == 'r' && !strchr(mode, '+'))
		path = redirected(path, buf, sizeof(buf));
	return real(path, mode);
}

FILE *fopen(const char *path, const char *mode) { return fopen_redirected("fopen", path, mode); }
FILE *fopen64(const char *path, const char *mode) { return fopen_redirected("fopen64", path, mode); }
