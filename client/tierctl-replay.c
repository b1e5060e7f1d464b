/* SPDX-License-Identifier: MIT */
/*
 * tierctl replay: a routing trace through the daemon's own cache, policies,
 * predictor and prefetch choice (tierd/engine/replay.c), with LRU and
 * Belady's MIN under the same budget as references, per sequence and summed;
 * and, as a bound on what prediction can gain, demand pagers told the next
 * few tokens' routing exactly (replay_foresight).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "replay.h"
#include "tierctl.h"
#include "trace.h"

#define REPLAY_MAX_FORESIGHT 8

/* One sequence's events, in recorded order. */
struct rseq {
	uint32_t client;
	uint64_t seq;
	char name[128];
	struct trace_event *ev;
	size_t n, cap;
	uint64_t lru, min;
	uint64_t fore[REPLAY_MAX_FORESIGHT];	/* misses told the next fore_tokens[i] tokens */
	struct replay_result *res;	/* per run */
	double *ns;			/* per run: wall time of the replay */
	uint64_t steps;			/* acquire events (layers acquired) */
};

struct run {
	const char *policy;
	bool prefetch;
};

struct lab {
	const char *path;
	const struct trace_info *info;
	struct rseq *seqs;
	size_t nseqs;
	uint32_t nlayers, nexperts;
	uint64_t capacity;
	struct run *runs;
	size_t nruns;
	struct prefetch_conf pf;
	uint64_t expert_bytes;
	unsigned fore_tokens[REPLAY_MAX_FORESIGHT];
	size_t nfore;
	unsigned told;			/* tokens of the future the policies are told */
	bool warm;			/* each sequence after the others were learnt */
	unsigned merged;		/* --concurrent: sequences taking turns in one */
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: tierctl replay TRACE [--capacity N|P%%] [--policy NAME[,NAME...]]\n"
		"                      [--prefetch on|off|both] [--prefetch-depth N]\n"
		"                      [--prefetch-min-prob P] [--prefetch-slots N]\n"
		"                      [--expert-bytes N] [--foresight N[,N...]|none]\n"
		"                      [--told N] [--concurrent] [--warm] [--json]\n"
		"Policies: %s (default: every one, with and without prefetch).\n"
		"Capacity: slots over every (layer, expert) key of the model (default 50%%).\n"
		"TRACE \"synthetic[:experts=N,top_k=N,layers=N,prompt=N,tokens=N,sequences=N,seed=N]\":\n"
		"a generated workload with a real router's statistics (default 24x32, top-8).\n"
		"Foresight: reference demand pagers told the next N tokens exactly (default 1,2,3).\n"
		"Told: the policies themselves told the next N tokens exactly (no prefetch).\n"
		"Concurrent: every sequence at once through one cache, taking turns by layer.\n"
		"Warm: each sequence replayed after the predictor learnt the others (held out).\n",
		cache_policy_names());
}

static struct rseq *seq_of(struct lab *lab, const struct trace_event *ev)
{
	struct rseq *s, *ns;

	for (size_t i = 0; i < lab->nseqs; i++)
		if (lab->seqs[i].client == ev->client && lab->seqs[i].seq == ev->seq)
			return &lab->seqs[i];
	ns = realloc(lab->seqs, (lab->nseqs + 1) * sizeof(*ns));
	if (!ns)
		return NULL;
	lab->seqs = ns;
	s = &lab->seqs[lab->nseqs++];
	memset(s, 0, sizeof(*s));
	s->client = ev->client;
	s->seq = ev->seq;
	if (!lab->info)
		snprintf(s->name, sizeof(s->name), "synthetic %u", ev->client);
	else if (lab->info->sequence_names && ev->client < lab->info->nsequences)
		snprintf(s->name, sizeof(s->name), "%s", lab->info->sequence_names[ev->client]);
	else
		snprintf(s->name, sizeof(s->name), "client %u seq %llu", ev->client,
			 (unsigned long long)ev->seq);
	return s;
}

