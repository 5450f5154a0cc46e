/*
 * vsock-echo: the lab's vsock (and unix-socket) test tool. Busybox has no AF_VSOCK, so scripts/lab-vmm builds
 * this statically on the host (gcc -static -O2) for both level 1 and the level-2 guest.
 *
 *   vsock-echo cid
 *       prints "cid=N", the local CID (IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock)
 *   vsock-echo listen ADDR [-n CONNS] [-t SECS]
 *       ADDR vsock:PORT (any CID) or unix:PATH. Accepts CONNS connections (default 1) one after the other and
 *       echoes each until the peer closes. Prints "listening", then per connection "accepted peer=CID:PORT"
 *       (vsock) and "echoed bytes=N line=FIRST-LINE"
 *   vsock-echo connect ADDR [-m MSG] [-s SIZE] [-t SECS] [-r SECS]
 *       ADDR vsock:CID:PORT, unix:PATH or hybrid:PATH:PORT (Firecracker-style hybrid vsock: connect to the unix
 *       socket PATH, write "CONNECT PORT\n", expect "OK HOSTPORT\n"). Sends MSG and a newline, then SIZE bytes
 *       of a fixed pseudo-random pattern, reading the echo at the same time, and checks it byte for byte.
 *       Prints "local=CID:PORT peer=CID:PORT" (vsock; Linux reports an auto-bound local CID as -1, ANY), "handshake=LINE" (hybrid), then
 *       "sent=N received=N echo=ok|short|mismatch@OFFSET". -r retries a refused connection (or a hybrid
 *       handshake the device closed) for up to SECS seconds.
 * -t: give up after SECS seconds (default 60): prints "timeout" and exits 124. Other failures: "error: ...",
 * exit 1. Exit 0 only when everything checked out.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum kind { VSOCK, UNIX, HYBRID };

struct addr {
	enum kind kind;
	unsigned cid, port;
	char path[108];
};

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void die(const char *what)
{
	out("error: %s: %s", what, strerror(errno));
	exit(1);
}

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

static int parse_addr(const char *s, struct addr *a, int listening)
{
	memset(a, 0, sizeof *a);
	if (strncmp(s, "vsock:", 6) == 0) {
		a->kind = VSOCK;
		if (listening) {
			a->cid = VMADDR_CID_ANY;
			return sscanf(s + 6, "%u", &a->port) == 1 ? 0 : -1;
		}
		return sscanf(s + 6, "%u:%u", &a->cid, &a->port) == 2 ? 0 : -1;
	}
	if (strncmp(s, "unix:", 5) == 0) {
		a->kind = UNIX;
		if (strlen(s + 5) >= sizeof a->path)
			return -1;
		strcpy(a->path, s + 5);
		return 0;
	}
	if (strncmp(s, "hybrid:", 7) == 0 && !listening) {
		const char *colon = strrchr(s + 7, ':');
		if (!colon || (size_t)(colon - (s + 7)) >= sizeof a->path)
			return -1;
		a->kind = HYBRID;
		memcpy(a->path, s + 7, colon - (s + 7));
		return sscanf(colon + 1, "%u", &a->port) == 1 ? 0 : -1;
	}
	return -1;
}

static socklen_t sockaddr_of(const struct addr *a, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof *ss);
	if (a->kind == VSOCK) {
		struct sockaddr_vm *vm = (struct sockaddr_vm *)ss;
		vm->svm_family = AF_VSOCK;
		vm->svm_cid = a->cid;
		vm->svm_port = a->port;
		return sizeof *vm;
	}
	struct sockaddr_un *un = (struct sockaddr_un *)ss;
	un->sun_family = AF_UNIX;
	strcpy(un->sun_path, a->path);
	return sizeof *un;
}

static void write_all(int fd, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, buf, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			die("write");
		buf += w;
		n -= (size_t)w;
	}
}

static void pattern(unsigned char *buf, size_t n)
{
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (unsigned char)x;
	}
}

static int cmd_cid(void)
{
	unsigned cid;
	int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("open /dev/vsock");
	if (ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) < 0)
		die("IOCTL_VM_SOCKETS_GET_LOCAL_CID");
	out("cid=%u", cid);
	return 0;
}

static int cmd_listen(const struct addr *a, int conns)
{
	struct sockaddr_storage ss;
	socklen_t len = sockaddr_of(a, &ss);
	int fd = socket(a->kind == VSOCK ? AF_VSOCK : AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	if (a->kind == UNIX)
		unlink(a->path);
	if (bind(fd, (struct sockaddr *)&ss, len) < 0)
		die("bind");
	if (listen(fd, 4) < 0)
		die("listen");
	out("listening");
	static char buf[65536];
	for (int i = 0; i < conns; i++) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof peer;
		int c = accept(fd, (struct sockaddr *)&peer, &plen);
		if (c < 0 && errno == EINTR) {
			i--;
			continue;
		}
		if (c < 0)
			die("accept");
		if (a->kind == VSOCK) {
			struct sockaddr_vm *vm = (struct sockaddr_vm *)&peer;
			out("accepted peer=%u:%u", vm->svm_cid, vm->svm_port);
		} else {
			out("accepted");
		}
		size_t total = 0, linelen = 0;
		char line[201];
		int in_line = 1;
		for (;;) {
			ssize_t r = read(c, buf, sizeof buf);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				die("read");
			if (r == 0)
				break;
			for (ssize_t k = 0; k < r && in_line; k++) {
				if (buf[k] == '\n')
					in_line = 0;
				else if (linelen < sizeof line - 1)
					line[linelen++] = buf[k];
			}
			total += (size_t)r;
			write_all(c, buf, (size_t)r);
		}
		line[linelen] = 0;
		out("echoed bytes=%zu line=%s", total, line);
		close(c);
	}
	close(fd);
	if (a->kind == UNIX)
		unlink(a->path);
	return 0;
}

/* Connects (and for hybrid, handshakes); -1 with errno on a refusal worth retrying. */
static int try_connect(const struct addr *a, char *handshake, size_t hlen)
{
	struct sockaddr_storage ss;
	socklen_t len = sockaddr_of(a, &ss);
	int fd = socket(a->kind == VSOCK ? AF_VSOCK : AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	if (a->kind != HYBRID)
		return fd;
	char req[32];
	int n = snprintf(req, sizeof req, "CONNECT %u\n", a->port);
	write_all(fd, req, (size_t)n);
	/* Byte by byte: what follows the newline is the guest's data. */
	size_t got = 0;
	for (;;) {
		char ch;
		ssize_t r = read(fd, &ch, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			/* The device closes the socket when the guest refuses (nobody listening yet). */
			close(fd);
			errno = r == 0 ? ECONNREFUSED : errno;
			return -1;
		}
		if (ch == '\n')
			break;
		if (got < hlen - 1)
			handshake[got++] = ch;
	}
	handshake[got] = 0;
	return fd;
}

static int cmd_connect(const struct addr *a, const char *msg, size_t size, double retry)
{
	char handshake[64] = "";
	int fd, tries = 0;
	double deadline = now() + retry;
	for (;;) {
		tries++;
		fd = try_connect(a, handshake, sizeof handshake);
		if (fd >= 0)
			break;
		int e = errno;
		if (now() >= deadline || !(e == ECONNREFUSED || e == ECONNRESET || e == ENOENT || e == ETIMEDOUT)) {
			errno = e;
			out("tries=%d", tries);
			die("connect");
		}
		usleep(200000);
	}
	if (a->kind == HYBRID) {
		out("handshake=%s tries=%d", handshake, tries);
		if (strncmp(handshake, "OK ", 3) != 0) {
			out("error: the handshake line does not start with OK");
			return 1;
		}
	} else if (a->kind == VSOCK) {
		struct sockaddr_vm l, p;
		socklen_t ll = sizeof l, pl = sizeof p;
		if (getsockname(fd, (struct sockaddr *)&l, &ll) < 0 || getpeername(fd, (struct sockaddr *)&p, &pl) < 0)
			die("getsockname/getpeername");
		out("local=%u:%u peer=%u:%u tries=%d", l.svm_cid, l.svm_port, p.svm_cid, p.svm_port, tries);
	} else {
		out("connected tries=%d", tries);
	}

	size_t mlen = strlen(msg), total = mlen + 1 + size;
	unsigned char *sbuf = malloc(total), *rbuf = malloc(total + 1);
	if (!sbuf || !rbuf)
		die("malloc");
	memcpy(sbuf, msg, mlen);
	sbuf[mlen] = '\n';
	pattern(sbuf + mlen + 1, size);
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
		die("fcntl");
	/* Write and read at once: the echo of a large payload would otherwise fill both directions' buffers. */
	size_t sent = 0, received = 0;
	int eof = 0;
	while (received < total && !eof) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN | (sent < total ? POLLOUT : 0) };
		if (poll(&pfd, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (sent < total && (pfd.revents & (POLLOUT | POLLERR))) {
			ssize_t w = write(fd, sbuf + sent, total - sent > 65536 ? 65536 : total - sent);
			if (w < 0 && errno != EAGAIN && errno != EINTR)
				die("write");
			if (w > 0)
				sent += (size_t)w;
		}
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t r = read(fd, rbuf + received, total + 1 - received);
			if (r < 0 && errno != EAGAIN && errno != EINTR)
				die("read");
			if (r == 0)
				eof = 1;
			if (r > 0)
				received += (size_t)r;
		}
	}
	size_t off = 0;
	while (off < received && off < total && rbuf[off] == sbuf[off])
		off++;
	if (received == total && off == total)
		out("sent=%zu received=%zu echo=ok", sent, received);
	else if (off == received)
		out("sent=%zu received=%zu echo=short", sent, received);
	else
		out("sent=%zu received=%zu echo=mismatch@%zu", sent, received, off);
	close(fd);
	return received == total && off == total ? 0 : 1;
}

