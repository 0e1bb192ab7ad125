/*
 * bench_spawn: run one command and report its wall time and peak RSS (tools/bench.py).
 *
 *   bench_spawn STDOUT STDERR NENV ENV... -- ARGV...
 *
 * Why a C helper: Linux counts the address space a process had before execve into its ru_maxrss, so a
 * child forked from the Python benchmark would start at the benchmark's own RSS. Forked from this small
 * process, the child's peak is its own. The helper's environment is not the child's (the child may get
 * LD_PRELOAD=the capture shim, whose seccomp filter would refuse this helper's execve).
 *
 * Prints "wall_ns exit_status maxrss_kib" on its stdout.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 6) {
		fprintf(stderr, "usage: bench_spawn STDOUT STDERR NENV ENV... -- ARGV...\n");
		return 2;
	}
	int nenv = atoi(argv[3]);
	if (nenv < 0 || 4 + nenv >= argc || strcmp(argv[4 + nenv], "--") != 0 || 5 + nenv >= argc) {
		fprintf(stderr, "bench_spawn: bad arguments\n");
		return 2;
	}
	char **env = calloc((size_t)nenv + 1, sizeof(char *));
	if (!env)
		return 2;
	for (int i = 0; i < nenv; i++)
		env[i] = argv[4 + i];
	char **cmd = argv + 5 + nenv;

	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid_t pid = fork();
	if (pid < 0) {
		perror("bench_spawn: fork");
		return 2;
	}
	if (pid == 0) {
		int in = open("/dev/null", O_RDONLY);
		int out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int err = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (in < 0 || out < 0 || err < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
			_exit(126);
		execve(cmd[0], cmd, env);
		_exit(127);
	}
	int status;
	struct rusage ru;
	if (wait4(pid, &status, 0, &ru) != pid) {
		perror("bench_spawn: wait4");
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	printf("%lld %d %ld\n", ns, code, ru.ru_maxrss);
	return 0;
}