static int add_event(struct lab *lab, const struct trace_event *ev)
{
	struct rseq *s = seq_of(lab, ev);

	if (!s)
		return -ENOMEM;
	if (s->n == s->cap) {
		size_t nc = s->cap ? s->cap * 2 : 1024;
		struct trace_event *ne = realloc(s->ev, nc * sizeof(*ne));

		if (!ne)
			return -ENOMEM;
		s->ev = ne;
		s->cap = nc;
	}
	s->ev[s->n++] = *ev;
	return 0;
}

/*
 * "synthetic[:KEY=N,...]": the lab's generator (replay_synthetic) instead of
 * a file; keys experts, top_k, layers, prompt, tokens, sequences, seed.
 */
static int load_synthetic(struct lab *lab, const char *spec)
{
	struct replay_synth sy = REPLAY_SYNTH_DEFAULT;
	struct trace_event *ev = NULL;
	char *copy = strdup(*spec == ':' ? spec + 1 : spec), *save = NULL;
	size_t n = 0;
	int ret = 0;

	if (!copy)
		return -ENOMEM;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		static const char *const keys[] = { "experts", "top_k", "layers", "prompt", "tokens",
						    "sequences", "seed" };
		uint32_t *fields[] = { &sy.nexperts, &sy.top_k, &sy.nlayers, &sy.prompt, &sy.tokens,
				       &sy.sequences, NULL };
		char *eq = strchr(t, '=');
		size_t i;
		int v;

		for (i = 0; eq && i < sizeof(keys) / sizeof(keys[0]); i++)
			if (strlen(keys[i]) == (size_t)(eq - t) && !strncmp(t, keys[i], (size_t)(eq - t)))
				break;
		if (!eq || i == sizeof(keys) / sizeof(keys[0])) {
			fprintf(stderr, "tierctl replay: synthetic \"%s\": expected KEY=N with KEY one of "
				"experts, top_k, layers, prompt, tokens, sequences, seed\n", t);
			ret = -EINVAL;
			goto cleanup;
		}
		ret = tierctl_parse_int(keys[i], eq + 1, i == 3 ? 0 : 1, 1 << 20, &v);
		if (ret < 0)
			goto cleanup;
		if (fields[i])
			*fields[i] = (uint32_t)v;
		else
			sy.seed = (uint64_t)v;
	}
	ret = replay_synthetic(&sy, &ev, &n);
	if (ret < 0) {
		fprintf(stderr, "tierctl replay: synthetic: top_k %u of %u experts: cannot be drawn\n",
			sy.top_k, sy.nexperts);
		goto cleanup;
	}
	lab->nlayers = sy.nlayers;
	lab->nexperts = sy.nexperts;
	for (size_t i = 0; i < n && ret >= 0; i++)
		ret = add_event(lab, &ev[i]);
cleanup:
	free(ev);
	free(copy);
	return ret;
}

static int load(struct lab *lab)
{
	struct trace_reader *r = NULL;
	struct trace_event ev;
	char err[512] = "";
	int ret;

	if (!strncmp(lab->path, "synthetic", 9) && (!lab->path[9] || lab->path[9] == ':'))
		return load_synthetic(lab, lab->path + 9);
	ret = trace_open(&r, lab->path, err, sizeof(err));
	if (ret < 0) {
		fprintf(stderr, "tierctl replay: %s\n", err[0] ? err : strerror(-ret));
		return ret;
	}
	lab->info = trace_info(r);
	lab->nlayers = lab->info->nlayers;
	lab->nexperts = lab->info->nexperts;
	while ((ret = trace_next(r, &ev, err, sizeof(err))) > 0) {
		if (ev.model != 0)
			continue;	/* the lab replays the trace's first model */
		/* Recordings need not say the shape: the keys seen give it. */
		if (ev.layer >= lab->nlayers && !lab->info->nlayers)
			lab->nlayers = ev.layer + 1;
		for (uint32_t i = 0; i < ev.nexperts; i++)
			if (ev.experts[i] >= lab->nexperts && !lab->info->nexperts)
				lab->nexperts = ev.experts[i] + 1;
		ret = add_event(lab, &ev);
		if (ret < 0)
			break;
	}
	if (ret < 0) {
		fprintf(stderr, "tierctl replay: %s\n", err[0] ? err : strerror(-ret));
		goto cleanup;
	}
	ret = 0;
	if (!lab->nseqs || !lab->nlayers || !lab->nexperts) {
		fprintf(stderr, "tierctl replay: %s: no acquires or hints to replay\n", lab->path);
		ret = -EINVAL;
	}
cleanup:
	/* The names in info live as long as the reader: copied into seqs above. */
	trace_close(r);
	lab->info = NULL;
	return ret;
}

