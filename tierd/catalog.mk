# catalog: sources and tests of this area (included by Makefile.am).
libtierd_la_SOURCES += tierd/safetensors.c tierd/safetensors.h tierd/catalog.c \
	tierd/demostore.c tierd/demostore.h
client_tierctl_SOURCES += client/tierctl-catalog.c

check_PROGRAMS += tests/test-safetensors tests/test-catalog
tests_test_safetensors_SOURCES = tests/test-safetensors.c
tests_test_safetensors_CFLAGS = $(TEST_CFLAGS)
tests_test_safetensors_LDADD = $(TEST_LIBS)
tests_test_catalog_SOURCES = tests/test-catalog.c
tests_test_catalog_CFLAGS = $(TEST_CFLAGS)
tests_test_catalog_LDADD = $(TEST_LIBS)
TESTS += tests/test-safetensors tests/test-catalog
