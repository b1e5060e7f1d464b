/* SPDX-License-Identifier: MIT */
/*
 * The chart of `tierctl plan --svg`: per-token energy against batch size, both
 * axes logarithmic.  Top left: the total of each placement; the other panels:
 * each placement's components.  Plain SVG text, no library needed.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tierctl-plan.h"

#define W 1000
#define H 860
#define PW 500
#define PH 380
#define ML 70
#define MR 20
#define MT 40
#define MB 50

static const char *const part_color[PLAN_NPARTS] = {
	"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
	"#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
};
static const char *const tier_color[PLAN_NTIERS] = { "#2ca02c", "#1f77b4", "#d62728" };

/* Model names come from file names: keep them from breaking the XML. */
static void put_escaped(FILE *f, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '&': fputs("&amp;", f); break;
		case '"': fputs("&quot;", f); break;
		default: fputc(*s, f); break;
		}
	}
}

struct axes {
	double x0, y0;			/* panel origin */
	double lx_min, lx_max;		/* log10 of the batch range */
	double ly_min, ly_max;		/* log10 of the energy range */
};

static double px(const struct axes *a, double batch)
{
	double span = a->lx_max - a->lx_min;
	double f = span > 0 ? (log10(batch) - a->lx_min) / span : 0.5;

	return a->x0 + ML + f * (PW - ML - MR);
}

static double py(const struct axes *a, double j)
{
	double f = (log10(j) - a->ly_min) / (a->ly_max - a->ly_min);

	if (f < 0)
		f = 0;
	return a->y0 + PH - MB - f * (PH - MT - MB);
}

static void frame(FILE *f, const struct axes *a, const char *title, const struct plan_chart *c)
{
	double left = a->x0 + ML, right = a->x0 + PW - MR;
	double top = a->y0 + MT, bottom = a->y0 + PH - MB;

	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"15\" text-anchor=\"middle\">%s</text>\n",
		(left + right) / 2, a->y0 + 24, title);
	fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#000\"/>\n",
		left, top, right - left, bottom - top);
	for (int d = (int)a->ly_min; d <= (int)a->ly_max; d++) {
		double y = py(a, pow(10, d));

		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
			left, y, right, y);
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">1e%d</text>\n",
			left - 4, y + 4, d);
	}
	for (size_t i = 0; i < c->nbatches; i++) {
		double x = px(a, c->batches[i]);

		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n",
			x, top, x, bottom);
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">%u</text>\n",
			x, bottom + 15, c->batches[i]);
	}
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\">batch size</text>\n",
		(left + right) / 2, bottom + 33);
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\" "
		"transform=\"rotate(-90 %.1f %.1f)\">J per token</text>\n",
		a->x0 + 16, (top + bottom) / 2, a->x0 + 16, (top + bottom) / 2);
}

static void polyline(FILE *f, const struct axes *a, const struct plan_chart *c, size_t tier,
		     int part, const char *color, double width, const char *dash)
{
	int open = 0;

	for (size_t i = 0; i < c->nbatches; i++) {
		const struct plan_result *r = &c->res[i * PLAN_NTIERS + tier];
		double v = part < 0 ? r->energy_per_token_j : r->energy_j[part];

		if (!(v > 0))
			continue;
		if (!open) {
			fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%.1f\"%s%s%s points=\"",
				color, width, dash ? " stroke-dasharray=\"" : "", dash ? dash : "",
				dash ? "\"" : "");
			open = 1;
		}
		fprintf(f, "%.1f,%.1f ", px(a, c->batches[i]), py(a, v));
	}
	if (open)
		fprintf(f, "\"/>\n");
}

int plan_chart_write(FILE *f, const struct plan_chart *c)
{
	double vmin = INFINITY, vmax = 0;
	struct axes a;
	int used[PLAN_NPARTS] = { 0 };

	if (!c->nbatches)
		return -EINVAL;
	for (size_t i = 0; i < c->nbatches * PLAN_NTIERS; i++) {
		const struct plan_result *r = &c->res[i];

		vmax = fmax(vmax, r->energy_per_token_j);
		for (int p = 0; p < PLAN_NPARTS; p++) {
			if (r->energy_j[p] > 0) {
				used[p] = 1;
				vmin = fmin(vmin, r->energy_j[p]);
			}
		}
	}
	if (!(vmax > 0))
		return -EINVAL;
	/* Six decades at most: smaller components are invisible next to the total anyway. */
	vmin = fmax(vmin, vmax * 1e-6);
	a.lx_min = log10(c->batches[0]);
	a.lx_max = log10(c->batches[c->nbatches - 1]);
	a.ly_min = floor(log10(vmin));
	a.ly_max = ceil(log10(vmax));
	if (a.ly_max <= a.ly_min)
		a.ly_max = a.ly_min + 1;

	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
		"viewBox=\"0 0 %d %d\" font-family=\"sans-serif\">\n"
		"<rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>\n", W, H, W, H);
	fputs("<title>", f);
	put_escaped(f, c->title);
	fputs("</title>\n", f);

	a.x0 = 0;
	a.y0 = 0;
	frame(f, &a, "total per token", c);
	for (size_t t = 0; t < PLAN_NTIERS; t++)
		polyline(f, &a, c, t, -1, tier_color[t], 2.5, NULL);
	for (size_t t = 0; t < PLAN_NTIERS; t++) {
		double lx = a.x0 + PW - MR - 120, ly = a.y0 + MT + 18 + 16 * (double)t;

		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2.5\"/>\n",
			lx, ly - 4, lx + 20, ly - 4, tier_color[t]);
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\">experts in %s</text>\n",
			lx + 25, ly, plan_tier_name(t));
	}
	for (size_t t = 0; t < PLAN_NTIERS; t++) {
		char title[64];

		a.x0 = (double)((t + 1) % 2) * PW;
		a.y0 = (double)((t + 1) / 2) * PH;
		snprintf(title, sizeof(title), "routed experts in %s: components", plan_tier_name(t));
		frame(f, &a, title, c);
		for (int p = 0; p < PLAN_NPARTS; p++)
			if (used[p])
				polyline(f, &a, c, t, p, part_color[p], 1.8, NULL);
		polyline(f, &a, c, t, -1, "#000", 1.5, "5,3");
	}

	/* One legend for the component panels. */
	{
		double y = 2 * PH + 25;
		int col = 0;

		fprintf(f, "<text x=\"20\" y=\"%.1f\" font-size=\"13\">", y);
		put_escaped(f, c->subtitle);
		fputs("</text>\n", f);
		y += 22;
		for (int p = -1; p < PLAN_NPARTS; p++) {
			double x = 20 + 160.0 * col;

			if (p >= 0 && !used[p])
				continue;
			fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s/>\n",
				x, y - 4, x + 20, y - 4, p < 0 ? "#000" : part_color[p],
				p < 0 ? " stroke-dasharray=\"5,3\"" : "");
			fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\">%s</text>\n", x + 25, y,
				p < 0 ? "total" : plan_part_name(p));
			if (++col == 6) {
				col = 0;
				y += 18;
			}
		}
	}
	fprintf(f, "</svg>\n");
	return ferror(f) ? -EIO : 0;
}
