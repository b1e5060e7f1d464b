/* SPDX-License-Identifier: MIT */
/*
 * A libtierd-client test client driven by tests/service.sh.  Each subcommand
 * checks one behaviour and exits 0 when it holds, non-zero with a message
 * otherwise.  Experts come from a demo checkpoint (tierctl demo-store), whose
 * every byte is known: demostore_byte().
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "demostore.h"
#include "tierd-client.h"
#include "tierd-proto.h"

static const char *sock;

static int die(struct tierd_client *c, const char *what, int r)
{
	char why[512] = "";

	if (c)
		tierd_client_last_error(c, why, sizeof(why));
	fprintf(stderr, "svc-client: %s: %s%s%s\n", what, strerror(-r), *why ? ": " : "", why);
	return 1;
}

/* Every byte of every tensor must be the demo checkpoint's. */
static int verify(const struct tierd_acquisition *a)
{
	for (size_t i = 0; i < tierd_acquisition_count(a); i++) {
		const struct tierd_expert *e = tierd_acquisition_expert(a, i);

		for (uint32_t t = 0; t < e->ntensors; t++) {
			const uint8_t *p = e->tensors[t].data;

			for (uint64_t off = 0; off < e->tensors[t].length; off++) {
				uint8_t want = demostore_byte(e->key.layer, e->key.expert, t, off);

				if (p[off] != want) {
					fprintf(stderr, "svc-client: layer %u expert %u tensor %s byte %llu: 0x%02x, want 0x%02x\n",
						e->key.layer, e->key.expert, e->tensors[t].name,
						(unsigned long long)off, p[off], want);
					return -EBADMSG;
				}
			}
		}
	}
	return 0;
}

/* "0-3" or "5" -> keys of one layer. */
static size_t parse_keys(const char *layer, const char *experts, struct tierd_key *keys, size_t max)
{
	unsigned a, b;
	size_t n = 0;

	if (sscanf(experts, "%u-%u", &a, &b) != 2)
		a = b = (unsigned)atoi(experts);
	for (unsigned e = a; e <= b && n < max; e++)
		keys[n++] = (struct tierd_key){ 0, (uint32_t)atoi(layer), e };
	return n;
}

/* verify LAYER EXPERTS ROUNDS: acquire, check bytes, release, ROUNDS times. */
static int cmd_verify(int argc, char **argv)
{
	struct tierd_client *c;
	struct tierd_key keys[256];
	size_t n;
	int rounds, r;

	if (argc != 3)
		return 2;
	n = parse_keys(argv[0], argv[1], keys, 256);
	rounds = atoi(argv[2]);
	r = tierd_client_connect(&c, sock, "verify");
	if (r)
		return die(NULL, "connect", r);
	for (int i = 0; i < rounds; i++) {
		struct tierd_acquisition *a;

		r = tierd_client_acquire(c, keys, n, 60000, &a);
		if (r)
			return die(c, "acquire", r);
		r = verify(a);
		tierd_client_release(c, a);
		if (r)
			return 1;
	}
	tierd_client_close(c);
	return 0;
}

/*
 * hold LAYER EXPERTS SECONDS, hold-until LAYER EXPERTS FILE: acquire, say
 * "held", keep the pins for SECONDS or until FILE exists, then verify again
 * (eviction pressure, or a checkpoint changed on disk, must not have touched
 * what is held).
 */
static int hold_and_verify(int argc, char **argv, const char *name, bool until_file)
{
	struct tierd_client *c;
	struct tierd_acquisition *a;
	struct tierd_key keys[256];
	size_t n;
	int r;

	if (argc != 3)
		return 2;
	n = parse_keys(argv[0], argv[1], keys, 256);
	r = tierd_client_connect(&c, sock, name);
	if (!r)
		r = tierd_client_acquire(c, keys, n, 60000, &a);
	if (r)
		return die(c, "acquire", r);
	printf("held\n");
	fflush(stdout);
	if (until_file)
		for (int i = 0; i < 1200 && access(argv[2], F_OK); i++)
			usleep(100000);
	else
		sleep((unsigned)atoi(argv[2]));
	r = verify(a);
	tierd_client_release(c, a);
	tierd_client_close(c);
	return r ? 1 : 0;
}

static int cmd_hold(int argc, char **argv)
{
	return hold_and_verify(argc, argv, "hold", false);
}

