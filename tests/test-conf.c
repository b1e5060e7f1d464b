/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "conf.h"

static void test_defaults(void **state)
{
	struct tierd_conf c;
	char err[256];

	assert_int_equal(conf_init(&c), 0);
	assert_string_equal(c.socket_path, TIERD_DEFAULT_SOCKET);
	assert_int_equal(c.queue_depth, 32);
	assert_true(c.pj_flash > 102.3 && c.pj_flash < 102.5);
	assert_int_equal(conf_validate(&c, err, sizeof(err)), 0);
	conf_free(&c);
}

static void test_file_overrides_defaults(void **state)
{
	struct tierd_conf c;
	char err[256];
	const char *text =
		"; comment\n"
		"[daemon]\nsocket = /tmp/t.sock\nlog_level = debug\n"
		"[pool]\nsize = 2G\nhugepages = no\n"
		"[fetch]\nqueue_depth = 8\nrequest_size = 512K\n"
		"[model mixtral]\npath = /srv/mixtral\nquota = 1.5G\nallow_uid = 1000, 1001\n"
		"[preset mine]\nexpert = layers.{L}.experts.{E}.w\n";

	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(conf_load_string(&c, "t.conf", text, err, sizeof(err)), 0);
	assert_string_equal(c.socket_path, "/tmp/t.sock");
	assert_int_equal(c.log_level, 7);
	assert_int_equal(c.pool_size, 2ULL << 30);
	assert_int_equal(c.hugepages, CONF_HUGEPAGES_NO);
	assert_int_equal(c.queue_depth, 8);
	assert_int_equal(c.request_size, 512 << 10);
	assert_int_equal(c.nmodels, 1);
	assert_string_equal(c.models[0].path, "/srv/mixtral");
	assert_int_equal(c.models[0].quota_bytes, 3ULL << 29);
	assert_int_equal(c.models[0].nallow_uid, 2);
	assert_int_equal(c.models[0].allow_uid[1], 1001);
	assert_int_equal(c.npresets, 1);
	assert_string_equal(c.presets[0].kv[0].value, "layers.{L}.experts.{E}.w");
	/* The command line wins over the file. */
	assert_int_equal(conf_set(&c, "fetch.queue_depth=64", err, sizeof(err)), 0);
	assert_int_equal(c.queue_depth, 64);
	assert_int_equal(conf_validate(&c, err, sizeof(err)), 0);
	assert_non_null(conf_model_find(&c, "mixtral"));
	assert_null(conf_model_find(&c, "other"));
	conf_free(&c);
}

static void expect_error(const char *text, const char *needle)
{
	struct tierd_conf c;
	char err[256] = "";

	assert_int_equal(conf_init(&c), 0);
	assert_int_not_equal(conf_load_string(&c, "bad.conf", text, err, sizeof(err)), 0);
	if (!strstr(err, needle))
		fail_msg("error \"%s\" does not contain \"%s\"", err, needle);
	conf_free(&c);
}

static void test_errors_name_line_and_key(void **state)
{
	expect_error("[pool]\n\nsize = lots\n", "bad.conf:3: [pool] size");
	expect_error("[fetch]\nqueue_depth = -3\n", "bad.conf:2: [fetch] queue_depth");
	expect_error("[fetch]\nqueue_depth = 99999999999\n", "queue_depth");
	expect_error("[daemon]\nlog_level = loud\n", "bad.conf:2: [daemon] log_level");
	expect_error("[pool]\nsizes = 1G\n", "sizes: unknown key");
	expect_error("[nosuch]\nx = 1\n", "unknown section");
	expect_error("[pool]\nthis line has no equals sign\n", "bad.conf:2: syntax error");
	expect_error("[model m]\nallow_uid = root\n", "allow_uid");
	expect_error("[energy]\nflash_pj_per_bit = -1\n", "flash_pj_per_bit");
}

static void test_validate(void **state)
{
	struct tierd_conf c;
	char err[256];

	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(conf_load_string(&c, "v.conf", "\n[model m]\npreset = mixtral\n", err, sizeof(err)), 0);
	assert_int_equal(conf_validate(&c, err, sizeof(err)), -EINVAL);
	/* The section's header line, where the missing key belongs. */
	assert_non_null(strstr(err, "v.conf:2: [model m] path: missing"));
	conf_free(&c);

	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(conf_set(&c, "fetch.request_size=5000", err, sizeof(err)), 0);
	assert_int_equal(conf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "request_size"));
	assert_int_equal(conf_set(&c, "nodot=1", err, sizeof(err)), -EINVAL);
	conf_free(&c);
}

