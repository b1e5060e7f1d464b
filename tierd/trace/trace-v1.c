/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdio.h>

#include "trace-int.h"

int trace_v1_open(struct trace_reader *r, FILE *f, char *err, size_t errlen)
{
	fclose(f);
	snprintf(err, errlen, "%s: tierd-trace-v1: not supported yet", r->path);
	return -ENOTSUP;
}