/*
 * --warm: the events of every sequence but q, each with its index as client,
 * for the predictor to learn before q is replayed (held out: q's own events
 * are never among them).
 */
static int warm_events(const struct lab *lab, size_t q, struct trace_event **out, size_t *n)
{
	size_t total = 0;

	*out = NULL;
	*n = 0;
	for (size_t i = 0; i < lab->nseqs; i++)
		if (i != q)
			total += lab->seqs[i].n;
	if (!total)
		return 0;
	*out = calloc(total, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	for (size_t i = 0; i < lab->nseqs; i++)
		for (size_t j = 0; i != q && j < lab->seqs[i].n; j++) {
			(*out)[*n] = lab->seqs[i].ev[j];
			(*out)[(*n)++].client = (uint32_t)i;
		}
	return 0;
}

/*
 * --concurrent: every sequence at once through one cache, as clients decoding
 * side by side: each sends its prompt's hints first, then they take turns, a
 * layer's acquire each.  Each keeps a sequence of its own (seq = its index +
 * 1).  The sequences become one, named for what it is.
 */
static int merge_concurrent(struct lab *lab)
{
	struct rseq m = { .client = 0, .seq = 0 };
	size_t total = 0, *pos = NULL;
	bool more = true;

	if (lab->nseqs < 2)
		return 0;
	for (size_t i = 0; i < lab->nseqs; i++)
		total += lab->seqs[i].n;
	m.ev = calloc(total ? total : 1, sizeof(*m.ev));
	pos = calloc(lab->nseqs, sizeof(*pos));
	if (!m.ev || !pos) {
		free(m.ev);
		free(pos);
		return -ENOMEM;
	}
	m.cap = total;
	snprintf(m.name, sizeof(m.name), "%zu sequences at once", lab->nseqs);
	for (size_t i = 0; i < lab->nseqs; i++)
		for (size_t j = 0; j < lab->seqs[i].n; j++)
			if (lab->seqs[i].ev[j].kind == TRACE_HINT) {
				m.ev[m.n] = lab->seqs[i].ev[j];
				m.ev[m.n].client = (uint32_t)i;
				m.ev[m.n++].seq = i + 1;
			}
	while (more) {
		more = false;
		for (size_t i = 0; i < lab->nseqs; i++) {
			struct rseq *q = &lab->seqs[i];

			while (pos[i] < q->n && q->ev[pos[i]].kind != TRACE_ACQUIRE)
				pos[i]++;
			if (pos[i] == q->n)
				continue;
			m.ev[m.n] = q->ev[pos[i]++];
			m.ev[m.n].client = (uint32_t)i;
			m.ev[m.n++].seq = i + 1;
			more = true;
		}
	}
	free(pos);
	for (size_t i = 0; i < lab->nseqs; i++)
		free(lab->seqs[i].ev);
	lab->merged = (unsigned)lab->nseqs;
	if (lab->nseqs > CACHE_PREDICT_SEQS)
		fprintf(stderr, "tierctl replay: --concurrent: %zu sequences, the predictor keeps %d "
			"sequence contexts (as the daemon does): the least recently active are dropped\n",
			lab->nseqs, CACHE_PREDICT_SEQS);
	lab->seqs[0] = m;
	lab->nseqs = 1;
	return 0;
}

static int parse_capacity(struct lab *lab, const char *s)
{
	uint64_t keys = (uint64_t)lab->nlayers * lab->nexperts;
	size_t len = strlen(s);
	double pct;
	int n;

	if (len && s[len - 1] == '%') {
		char buf[32];

		if (len >= sizeof(buf))
			goto bad;
		memcpy(buf, s, len - 1);
		buf[len - 1] = 0;
		if (tierctl_parse_double("--capacity", buf, 0, 100, &pct))
			return -EINVAL;
		lab->capacity = (uint64_t)(keys * pct / 100.0);
		return 0;
	}
	if (tierctl_parse_int("--capacity", s, 1, 1 << 30, &n))
		return -EINVAL;
	lab->capacity = (uint64_t)n;
	return 0;
bad:
	fprintf(stderr, "tierctl replay: --capacity \"%s\": expected slots or a percentage\n", s);
	return -EINVAL;
}

static int add_run(struct lab *lab, const char *policy, bool prefetch)
{
	struct run *nr = realloc(lab->runs, (lab->nruns + 1) * sizeof(*nr));

	if (!nr)
		return -ENOMEM;
	lab->runs = nr;
	lab->runs[lab->nruns++] = (struct run){ policy, prefetch };
	return 0;
}

static json_object *result_json(const struct run *run, const struct replay_result *r)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "policy", json_object_new_string(run->policy));
	json_object_object_add(o, "prefetch", json_object_new_boolean(run->prefetch));
	json_object_object_add(o, "demand_misses", json_object_new_int64((int64_t)r->demand_misses));
	json_object_object_add(o, "hits", json_object_new_int64((int64_t)r->hits));
	json_object_object_add(o, "prefetch_issued", json_object_new_int64((int64_t)r->prefetch_issued));
	json_object_object_add(o, "prefetch_used", json_object_new_int64((int64_t)r->prefetch_used));
	json_object_object_add(o, "fetched_experts", json_object_new_int64((int64_t)r->fetched_experts));
	json_object_object_add(o, "fetched_bytes", json_object_new_int64((int64_t)r->fetched_bytes));
	return o;
}

