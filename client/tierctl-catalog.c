/* SPDX-License-Identifier: MIT */
/* tierctl check / demo-store: the catalog's commands. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "catalog.h"
#include "conf.h"
#include "demostore.h"
#include "safetensors.h"
#include "tierctl.h"

static int parse_u32(const char *opt, const char *s, uint32_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v > UINT32_MAX || *s == '-') {
		fprintf(stderr, "tierctl: %s: '%s' is not a number\n", opt, s);
		return -EINVAL;
	}
	*out = (uint32_t)v;
	return 0;
}

static void shape_print(FILE *f, const struct catalog_tensor *t)
{
	fputc('[', f);
	for (uint32_t i = 0; i < t->ndim; i++)
		fprintf(f, "%s%" PRIu64, i ? ", " : "", t->shape[i]);
	fputc(']', f);
}

static struct json_object *expert_json(const struct catalog *cat, const struct catalog_expert *ex)
{
	struct json_object *o = json_object_new_object(), *ts = json_object_new_array();

	json_object_object_add(o, "layer", json_object_new_int64(ex->layer));
	json_object_object_add(o, "expert", json_object_new_int64(ex->expert));
	json_object_object_add(o, "bytes", json_object_new_int64((int64_t)ex->bytes));
	json_object_object_add(o, "slot_bytes", json_object_new_int64((int64_t)ex->slot_bytes));
	json_object_object_add(o, "extents", json_object_new_int64(ex->nextents));
	for (uint32_t i = 0; i < ex->ntensors; i++) {
		const struct catalog_tensor *t = &ex->tensors[i];
		struct json_object *j = json_object_new_object(), *sh = json_object_new_array();

		for (uint32_t d = 0; d < t->ndim; d++)
			json_object_array_add(sh, json_object_new_int64((int64_t)t->shape[d]));
		json_object_object_add(j, "name", json_object_new_string(t->name));
		json_object_object_add(j, "dtype", json_object_new_string(tierd_dtype_name(t->dtype)));
		json_object_object_add(j, "shape", sh);
		json_object_object_add(j, "file", json_object_new_string(cat->files[t->file].path));
		json_object_object_add(j, "offset", json_object_new_int64((int64_t)t->offset));
		json_object_object_add(j, "length", json_object_new_int64((int64_t)t->length));
		json_object_object_add(j, "slot_offset", json_object_new_int64((int64_t)t->slot_offset));
		json_object_array_add(ts, j);
	}
	json_object_object_add(o, "tensors", ts);
	return o;
}

static void print_json(const struct catalog *cat, const struct catalog_expert *ex)
{
	struct json_object *o = json_object_new_object(), *fs = json_object_new_array();

	json_object_object_add(o, "dir", json_object_new_string(cat->dir));
	json_object_object_add(o, "preset", json_object_new_string(cat->preset));
	for (uint32_t f = 0; f < cat->nfiles; f++) {
		struct json_object *j = json_object_new_object();

		json_object_object_add(j, "path", json_object_new_string(cat->files[f].path));
		json_object_object_add(j, "size", json_object_new_int64((int64_t)cat->files[f].size));
		json_object_array_add(fs, j);
	}
	json_object_object_add(o, "files", fs);
	json_object_object_add(o, "layers", json_object_new_int64(cat->nlayers));
	json_object_object_add(o, "experts_per_layer", json_object_new_int64(cat->experts_per_layer));
	json_object_object_add(o, "experts", json_object_new_int64(cat->nexperts));
	json_object_object_add(o, "top_k", json_object_new_int64(cat->top_k));
	json_object_object_add(o, "expert_bytes", json_object_new_int64((int64_t)ex->bytes));
	json_object_object_add(o, "slot_bytes", json_object_new_int64((int64_t)cat->slot_bytes));
	json_object_object_add(o, "slot_align", json_object_new_int64((int64_t)cat->align));
	json_object_object_add(o, "dense_tensors", json_object_new_int64((int64_t)cat->dense_tensors));
	json_object_object_add(o, "example", expert_json(cat, ex));
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

static void print_text(const struct catalog *cat, const struct catalog_expert *ex)
{
	uint64_t min = UINT64_MAX, max = 0, total = 0;

	for (uint32_t i = 0; i < cat->nexperts; i++) {
		uint64_t b = cat->experts[i].bytes;

		total += b;
		min = b < min ? b : min;
		max = b > max ? b : max;
	}
	printf("checkpoint:        %s\n", cat->dir);
	printf("preset:            %s\n", cat->preset);
	printf("files:             %u\n", cat->nfiles);
	for (uint32_t f = 0; f < cat->nfiles; f++)
		printf("  %s (%" PRIu64 " bytes)\n", cat->files[f].path, cat->files[f].size);
	printf("MoE layers:        %u (first %u, last %u)\n", cat->nlayers, cat->experts[0].layer,
	       cat->experts[cat->nexperts - 1].layer);
	printf("experts per layer: %u\n", cat->experts_per_layer);
	printf("experts:           %u\n", cat->nexperts);
	if (cat->top_k)
		printf("top-k:             %u\n", cat->top_k);
	else
		printf("top-k:             unknown (no config.json)\n");
	if (min == max)
		printf("bytes per expert:  %" PRIu64 "\n", min);
	else
		printf("bytes per expert:  %" PRIu64 "..%" PRIu64 "\n", min, max);
	printf("expert bytes:      %" PRIu64 "\n", total);
	printf("slot bytes:        %" PRIu64 " (reads aligned to %" PRIu64 ")\n", cat->slot_bytes, cat->align);
	printf("dense tensors:     %" PRIu64 " (not served)\n", cat->dense_tensors);
	printf("layer %u expert %u: %u tensors in %u reads\n", ex->layer, ex->expert, ex->ntensors, ex->nextents);
	for (uint32_t i = 0; i < ex->ntensors; i++) {
		const struct catalog_tensor *t = &ex->tensors[i];

		printf("  %-60s %-8s ", t->name, tierd_dtype_name(t->dtype));
		shape_print(stdout, t);
		printf(" file %u offset %" PRIu64 " length %" PRIu64 " slot+%" PRIu64 "\n", t->file, t->offset,
		       t->length, t->slot_offset);
	}
}

int cmd_check(const struct tierctl_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "preset", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct tierd_conf conf;
	struct catalog *cat = NULL;
	bool have_conf = false;
	const char *preset = NULL;
	char err[512];
	int opt, r, rc = 1;

	while ((opt = getopt_long(argc, argv, "p:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'p': preset = optarg; break;
		case 'h':
			printf("Usage: tierctl [-c CONFIG] [--json] check CHECKPOINT_DIR [--preset NAME]\n");
			return 0;
		default: return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "Usage: tierctl [-c CONFIG] [--json] check CHECKPOINT_DIR [--preset NAME]\n");
		return 2;
	}
	/* A config only matters here for its [preset] sections. */
	if (o->config_path) {
		r = conf_init(&conf);
		have_conf = !r;
		if (!r)
			r = conf_load_file(&conf, o->config_path, err, sizeof(err));
		if (r) {
			fprintf(stderr, "tierctl: %s\n", r == -ENOMEM ? "out of memory" : err);
			goto out;
		}
	}
	r = catalog_open(&cat, argv[optind], preset, have_conf ? &conf : NULL, err, sizeof(err));
	if (r) {
		fprintf(stderr, "tierctl: check: %s\n", err);
		goto out;
	}
	if (o->json)
		print_json(cat, &cat->experts[0]);
	else
		print_text(cat, &cat->experts[0]);
	rc = 0;
