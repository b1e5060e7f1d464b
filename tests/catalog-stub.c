/* SPDX-License-Identifier: MIT */
/* Stand-in for the catalog until it is linked in: tests build catalogs by hand. */
#include "config.h"

#include <errno.h>
#include <stdio.h>

#include "catalog.h"

int catalog_open(struct catalog **out, const char *dir, const char *preset,
		 const struct tierd_conf *conf, char *err, size_t errlen)
{
	snprintf(err, errlen, "%s: catalog not built in", dir);
	return -ENOSYS;
}

void catalog_free(struct catalog *cat)
{
}

int catalog_layout_slots(struct catalog *cat, uint64_t align)
{
	return -ENOSYS;
}