static json_object *block_json(const struct lab *lab, const char *trace, uint64_t accesses,
			       uint64_t lru, uint64_t min, const uint64_t *fore,
			       const struct replay_result *res)
{
	json_object *o = json_object_new_object(), *refs = json_object_new_object();
	json_object *pol = json_object_new_array(), *fa = json_object_new_array();

	json_object_object_add(o, "trace", json_object_new_string(trace));
	json_object_object_add(o, "capacity", json_object_new_int64((int64_t)lab->capacity));
	json_object_object_add(o, "accesses", json_object_new_int64((int64_t)accesses));
	if (lab->told)
		json_object_object_add(o, "told_tokens", json_object_new_int64(lab->told));
	json_object_object_add(refs, "lru", json_object_new_int64((int64_t)lru));
	json_object_object_add(refs, "min", json_object_new_int64((int64_t)min));
	for (size_t i = 0; i < lab->nfore; i++) {
		json_object *f = json_object_new_object();

		json_object_object_add(f, "tokens", json_object_new_int64(lab->fore_tokens[i]));
		json_object_object_add(f, "misses", json_object_new_int64((int64_t)fore[i]));
		json_object_array_add(fa, f);
	}
	json_object_object_add(refs, "foresight", fa);
	json_object_object_add(o, "references", refs);
	for (size_t i = 0; i < lab->nruns; i++)
		json_object_array_add(pol, result_json(&lab->runs[i], &res[i]));
	json_object_object_add(o, "policies", pol);
	return o;
}

static double ratio(uint64_t a, uint64_t b)
{
	return b ? (double)a / (double)b : 0;
}

