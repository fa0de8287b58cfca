/*
 * net_probe: the connect/accept cases of the net_tcp capture (scripts/capture.sh net_tcp).
 *
 * Build: gcc -O2 -Wall -Wextra -o net_probe tests/programs/net_probe.c
 *
 * In order, each on a fresh ephemeral port of a listener this program opens itself:
 *  1. TCP over IPv4: blocking connect to 127.0.0.1, accept()          (both logged)
 *  2. TCP over IPv6: blocking connect to ::1, accept4()               (both logged)
 *  3. TCP over IPv4: non-blocking connect (EINPROGRESS), accept()     (both logged)
 *  4. TCP over IPv4: blocking connect to a closed port (ECONNREFUSED) (not logged)
 *  5. UDP over IPv4: connect to 127.0.0.1 (no listener needed)       (logged)
 *  6. unix stream socket: connect to PATH_SOCK, accept()              (both logged)
 *  7. abstract unix stream socket "\0azureiotsecurity-abstract": connect, accept()
 * Prints what happened on stdout; exits non-zero on any unexpected result.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PATH_SOCK "/tmp/azureiotsecurity-net-probe.sock"
#define ABSTRACT "azureiotsecurity-abstract"

static void die(const char *what)
{
	fprintf(stderr, "net_probe: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* A listener on the loopback address of FAMILY, port chosen by the kernel. */
static int listener(int family, struct sockaddr_storage *addr, socklen_t *len)
{
	int fd = socket(family, SOCK_STREAM, 0);
	if (fd < 0)
		die("socket");
	memset(addr, 0, sizeof *addr);
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)addr;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		*len = sizeof *a;
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)addr;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		*len = sizeof *a;
	}
	if (bind(fd, (struct sockaddr *)addr, *len) < 0)
		die("bind");
	if (listen(fd, 8) < 0)
		die("listen");
	if (getsockname(fd, (struct sockaddr *)addr, len) < 0)
		die("getsockname");
	return fd;
}

static int port_of(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)a)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
}

static void tcp_pair(int family, int nonblocking, int use_accept4, const char *label)
{
	struct sockaddr_storage addr;
	socklen_t len;
	int lfd = listener(family, &addr, &len);
	int cfd = socket(family, SOCK_STREAM, 0);
	if (cfd < 0)
		die("socket");
	if (nonblocking && fcntl(cfd, F_SETFL, O_NONBLOCK) < 0)
		die("fcntl");
	int rc = connect(cfd, (struct sockaddr *)&addr, len);
	if (rc < 0 && !(nonblocking && errno == EINPROGRESS))
		die("connect");
	if (nonblocking) {
		struct pollfd p = {.fd = cfd, .events = POLLOUT};
		if (poll(&p, 1, 5000) != 1)
			die("poll");
	}
	struct sockaddr_storage peer;
	socklen_t plen = sizeof peer;
	int afd = use_accept4 ? accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC)
			      : accept(lfd, (struct sockaddr *)&peer, &plen);
	if (afd < 0)
		die("accept");
	printf("%s: port %d, connect %s, %s peer port %d\n", label, port_of(&addr),
	       rc == 0 ? "ok" : "EINPROGRESS", use_accept4 ? "accept4" : "accept", port_of(&peer));
	close(afd);
	close(cfd);
	close(lfd);
}

static void refused(void)
{
	struct sockaddr_storage addr;
	socklen_t len;
	int lfd = listener(AF_INET, &addr, &len);
	close(lfd); /* the port is now closed */
	int cfd = socket(AF_INET, SOCK_STREAM, 0);
	if (cfd < 0)
		die("socket");
	if (connect(cfd, (struct sockaddr *)&addr, len) == 0 || errno != ECONNREFUSED) {
		fprintf(stderr, "net_probe: connect to closed port %d was not refused\n",
			port_of(&addr));
		exit(1);
	}
	printf("tcp4 refused: port %d, connect ECONNREFUSED\n", port_of(&addr));
	close(cfd);
}

static void udp(void)
{
	struct sockaddr_in a;
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons(9); /* discard; UDP connect needs no listener */
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0)
		die("socket");
	if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
		die("udp connect");
	printf("udp4: connect to 127.0.0.1:9 ok\n");
	close(fd);
}

static void unix_pair(int abstract)
{
	struct sockaddr_un a;
	memset(&a, 0, sizeof a);
	a.sun_family = AF_UNIX;
	socklen_t len;
	if (abstract) {
		memcpy(a.sun_path + 1, ABSTRACT, strlen(ABSTRACT));
		len = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(ABSTRACT);
	} else {
		unlink(PATH_SOCK);
		strcpy(a.sun_path, PATH_SOCK);
		len = sizeof a;
	}
	int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (lfd < 0)
		die("socket");
	if (bind(lfd, (struct sockaddr *)&a, len) < 0)
		die("bind unix");
	if (listen(lfd, 8) < 0)
		die("listen");
	int cfd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (cfd < 0)
		die("socket");
	if (connect(cfd, (struct sockaddr *)&a, len) < 0)
		die("connect unix");
	int afd = accept(lfd, NULL, NULL);
	if (afd < 0)
		die("accept unix");
	printf("unix %s: connect and accept ok\n", abstract ? "@" ABSTRACT : PATH_SOCK);
	close(afd);
	close(cfd);
	close(lfd);
	if (!abstract)
		unlink(PATH_SOCK);
}

int main(void)
{
	tcp_pair(AF_INET, 0, 0, "tcp4");
	tcp_pair(AF_INET6, 0, 1, "tcp6");
	tcp_pair(AF_INET, 1, 0, "tcp4 non-blocking");
	refused();
	udp();
	unix_pair(0);
	unix_pair(1);
	return 0;
}
