/* SPDX-License-Identifier: MIT */
/*
 * Which pool serves a client: the NUMA node it names in HELLO (its GPU's,
 * which the library finds from sysfs), else the node holding most of the
 * CPUs it may run on, else pool 0.  A node without a pool of its own is
 * served from pool 0.  The engine asks by client id (the owner of a
 * request) through engine_set_owner_pool.
 */
#include "config.h"

#include <errno.h>
#include <sched.h>
#include <stdint.h>

#include "engine.h"
#include "log.h"
#include "server-int.h"
#include "topo.h"

const char *const client_node_how[] = {
	[CLIENT_NODE_DEFAULT] = "default",
	[CLIENT_NODE_SAID] = "said",
	[CLIENT_NODE_CPUS] = "cpus",
};

static int owner_pool(void *arg, uint32_t owner)
{
	const struct client *c = server_client_by_id(arg, owner);

	return c ? (int)c->pool : 0;
}

void server_numa_init(struct server *s)
{
	if (engine_pool_count(s->engine) > 1)
		engine_set_owner_pool(s->engine, owner_pool, s);
}

/* The node of the CPUs the process may run on; -ENOENT when unknown (a pid
 * of another pid namespace, a process already gone). */
static int node_of_cpus(const struct server *s, pid_t pid)
{
	cpu_set_t set;

	if (pid <= 0 || sched_getaffinity(pid, sizeof(set), &set))
		return -ENOENT;
	return topo_node_of_cpus(engine_topology(s->engine), &set);
}

void client_numa_choose(struct client *c, int32_t said)
{
	struct server *s = c->srv;
	int p = -ENOENT, node;

	c->node = -1;
	c->pool = 0;
	c->node_how = CLIENT_NODE_DEFAULT;
	if (said >= 0) {
		c->node = said;
		c->node_how = CLIENT_NODE_SAID;
		p = engine_pool_of_node(s->engine, said);
	} else {
		node = node_of_cpus(s, c->pid);
		if (node >= 0) {
			c->node = node;
			c->node_how = CLIENT_NODE_CPUS;
			p = engine_pool_of_node(s->engine, node);
		}
	}
	if (p >= 0)
		c->pool = (uint32_t)p;
	else if (c->node >= 0 && engine_pool_count(s->engine) > 1)
		log_info("client %u: NUMA node %d (%s) has no pool; served from the pool on node %d",
			 c->id, c->node, client_node_how[c->node_how], engine_pool_node(s->engine, 0));
}
