# service: sources and tests of this area (included by Makefile.am).
# The Unix-socket service, its wire protocol, the event loop and main.c's glue.
libtierd_la_SOURCES += \
	tierd/service/loop.c tierd/service/loop.h \
	tierd/proto/proto.c tierd/proto/tierd-proto.h tierd/proto/dtype.c tierd/proto/tierd-types.h \
	tierd/service/server.c tierd/service/server.h tierd/service/server-int.h \
	tierd/service/pinset.c tierd/service/pinset.h tierd/service/opins.c \
	tierd/service/outq.c tierd/service/auth.c tierd/service/acquire.c \
	tierd/service/warm.c tierd/service/dispatch.c tierd/service/conn.c \
	tierd/service/numa.c tierd/service/fastpath.c

check_PROGRAMS += tests/test-proto tests/test-loop tests/test-pinset
TESTS += tests/test-proto tests/test-loop tests/test-pinset
tests_test_proto_SOURCES = tests/test-proto.c
tests_test_proto_CFLAGS = $(TEST_CFLAGS)
tests_test_proto_LDADD = $(TEST_LIBS)
tests_test_loop_SOURCES = tests/test-loop.c
tests_test_loop_CFLAGS = $(TEST_CFLAGS)
tests_test_loop_LDADD = $(TEST_LIBS)
# The pin set alone: compiled in, with engine_release() counted by the test.
tests_test_pinset_SOURCES = tests/test-pinset.c tierd/service/pinset.c tierd/service/pinset.h
tests_test_pinset_CFLAGS = $(TEST_CFLAGS)
tests_test_pinset_LDADD = $(CMOCKA_LIBS) $(XXHASH_LIBS)
# Its micro-benchmark, built on demand: make tests/bench-pinset.
EXTRA_PROGRAMS = tests/bench-pinset
tests_bench_pinset_SOURCES = tests/bench-pinset.c tierd/service/pinset.c tierd/service/pinset.h
tests_bench_pinset_CFLAGS = $(libtierd_la_CFLAGS)
tests_bench_pinset_LDADD = $(XXHASH_LIBS)

# libtierd-client: shared and static, exported symbols pinned by a version script.
lib_LTLIBRARIES += client/libtierd-client.la
include_HEADERS += client/tierd-client.h tierd/proto/tierd-types.h
# tierd-client-int.h is private: listed in SOURCES, never installed.
client_libtierd_client_la_SOURCES = client/tierd-client.c client/tierd-client.h \
	client/tierd-client-int.h client/tierd-client-acq.c client/tierd-client-mux.c \
	client/tierd-client-conn.c client/tierd-client-numa.c client/tierd-client-fast.c \
	tierd/proto/tierd-fastpath.h \
	tierd/proto/proto.c tierd/proto/tierd-proto.h tierd/proto/dtype.c tierd/proto/tierd-types.h
client_libtierd_client_la_CFLAGS = $(AM_CFLAGS) -pthread
client_libtierd_client_la_LDFLAGS = $(AM_LDFLAGS) -pthread -version-info 2:0:2 \
	-Wl,--version-script=$(top_srcdir)/client/libtierd-client.sym
EXTRA_client_libtierd_client_la_DEPENDENCIES = client/libtierd-client.sym
EXTRA_DIST += client/libtierd-client.sym

# The library against a fake daemon it can kill, stop or make misbehave
# (white-box: the test compiles the library's four client/tierd-client*.c in).
check_PROGRAMS += tests/test-client
TESTS += tests/test-client
tests_test_client_SOURCES = tests/test-client.c
tests_test_client_CFLAGS = $(TEST_CFLAGS) -pthread
tests_test_client_LDADD = $(TEST_LIBS) -lpthread

# tierctl's service commands, over libtierd-client.
client_tierctl_SOURCES += client/tierctl-service.c client/tierctl-metrics.c
client_tierctl_LDADD += client/libtierd-client.la

# Integration: the real daemon, a demo checkpoint, several client processes.
check_PROGRAMS += tests/svc-client
tests_svc_client_SOURCES = tests/svc-client.c
tests_svc_client_CFLAGS = $(libtierd_la_CFLAGS) -pthread
tests_svc_client_LDADD = client/libtierd-client.la libtierd.la -lpthread
TESTS += tests/service.sh
EXTRA_DIST += tests/service.sh