/* expect ERRNO LAYER EXPERTS: the acquire must fail with that errno. */
static int cmd_expect(int argc, char **argv)
{
	struct tierd_client *c;
	struct tierd_acquisition *a;
	struct tierd_key keys[1024];
	char why[512];
	size_t n;
	int want, r;

	if (argc != 3)
		return 2;
	want = !strcmp(argv[0], "EACCES") ? -EACCES : !strcmp(argv[0], "EDQUOT") ? -EDQUOT :
	       !strcmp(argv[0], "ENOENT") ? -ENOENT : -atoi(argv[0]);
	n = parse_keys(argv[1], argv[2], keys, 1024);
	r = tierd_client_connect(&c, sock, "expect");
	if (r)
		return die(NULL, "connect", r);
	r = tierd_client_acquire(c, keys, n, 60000, &a);
	tierd_client_last_error(c, why, sizeof(why));
	if (r != want) {
		fprintf(stderr, "svc-client: acquire returned %d (%s), want %d: %s\n", r, strerror(-r), want, why);
		return 1;
	}
	printf("refused as expected: %s\n", why);
	/* The connection is still good for what is allowed. */
	r = tierd_client_stats(c, (uint64_t[TIERD_STAT_COUNT]){ 0 }, TIERD_STAT_COUNT);
	tierd_client_close(c);
	return r > 0 ? 0 : 1;
}

/*
 * read MODEL LAYER EXPERT DIR: acquires one expert of model index MODEL and
 * writes each tensor's bytes as served into DIR/<tensor name>.  Refused:
 * prints "refused ERRNO: why" and exits 3.
 */
static int cmd_read(int argc, char **argv)
{
	struct tierd_key k;
	struct tierd_client *c;
	struct tierd_acquisition *a;
	const struct tierd_expert *e;
	char why[512], path[4096] = "";
	uint32_t nt;
	int r;

	if (argc != 4)
		return 2;
	k = (struct tierd_key){ (uint32_t)atoi(argv[0]), (uint32_t)atoi(argv[1]), (uint32_t)atoi(argv[2]) };
	r = tierd_client_connect(&c, sock, "read");
	if (r)
		return die(NULL, "connect", r);
	r = tierd_client_acquire(c, &k, 1, 60000, &a);
	if (r) {
		tierd_client_last_error(c, why, sizeof(why));
		printf("refused %d: %s\n", -r, why);
		tierd_client_close(c);
		return 3;
	}
	e = tierd_acquisition_expert(a, 0);
	nt = e->ntensors;
	for (uint32_t t = 0; t < e->ntensors && !r; t++) {
		FILE *f;

		snprintf(path, sizeof(path), "%s/%s", argv[3], e->tensors[t].name);
		f = fopen(path, "we");
		if (!f || fwrite(e->tensors[t].data, 1, e->tensors[t].length, f) != e->tensors[t].length)
			r = -EIO;
		if (f && fclose(f))
			r = -EIO;
	}
	tierd_client_release(c, a);
	tierd_client_close(c);
	if (r)
		return die(NULL, path, r);
	printf("read %u tensors\n", nt);
	return 0;
}

static int cmd_hold_until(int argc, char **argv)
{
	return hold_and_verify(argc, argv, "hold-until", true);
}

/* write-pool: a child writing to the mapped pool must die of SIGSEGV. */
static int cmd_write_pool(int argc, char **argv)
{
	struct tierd_client *c;
	uint64_t size;
	volatile uint8_t *base;
	pid_t pid;
	int st, r = tierd_client_connect(&c, sock, "writer");

	if (r)
		return die(NULL, "connect", r);
	base = (volatile uint8_t *)tierd_client_pool_base(c, 0, &size);
	if (!base) {
		fprintf(stderr, "svc-client: no pool mapped\n");
		return 1;
	}
	/* The descriptor itself is read-only: the mapping cannot be made
	 * writable either (a client could try that before writing). */
	if (!mprotect((void *)base, 4096, PROT_READ | PROT_WRITE)) {
		fprintf(stderr, "svc-client: the pool mapping could be made writable\n");
		return 1;
	}
	pid = fork();
	if (pid == 0) {
		signal(SIGSEGV, SIG_DFL);
		base[size / 2] = 0x5a;
		_exit(0);
	}
	waitpid(pid, &st, 0);
	tierd_client_close(c);
	if (WIFSIGNALED(st) && (WTERMSIG(st) == SIGSEGV || WTERMSIG(st) == SIGBUS)) {
		printf("write faulted (signal %d)\n", WTERMSIG(st));
		return 0;
	}
	fprintf(stderr, "svc-client: the write to the pool did not fault (status 0x%x)\n", st);
	return 1;
}

static int raw_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		return -errno;
	return fd;
}

