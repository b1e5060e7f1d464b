/* SPDX-License-Identifier: MIT */
/*
 * The service side of tierd-proto.h: the public API of server.h (create,
 * destroy, a new configuration, statistics) and what the engine and the
 * telemetry ask of the service (fetch observer, metrics).  The parts live
 * beside it (server-int.h names them): pinset.c, opins.c, outq.c, auth.c,
 * acquire.c, warm.c, dispatch.c, conn.c.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "server-int.h"
#include "telemetry.h"

static void server_fetch_done(void *arg, const struct tierd_key *key, uint32_t owner, int err,
			      uint64_t bytes);

/*
 * [client] max_pins, or with "auto" (0) half of the pool's slots of the
 * largest expert: one client can never pin the whole pool, and what it may
 * pin still grows with the pool.
 */
static uint64_t server_max_pins(const struct server *s, const struct tierd_conf *conf)
{
	uint64_t pool = 0, slot = 0;

	if (conf->max_pins)
		return conf->max_pins;
	for (int i = 0; i < engine_pool_count(s->engine); i++)
		pool += engine_pool_size(s->engine, (uint32_t)i);
	for (int i = 0; i < engine_model_count(s->engine); i++) {
		const struct catalog *cat = engine_model_catalog(s->engine, (uint32_t)i);

		if (cat->slot_bytes > slot)
			slot = cat->slot_bytes;
	}
	if (!slot || pool / slot < 2)
		return 1;
	return pool / slot / 2;
}

/* What the protocol's string decoder accepts. */
static bool name_ok(const char *s)
{
	size_t n = 0;

	for (; s[n]; n++)
		if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f)
			return false;
	return n > 0 && n <= TIERD_PROTO_MAX_NAME;
}