static void expect_invalid(const char *text, const char *needle)
{
	struct tierd_conf c;
	char err[256] = "";

	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(conf_load_string(&c, "n.conf", text, err, sizeof(err)), 0);
	assert_int_equal(conf_validate(&c, err, sizeof(err)), -EINVAL);
	if (!strstr(err, needle))
		fail_msg("error \"%s\" does not contain \"%s\"", err, needle);
	conf_free(&c);
}

/* [pool] nodes and a size per node; the one-pool keys keep their meaning. */
static void test_pool_nodes(void **state)
{
	struct tierd_conf c;
	char err[256] = "";

	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(c.npool_nodes, 0);
	assert_false(c.pool_nodes_auto);
	assert_int_equal(c.npool_sizes, 0);
	assert_int_equal(conf_load_string(&c, "n.conf", "[pool]\nnodes = 0, 1\nsize = 0:64G,1:32G\n",
					  err, sizeof(err)), 0);
	assert_int_equal(c.npool_nodes, 2);
	assert_int_equal(c.pool_nodes[0], 0);
	assert_int_equal(c.pool_nodes[1], 1);
	assert_int_equal(c.npool_sizes, 2);
	assert_int_equal(c.pool_size_node[1], 1);
	assert_int_equal(c.pool_size_bytes[0], 64ULL << 30);
	assert_int_equal(c.pool_size_bytes[1], 32ULL << 30);
	assert_int_equal(conf_validate(&c, err, sizeof(err)), 0);
	/* A plain size after the list: one size for every node again. */
	assert_int_equal(conf_set(&c, "pool.size=8G", err, sizeof(err)), 0);
	assert_int_equal(c.npool_sizes, 0);
	assert_int_equal(c.pool_size, 8ULL << 30);
	assert_int_equal(conf_set(&c, "pool.nodes=auto", err, sizeof(err)), 0);
	assert_true(c.pool_nodes_auto);
	assert_int_equal(c.npool_nodes, 0);
	assert_int_equal(conf_validate(&c, err, sizeof(err)), 0);
	conf_free(&c);

	/* The configuration of one pool on one node. */
	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(conf_load_string(&c, "n.conf", "[pool]\nnuma_node = 1\nsize = 4G\n", err, sizeof(err)), 0);
	assert_int_equal(c.numa_node, 1);
	assert_int_equal(c.npool_nodes, 0);
	assert_int_equal(conf_validate(&c, err, sizeof(err)), 0);
	conf_free(&c);

	expect_error("[pool]\nnodes = 0,0\n", "bad.conf:2: [pool] nodes");
	expect_error("[pool]\nnodes = zero\n", "[pool] nodes");
	expect_error("[pool]\nnodes = 4096\n", "[pool] nodes");
	expect_error("[pool]\nsize = 0:1G,0:2G\n", "[pool] size");
	expect_error("[pool]\nsize = 0:lots\n", "[pool] size");
	expect_error("[pool]\nsize = 1G,1:2G\n", "[pool] size");
	expect_invalid("[pool]\nnodes = 0,1\nsize = 0:1G\n", "no size for node 1");
	expect_invalid("[pool]\nnodes = 0\nsize = 0:1G,2:1G\n", "node 2 is not in [pool] nodes");
	expect_invalid("[pool]\nsize = 0:1M\n", "node 0: must be at least 2M");
	expect_invalid("[pool]\nnuma_node = 0\nnodes = 0,1\n", "[pool] numa_node");
}

