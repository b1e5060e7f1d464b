/* SPDX-License-Identifier: MIT */
/*
 * The service's side of the no-system-call hit path: a pin area per client
 * that may map the pool, handed over with WELCOME and dropped with the
 * socket, and a periodic sweep that turns the areas' use counters into hits
 * and policy touches.  The engine checks the areas itself before it frees a
 * slot (engine-slots.c, residency.h).
 *
 * Why the daemon makes the area rather than take one from the client: the
 * daemon then never maps a descriptor a client chose (a file that can be
 * truncated under the mapping, a device), sizes it and seals it against
 * growing and shrinking before the client sees it, so reading it can never
 * fault; and each area is a memfd of its own sent to one client only, so
 * the one shared memory a client can write is its own area.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "engine.h"
#include "log.h"
#include "loop.h"
#include "residency.h"
#include "server-int.h"

/* How often pin areas are swept while clients have one: how late the
 * policy hears of fast hits, and how long a client over max_pins lasts. */
#define SERVER_FAST_SWEEP_MS	100

static void sweep_timer(struct loop_source *src, void *arg)
{
	server_fast_sweep(arg);
}

int server_fast_init(struct server *s)
{
	char err[256] = "";
	int r = engine_fast_enable(s->engine, err, sizeof(err));

	if (r && r != -EALREADY) {
		/* Clients still have the socket: the daemon serves without. */
		log_warn("no-system-call acquire path off: %s", err[0] ? err : strerror(-r));
		return 0;
	}
	r = loop_add_timer(s->loop, 0, 0, sweep_timer, s, &s->fast_timer);
	if (!r)
		r = loop_timer_stop(s->fast_timer);
	return r;
}

void server_fast_fini(struct server *s)
{
	if (s->fast_timer)
		loop_remove(s->fast_timer);
	s->fast_timer = NULL;
}

int client_fast_open(struct client *c, uint16_t minor, struct tierd_msg_welcome *w, int *fds, int *nfds)
{
	struct server *s = c->srv;
	struct residency *res = engine_residency(s->engine);
	int r;

	/* A client that may not map the pool reads no slot either. */
	if (minor < 3 || !res || !c->may_map || !s->fast_timer)
		return 0;
	r = residency_area_new(res, c->allowed, &c->fast);
	if (r) {
		log_warn("client %u: no pin area, acquires through the socket: %s", c->id, strerror(-r));
		return 0;
	}
	if (!s->nfast++)
		loop_timer_set(s->fast_timer, SERVER_FAST_SWEEP_MS, SERVER_FAST_SWEEP_MS);
	w->fast = TIERD_WELCOME_F_FAST;
	/* What the sweep holds the connection to: the library stays below it
	 * through the table and lets the socket refuse the rest (EDQUOT). */
	w->fast_max_pins = s->max_pins > UINT32_MAX ? UINT32_MAX : (uint32_t)s->max_pins;
	w->fast_table_size = residency_table_size(res);
	w->fast_area_size = residency_area_size(res);
	fds[(*nfds)++] = residency_table_fd(res);
	fds[(*nfds)++] = residency_area_fd(c->fast);
	return 0;
}

void client_fast_sent(struct client *c)
{
	if (c->fast && STAILQ_EMPTY(&c->out))
		residency_area_close_fd(c->fast);
}

static void fast_uses(void *arg, const struct tierd_key *key, uint32_t uses);

/* Its counters into the statistics; *pinned: entries it pins now. */
static void client_fast_sweep(struct client *c, uint64_t *pinned)
{
	struct server *s = c->srv;
	struct residency_sweep sw;

	residency_area_sweep(engine_residency(s->engine), c->fast, fast_uses, s, &sw);
	s->counters[TIERD_STAT_ACQUIRES] += sw.uses;
	s->counters[TIERD_STAT_RELEASES] += sw.releases;
	*pinned = sw.pinned;
}

void client_fast_close(struct client *c)
{
	struct server *s = c->srv;
	struct residency *res = engine_residency(s->engine);
	uint64_t pinned;

	if (!c->fast)
		return;
	/* What it did since the last sweep still counts.  Its pins end with
	 * it: what only they held may go now. */
	client_fast_sweep(c, &pinned);
	residency_area_free(res, c->fast);
	c->fast = NULL;
	if (!--s->nfast)
		loop_timer_stop(s->fast_timer);
	engine_fast_settle(s->engine);
}

static void fast_uses(void *arg, const struct tierd_key *key, uint32_t uses)
{
	struct server *s = arg;

	engine_fast_uses(s->engine, key, uses);
}

void server_fast_sweep(struct server *s)
{
	struct client *c, *next;

	if (!engine_residency(s->engine) || !s->nfast)
		return;
	for (c = TAILQ_FIRST(&s->clients); c; c = next) {
		uint64_t pinned;

		next = TAILQ_NEXT(c, link);
		if (!c->fast)
			continue;
		client_fast_sweep(c, &pinned);
		/* The socket path's bound holds for the area too, alone: socket
		 * pins whose RELEASE is still unread in the socket would count
		 * twice with the area's new pins, and drop a client the library
		 * kept within max_pins (WELCOME tells it the bound).  So a
		 * client holds at most max_pins through each path. */
		if (pinned > s->max_pins) {
			char why[160];

			snprintf(why, sizeof(why), "its pin area names %llu experts, over max_pins %llu",
				 (unsigned long long)pinned, (unsigned long long)s->max_pins);
			s->counters[TIERD_STAT_CLIENTS_DROPPED]++;
			client_drop(c, why);
		}
	}
	engine_fast_settle(s->engine);
}
