/* SPDX-License-Identifier: MIT */
/*
 * tierctl trace: start and stop the daemon's recording (TRACE, operators
 * only), and, on files, info (what a trace holds), dump (its events, one a
 * line) and convert (any trace into tierd-trace-v1).
 *
 * start and stop speak the protocol themselves (HELLO, TRACE) rather than
 * through libtierd-client: an operator's one-off request needs none of the
 * library's connection machinery, and the library's API stays as it is.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <poll.h>
#include <unistd.h>

#include "tierctl.h"
#include "tierd-proto.h"
#include "trace.h"

static uint8_t msgbuf[TIERD_PROTO_MAX_MSG];

/* Receives one packet, closing any descriptors that come with it (WELCOME
 * carries the pool's). */
static ssize_t recv_packet(int fd, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	struct iovec iov = { .iov_base = msgbuf, .iov_len = sizeof(msgbuf) };
	union {
		char buf[CMSG_SPACE(sizeof(int) * TIERD_PROTO_MAX_POOLS)];
		struct cmsghdr align;
	} ctl;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			     .msg_controllen = sizeof(ctl.buf) };
	ssize_t n;
	int r = poll(&pfd, 1, timeout_ms);

	if (r == 0)
		return -ETIMEDOUT;
	if (r < 0)
		return -errno;
	n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return -errno;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
			for (size_t k = 0; k < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++) {
				int pfd_;

				memcpy(&pfd_, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
				close(pfd_);
			}
	return n == 0 ? -ECONNRESET : n;
}