int server_create(struct server **out, struct loop *loop, struct engine *engine,
		  const struct tierd_conf *conf, int listen_fd)
{
	struct server *s;
	int nmodels = engine_model_count(engine);
	int err;

	if (nmodels < 0 || (unsigned)nmodels > TIERD_PROTO_MAX_MODELS ||
	    engine_pool_count(engine) > (int)TIERD_PROTO_MAX_POOLS) {
		log_err("the protocol carries at most %u models and %u pools", TIERD_PROTO_MAX_MODELS,
			TIERD_PROTO_MAX_POOLS);
		return -E2BIG;
	}
	/* What the protocol cannot carry is refused here, naming it, rather
	 * than sent to clients that would reject it as malformed. */
	for (int i = 0; i < nmodels; i++) {
		const struct catalog *cat = engine_model_catalog(engine, (uint32_t)i);
		const char *name = engine_model_name(engine, (uint32_t)i);

		if (!name_ok(name)) {
			log_err("model name \"%.40s\": longer than %u bytes, empty or with control characters",
				name, TIERD_PROTO_MAX_NAME);
			return -EINVAL;
		}
		for (uint32_t j = 0; j < cat->nexperts; j++) {
			const struct catalog_expert *x = &cat->experts[j];

			if (x->ntensors > TIERD_PROTO_MAX_TENSORS) {
				log_err("model %s layer %u expert %u: %u tensors, the protocol carries %u",
					name, x->layer, x->expert, x->ntensors, TIERD_PROTO_MAX_TENSORS);
				return -E2BIG;
			}
			for (uint32_t k = 0; k < x->ntensors; k++) {
				if (!name_ok(x->tensors[k].name)) {
					log_err("model %s: tensor name \"%.40s\": longer than %u bytes, empty or with control characters",
						name, x->tensors[k].name, TIERD_PROTO_MAX_NAME);
					return -EINVAL;
				}
			}
		}
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->engine = engine;
	s->conf = conf;
	s->listen_fd = -1;
	TAILQ_INIT(&s->clients);
	TAILQ_INIT(&s->dead);
	clock_gettime(CLOCK_MONOTONIC, &s->started);
	{
		struct timespec rt;

		/* Distinct across restarts: clients detect a new daemon by it. */
		clock_gettime(CLOCK_REALTIME, &rt);
		s->instance = ((uint64_t)rt.tv_sec * 1000000000ull + (uint64_t)rt.tv_nsec) ^
			      ((uint64_t)getpid() << 48);
	}
	if (listen_fd >= 0) {
		int fl = fcntl(listen_fd, F_GETFL);

		s->listen_fd = listen_fd;
		if (fl < 0 || fcntl(listen_fd, F_SETFL, fl | O_NONBLOCK)) {
			err = -errno;
			goto fail;
		}
	} else {
		err = server_bind(s, conf);
		if (err)
			goto fail;
	}
	err = loop_add_fd(loop, s->listen_fd, EPOLLIN, server_accept, s, &s->listen_src);
	if (err)
		goto fail;
	err = loop_add_timer(loop, 0, 0, server_accept_retry, s, &s->accept_timer);
	if (!err)
		err = loop_timer_stop(s->accept_timer);
	if (err)
		goto fail;
	s->max_pins = server_max_pins(s, conf);
	/* Always: prefetch budgets are settled when fetches end. */
	engine_set_fetch_observer(engine, server_fetch_done, s);
	server_numa_init(s);
	server_pins_init(s);
	err = server_fast_init(s);
	if (err)
		goto fail;
	*out = s;
	return 0;
fail:
	server_destroy(s);
	return err;
}

void server_destroy(struct server *s)
{
	if (!s)
		return;
	engine_set_fetch_observer(s->engine, NULL, NULL);
	engine_set_owner_pool(s->engine, NULL, NULL);
	if (s->tel)
		telemetry_set_service_source(s->tel, NULL, NULL);
	while (!TAILQ_EMPTY(&s->clients))
		client_drop(TAILQ_FIRST(&s->clients), "tierd is stopping");
	server_reap(s);
	free(s->byid);
	/* Requests of departed clients whose fetches never completed: the
	 * engine is drained (or being destroyed) by now. */
	while (!LIST_EMPTY(&s->orphans)) {
		struct acq_req *r = LIST_FIRST(&s->orphans);

		LIST_REMOVE(r, link);
		free(r);
	}
	while (!LIST_EMPTY(&s->orphan_warms)) {
		struct warm *w = LIST_FIRST(&s->orphan_warms);

		LIST_REMOVE(w, link);
		free(w);
	}
	server_fast_fini(s);
	pinset_release_all(&s->opins, s->engine);
	free(s->pins_path);
	free(s->msc);
	free(s->accts);
	loop_remove(s->accept_timer);
	loop_remove(s->listen_src);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	if (s->bound_path) {
		unlink(s->bound_path);
		free(s->bound_path);
	}
	free(s);
}

void server_set_conf(struct server *s, const struct tierd_conf *conf)
{
	s->conf = conf;
	s->max_pins = server_max_pins(s, conf);
	server_reauthorize(s);
}

void server_get_stats(const struct server *s, uint64_t *v)
{
	struct engine_stats st;
	struct timespec now;
	uint64_t pool_bytes = 0;
	int npools = engine_pool_count(s->engine);

	memcpy(v, s->counters, sizeof(s->counters));
	engine_get_stats(s->engine, &st);
	clock_gettime(CLOCK_MONOTONIC, &now);
	for (int i = 0; i < npools; i++)
		pool_bytes += engine_pool_size(s->engine, (uint32_t)i);
	v[TIERD_STAT_UPTIME_MS] = (uint64_t)(now.tv_sec - s->started.tv_sec) * 1000 +
				  (uint64_t)((now.tv_nsec - s->started.tv_nsec) / 1000000);
	v[TIERD_STAT_PID] = (uint64_t)getpid();
	v[TIERD_STAT_CLIENTS] = s->nclients;
	v[TIERD_STAT_MODELS] = (uint64_t)engine_model_count(s->engine);
	v[TIERD_STAT_POOLS] = (uint64_t)npools;
	v[TIERD_STAT_POOL_BYTES] = pool_bytes;
	v[TIERD_STAT_BYTES_RESIDENT] = st.bytes_resident;
	v[TIERD_STAT_PINS] = st.pins;
	v[TIERD_STAT_OPERATOR_PINS] = s->opins.total;
	v[TIERD_STAT_HITS] = st.hits;
	v[TIERD_STAT_MISSES] = st.misses;
	v[TIERD_STAT_ACQUIRES_NOSPACE] = st.refused;
	v[TIERD_STAT_EVICTIONS] = st.evictions;
	v[TIERD_STAT_FETCHES] = st.fetches;
	v[TIERD_STAT_FETCH_ERRORS] = st.fetch_errors;
	v[TIERD_STAT_CANCELLED] = st.cancelled;
	v[TIERD_STAT_BYTES_READ] = st.bytes_read;
}

unsigned server_client_count(const struct server *s)
{
	return s->nclients;
}

/* Fetches end here (engine observer): bytes read from SSD for their owner. */
static void server_fetch_done(void *arg, const struct tierd_key *key, uint32_t owner, int err,
			      uint64_t bytes)
{
	struct server *s = arg;
	uint32_t who = owner;
	struct client *c = NULL;

	if (who != ENGINE_OWNER_NONE)
		c = server_client_by_id(s, who);
	/* A prefetch of this client's has ended: room in its budget. */
	if (c)
		pinset_drop(&c->prefetching, key);
	if (!s->obs || !s->obs->fetched || !bytes)
		return;
	/* Bytes read are spent even when the fetch failed.  An owner gone
	 * since it asked is folded already: charge "departed". */
	if (who != ENGINE_OWNER_NONE && !c)
		who = SERVER_CLIENT_DEPARTED;
	s->obs->fetched(s->obs_arg, who, key->model, bytes);
}

void server_set_observer(struct server *s, const struct server_observer *o, void *arg)
{
	s->obs = o;
	s->obs_arg = arg;
}

/* The service's counters for the metrics, refreshed at each render. */
static const struct metrics_service *server_metrics(void *arg)
{
	struct server *s = arg;
	const struct client *c;
	size_t n = 0;

	if (s->nclients > s->msc_cap) {
		struct metrics_client *v = realloc(s->msc, s->nclients * sizeof(*v));

		if (v) {
			s->msc = v;
			s->msc_cap = s->nclients;
		}
	}
	TAILQ_FOREACH(c, &s->clients, link) {
		if (n == s->msc_cap)
			break;
		if (!c->hello)
			continue;
		s->msc[n++] = (struct metrics_client){ c->id, (int32_t)c->pid, (uint32_t)c->uid,
						       c->pins.total, c->name };
	}
	s->ms = (struct metrics_service){
		.nreasons = SERVER_NREASONS, .reason = refuse_names, .refused = s->refused_by,
		.pins_save_errors = s->pins_save_errors,
		.clients_dropped = s->counters[TIERD_STAT_CLIENTS_DROPPED],
		.connections_refused = s->connections_refused,
		.nclients = n, .clients = s->msc,
	};
	return &s->ms;
}

void server_set_telemetry(struct server *s, struct telemetry *t)
{
	if (s->tel)
		telemetry_set_service_source(s->tel, NULL, NULL);
	s->tel = t;
	if (t)
		telemetry_set_service_source(t, server_metrics, s);
}

void server_count_reload(struct server *s)
{
	s->counters[TIERD_STAT_RELOADS]++;
}
