/* SPDX-License-Identifier: MIT */
/*
 * What a reload (SIGHUP, systemctl reload) can apply.  A new configuration
 * replaces the running one for what the service reads at each request (log
 * level, client quotas and limits, allow lists); keys that shape the pool,
 * the fetch ring, the set of models, metrics exports or the energy model are
 * fixed at start.  reload_restart_keys() names those that differ, so the
 * daemon can say what waits for a restart.
 */
#ifndef TIERD_RELOAD_H
#define TIERD_RELOAD_H

#include <stddef.h>

#include "conf.h"

/*
 * Writes into buf the keys that differ between running and next and need a
 * restart, separated by ", " ("[pool] size, [model demo] path"), and returns
 * how many there are (0: next applies whole).  buf is always terminated; a
 * list longer than len is cut with "...".
 */
unsigned reload_restart_keys(const struct tierd_conf *running, const struct tierd_conf *next,
			     char *buf, size_t len);

#endif
