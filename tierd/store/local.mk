# catalog: sources and tests of this area (included by Makefile.am).
libtierd_la_SOURCES += tierd/store/safetensors.c tierd/store/safetensors.h tierd/store/safetensors-int.h \
	tierd/store/safetensors-walk.c tierd/store/catalog.c \
	tierd/store/catalog-int.h tierd/store/catalog-experts.c \
	tierd/store/demostore.c tierd/store/demostore.h tierd/daemon/smallfile.c tierd/daemon/smallfile.h
client_tierctl_SOURCES += client/tierctl-catalog.c

check_PROGRAMS += tests/test-safetensors tests/test-catalog
tests_test_safetensors_SOURCES = tests/test-safetensors.c
tests_test_safetensors_CFLAGS = $(TEST_CFLAGS)
tests_test_safetensors_LDADD = $(TEST_LIBS)
tests_test_catalog_SOURCES = tests/test-catalog.c
tests_test_catalog_CFLAGS = $(TEST_CFLAGS)
tests_test_catalog_LDADD = $(TEST_LIBS)
TESTS += tests/test-safetensors tests/test-catalog

# libFuzzer target for the header parser: built and run by the script, with clang.
EXTRA_DIST += tests/fuzz-safetensors.sh tests/fuzz-safetensors.c tests/fuzz-safetensors.dict \
	tests/corpus/safetensors/empty tests/corpus/safetensors/one-tensor \
	tests/corpus/safetensors/metadata tests/corpus/safetensors/mixtral \
	tests/corpus/safetensors/fp8-scales tests/corpus/safetensors/fused \
	tests/corpus/safetensors/overlap tests/corpus/safetensors/duplicate \
	tests/corpus/safetensors/escapes
CLEANFILES += tests/fuzz-safetensors
if FUZZ
TESTS += tests/fuzz-safetensors.sh
AM_TESTS_ENVIRONMENT += CLANG='$(CLANG)'; export CLANG;
endif

TESTS += tests/catalog-cli.sh
EXTRA_DIST += tests/catalog-cli.sh
