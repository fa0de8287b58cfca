/*
 * load_gen: audit load for scripts/make-load-capture.sh: WORKERS processes that, for
 * SECONDS, each posix_spawn /bin/true (argv: "/bin/true" "load" "<worker>" "<n>") and wait
 * for it, in a loop; every 10th iteration also connect a TCP socket to the worker's own
 * listener on 127.0.0.1 and accept it, and every 50th do a non-blocking connect
 * (EINPROGRESS) there.
 *
 * Build: gcc -O2 -Wall -Wextra -o load_gen tests/programs/load_gen.c
 * Usage: load_gen SECONDS WORKERS
 * Prints one line per worker: spawns, connects, accepts.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void die(const char *what)
{
	fprintf(stderr, "load_gen: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void worker(int id, double seconds)
{
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0)
		die("socket");
	struct sockaddr_in addr;
	memset(&addr, 0, sizeof addr);
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 64) < 0)
		die("listen");
	socklen_t alen = sizeof addr;
	if (getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0)
		die("getsockname");

	char wid[16], num[24];
	snprintf(wid, sizeof wid, "%d", id);
	char *argv[] = {"/bin/true", "load", wid, num, NULL};
	long spawns = 0, connects = 0, accepts = 0;
	double end = now() + seconds;
	for (long n = 0; now() < end; n++) {
		snprintf(num, sizeof num, "%ld", n);
		pid_t pid;
		if (posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ) != 0)
			die("posix_spawn");
		if (waitpid(pid, NULL, 0) < 0)
			die("waitpid");
		spawns++;
		if (n % 10 == 0) {
			int nonblocking = n % 50 == 0;
			int cfd = socket(AF_INET, SOCK_STREAM, 0);
			if (cfd < 0)
				die("socket");
			if (nonblocking && fcntl(cfd, F_SETFL, O_NONBLOCK) < 0)
				die("fcntl");
			if (connect(cfd, (struct sockaddr *)&addr, sizeof addr) < 0 &&
			    !(nonblocking && errno == EINPROGRESS))
				die("connect");
			connects++;
			int afd = accept(lfd, NULL, NULL);
			if (afd < 0)
				die("accept");
			accepts++;
			close(afd);
			close(cfd);
		}
	}
	printf("worker %d: %ld spawns, %ld connects, %ld accepts\n", id, spawns, connects, accepts);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: load_gen SECONDS WORKERS\n");
		return 2;
	}
	double seconds = atof(argv[1]);
	int workers = atoi(argv[2]);
	if (seconds <= 0 || workers < 1 || workers > 64) {
		fprintf(stderr, "load_gen: bad arguments\n");
		return 2;
	}
	fflush(stdout);
	for (int i = 0; i < workers; i++) {
		pid_t pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			worker(i, seconds);
			fflush(stdout);
			_exit(0);
		}
	}
	int failed = 0, status;
	while (wait(&status) > 0)
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed = 1;
	return failed;
}