/* HELLO, then TRACE op path; prints the answer.  Returns an exit status. */
static int trace_request(const struct tierctl_opts *o, uint32_t op, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int timeout = tierctl_timeout(o, 10000);
	struct tierd_msg_hdr h;
	const char *why = NULL;
	int fd, ret = 1;
	long len;
	ssize_t n = 0;

	if (strlen(o->socket_path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "tierctl: %s: socket path too long\n", o->socket_path);
		return 1;
	}
	strcpy(sa.sun_path, o->socket_path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		fprintf(stderr, "tierctl: cannot connect to tierd at %s: %s\n", o->socket_path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	len = tierd_proto_encode_hello(msgbuf, sizeof(msgbuf), 1, (uint32_t)getpid(), "tierctl");
	if (len < 0 || send(fd, msgbuf, (size_t)len, MSG_NOSIGNAL) != len)
		goto lost;
	n = recv_packet(fd, timeout);
	if (n < 0 || tierd_proto_decode_hdr(msgbuf, (size_t)n, &h, &why))
		goto lost;
	if (h.type == TIERD_MSG_ERROR)
		goto answer;
	len = tierd_proto_encode_trace(msgbuf, sizeof(msgbuf), 2, op, path);
	if (len < 0) {
		fprintf(stderr, "tierctl: trace: the path is longer than the protocol carries (%u bytes)\n",
			TIERD_PROTO_MAX_NAME);
		goto out;
	}
	if (send(fd, msgbuf, (size_t)len, MSG_NOSIGNAL) != len)
		goto lost;
	n = recv_packet(fd, timeout);
	if (n < 0 || tierd_proto_decode_hdr(msgbuf, (size_t)n, &h, &why))
		goto lost;
answer:
	if (h.type == TIERD_MSG_ERROR) {
		struct tierd_msg_error e;

		if (tierd_proto_decode_error(msgbuf + sizeof(h), h.length, &e, &why))
			goto lost;
		fprintf(stderr, "tierctl: trace %s: %s: %s\n", op == TIERD_TRACE_START ? "start" : "stop",
			strerror(-e.err), e.reason);
		goto out;
	}
	if (h.type == TIERD_MSG_OK) {
		uint64_t v;

		if (tierd_proto_decode_u64(msgbuf + sizeof(h), h.length, &v, &why))
			goto lost;
		if (op == TIERD_TRACE_START)
			printf("recording into %s\n", path);
		else
			printf("stopped: %llu events recorded\n", (unsigned long long)v);
		ret = 0;
		goto out;
	}
	why = "an answer other than OK or ERROR";
lost:
	fprintf(stderr, "tierctl: trace: %s\n", n < 0 ? strerror((int)-n) : why ? why : "tierd closed the connection");
out:
	close(fd);
	return ret;
}

static int trace_start(const struct tierctl_opts *o, const char *file)
{
	char path[PATH_MAX + 1];

	/* The daemon opens it, from its own working directory. */
	if (file[0] != '/') {
		char cwd[PATH_MAX];

		if (!getcwd(cwd, sizeof(cwd)) || (size_t)snprintf(path, sizeof(path), "%s/%s", cwd, file) >= sizeof(path)) {
			fprintf(stderr, "tierctl: trace start: %s: cannot make it an absolute path\n", file);
			return 1;
		}
	} else {
		snprintf(path, sizeof(path), "%s", file);
	}
	return trace_request(o, TIERD_TRACE_START, path);
}

static const char *kind_name(enum trace_kind k)
{
	switch (k) {
	case TRACE_ACQUIRE:
		return "acquire";
	case TRACE_HINT:
		return "hint";
	}
	return "?";
}

/* info (counts) or dump (every event). */
static int trace_read(const char *path, bool dump)
{
	struct trace_reader *r = NULL;
	const struct trace_info *in;
	struct trace_event ev;
	uint64_t acquires = 0, hints = 0, experts = 0;
	char err[1024];
	int ret;

	ret = trace_open(&r, path, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "tierctl: %s\n", err);
		return 1;
	}
	in = trace_info(r);
	while ((ret = trace_next(r, &ev, err, sizeof(err))) == 1) {
		if (ev.kind == TRACE_ACQUIRE)
			acquires++;
		else
			hints++;
		experts += ev.nexperts;
		if (!dump)
			continue;
		printf("%llu %s client %u seq %llu token %u model %u layer %u experts", (unsigned long long)ev.t_ns,
		       kind_name(ev.kind), ev.client, (unsigned long long)ev.seq, ev.token, ev.model, ev.layer);
		for (uint32_t i = 0; i < ev.nexperts; i++)
			printf("%c%u", i ? ',' : ' ', ev.experts[i]);
		putchar('\n');
	}
	if (ret) {
		fprintf(stderr, "tierctl: %s\n", err);
		trace_close(r);
		return 1;
	}
	if (!dump) {
		printf("format:    %s\n", in->format);
		for (uint32_t i = 0; i < in->nmodels; i++)
			printf("model %u:   %s (%u layers, %u experts, top %u)\n", i, in->models[i],
			       in->model_desc ? in->model_desc[i].nlayers : 0,
			       in->model_desc ? in->model_desc[i].nexperts : 0,
			       in->model_desc ? in->model_desc[i].top_k : 0);
		for (uint32_t i = 0; i < in->nsequences && in->sequence_names; i++)
			printf("sequence:  %s\n", in->sequence_names[i]);
		printf("acquires:  %llu events\nhints:     %llu events\nexperts:   %llu\ndropped:   %llu events\n",
		       (unsigned long long)acquires, (unsigned long long)hints, (unsigned long long)experts,
		       (unsigned long long)trace_dropped(r));
	}
	trace_close(r);
	return 0;
}

static int trace_convert(const char *in, const char *out)
{
	struct trace_reader *r = NULL;
	struct trace_writer *w = NULL;
	const struct trace_info *i;
	struct trace_event ev;
	uint64_t n = 0;
	char err[1024];
	int ret;

	if (trace_open(&r, in, err, sizeof(err))) {
		fprintf(stderr, "tierctl: %s\n", err);
		return 1;
	}
	i = trace_info(r);
	if (trace_writer_create(&w, out, i->model_desc, i->nmodels, i->sequences, i->sequences ? i->nsequences : 0,
				err, sizeof(err))) {
		fprintf(stderr, "tierctl: %s\n", err);
		trace_close(r);
		return 1;
	}
	while ((ret = trace_next(r, &ev, err, sizeof(err))) == 1) {
		ret = trace_writer_add(w, &ev, err, sizeof(err));
		if (ret)
			break;
		n++;
	}
	trace_close(r);
	if (ret) {
		fprintf(stderr, "tierctl: %s\n", err);
		trace_writer_abort(w);
		return 1;
	}
	if (trace_writer_close(w, err, sizeof(err))) {
		fprintf(stderr, "tierctl: %s\n", err);
		unlink(out);
		return 1;
	}
	printf("%llu events written to %s\n", (unsigned long long)n, out);
	return 0;
}

int cmd_trace(const struct tierctl_opts *o, int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : "";

	if (!strcmp(sub, "start") && argc == 3)
		return trace_start(o, argv[2]);
	if (!strcmp(sub, "stop") && argc == 2)
		return trace_request(o, TIERD_TRACE_STOP, "");
	if (!strcmp(sub, "info") && argc == 3)
		return trace_read(argv[2], false);
	if (!strcmp(sub, "dump") && argc == 3)
		return trace_read(argv[2], true);
	if (!strcmp(sub, "convert") && argc == 4)
		return trace_convert(argv[2], argv[3]);
	fprintf(stderr, "Usage: tierctl trace start FILE | stop | info TRACE | dump TRACE | convert TRACE OUT\n");
	return 2;
}
