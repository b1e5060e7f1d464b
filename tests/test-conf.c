/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
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
	assert_non_null(strstr(err, "v.conf:3: [model m] path"));
	conf_free(&c);

	assert_int_equal(conf_init(&c), 0);
	assert_int_equal(conf_set(&c, "fetch.request_size=5000", err, sizeof(err)), 0);
	assert_int_equal(conf_validate(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "request_size"));
	assert_int_equal(conf_set(&c, "nodot=1", err, sizeof(err)), -EINVAL);
	conf_free(&c);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_file_overrides_defaults),
		cmocka_unit_test(test_errors_name_line_and_key),
		cmocka_unit_test(test_validate),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_energy_keys),
		cmocka_unit_test(test_socket_mode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