# The service tried as an attacker: refusals, revocation, limits, fd limit.
TESTS += tests/adversary.sh
EXTRA_DIST += tests/adversary.sh tests/rawclient.py tests/service-lib.sh

# Load: 64 client processes, a pool smaller than the working set, every byte
# checked; the daemon's RSS and fds bounded, its counters added up.
check_PROGRAMS += tests/load-client
tests_load_client_SOURCES = tests/load-client.c
tests_load_client_CFLAGS = $(libtierd_la_CFLAGS)
tests_load_client_LDADD = client/libtierd-client.la libtierd.la
TESTS += tests/load.sh
EXTRA_DIST += tests/load.sh

# Operator pins kept in state_dir across restarts.
TESTS += tests/pins.sh
EXTRA_DIST += tests/pins.sh

# systemd units (installed to systemd's unit directory) and the example config.
systemdsystemunit_DATA += contrib/systemd/tierd.service contrib/systemd/tierd.socket
contrib/systemd/tierd.service: contrib/systemd/tierd.service.in Makefile
	$(AM_V_GEN)$(MKDIR_P) contrib/systemd && \
	sed -e 's|@sbindir[@]|$(sbindir)|g' $(srcdir)/contrib/systemd/tierd.service.in >$@
CLEANFILES += contrib/systemd/tierd.service
EXTRA_DIST += contrib/systemd/tierd.service.in contrib/systemd/tierd.socket contrib/tierd.conf

# Units verified, socket activation, sd_notify.
TESTS += tests/systemd-units.sh
EXTRA_DIST += tests/systemd-units.sh

# libFuzzer target for the protocol decoder: built with clang and run by the script.
EXTRA_DIST += tests/fuzz-proto.sh tests/fuzz-proto.c tests/fuzz-lib.sh
CLEANFILES += tests/fuzz-proto
if FUZZ
TESTS += tests/fuzz-proto.sh
endif

# Run inside a systemd guest by the VM harness (tests/vm/).
EXTRA_DIST += tests/vm/guest-systemd-check.sh

# Python binding (ctypes over libtierd-client.so), installed beside the data.
tierdpythondir = $(pkgdatadir)/python
dist_tierdpython_DATA = client/python/tierd_client.py
TESTS += tests/python-client.sh
EXTRA_DIST += tests/python-client.sh tests/test_tierd_client.py

dist_man_MANS += man/tierd.8 man/tierd.conf.5 man/tierctl.8 man/libtierd-client.3

# The server in one process: engine + loop in the main thread, a client thread.
check_PROGRAMS += tests/test-server
TESTS += tests/test-server
tests_test_server_SOURCES = tests/test-server.c
tests_test_server_CFLAGS = $(TEST_CFLAGS) -pthread
tests_test_server_LDADD = client/libtierd-client.la $(TEST_LIBS) -lpthread

# The no-system-call acquire path: white-box clients of the real daemon
# (the library's sources compiled in), built again with ThreadSanitizer on
# its own (its flags replace the suite's sanitizers for this program only),
# and the protocol's Promela model checked with spin.
check_PROGRAMS += tests/fastpath-client tests/fastpath-client-tsan
tests_fastpath_client_SOURCES = tests/fastpath-client.c
tests_fastpath_client_CFLAGS = $(libtierd_la_CFLAGS) -pthread
tests_fastpath_client_LDADD = libtierd.la -lpthread
tests_fastpath_client_tsan_SOURCES = tests/fastpath-client.c tierd/proto/proto.c tierd/proto/dtype.c \
	tierd/store/demostore.c tierd/daemon/log.c
tests_fastpath_client_tsan_CFLAGS = -std=gnu11 $(WARN_CFLAGS) $(JSONC_CFLAGS) -pthread \
	-fsanitize=thread -O1 -g -fno-omit-frame-pointer
tests_fastpath_client_tsan_LDFLAGS = -fsanitize=thread
tests_fastpath_client_tsan_LDADD = $(JSONC_LIBS) -lpthread
TESTS += tests/fastpath.sh tests/fastpath-model.sh
EXTRA_DIST += tests/fastpath.sh tests/fastpath-model.sh tests/fastpath.pml
