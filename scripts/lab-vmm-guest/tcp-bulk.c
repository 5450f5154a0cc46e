/*
 * tcp-bulk: a bulk TCP sender and sink for the lab's throughput benchmark (scripts/bench-vmm-lab), in the
 * spirit of iperf's defaults: the sender writes large buffers (64 KiB), so the guest's TCP always has data
 * and the figure is the virtual NIC's, not busybox nc's small copies. scripts/lab-vmm builds it statically.
 *
 *   tcp-bulk send HOST PORT BYTES   connect, write BYTES zeros in 64 KiB writes, shut down the sending side,
 *                                   wait for the peer's close; prints "sent=BYTES secs=S"
 *   tcp-bulk recv PORT              accept one connection on PORT (any address), read it to EOF in 64 KiB
 *                                   reads; prints "bytes=N"
 *
 * Both use plain sockets with the kernel's defaults (Nagle on, default buffers). Exit status 0 on success,
 * 1 on a failure ("tcp-bulk: ..." on stderr), 2 on a usage error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 65536

static char buf[CHUNK];

static int fail(const char *what)
{
	fprintf(stderr, "tcp-bulk: %s: %s\n", what, strerror(errno));
	return 1;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int parse_port(const char *text, struct sockaddr_in *addr)
{
	char *end;
	long port = strtol(text, &end, 10);
	if (*end || port <= 0 || port > 65535)
		return -1;
	addr->sin_family = AF_INET;
	addr->sin_port = htons((unsigned short)port);
	return 0;
}

static int send_bulk(const char *host, const char *port, const char *count)
{
	struct sockaddr_in addr = { 0 };
	char *end;
	unsigned long long total = strtoull(count, &end, 10), left;
	if (*end || parse_port(port, &addr) || inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
		fprintf(stderr, "tcp-bulk: send needs an IPv4 address, a port and a byte count\n");
		return 2;
	}
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return fail("socket");
	if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
		return fail("connect");
	double t0 = now();
	for (left = total; left > 0;) {
		size_t n = left < CHUNK ? left : CHUNK;
		ssize_t done = write(fd, buf, n);
		if (done < 0) {
			if (errno == EINTR)
				continue;
			return fail("write");
		}
		left -= (unsigned long long)done;
	}
	if (shutdown(fd, SHUT_WR) < 0)
		return fail("shutdown");
	/* The peer closes once it has read everything: the bytes have arrived, not just left. */
	while (read(fd, buf, sizeof buf) > 0) {
	}
	printf("sent=%llu secs=%.2f\n", total, now() - t0);
	close(fd);
	return 0;
}

static int recv_bulk(const char *port)
{
	struct sockaddr_in addr = { 0 };
	unsigned long long total = 0;
	int one = 1;
	if (parse_port(port, &addr)) {
		fprintf(stderr, "tcp-bulk: recv needs a port\n");
		return 2;
	}
	addr.sin_addr.s_addr = htonl(INADDR_ANY);
	int listener = socket(AF_INET, SOCK_STREAM, 0);
	if (listener < 0)
		return fail("socket");
	if (setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
		return fail("setsockopt");
	if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0)
		return fail("bind");
	if (listen(listener, 1) < 0)
		return fail("listen");
	int fd = accept(listener, NULL, NULL);
	if (fd < 0)
		return fail("accept");
	close(listener);
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return fail("read");
		}
		total += (unsigned long long)n;
	}
	close(fd);
	printf("bytes=%llu\n", total);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[1], "send") == 0)
		return send_bulk(argv[2], argv[3], argv[4]);
	if (argc == 3 && strcmp(argv[1], "recv") == 0)
		return recv_bulk(argv[2]);
	fprintf(stderr, "usage: tcp-bulk send HOST PORT BYTES | tcp-bulk recv PORT\n");
	return 2;
}