static void test_sizes(void **state)
{
	uint64_t v;

	assert_int_equal(conf_parse_size("4096", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(conf_parse_size("4K", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(conf_parse_size("2GiB", &v), 0);
	assert_int_equal(v, 2ULL << 30);
	assert_int_equal(conf_parse_size("1T", &v), 0);
	assert_int_equal(v, 1ULL << 40);
	assert_int_equal(conf_parse_size("-1", &v), -EINVAL);
	assert_int_equal(conf_parse_size("1X", &v), -EINVAL);
	assert_int_equal(conf_parse_size("", &v), -EINVAL);
	assert_int_equal(conf_parse_size("99999999T", &v), -ERANGE);
}

static void test_energy_keys(void **state)
{
	struct tierd_conf c;
	char err[256];

	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(c.gpus, 0);
	assert_true(c.nvme_default_w == 0.0);
	assert_int_equal(conf_set(&c, "energy.gpus=8", err, sizeof(err)), 0);
	assert_int_equal(conf_set(&c, "energy.nvme_default_w=0.5", err, sizeof(err)), 0);
	assert_int_equal(c.gpus, 8);
	assert_true(c.nvme_default_w == 0.5);
	assert_int_equal(conf_set(&c, "energy.gpus=-1", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "gpus"));
	conf_free(&c);
}

static void test_socket_mode(void **state)
{
	struct tierd_conf c;
	char err[256];

	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(c.socket_mode, 0660);
	assert_int_equal(conf_set(&c, "daemon.socket_mode=0666", err, sizeof(err)), 0);
	assert_int_equal(c.socket_mode, 0666);
	/* Octal digits only, and nothing beyond the permission bits. */
	assert_int_not_equal(conf_set(&c, "daemon.socket_mode=0999", err, sizeof(err)), 0);
	assert_non_null(strstr(err, "socket_mode"));
	assert_int_not_equal(conf_set(&c, "daemon.socket_mode=01777", err, sizeof(err)), 0);
	assert_int_equal(c.socket_mode, 0666);
	conf_free(&c);
}

/* What the daemon will use to bound clients: defaults, overrides, limits. */
static void test_limits(void **state)
{
	struct tierd_conf c;
	char err[256];

	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(c.max_clients, 1024);
	assert_int_equal(c.max_queued_bytes, 64ULL << 20);
	assert_int_equal(c.max_prefetch_inflight, 64);
	assert_int_equal(c.max_connections_per_uid, 64);
	assert_int_equal(c.max_evict_per_alloc, 8);
	assert_int_equal(c.max_pins, 0);	/* auto: the server derives it from the pool */
	assert_int_equal(conf_validate(&c, err, sizeof(err)), 0);

	assert_int_equal(conf_load_string(&c, "l.conf",
					  "[daemon]\nmax_clients = 10\nmax_queued_bytes = 128M\n"
					  "[pool]\nmax_evict_per_alloc = 2\n"
					  "[client]\nmax_pins = 16\nmax_prefetch_inflight = 5\n"
					  "max_connections_per_uid = 3\n", err, sizeof(err)), 0);
	assert_int_equal(c.max_clients, 10);
	assert_int_equal(c.max_queued_bytes, 128ULL << 20);
	assert_int_equal(c.max_evict_per_alloc, 2);
	assert_int_equal(c.max_prefetch_inflight, 5);
	assert_int_equal(c.max_connections_per_uid, 3);
	assert_int_equal(c.max_pins, 16);
	assert_int_equal(conf_set(&c, "client.max_pins=auto", err, sizeof(err)), 0);
	assert_int_equal(c.max_pins, 0);
	assert_int_equal(conf_set(&c, "client.max_pins=some", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "[client] max_pins: expected auto or a number"));
	assert_int_equal(conf_validate(&c, err, sizeof(err)), 0);

	/* 0 would serve no one. */
	static const char *const bad[] = {
		"daemon.max_clients=0", "[daemon] max_clients",
		"daemon.max_queued_bytes=0", "[daemon] max_queued_bytes: must be at least 4M",
		"daemon.max_queued_bytes=1M", "[daemon] max_queued_bytes: must be at least 4M",
		"client.max_connections_per_uid=0", "[client] max_connections_per_uid",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i += 2) {
		struct tierd_conf b;

		assert_int_equal(conf_init(&b), 0);
		assert_int_equal(conf_set(&b, bad[i], err, sizeof(err)), 0);
		assert_int_equal(conf_validate(&b, err, sizeof(err)), -EINVAL);
		if (!strstr(err, bad[i + 1]))
			fail_msg("%s: error \"%s\" does not name %s", bad[i], err, bad[i + 1]);
		conf_free(&b);
	}
	/* 0 is a policy here: no prefetching, or prefetches into free room only. */
	assert_int_equal(conf_set(&c, "client.max_prefetch_inflight=0", err, sizeof(err)), 0);
	assert_int_equal(conf_set(&c, "pool.max_evict_per_alloc=0", err, sizeof(err)), 0);
	assert_int_equal(conf_validate(&c, err, sizeof(err)), 0);
	assert_int_not_equal(conf_set(&c, "daemon.max_clients=-1", err, sizeof(err)), 0);
	assert_int_not_equal(conf_set(&c, "daemon.max_queued_bytes=lots", err, sizeof(err)), 0);
	conf_free(&c);
}

/* inih alone files the keys after "[model x" under the section before it. */
static void test_unterminated_header(void **state)
{
	struct tierd_conf c;
	char err[256] = "";

	expect_error("[daemon]\nlog_level = info\n[model x\npath = /srv/x\n",
		     "bad.conf:3: section header \"[model x\" is unterminated");
	expect_error("[pool]\nsize = 2G\n  [fetch ; comment\nqueue_depth = 4\n", "bad.conf:3: section header");
	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(conf_load_string(&c, "bad.conf", "[daemon]\nlog_level = info\n[model x\npath = /srv/x\n",
					  err, sizeof(err)), -EINVAL);
	assert_null(strstr(err, "unknown key"));
	conf_free(&c);
}

static void test_duplicate_sections(void **state)
{
	struct tierd_conf c;
	char err[256];

	expect_error("[pool]\nsize = 2G\n[model a]\npath = /a\n[pool]\nlock = no\n",
		     "bad.conf:5: [pool] repeats the section at bad.conf:1");
	expect_error("[Pool]\nsize = 2G\n[pool]\n", "bad.conf:3: [pool] repeats the section at bad.conf:1");
	expect_error("[model a]\npath = /a\n\n[model  a]\nquota = 1G\n",
		     "bad.conf:4: [model  a] repeats the section at bad.conf:1");
	expect_error("[preset p]\ntensor = a.{L}.{E}\n[preset p]\n", "bad.conf:3: [preset p] repeats");
	/* Model names are case-sensitive (clients ask by name): two models. */
	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(conf_load_string(&c, "ok.conf", "[model a]\npath = /a\n[model A]\npath = /b\n",
					  err, sizeof(err)), 0);
	assert_int_equal(c.nmodels, 2);
	conf_free(&c);
}

/* inih never calls the handler for a section without keys. */
static void test_empty_sections(void **state)
{
	struct tierd_conf c;
	char err[256];

	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(conf_load_string(&c, "e.conf", "[daemon]\n\n[model a]\n; no keys\n[model b]\npath = /b\n",
					  err, sizeof(err)), 0);
	assert_int_equal(c.nmodels, 2);
	assert_int_equal(conf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "e.conf:3: [model a] path: missing"));
	conf_free(&c);

	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(conf_load_string(&c, "e.conf", "[preset p]\n", err, sizeof(err)), 0);
	assert_int_equal(c.npresets, 1);
	assert_int_equal(c.presets[0].line, 1);
	conf_free(&c);

	expect_error("[model ]\n", "bad.conf:1: [model ] needs a name");
	/* A byte order mark does not hide the first header. */
	expect_error("\xEF\xBB\xBF[pool]\n[pool]\n", "bad.conf:2: [pool] repeats the section at bad.conf:1");
}

static void test_long_line(void **state)
{
	char text[512];

	snprintf(text, sizeof(text), "[daemon]\nstate_dir = /%0300d\nlog_level = info\n", 0);
	expect_error(text, "bad.conf:2: line longer than");
}

static void test_check_paths(void **state)
{
	char dir[] = "/tmp/test-conf.XXXXXX", file[64], text[256], err[512];
	struct tierd_conf c;
	FILE *f;

	assert_non_null(mkdtemp(dir));
	snprintf(file, sizeof(file), "%s/f", dir);
	f = fopen(file, "w");
	assert_non_null(f);
	fclose(f);

	/* A directory passes. */
	assert_int_equal(conf_init(&c), 0);
	snprintf(text, sizeof(text), "[pool]\nsize = 2G\n\n[model m]\npath = %s\n", dir);
	assert_int_equal(conf_load_string(&c, "p.conf", text, err, sizeof(err)), 0);
	assert_int_equal(conf_check_paths(&c, err, sizeof(err)), 0);
	conf_free(&c);

	/* Missing: error at the section's line, the path and the errno. */
	assert_int_equal(conf_init(&c), 0);
	snprintf(text, sizeof(text), "[pool]\nsize = 2G\n\n[model m]\npath = %s/nope\n", dir);
	assert_int_equal(conf_load_string(&c, "p.conf", text, err, sizeof(err)), 0);
	assert_int_equal(conf_check_paths(&c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "p.conf:4: [model m] path = "));
	assert_non_null(strstr(err, "/nope: No such file or directory"));
	conf_free(&c);

	/* A file: the catalog wants the checkpoint's directory. */
	assert_int_equal(conf_init(&c), 0);
	snprintf(text, sizeof(text), "[model m]\npath = %s\n", file);
	assert_int_equal(conf_load_string(&c, "p.conf", text, err, sizeof(err)), 0);
	assert_int_equal(conf_check_paths(&c, err, sizeof(err)), -ENOTDIR);
	assert_non_null(strstr(err, "p.conf:1: [model m] path = "));
	assert_non_null(strstr(err, "not a directory"));
	conf_free(&c);

	/* A model given on the command line only. */
	assert_int_equal(conf_init(&c), 0);
	snprintf(text, sizeof(text), "model x.path=%s/nope", dir);
	assert_int_equal(conf_set(&c, text, err, sizeof(err)), 0);
	assert_int_equal(conf_check_paths(&c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "command line: [model x] path"));
	conf_free(&c);

	unlink(file);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_file_overrides_defaults),
		cmocka_unit_test(test_errors_name_line_and_key),
		cmocka_unit_test(test_validate),
		cmocka_unit_test(test_pool_nodes),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_energy_keys),
		cmocka_unit_test(test_socket_mode),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_unterminated_header),
		cmocka_unit_test(test_duplicate_sections),
		cmocka_unit_test(test_empty_sections),
		cmocka_unit_test(test_long_line),
		cmocka_unit_test(test_check_paths),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
