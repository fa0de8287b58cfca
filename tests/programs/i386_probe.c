/*
 * i386_probe: the syscalls a 32-bit (i386) program makes for ProcessCreate and
 * ConnectionCreate, for the exec_i386 capture (scripts/capture.sh exec_i386).
 *
 * Build: gcc -m32 -static -O2 -Wall -Wextra -o i386_probe tests/programs/i386_probe.c
 *
 * 1. fork, then execve("/bin/true", {"/bin/true", "from-i386", "arg with space"}) in the
 *    child (an i386 execve: arch=40000003 syscall=11), and wait for it.
 * 2. listen on 127.0.0.1:<ephemeral>, connect to it (blocking) and accept: a static i386
 *    glibc goes through socketcall (syscall 102) with a0=3 (connect) and a0=5 (accept).
 * 3. a non-blocking connect to the same listener (EINPROGRESS, socketcall a0=3), accepted
 *    with accept4 (a0=18).
 * Prints the port and each step's result on stdout; exits non-zero on any unexpected error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what)
{
	fprintf(stderr, "i386_probe: %s: %s\n", what, strerror(errno));
	exit(1);
}

int main(void)
{
	char *const argv[] = {"/bin/true", "from-i386", "arg with space", NULL};
	char *const envp[] = {"PATH=/usr/bin:/bin", NULL};
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		execve("/bin/true", argv, envp);
		_exit(127);
	}
	int status = 0;
	if (waitpid(child, &status, 0) < 0)
		die("waitpid");
	printf("execve /bin/true: status %d\n", WEXITSTATUS(status));

	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0)
		die("socket");
	struct sockaddr_in addr;
	memset(&addr, 0, sizeof addr);
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = 0;
	if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0)
		die("bind");
	if (listen(lfd, 8) < 0)
		die("listen");
	socklen_t alen = sizeof addr;
	if (getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0)
		die("getsockname");
	printf("listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));

	/* Blocking connect, then accept(). */
	int cfd = socket(AF_INET, SOCK_STREAM, 0);
	if (cfd < 0)
		die("socket");
	if (connect(cfd, (struct sockaddr *)&addr, sizeof addr) < 0)
		die("connect");
	printf("connect: ok\n");
	struct sockaddr_in peer;
	socklen_t plen = sizeof peer;
	int afd = accept(lfd, (struct sockaddr *)&peer, &plen);
	if (afd < 0)
		die("accept");
	printf("accept: peer port %d\n", ntohs(peer.sin_port));
	close(afd);
	close(cfd);

	/* Non-blocking connect: EINPROGRESS, then accept4(). */
	int nfd = socket(AF_INET, SOCK_STREAM, 0);
	if (nfd < 0)
		die("socket");
	if (fcntl(nfd, F_SETFL, O_NONBLOCK) < 0)
		die("fcntl");
	int rc = connect(nfd, (struct sockaddr *)&addr, sizeof addr);
	if (rc == 0)
		printf("non-blocking connect: completed at once\n");
	else if (errno == EINPROGRESS)
		printf("non-blocking connect: EINPROGRESS\n");
	else
		die("non-blocking connect");
	struct pollfd pfd = {.fd = nfd, .events = POLLOUT};
	if (poll(&pfd, 1, 5000) != 1)
		die("poll");
	plen = sizeof peer;
	afd = accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
	if (afd < 0)
		die("accept4");
	printf("accept4: peer port %d\n", ntohs(peer.sin_port));
	close(afd);
	close(nfd);
	close(lfd);
	return 0;
}
