/* SPDX-License-Identifier: MIT */
/*
 * Authorisation by peer credentials: which models a client may use, whether
 * it may map the pool, whether it is an operator; the keys of a request
 * checked against them; and rights taken back by a reload.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "server-int.h"

static bool id_in(const unsigned *ids, size_t n, unsigned id)
{
	for (size_t i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

/*
 * Root and the daemon's own user may use every model: they can read the
 * checkpoints and the daemon's memory anyway, so refusing them protects
 * nothing.  Others need their uid, primary gid or a supplementary gid in the
 * model's allow lists; a model without allow lists is open to whoever can
 * reach the socket (its file mode or the socket unit's SocketMode= decide).
 */
static bool client_may_use(const struct client *c, const struct conf_model *m)
{
	if (c->uid == 0 || c->uid == geteuid())
		return true;
	if (!m)
		return false;		/* not in the config any more: fail closed */
	if (!m->nallow_uid && !m->nallow_gid)
		return true;
	if (id_in((const unsigned *)m->allow_uid, m->nallow_uid, c->uid) ||
	    id_in((const unsigned *)m->allow_gid, m->nallow_gid, c->gid))
		return true;
	for (int i = 0; i < c->ngroups; i++)
		if (id_in((const unsigned *)m->allow_gid, m->nallow_gid, c->groups[i]))
			return true;
	return false;
}

void client_authorize(struct client *c)
{
	struct server *s = c->srv;
	int n = engine_model_count(s->engine);

	c->may_map = true;
	for (int i = 0; i < n; i++) {
		const struct conf_model *m = conf_model_find(s->conf, engine_model_name(s->engine, (uint32_t)i));

		c->allowed[i] = client_may_use(c, m);
		/* One pool holds every model's experts: a client that may not read
		 * one of them must not map it at all. */
		if (!c->allowed[i])
			c->may_map = false;
	}
	c->operator = c->uid == 0 || c->uid == geteuid();
}

/* Validates keys against the catalog and the client's rights.  Returns 0, or
 * answers the ERROR itself and returns its negative errno (or -ECONNRESET):
 * the caller must then do nothing more for the request. */
int client_check_keys(struct client *c, uint64_t id, const struct tierd_key *keys,
		      uint32_t n, bool need_map)
{
	struct server *s = c->srv;
	int nmodels = engine_model_count(s->engine);

	for (uint32_t i = 0; i < n; i++) {
		const struct tierd_key *k = &keys[i];
		const struct catalog *cat;

		if (k->model >= (uint32_t)nmodels)
			return client_error(c, id, -ENOENT, "model index %u: no such model (%d served)",
					    k->model, nmodels);
		if (!c->allowed[k->model]) {
			return client_error(c, id, -EACCES, "model %s: uid %u is not allowed to use it",
					    engine_model_name(s->engine, k->model), (unsigned)c->uid);
		}
		if (need_map && !c->may_map) {
			return client_error(c, id, -EACCES,
					    "the pool also holds models uid %u may not read: run a separate tierd for them",
					    (unsigned)c->uid);
		}
		cat = engine_model_catalog(s->engine, k->model);
		if (!cat || !catalog_find(cat, k->layer, k->expert))
			return client_error(c, id, -ENOENT, "model %s has no layer %u expert %u",
					    engine_model_name(s->engine, k->model), k->layer, k->expert);
	}
	return 0;
}

/*
 * A reload may take rights away.  A client that loses a model, or the right
 * to map the pool, is dropped: its pins go, and a new connection is
 * authorised under the new lists (it gets no pool descriptor if it may not
 * read every model).  What a dropped process mapped before stays mapped in
 * it until it unmaps or exits: the kernel offers no way to take a mapping
 * back, so an operator revoking a running process's access also stops it.
 * Called by server_set_conf() once s->conf is the new configuration.
 */
void server_reauthorize(struct server *s)
{
	int n = engine_model_count(s->engine);
	bool *was = calloc((size_t)n + 1, sizeof(bool));
	struct client *c, *next;

	if (!was) {
		/* Without the old rights nothing tells who lost some: drop
		 * every client not allowed everything now (fail closed). */
		log_err("reload: out of memory: clients not allowed every model are dropped");
	}
	for (c = TAILQ_FIRST(&s->clients); c; c = next) {
		bool had_map = c->may_map;
		int lost = -1;

		next = TAILQ_NEXT(c, link);
		if (!c->hello)
			continue;
		if (was)
			memcpy(was, c->allowed, (size_t)n * sizeof(bool));
		client_authorize(c);
		for (int i = 0; i < n && lost < 0; i++)
			if ((!was || was[i]) && !c->allowed[i])
				lost = i;
		if (lost >= 0 || (had_map && !c->may_map)) {
			char why[TIERD_PROTO_MAX_NAME + 96];

			if (lost >= 0)
				snprintf(why, sizeof(why), "access to model %s withdrawn by a reload",
					 engine_model_name(s->engine, (uint32_t)lost));
			else
				snprintf(why, sizeof(why), "pool access withdrawn by a reload");
			s->counters[TIERD_STAT_CLIENTS_DROPPED]++;
			/* next stays valid: a drop unlinks only c. */
			client_drop(c, why);
		}
	}
	free(was);
}
