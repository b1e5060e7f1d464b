# service: sources and tests of this area (included by Makefile.am).
# The Unix-socket service, its wire protocol, the event loop and main.c's glue.
libtierd_la_SOURCES += \
	tierd/loop.c tierd/loop.h \
	tierd/proto.c client/tierd-proto.h

check_PROGRAMS += tests/test-proto tests/test-loop
TESTS += tests/test-proto tests/test-loop
tests_test_proto_SOURCES = tests/test-proto.c
tests_test_proto_CFLAGS = $(TEST_CFLAGS)
tests_test_proto_LDADD = $(TEST_LIBS)
tests_test_loop_SOURCES = tests/test-loop.c
tests_test_loop_CFLAGS = $(TEST_CFLAGS)
tests_test_loop_LDADD = $(TEST_LIBS)
