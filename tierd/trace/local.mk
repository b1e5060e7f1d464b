# trace: routing traces (sources and tests of this area, included by Makefile.am).
# Readers of the shared JSON layout and of tierd-trace-v1, in the daemon's
# library: the daemon records, tierctl and the tests read.
EXTRA_DIST += doc/trace-format.md
libtierd_la_SOURCES += tierd/trace/trace.h tierd/trace/trace-int.h tierd/trace/trace-v1.h \
	tierd/trace/trace.c tierd/trace/trace-json.c tierd/trace/trace-v1.c tierd/trace/trace-writer.c \
	tierd/trace/trace-rec.c tierd/trace/trace-rec.h
# The service's side of recording (kept here: it is this area's, and the
# service's fragment stays as it is).
libtierd_la_SOURCES += tierd/service/tracing.c

client_tierctl_SOURCES += client/tierctl-trace.c

check_PROGRAMS += tests/test-trace
tests_test_trace_SOURCES = tests/test-trace.c
tests_test_trace_CFLAGS = $(TEST_CFLAGS)
tests_test_trace_LDADD = $(TEST_LIBS)
TESTS += tests/test-trace

# Integration: the real daemon recording a client that plays the shared trace.
check_PROGRAMS += tests/trace-client
tests_trace_client_SOURCES = tests/trace-client.c
tests_trace_client_CFLAGS = $(libtierd_la_CFLAGS)
tests_trace_client_LDADD = client/libtierd-client.la libtierd.la
TESTS += tests/trace.sh
EXTRA_DIST += tests/trace.sh

# Where the shared routing traces are: ../shared beside the source tree (CI
# has it beside the clone).  Handed down to the build `make distcheck` makes,
# whose source tree is the unpacked tarball with nothing beside it.
TIERD_SHARED_DIR = $(abs_top_srcdir)/../shared
AM_MAKEFLAGS = TIERD_SHARED_DIR='$(TIERD_SHARED_DIR)'
AM_TESTS_ENVIRONMENT += TIERD_SHARED_DIR='$(TIERD_SHARED_DIR)'; export TIERD_SHARED_DIR;
