/* SPDX-License-Identifier: MIT */
/* What a reload applies and what waits for a restart (tierd/daemon/reload.c). */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "conf.h"
#include "reload.h"

static void load(struct tierd_conf *c, const char *text)
{
	char err[512];

	assert_int_equal(conf_init(c), 0);
	if (conf_load_string(c, "test.conf", text, err, sizeof(err)))
		fail_msg("%s", err);
}

static const char base[] =
	"[daemon]\nlog_level = info\n[pool]\nsize = 64M\n[client]\nmax_pins = 8\n"
	"[model demo]\npath = /srv/demo\nallow_uid = 1000\n";

/* Applies whole: the same file, or only keys the service reads per request. */
static void test_applies_at_once(void **state)
{
	struct tierd_conf a, b;
	char buf[256];

	load(&a, base);
	load(&b, base);
	assert_int_equal(reload_restart_keys(&a, &b, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "");
	conf_free(&b);
	load(&b, "[daemon]\nlog_level = debug\nmax_clients = 10\n[pool]\nsize = 64M\n"
		 "[client]\nmax_pins = auto\nmax_prefetch_inflight = 2\n"
		 "[model demo]\npath = /srv/demo\nallow_uid = 1001\nallow_gid = 5\n");
	assert_int_equal(reload_restart_keys(&a, &b, buf, sizeof(buf)), 0);
	conf_free(&a);
	conf_free(&b);
}

/* Every key that shapes what was built at start is named, all of them. */
static void test_restart_keys(void **state)
{
	struct tierd_conf a, b;
	char buf[256];

	load(&a, base);
	load(&b, "[daemon]\nlog_level = info\n[pool]\nsize = 128M\nmax_evict_per_alloc = 2\n"
		 "[fetch]\nqueue_depth = 8\n[client]\nmax_pins = 8\n"
		 "[model demo]\npath = /srv/other\n[model new]\npath = /srv/new\n"
		 "[metrics]\nlisten = 127.0.0.1:9464\n[energy]\nflash_pj_per_bit = 50\n");
	assert_int_equal(reload_restart_keys(&a, &b, buf, sizeof(buf)), 7);
	assert_non_null(strstr(buf, "[pool] size, [pool] max_evict_per_alloc, [fetch] queue_depth"));
	assert_non_null(strstr(buf, "[model demo] path"));
	assert_non_null(strstr(buf, "[model new] added"));
	assert_non_null(strstr(buf, "[metrics] listen"));
	assert_non_null(strstr(buf, "[energy]"));
	conf_free(&b);
	load(&b, "[pool]\nsize = 64M\n[client]\nmax_pins = 8\n");
	assert_int_equal(reload_restart_keys(&a, &b, buf, sizeof(buf)), 1);
	assert_string_equal(buf, "[model demo] removed");
	conf_free(&b);
	/* Pools per NUMA node: the nodes, and a size per node at one total. */
	load(&b, "[daemon]\nlog_level = info\n[pool]\nsize = 64M\nnodes = auto\n[client]\nmax_pins = 8\n"
		 "[model demo]\npath = /srv/demo\nallow_uid = 1000\n");
	assert_int_equal(reload_restart_keys(&a, &b, buf, sizeof(buf)), 1);
	assert_string_equal(buf, "[pool] nodes");
	conf_free(&b);
	load(&b, "[daemon]\nlog_level = info\n[pool]\nsize = 0:64M\n[client]\nmax_pins = 8\n"
		 "[model demo]\npath = /srv/demo\nallow_uid = 1000\n");
	assert_int_equal(reload_restart_keys(&a, &b, buf, sizeof(buf)), 1);
	assert_string_equal(buf, "[pool] size");
	conf_free(&b);
	/* The daemon's prefetch is set up when the engine starts. */
	load(&b, "[daemon]\nlog_level = info\n[pool]\nsize = 64M\n[cache]\nprefetch = yes\nprefetch_depth = 2\n"
		 "[client]\nmax_pins = 8\n[model demo]\npath = /srv/demo\nallow_uid = 1000\n");
	assert_int_equal(reload_restart_keys(&a, &b, buf, sizeof(buf)), 2);
	assert_string_equal(buf, "[cache] prefetch, [cache] prefetch_*");
	conf_free(&a);
	conf_free(&b);
}

/* A short buffer is cut with "...", and the count is still whole. */
static void test_short_buffer(void **state)
{
	struct tierd_conf a, b;
	char buf[16];

	load(&a, base);
	load(&b, "[pool]\nsize = 128M\nnuma_node = 0\nhugepages = no\nlock = no\n"
		 "[model demo]\npath = /srv/demo\n");
	assert_int_equal(reload_restart_keys(&a, &b, buf, sizeof(buf)), 4);
	assert_int_equal(strlen(buf), sizeof(buf) - 1);
	assert_string_equal(buf + sizeof(buf) - 4, "...");
	assert_int_equal(reload_restart_keys(&a, &b, NULL, 0), 4);
	conf_free(&a);
	conf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_applies_at_once),
		cmocka_unit_test(test_restart_keys),
		cmocka_unit_test(test_short_buffer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