/* Sends one packet and expects ERROR (then EOF). Prints the reason. */
static int expect_error_reply(int fd, const void *msg, size_t len, int want_err)
{
	static uint8_t buf[TIERD_PROTO_MAX_MSG];
	struct tierd_msg_hdr h;
	struct tierd_msg_error e;
	const char *why;
	ssize_t n;

	if (send(fd, msg, len, MSG_NOSIGNAL) != (ssize_t)len)
		return -errno;
	n = recv(fd, buf, sizeof(buf), 0);
	if (n < (ssize_t)sizeof(h))
		return -EPROTO;
	memcpy(&h, buf, sizeof(h));
	if (h.type != TIERD_MSG_ERROR ||
	    tierd_proto_decode_error(buf + sizeof(h), (size_t)n - sizeof(h), &e, &why))
		return -EPROTO;
	printf("refused: %s (%s)\n", e.reason, strerror(-e.err));
	if (e.err != want_err)
		return -EPROTO;
	/* The daemon closes the connection after a refusal. */
	return recv(fd, buf, sizeof(buf), 0) == 0 ? 0 : -EPROTO;
}

/* version MAJOR: a HELLO of another major version is refused with a reason. */
static int cmd_version(int argc, char **argv)
{
	uint8_t msg[256];
	struct tierd_msg_hdr h;
	long n = tierd_proto_encode_hello(msg, sizeof(msg), 1, (uint32_t)getpid(), "future");
	int fd = raw_connect(), r;

	if (fd < 0 || argc != 1)
		return 1;
	memcpy(&h, msg, sizeof(h));
	h.major = (uint16_t)atoi(argv[0]);
	memcpy(msg, &h, sizeof(h));
	r = expect_error_reply(fd, msg, (size_t)n, -EPROTONOSUPPORT);
	close(fd);
	return r ? 1 : 0;
}

/* malformed: garbage, a truncated message and a lying count each close
 * only their own connection; a good client works meanwhile. */
static int cmd_malformed(int argc, char **argv)
{
	struct tierd_client *good;
	uint8_t msg[512];
	struct tierd_key k = { 0, 0, 0 };
	long n;
	int r = tierd_client_connect(&good, sock, "good");

	if (r)
		return die(NULL, "connect", r);
	for (int kind = 0; kind < 4; kind++) {
		int fd = raw_connect();

		if (fd < 0)
			return 1;
		if (kind > 0) {
			uint8_t hello[128];
			uint8_t welcome[TIERD_PROTO_MAX_MSG];
			long hn = tierd_proto_encode_hello(hello, sizeof(hello), 1, 1, "bad");

			if (send(fd, hello, (size_t)hn, 0) != hn || recv(fd, welcome, sizeof(welcome), 0) <= 0)
				return 1;
		}
		switch (kind) {
		case 0:
			memset(msg, 0xab, 100);
			n = 100;
			break;
		case 1:
			n = tierd_proto_encode_keys(msg, sizeof(msg), TIERD_MSG_ACQUIRE, 0, 2, &k, 1);
			n -= 4;
			break;
		case 2:
			n = tierd_proto_encode_keys(msg, sizeof(msg), TIERD_MSG_ACQUIRE, 0, 2, &k, 1);
			memcpy(msg + sizeof(struct tierd_msg_hdr), &(uint32_t){ 500 }, 4);
			break;
		default:
			n = tierd_proto_encode_u64(msg, sizeof(msg), TIERD_MSG_ACQUIRED, 2, 0);
			break;
		}
		r = expect_error_reply(fd, msg, (size_t)n, kind == 0 ? -EBADMSG : -EBADMSG);
		close(fd);
		if (r) {
			fprintf(stderr, "svc-client: malformed message %d not refused as expected\n", kind);
			return 1;
		}
	}
	r = tierd_client_stats(good, (uint64_t[TIERD_STAT_COUNT]){ 0 }, TIERD_STAT_COUNT);
	tierd_client_close(good);
	return r > 0 ? 0 : die(NULL, "good client after malformed ones", r);
}

/* slow: ask and never read the answers; the daemon must drop this client
 * (its output queue overflows) instead of blocking or growing without end. */