static void block_text(const struct lab *lab, const char *name, uint64_t accesses, uint64_t lru,
		       uint64_t min, const uint64_t *fore, const struct replay_result *res,
		       const double *ns, uint64_t steps)
{
	printf("%s: %llu accesses, capacity %llu slots of %llu keys\n", name,
	       (unsigned long long)accesses, (unsigned long long)lab->capacity,
	       (unsigned long long)lab->nlayers * lab->nexperts);
	printf("  references: LRU %llu misses (%.2fx MIN), MIN %llu misses\n", (unsigned long long)lru,
	       ratio(lru, min), (unsigned long long)min);
	for (size_t i = 0; i < lab->nfore; i++)
		printf("%s%llu (%.2fx) told the next %u token%s%s", i ? ", " : "  foresight: ",
		       (unsigned long long)fore[i], ratio(fore[i], min), lab->fore_tokens[i],
		       lab->fore_tokens[i] == 1 ? "" : "s", i + 1 == lab->nfore ? "\n" : "");
	if (lab->told)
		printf("  the policies below are told the next %u token%s exactly (not online)\n",
		       lab->told, lab->told == 1 ? "" : "s");
	printf("  %-11s %-8s %8s %7s %8s %8s %8s %8s %8s %7s %12s %8s\n", "policy", "prefetch", "misses",
	       "xMIN", "hits", "pf-issue", "pf-used", "pf-waste", "fetched", "xMIN", "bytes/token",
	       "us/layer");
	for (size_t i = 0; i < lab->nruns; i++) {
		const struct replay_result *r = &res[i];

		printf("  %-11s %-8s %8llu %7.2f %8llu %8llu %8llu %8llu %8llu %7.2f %12.0f %8.2f\n",
		       lab->runs[i].policy, lab->runs[i].prefetch ? "yes" : "no",
		       (unsigned long long)r->demand_misses, ratio(r->demand_misses, min),
		       (unsigned long long)r->hits, (unsigned long long)r->prefetch_issued,
		       (unsigned long long)r->prefetch_used, (unsigned long long)r->prefetch_wasted,
		       (unsigned long long)r->fetched_experts, ratio(r->fetched_experts, min),
		       r->tokens ? (double)r->fetched_bytes / (double)r->tokens : 0.0,
		       steps ? ns[i] / 1e3 / (double)steps : 0.0);
	}
}

static int run_all(struct lab *lab, bool json)
{
	struct replay_result *sum = calloc(lab->nruns, sizeof(*sum));
	uint64_t slru = 0, smin = 0, sacc = 0, sfore[REPLAY_MAX_FORESIGHT] = { 0 };
	struct trace_event *warm = NULL;
	double *sns = calloc(lab->nruns ? lab->nruns : 1, sizeof(*sns));
	uint64_t ssteps = 0;
	json_object *top = NULL, *seqs = NULL;
	char err[512] = "";
	int ret = 0;

	if (!sum || !sns) {
		free(sum);
		free(sns);
		return -ENOMEM;
	}
	if (json) {
		seqs = json_object_new_array();
	}
	for (size_t s = 0; s < lab->nseqs; s++) {
		struct rseq *q = &lab->seqs[s];
		struct replay_result lru;
		struct replay_conf rc = { .policy = "lru", .capacity = lab->capacity,
					  .nlayers = lab->nlayers, .nexperts = lab->nexperts,
					  .expert_bytes = lab->expert_bytes, .pf = lab->pf };
		char tname[512];

		q->res = calloc(lab->nruns, sizeof(*q->res));
		q->ns = calloc(lab->nruns, sizeof(*q->ns));
		if (!q->res || !q->ns) {
			ret = -ENOMEM;
			goto cleanup;
		}
		ret = replay_run(&rc, q->ev, q->n, &lru, err, sizeof(err));
		if (ret >= 0)
			ret = replay_min(q->ev, q->n, lab->capacity, &q->min, err, sizeof(err));
		for (size_t i = 0; ret >= 0 && i < lab->nfore; i++) {
			ret = replay_foresight(q->ev, q->n, lab->capacity,
					       (uint64_t)lab->fore_tokens[i] * lab->nlayers * lab->merged,
					       &q->fore[i], err, sizeof(err));
			sfore[i] += q->fore[i];
		}
		/* A token of every sequence, when they take turns. */
		rc.told = (uint64_t)lab->told * lab->nlayers * lab->merged;
		if (ret >= 0 && lab->warm) {
			ret = warm_events(lab, s, &warm, &rc.nwarm);
			rc.warm = warm;
		}
		for (size_t i = 0; ret >= 0 && i < lab->nruns; i++) {
			rc.policy = lab->runs[i].policy;
			rc.prefetch = lab->runs[i].prefetch;
			ret = replay_run(&rc, q->ev, q->n, &q->res[i], err, sizeof(err));
			q->ns[i] = (double)q->res[i].loop_ns;
			sns[i] += q->ns[i];
			if (ret >= 0)
				replay_result_add(&sum[i], &q->res[i]);
		}
		free(warm);
		warm = NULL;
		if (ret < 0) {
			fprintf(stderr, "tierctl replay: %s: %s: %s\n", lab->path, q->name, err);
			goto cleanup;
		}
		q->lru = lru.demand_misses;
		for (size_t i = 0; i < q->n; i++)
			q->steps += q->ev[i].kind == TRACE_ACQUIRE;
		ssteps += q->steps;
		slru += q->lru;
		smin += q->min;
		sacc += lru.accesses;
		snprintf(tname, sizeof(tname), "%s:%s", lab->path, q->name);
		if (json)
			json_object_array_add(seqs, block_json(lab, tname, lru.accesses, q->lru, q->min,
							       q->fore, q->res));
		else
			block_text(lab, q->name, lru.accesses, q->lru, q->min, q->fore, q->res, q->ns,
				   q->steps);
	}
	if (json) {
		top = block_json(lab, lab->path, sacc, slru, smin, sfore, sum);
		if (lab->nseqs > 1)
			json_object_object_add(top, "sequences", seqs);
		else
			json_object_put(seqs);
		seqs = NULL;
		printf("%s\n", json_object_to_json_string_ext(top, JSON_C_TO_STRING_PRETTY |
							      JSON_C_TO_STRING_NOSLASHESCAPE));
	} else if (lab->nseqs > 1) {
		block_text(lab, "all sequences", sacc, slru, smin, sfore, sum, sns, ssteps);
	}
cleanup:
	json_object_put(top);
	json_object_put(seqs);
	free(sum);
	free(sns);
	return ret;
}

