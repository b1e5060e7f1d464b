# Unit tests: one cmocka program per module (TAP output via CMOCKA_MESSAGE_OUTPUT).
TEST_CFLAGS = $(libtierd_la_CFLAGS) $(CMOCKA_CFLAGS)
TEST_LIBS = libtierd.la $(CMOCKA_LIBS)

check_PROGRAMS += tests/test-conf
tests_test_conf_SOURCES = tests/test-conf.c
tests_test_conf_CFLAGS = $(TEST_CFLAGS)
tests_test_conf_LDADD = $(TEST_LIBS)

TESTS += tests/test-conf

# tierd -t on bad configurations, the open file limit, a refused reload.
TESTS += tests/conf-cli.sh
EXTRA_DIST += tests/conf-cli.sh

# .gitignore ignores the test programs, not sources named like them.
TESTS += tests/gitignore.sh
EXTRA_DIST += tests/gitignore.sh

check_PROGRAMS += tests/test-reload
tests_test_reload_SOURCES = tests/test-reload.c
tests_test_reload_CFLAGS = $(TEST_CFLAGS)
tests_test_reload_LDADD = $(TEST_LIBS)
TESTS += tests/test-reload
