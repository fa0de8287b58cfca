/*
 * execveat_probe: runs /bin/echo through fexecve() (the execveat syscall with AT_EMPTY_PATH
 * on an open file descriptor), for the exec_args capture (scripts/capture.sh exec_args).
 *
 * Build: gcc -O2 -Wall -Wextra -o execveat_probe tests/programs/execveat_probe.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
	char *const argv[] = {"echo", "via-fexecve", NULL};
	char *const envp[] = {"PATH=/usr/bin:/bin", NULL};
	int fd = open("/bin/echo", O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "execveat_probe: open /bin/echo: %s\n", strerror(errno));
		return 1;
	}
	fexecve(fd, argv, envp);
	fprintf(stderr, "execveat_probe: fexecve: %s\n", strerror(errno));
	return 1;
}