out:
	catalog_free(cat);
	if (have_conf)
		conf_free(&conf);
	return rc;
}

int cmd_demo_store(const struct tierctl_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "layers", required_argument, NULL, 'l' },
		{ "experts", required_argument, NULL, 'e' },
		{ "hidden", required_argument, NULL, 'H' },
		{ "ffn", required_argument, NULL, 'f' },
		{ "shards", required_argument, NULL, 's' },
		{ "top-k", required_argument, NULL, 'k' },
		{ "dtype", required_argument, NULL, 'd' },
		{ "preset", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *usage = "Usage: tierctl demo-store DIR [--layers N] [--experts N] [--hidden N] [--ffn N]\n"
			    "       [--shards N] [--top-k N] [--dtype bf16|f16|f32|f8_e4m3] [--preset mixtral|qwen|olmoe|deepseek|fused]\n";
	struct demostore_opts d;
	struct timespec t0, t1;
	char err[512], up[16];
	uint64_t total;
	double s;
	int opt, r = 0;

	demostore_opts_default(&d);
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'l': r = parse_u32("--layers", optarg, &d.layers); break;
		case 'e': r = parse_u32("--experts", optarg, &d.experts); break;
		case 'H': r = parse_u32("--hidden", optarg, &d.hidden); break;
		case 'f': r = parse_u32("--ffn", optarg, &d.ffn); break;
		case 's': r = parse_u32("--shards", optarg, &d.shards); break;
		case 'k': r = parse_u32("--top-k", optarg, &d.top_k); break;
		case 'd':
			snprintf(up, sizeof(up), "%s", optarg);
			for (char *c = up; *c; c++)
				*c = (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
			if (st_dtype_parse(up, &d.dtype)) {
				fprintf(stderr, "tierctl: --dtype: unknown dtype '%s'\n", optarg);
				r = -EINVAL;
			}
			break;
		case 'p':
			if (demostore_layout_parse(optarg, &d.layout)) {
				fprintf(stderr, "tierctl: --preset: expected mixtral, qwen, olmoe, deepseek or fused, not '%s'\n", optarg);
				r = -EINVAL;
			}
			break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 2;
		}
		if (r)
			return 2;
	}
	if (optind != argc - 1) {
		fputs(usage, stderr);
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = demostore_write(argv[optind], &d, err, sizeof(err));
	if (r) {
		fprintf(stderr, "tierctl: demo-store: %s\n", err);
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	total = demostore_expert_bytes(&d) * d.experts * demostore_moe_layers(&d);
	if (o->json) {
		json_object *j = json_object_new_object();

		/* json-c escapes the path: a directory name is any bytes. */
		json_object_object_add(j, "dir", json_object_new_string(argv[optind]));
		json_object_object_add(j, "preset", json_object_new_string(demostore_layout_name(d.layout)));
		json_object_object_add(j, "layers", json_object_new_int64(d.layers));
		json_object_object_add(j, "experts", json_object_new_int64(d.experts));
		json_object_object_add(j, "expert_bytes", json_object_new_int64((int64_t)demostore_expert_bytes(&d)));
		json_object_object_add(j, "total_expert_bytes", json_object_new_int64((int64_t)total));
		json_object_object_add(j, "seconds", json_object_new_double(s));
		printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
		json_object_put(j);
	} else
		printf("wrote %s: %s naming, %u layers x %u experts, %" PRIu64 " bytes per expert, %.2f GiB of experts "
		       "in %u shard(s), %.1f s\n", argv[optind], demostore_layout_name(d.layout), demostore_moe_layers(&d), d.experts,
		       demostore_expert_bytes(&d), (double)total / (1 << 30), d.shards, s);
	return 0;
}
