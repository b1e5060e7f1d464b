# engine: sources and tests of this area (included by Makefile.am).
# DDR pool, slot allocator, fetch engine, cache, and the engine facade.
libtierd_la_SOURCES += tierd/engine/slab.c tierd/engine/slab.h

check_PROGRAMS += tests/test-slab
tests_test_slab_SOURCES = tests/test-slab.c
tests_test_slab_CFLAGS = $(TEST_CFLAGS)
tests_test_slab_LDADD = $(TEST_LIBS)
TESTS += tests/test-slab

libtierd_la_SOURCES += tierd/engine/pool.c tierd/engine/pool.h tierd/engine/topo.c tierd/engine/topo.h
check_PROGRAMS += tests/test-pool
tests_test_pool_SOURCES = tests/test-pool.c
tests_test_pool_CFLAGS = $(TEST_CFLAGS)
tests_test_pool_LDADD = $(TEST_LIBS)
TESTS += tests/test-pool

libtierd_la_SOURCES += tierd/engine/fetch.c tierd/engine/fetch.h
check_PROGRAMS += tests/test-fetch
tests_test_fetch_SOURCES = tests/test-fetch.c
tests_test_fetch_CFLAGS = $(TEST_CFLAGS)
tests_test_fetch_LDADD = $(TEST_LIBS)
TESTS += tests/test-fetch

libtierd_la_SOURCES += tierd/engine/cache.c tierd/engine/cache.h
check_PROGRAMS += tests/test-cache
tests_test_cache_SOURCES = tests/test-cache.c
tests_test_cache_CFLAGS = $(TEST_CFLAGS)
tests_test_cache_LDADD = $(TEST_LIBS)
TESTS += tests/test-cache

libtierd_la_SOURCES += tierd/engine/engine.c tierd/engine/engine-int.h tierd/engine/engine-slots.c \
	tierd/engine/engine-checkpoint.c tierd/store/ckwatch.c tierd/store/ckwatch.h \
	tierd/engine/residency.c tierd/engine/residency.h tierd/proto/tierd-fastpath.h
check_PROGRAMS += tests/test-engine
tests_test_engine_SOURCES = tests/test-engine.c
tests_test_engine_CFLAGS = $(TEST_CFLAGS)
tests_test_engine_LDADD = $(TEST_LIBS)
TESTS += tests/test-engine

# I/O errors from a real file system: a tiny FUSE server and its test.
check_PROGRAMS += tests/fuse-eio tests/test-fetch-eio
tests_fuse_eio_SOURCES = tests/fuse-eio.c tests/fuse-eio.h
tests_fuse_eio_CFLAGS = $(AM_CFLAGS) $(FUSE3_CFLAGS)
tests_fuse_eio_LDADD = $(FUSE3_LIBS)
tests_test_fetch_eio_SOURCES = tests/test-fetch-eio.c tests/fuse-eio.h
tests_test_fetch_eio_CFLAGS = $(TEST_CFLAGS)
tests_test_fetch_eio_LDADD = $(TEST_LIBS)
TESTS += tests/test-fetch-eio

# tierctl's direct engine commands (bench fetch, fetch, demo).
client_tierctl_SOURCES += client/tierctl-engine.c client/tierctl-direct.h client/tierctl-bench-fetch.c

# Integration: demo checkpoints through the catalog and the engine, every byte.
check_PROGRAMS += tests/test-engine-demo
tests_test_engine_demo_SOURCES = tests/test-engine-demo.c
tests_test_engine_demo_CFLAGS = $(TEST_CFLAGS)
tests_test_engine_demo_LDADD = $(TEST_LIBS)
TESTS += tests/test-engine-demo tests/engine-cli.sh
EXTRA_DIST += tests/engine-cli.sh

# Integration: checkpoint files changed under the running daemon (uses
# tests/svc-client from client/service.mk).
TESTS += tests/checkpoint-change.sh
EXTRA_DIST += tests/checkpoint-change.sh

# The residency table and pin areas of the no-system-call acquire path.
check_PROGRAMS += tests/test-residency
tests_test_residency_SOURCES = tests/test-residency.c
tests_test_residency_CFLAGS = $(TEST_CFLAGS)
tests_test_residency_LDADD = $(TEST_LIBS)
TESTS += tests/test-residency