static void usage(void)
{
	fprintf(stderr, "usage: vsock-echo cid | listen ADDR [-n CONNS] [-t SECS] |"
			" connect ADDR [-m MSG] [-s SIZE] [-t SECS] [-r SECS]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	const char *cmd = argv[1];
	if (strcmp(cmd, "cid") == 0)
		return cmd_cid();
	if (argc < 3)
		usage();
	int listening = strcmp(cmd, "listen") == 0;
	if (!listening && strcmp(cmd, "connect") != 0)
		usage();
	struct addr a;
	if (parse_addr(argv[2], &a, listening) < 0)
		usage();
	int conns = 1, opt;
	unsigned secs = 60;
	size_t size = 0;
	double retry = 0;
	const char *msg = "hello";
	optind = 3;
	while ((opt = getopt(argc, argv, "n:t:m:s:r:")) != -1) {
		switch (opt) {
		case 'n': conns = atoi(optarg); break;
		case 't': secs = (unsigned)atoi(optarg); break;
		case 'm': msg = optarg; break;
		case 's': size = (size_t)strtoull(optarg, NULL, 0); break;
		case 'r': retry = atof(optarg); break;
		default: usage();
		}
	}
	signal(SIGALRM, on_alarm);
	signal(SIGPIPE, SIG_IGN);
	alarm(secs);
	return listening ? cmd_listen(&a, conns) : cmd_connect(&a, msg, size, retry);
}
