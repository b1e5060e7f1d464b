/* SPDX-License-Identifier: MIT */
/* Internal to `tierctl plan`: the SVG chart. */
#ifndef TIERCTL_PLAN_H
#define TIERCTL_PLAN_H

#include <stdio.h>

#include "plan.h"

struct plan_chart {
	const char *title;
	const char *subtitle;
	const unsigned *batches;	/* ascending */
	size_t nbatches;
	const struct plan_result *res;	/* [nbatches][PLAN_NTIERS]: hbm, ddr, ssd */
};

/* Writes the chart as SVG text; -EINVAL if there is nothing to draw, -EIO on a write error. */
int plan_chart_write(FILE *f, const struct plan_chart *c);

#endif
