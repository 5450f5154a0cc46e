/*
 * api-call: one HTTP/1.1 request to vessel-vmm's API on a unix socket, for level 1 of the lab (busybox has no
 * HTTP client that speaks over a unix socket). scripts/lab-vmm builds it statically on the host (gcc -static).
 *
 *   api-call [-t SECS] [-r SECS] SOCKET METHOD PATH [BODY]
 *
 * Sends METHOD PATH with BODY (JSON) and "Connection: close", reads the answer to its end and prints
 * "status=NNN" on the first line, then the body. Exit status: 0 for a 2xx answer, 1 for any other answer or
 * failure ("error: ..." on stdout), 2 for a usage error, 124 when -t SECS (default 60) ran out. -r retries a
 * socket that is missing or refuses connections for up to SECS seconds (a VMM still starting).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static void on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "timeout\n";
	if (write(1, msg, sizeof msg - 1) < 0) {
	}
	_exit(124);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int fail(const char *what)
{
	printf("error: %s: %s\n", what, strerror(errno));
	return 1;
}

static int connect_to(const char *path, double retry)
{
	struct sockaddr_un un;
	memset(&un, 0, sizeof un);
	un.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof un.sun_path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(un.sun_path, path);
	double deadline = now() + retry;
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -1;
		if (connect(fd, (struct sockaddr *)&un, sizeof un) == 0)
			return fd;
		int e = errno;
		close(fd);
		if (now() >= deadline || !(e == ENOENT || e == ECONNREFUSED)) {
			errno = e;
			return -1;
		}
		usleep(50000);
	}
}

static int write_all(int fd, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, buf, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		buf += w;
		n -= (size_t)w;
	}
	return 0;
}

int main(int argc, char **argv)
{
	unsigned secs = 60;
	double retry = 0;
	int opt;
	while ((opt = getopt(argc, argv, "t:r:")) != -1) {
		switch (opt) {
		case 't': secs = (unsigned)atoi(optarg); break;
		case 'r': retry = atof(optarg); break;
		default: goto usage;
		}
	}
	if (argc - optind < 3 || argc - optind > 4)
		goto usage;
	const char *path = argv[optind], *method = argv[optind + 1], *target = argv[optind + 2];
	const char *body = argc - optind == 4 ? argv[optind + 3] : "";
	signal(SIGALRM, on_alarm);
	signal(SIGPIPE, SIG_IGN);
	alarm(secs);

	int fd = connect_to(path, retry);
	if (fd < 0)
		return fail(path);
	char head[1024];
	int n = snprintf(head, sizeof head,
			 "%s %s HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
			 "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
			 method, target, strlen(body));
	if (n < 0 || (size_t)n >= sizeof head) {
		errno = E2BIG;
		return fail("the request line");
	}
	if (write_all(fd, head, (size_t)n) < 0 || write_all(fd, body, strlen(body)) < 0)
		return fail("write");

	size_t cap = 65536, len = 0;
	char *buf = malloc(cap + 1);
	if (!buf)
		return fail("malloc");
	for (;;) {
		if (len == cap) {
			char *bigger = realloc(buf, 2 * cap + 1);
			if (!bigger)
				return fail("realloc");
			buf = bigger;
			cap *= 2;
		}
		ssize_t r = read(fd, buf + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return fail("read");
		if (r == 0)
			break;
		len += (size_t)r;
	}
	buf[len] = 0;
	close(fd);
	int status = 0;
	if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
		printf("error: not an HTTP answer (%zu bytes)\n", len);
		return 1;
	}
	char *start = strstr(buf, "\r\n\r\n");
	printf("status=%d\n", status);
	if (start && start[4]) {
		fputs(start + 4, stdout);
		if (buf[len - 1] != '\n')
			putchar('\n');
	}
	return status >= 200 && status < 300 ? 0 : 1;

usage:
	fprintf(stderr, "usage: api-call [-t SECS] [-r SECS] SOCKET METHOD PATH [BODY]\n");
	return 2;
}