static int add_policies(struct lab *lab, const char *list, const char *pmode)
{
	static const char *const all[] = { "lru", "lfu", "lfru", "activation", "predictive" };
	bool with = strcmp(pmode, "off"), without = strcmp(pmode, "on");
	const char *names[32];
	size_t n = 0;
	char *copy = NULL, *save = NULL;
	int ret = 0;

	if (!list) {
		for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
			names[n++] = all[i];
	} else {
		copy = strdup(list);
		if (!copy)
			return -ENOMEM;
		for (char *t = strtok_r(copy, ",", &save); t && n < 32; t = strtok_r(NULL, ",", &save)) {
			const struct cache_policy *p = cache_policy_find(t);

			if (!p) {
				fprintf(stderr, "tierctl replay: --policy \"%s\": unknown (known: %s)\n", t,
					cache_policy_names());
				ret = -EINVAL;
				goto cleanup;
			}
			names[n++] = p->name;
		}
	}
	for (size_t i = 0; i < n && ret >= 0; i++) {
		if (without)
			ret = add_run(lab, names[i], false);
		if (with && ret >= 0)
			ret = add_run(lab, names[i], true);
	}
cleanup:
	free(copy);
	return ret;
}

/* "--foresight 1,2,4" (tokens, each 1..1024, at most 8) or "none". */
static int parse_foresight(struct lab *lab, const char *arg)
{
	const char *p = arg;

	lab->nfore = 0;
	if (!strcmp(arg, "none"))
		return 0;
	for (;;) {
		char item[16];
		size_t len = strcspn(p, ",");
		int v;

		if (lab->nfore == REPLAY_MAX_FORESIGHT || len == 0 || len >= sizeof(item)) {
			fprintf(stderr, "tierctl replay: --foresight \"%s\": expected none or up to %d "
				"token counts separated by commas\n", arg, REPLAY_MAX_FORESIGHT);
			return -EINVAL;
		}
		memcpy(item, p, len);
		item[len] = '\0';
		if (tierctl_parse_int("--foresight", item, 1, 1024, &v))
			return -EINVAL;
		lab->fore_tokens[lab->nfore++] = (unsigned)v;
		if (!p[len])
			return 0;
		p += len + 1;
	}
}

