/* SPDX-License-Identifier: MIT */
/*
 * A client that plays a trace to the real daemon, and the check of what the
 * daemon recorded of it (tests/trace.sh):
 *
 *   trace-client SOCKET replay TRACE
 *	each hint event sent as a ROUTING_HINT, each acquire event as one
 *	ACQUIRE of model 0 (its bytes checked against the demo checkpoint,
 *	hashed, released); one token reported whenever the next event starts
 *	another (prompt, phase, token).  Prints "served BYTES HASH".
 *   trace-client - check RECORDING TRACE
 *	the recording holds the trace's events, in order, from one client,
 *	sequence 0, with the tokens the replay reported.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "demostore.h"
#include "tierd-client.h"
#include "trace.h"

static bool same_group(const struct trace_event *a, const struct trace_event *b)
{
	return a->client == b->client && a->kind == b->kind && a->token == b->token;
}

static int replay(const char *sock, const char *path)
{
	struct tierd_client *c = NULL;
	struct trace_reader *r = NULL;
	struct trace_event ev, prev;
	uint64_t served = 0, hash = 0;
	bool any = false;
	char err[512];
	int ret;

	if (trace_open(&r, path, err, sizeof(err))) {
		fprintf(stderr, "trace-client: %s\n", err);
		return 1;
	}
	ret = tierd_client_connect(&c, sock, "trace-client");
	if (ret) {
		fprintf(stderr, "trace-client: connect: %s\n", strerror(-ret));
		trace_close(r);
		return 1;
	}
	while ((ret = trace_next(r, &ev, err, sizeof(err))) == 1) {
		if (any && !same_group(&prev, &ev)) {
			ret = tierd_client_report_tokens(c, 0, 1);
			if (ret)
				break;
		}
		prev = ev;
		any = true;
		if (ev.kind == TRACE_HINT) {
			float w[TRACE_MAX_EXPERTS];

			for (uint32_t i = 0; i < ev.nexperts; i++)
				w[i] = 1.0f / (float)ev.nexperts;
			ret = tierd_client_routing_hint(c, 0, ev.layer, ev.experts, w, ev.nexperts);
		} else {
			struct tierd_key keys[TRACE_MAX_EXPERTS];
			struct tierd_acquisition *a;

			for (uint32_t i = 0; i < ev.nexperts; i++)
				keys[i] = (struct tierd_key){ 0, ev.layer, ev.experts[i] };
			ret = tierd_client_acquire(c, keys, ev.nexperts, 60000, &a);
			if (ret)
				break;
			for (size_t i = 0; i < tierd_acquisition_count(a); i++) {
				const struct tierd_expert *e = tierd_acquisition_expert(a, i);

				for (uint32_t t = 0; t < e->ntensors; t++) {
					const uint8_t *p = e->tensors[t].data;

					for (uint64_t off = 0; off < e->tensors[t].length; off++)
						if (p[off] != demostore_byte(e->key.layer, e->key.expert, t, off)) {
							fprintf(stderr, "trace-client: layer %u expert %u: byte %" PRIu64
								" wrong\n", e->key.layer, e->key.expert, off);
							return 1;
						}
					hash = XXH64(p, e->tensors[t].length, hash);
					served += e->tensors[t].length;
				}
			}
			ret = tierd_client_release(c, a);
		}
		if (ret)
			break;
	}
	if (ret) {
		if (ret < 0 && !*err)
			snprintf(err, sizeof(err), "%s", strerror(-ret));
		fprintf(stderr, "trace-client: %s\n", err);
		tierd_client_close(c);
		trace_close(r);
		return 1;
	}
	printf("served %" PRIu64 " %016" PRIx64 "\n", served, hash);
	tierd_client_close(c);
	trace_close(r);
	return 0;
}

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "trace-client: event %" PRIu64 ": ", n); \
	fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); goto out; } } while (0)

static int check(const char *recording, const char *path)
{
	struct trace_reader *rec = NULL, *want = NULL;
	struct trace_event a, b, prev;
	uint64_t n = 0, tprev = 0;
	uint32_t client = 0, token = 0;
	bool any = false;
	char err[512];
	int ra = 0, rb = 0, ret = 1;

	if (trace_open(&rec, recording, err, sizeof(err)) || trace_open(&want, path, err, sizeof(err))) {
		fprintf(stderr, "trace-client: %s\n", err);
		goto out;
	}
	CHECK(!strcmp(trace_info(rec)->format, "tierd-trace-v1"), "format %s", trace_info(rec)->format);
	CHECK(trace_info(rec)->nmodels == 1 && !strcmp(trace_info(rec)->models[0], "demo"), "models");
	for (;;) {
		ra = trace_next(rec, &a, err, sizeof(err));
		if (ra < 0)
			break;
		rb = trace_next(want, &b, err, sizeof(err));
		if (rb < 0)
			break;
		CHECK(ra == rb, "the recording %s", ra ? "has more events" : "ends early");
		if (!ra)
			break;
		if (any && !same_group(&prev, &b))
			token++;
		if (!any)
			client = a.client;
		CHECK(a.client == client && client != 0, "client %u, first %u", a.client, client);
		CHECK(a.seq == 0, "seq %" PRIu64, a.seq);
		CHECK(a.token == token, "token %u, want %u", a.token, token);
		CHECK(a.kind == b.kind && a.layer == b.layer && a.model == 0, "kind %d layer %u, want %d %u",
		      a.kind, a.layer, b.kind, b.layer);
		CHECK(a.nexperts == b.nexperts && !memcmp(a.experts, b.experts, a.nexperts * sizeof(uint32_t)),
		      "experts differ");
		CHECK(a.t_ns >= tprev, "time goes back");
		tprev = a.t_ns;
		prev = b;
		any = true;
		n++;
	}
	if (ra < 0 || rb < 0) {
		fprintf(stderr, "trace-client: %s\n", err);
		goto out;
	}
	CHECK(trace_dropped(rec) == 0, "%" PRIu64 " dropped", trace_dropped(rec));
	printf("recording matches: %" PRIu64 " events\n", n);
	ret = 0;
out:
	trace_close(rec);
	trace_close(want);
	return ret;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[2], "replay"))
		return replay(argv[1], argv[3]);
	if (argc == 5 && !strcmp(argv[2], "check"))
		return check(argv[3], argv[4]);
	fprintf(stderr, "Usage: trace-client SOCKET replay TRACE | trace-client - check RECORDING TRACE\n");
	return 2;
}