static int cmd_slow(int argc, char **argv)
{
	uint8_t hello[128], msg[64];
	static uint8_t welcome[TIERD_PROTO_MAX_MSG];
	struct tierd_proto_buf b;
	long hn = tierd_proto_encode_hello(hello, sizeof(hello), 1, (uint32_t)getpid(), "slow");
	int fd = raw_connect();

	if (fd < 0 || send(fd, hello, (size_t)hn, 0) != hn || recv(fd, welcome, sizeof(welcome), 0) <= 0)
		return 1;
	for (uint64_t id = 2; id < 2000000; id++) {
		tierd_proto_begin(&b, msg, sizeof(msg), TIERD_MSG_STATS, 0, id);
		if (send(fd, msg, (size_t)tierd_proto_end(&b), MSG_NOSIGNAL) < 0) {
			printf("dropped by the daemon after %llu unread answers (%s)\n",
			       (unsigned long long)id - 2, strerror(errno));
			close(fd);
			return 0;
		}
	}
	fprintf(stderr, "svc-client: 2 million unread answers and still connected\n");
	return 1;
}

struct async_state {
	int done, err;
	struct tierd_acquisition *a;
};

static void on_acquired(struct tierd_client *c, int err, struct tierd_acquisition *a, void *arg)
{
	struct async_state *s = arg;

	s->done++;
	s->err = err;
	s->a = a;
}

/* async LAYER EXPERTS: non-blocking acquire through the fd and process(). */
static int cmd_async(int argc, char **argv)
{
	struct tierd_client *c;
	struct tierd_key keys[256];
	struct async_state s = { 0 };
	size_t n;
	int r;

	if (argc != 2)
		return 2;
	n = parse_keys(argv[0], argv[1], keys, 256);
	r = tierd_client_connect(&c, sock, "async");
	if (!r)
		r = tierd_client_acquire_async(c, keys, n, on_acquired, &s);
	if (r)
		return die(c, "acquire_async", r);
	while (!s.done) {
		struct pollfd p = { .fd = tierd_client_fd(c), .events = POLLIN };

		if (poll(&p, 1, 60000) <= 0)
			return die(c, "poll", -ETIMEDOUT);
		r = tierd_client_process(c, 0);
		if (r < 0)
			return die(c, "process", r);
	}
	if (s.err)
		return die(c, "async acquire", s.err);
	r = verify(s.a);
	tierd_client_release(c, s.a);
	tierd_client_close(c);
	return r ? 1 : 0;
}

struct thread_arg {
	struct tierd_client *c;
	uint32_t layer;
	int rounds;
	int err;
};

static void *thread_main(void *p)
{
	struct thread_arg *t = p;

	for (int i = 0; i < t->rounds && !t->err; i++) {
		/* Overlapping sets: threads share experts and the one socket. */
		struct tierd_key keys[2] = { { 0, t->layer, 0 }, { 0, (t->layer + 1) % 2, (uint32_t)(1 + i % 4) } };
		struct tierd_acquisition *a;

		t->err = tierd_client_acquire(t->c, keys, 2, 60000, &a);
		if (t->err)
			break;
		t->err = verify(a);
		tierd_client_release(t->c, a);
	}
	return NULL;
}

/* threads N ROUNDS: N threads of one process share one client. */
static int cmd_threads(int argc, char **argv)
{
	struct tierd_client *c;
	struct thread_arg args[16];
	pthread_t th[16];
	int n, r;

	if (argc != 2)
		return 2;
	n = atoi(argv[0]);
	if (n < 1 || n > 16)
		return 2;
	r = tierd_client_connect(&c, sock, "threads");
	if (r)
		return die(NULL, "connect", r);
	for (int i = 0; i < n; i++) {
		args[i] = (struct thread_arg){ c, (uint32_t)(i % 2), atoi(argv[1]), 0 };
		pthread_create(&th[i], NULL, thread_main, &args[i]);
	}
	for (int i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
		if (args[i].err)
			r = die(c, "thread", args[i].err);
	}
	tierd_client_close(c);
	return r;
}

static void on_reconnect(struct tierd_client *c, unsigned ok, unsigned lost, void *arg)
{
	printf("reconnected: %u re-established, %u lost\n", ok, lost);
	fflush(stdout);
}

/* restart LAYER EXPERTS FLAGFILE: hold pins; once FLAGFILE exists (the test
 * restarted the daemon), reconnect and check the pins were re-established
 * and the bytes are right, or that the acquisition reports itself lost. */