int cmd_replay(const struct tierctl_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "capacity", required_argument, NULL, 'C' },
		{ "policy", required_argument, NULL, 'p' },
		{ "prefetch", required_argument, NULL, 'f' },
		{ "prefetch-depth", required_argument, NULL, 'd' },
		{ "prefetch-min-prob", required_argument, NULL, 'm' },
		{ "prefetch-slots", required_argument, NULL, 'S' },
		{ "expert-bytes", required_argument, NULL, 'b' },
		{ "foresight", required_argument, NULL, 'F' },
		{ "told", required_argument, NULL, 'T' },
		{ "concurrent", no_argument, NULL, 'c' },
		{ "warm", no_argument, NULL, 'w' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct lab lab = {
		.pf = { .depth = PREFETCH_DEFAULT_DEPTH, .min_prob = PREFETCH_DEFAULT_MIN_PROB,
			.max_slots = PREFETCH_DEFAULT_MAX_SLOTS },
		/* A unit when the trace does not say: ratios do not depend on it. */
		.expert_bytes = 1 << 20,
		.fore_tokens = { 1, 2, 3 },
		.nfore = 3,
		.merged = 1,
	};
	const char *capacity = "50%", *policies = NULL, *pmode = NULL;
	bool json = o->json, concurrent = false;
	int opt, v, rc = EXIT_FAILURE;

	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'C': capacity = optarg; break;
		case 'p': policies = optarg; break;
		case 'f':
			if (strcmp(optarg, "on") && strcmp(optarg, "off") && strcmp(optarg, "both")) {
				fprintf(stderr, "tierctl replay: --prefetch \"%s\": expected on, off or both\n",
					optarg);
				return 2;
			}
			pmode = optarg;
			break;
		case 'd':
			if (tierctl_parse_int("--prefetch-depth", optarg, 1, 64, &v))
				return 2;
			lab.pf.depth = (unsigned)v;
			break;
		case 'm':
			if (tierctl_parse_double("--prefetch-min-prob", optarg, 0, 1, &lab.pf.min_prob))
				return 2;
			break;
		case 'S':
			if (tierctl_parse_int("--prefetch-slots", optarg, 0, 1 << 30, &v))
				return 2;
			lab.pf.max_slots = (unsigned)v;
			break;
		case 'b':
			if (tierctl_parse_int("--expert-bytes", optarg, 1, 1 << 30, &v))
				return 2;
			lab.expert_bytes = (uint64_t)v;
			break;
		case 'F':
			if (parse_foresight(&lab, optarg) < 0)
				return 2;
			break;
		case 'T':
			if (tierctl_parse_int("--told", optarg, 1, 1024, &v))
				return 2;
			lab.told = (unsigned)v;
			break;
		case 'c': concurrent = true; break;
		case 'w': lab.warm = true; break;
		case 'j': json = true; break;
		case 'h': usage(stdout); return EXIT_SUCCESS;
		default: usage(stderr); return 2;
		}
	}
	if (optind + 1 != argc) {
		usage(stderr);
		return 2;
	}
	if (lab.told && pmode && strcmp(pmode, "off")) {
		fprintf(stderr, "tierctl replay: --told measures evictions alone: it takes no "
			"--prefetch %s\n", pmode);
		return 2;
	}
	lab.path = argv[optind];
	if (load(&lab) < 0)
		goto cleanup;
	if (lab.warm && (concurrent || lab.nseqs < 2)) {
		fprintf(stderr, "tierctl replay: --warm learns each sequence's model from the others: "
			"it needs two sequences or more%s\n", concurrent ? ", replayed one by one" : "");
		rc = 2;
		goto cleanup;
	}
	if (concurrent && merge_concurrent(&lab) < 0) {
		fprintf(stderr, "tierctl replay: %s: %s\n", lab.path, strerror(ENOMEM));
		goto cleanup;
	}
	if (parse_capacity(&lab, capacity) < 0 ||
	    add_policies(&lab, policies, pmode ? pmode : lab.told ? "off" : "both") < 0) {
		rc = 2;
		goto cleanup;
	}
	if (run_all(&lab, json) < 0)
		goto cleanup;
	rc = EXIT_SUCCESS;
cleanup:
	for (size_t i = 0; i < lab.nseqs; i++) {
		free(lab.seqs[i].ev);
		free(lab.seqs[i].res);
		free(lab.seqs[i].ns);
	}
	free(lab.seqs);
	free(lab.runs);
	return rc;
}
