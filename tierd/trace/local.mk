# trace: routing traces (sources and tests of this area, included by Makefile.am).
# Readers of the shared JSON layout and of tierd-trace-v1, in the daemon's
# library: the daemon records, tierctl and the tests read.
EXTRA_DIST += doc/trace-format.md
libtierd_la_SOURCES += tierd/trace/trace.h tierd/trace/trace-int.h tierd/trace/trace-v1.h \
	tierd/trace/trace.c tierd/trace/trace-json.c tierd/trace/trace-v1.c tierd/trace/trace-writer.c

check_PROGRAMS += tests/test-trace
tests_test_trace_SOURCES = tests/test-trace.c
tests_test_trace_CFLAGS = $(TEST_CFLAGS)
tests_test_trace_LDADD = $(TEST_LIBS)
TESTS += tests/test-trace