static int cmd_restart(int argc, char **argv)
{
	struct tierd_client *c;
	struct tierd_acquisition *a;
	struct tierd_key keys[256];
	size_t n;
	int r, st;

	if (argc != 3)
		return 2;
	n = parse_keys(argv[0], argv[1], keys, 256);
	r = tierd_client_connect(&c, sock, "restart");
	if (!r)
		r = tierd_client_acquire(c, keys, n, 60000, &a);
	if (r)
		return die(c, "acquire", r);
	tierd_client_set_reconnect_cb(c, on_reconnect, NULL);
	printf("held\n");
	fflush(stdout);
	for (int i = 0; i < 600 && access(argv[2], F_OK); i++)
		usleep(50000);
	/* The old daemon is gone: the next call notices and reconnects. */
	for (int i = 0; i < 100; i++) {
		r = tierd_client_stats(c, (uint64_t[TIERD_STAT_COUNT]){ 0 }, TIERD_STAT_COUNT);
		if (r > 0)
			break;
		usleep(100000);
	}
	if (r <= 0)
		return die(c, "stats after restart", r);
	st = tierd_acquisition_status(c, a);
	if (st == -ENOTCONN) {
		/* The stats call may have run before the break was seen. */
		tierd_client_reconnect(c);
		st = tierd_acquisition_status(c, a);
	}
	if (st == 0) {
		r = verify(a);
		printf("pins re-established, bytes %s\n", r ? "WRONG" : "verified");
	} else {
		printf("acquisition reported lost: %s\n", strerror(-st));
		r = st == -ENOLINK ? 0 : 1;
	}
	tierd_client_release(c, a);
	tierd_client_close(c);
	return r ? 1 : 0;
}

/* tokens LAYER EXPERTS TOKENS FILE: acquire (bytes verified), report TOKENS
 * for model 0, say "held" once the daemon has them all (a STATS round trip
 * orders them), stay connected until FILE exists, then release. */
static int cmd_tokens(int argc, char **argv)
{
	struct tierd_client *c;
	struct tierd_acquisition *a;
	struct tierd_key keys[256];
	uint64_t v[TIERD_STAT_COUNT];
	size_t n;
	int r;

	if (argc != 4)
		return 2;
	n = parse_keys(argv[0], argv[1], keys, 256);
	r = tierd_client_connect(&c, sock, "tokens");
	if (!r)
		r = tierd_client_acquire(c, keys, n, 60000, &a);
	if (r)
		return die(c, "acquire", r);
	r = verify(a);
	if (r)
		return 1;
	r = tierd_client_report_tokens(c, 0, strtoull(argv[2], NULL, 10));
	if (!r)
		r = tierd_client_stats(c, v, TIERD_STAT_COUNT);
	if (r < 0)
		return die(c, "token report", r);
	printf("held\n");
	fflush(stdout);
	for (int i = 0; i < 1200 && access(argv[3], F_OK); i++)
		usleep(50000);
	tierd_client_release(c, a);
	tierd_client_close(c);
	return 0;
}

/*
 * chain LAYERS EXPERTS TOKENS: one sequence acquiring layer by layer as a
 * model runs, on a deterministic chain (token t, layer l: expert
 * (t + l) % EXPERTS of model 0), each layer verified and released before
 * the next: what the daemon's own prefetch learns to run ahead of.
 */
static int cmd_chain(int argc, char **argv)
{
	struct tierd_client *c;
	int layers, experts, tokens, r;

	if (argc != 3)
		return 2;
	layers = atoi(argv[0]);
	experts = atoi(argv[1]);
	tokens = atoi(argv[2]);
	if (layers < 1 || experts < 1 || tokens < 1)
		return 2;
	r = tierd_client_connect(&c, sock, "chain");
	if (r)
		return die(NULL, "connect", r);
	for (int t = 0; t < tokens; t++)
		for (int l = 0; l < layers; l++) {
			struct tierd_key k = { 0, (uint32_t)l, (uint32_t)((t + l) % experts) };
			struct tierd_acquisition *a;

			r = tierd_client_acquire(c, &k, 1, 60000, &a);
			if (r)
				return die(c, "acquire", r);
			r = verify(a);
			tierd_client_release(c, a);
			if (r)
				return 1;
		}
	tierd_client_close(c);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
		{ "verify", cmd_verify }, { "hold", cmd_hold }, { "expect", cmd_expect },
		{ "write-pool", cmd_write_pool }, { "version", cmd_version },
		{ "malformed", cmd_malformed }, { "async", cmd_async }, { "restart", cmd_restart },
		{ "threads", cmd_threads }, { "slow", cmd_slow }, { "tokens", cmd_tokens },
		{ "read", cmd_read }, { "hold-until", cmd_hold_until }, { "chain", cmd_chain },
	};

	if (argc < 3) {
		fprintf(stderr, "Usage: svc-client SOCKET COMMAND [ARGS]\n");
		return 2;
	}
	sock = argv[1];
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[2], cmds[i].name))
			return cmds[i].fn(argc - 3, argv + 3);
	fprintf(stderr, "svc-client: unknown command %s\n", argv[2]);
	return 2;
}
