# energy: eBPF probes (user side), NVMe facts, the energy model, metrics export.
libtierd_la_SOURCES += \
	tierd/telemetry/probes.c tierd/telemetry/probes.h \
	tierd/telemetry/nvme.c tierd/telemetry/nvme.h \
	tierd/telemetry/energy.c tierd/telemetry/energy.h \
	tierd/telemetry/metrics.c tierd/telemetry/metrics.h tierd/telemetry/metrics-export.c \
	tierd/telemetry/telemetry.c tierd/telemetry/telemetry.h \
	tierd/telemetry/usage.c tierd/telemetry/usage.h
# probes.c includes the skeletons, which BUILT_SOURCES makes first.

# Root test: eBPF read bytes against an O_DIRECT read (CI runs as root).
check_PROGRAMS += tests/test-bpf-blk
tests_test_bpf_blk_SOURCES = tests/test-bpf-blk.c
tests_test_bpf_blk_CFLAGS = $(TEST_CFLAGS)
tests_test_bpf_blk_LDADD = $(TEST_LIBS)
TESTS += tests/test-bpf-blk

check_PROGRAMS += tests/test-energy
tests_test_energy_SOURCES = tests/test-energy.c
tests_test_energy_CFLAGS = $(TEST_CFLAGS)
tests_test_energy_LDADD = $(TEST_LIBS) -lm
TESTS += tests/test-energy

client_tierctl_SOURCES += client/tierctl-energy.c

# Metrics: promtool, HTTP and textfile checks on a synthetic snapshot.
check_PROGRAMS += tests/metrics-dump
tests_metrics_dump_SOURCES = tests/metrics-dump.c
tests_metrics_dump_CFLAGS = $(TEST_CFLAGS)
tests_metrics_dump_LDADD = $(TEST_LIBS)
TESTS += tests/metrics-promtool.sh
EXTRA_DIST += tests/metrics-promtool.sh

# Programs the VM suite runs inside a guest with an emulated NVMe controller
# (built by make check, not run by it: this machine has no NVMe).
check_PROGRAMS += tests/nvme-info tests/bpf-nvme-check
tests_nvme_info_SOURCES = tests/nvme-info.c
tests_nvme_info_CFLAGS = $(TEST_CFLAGS)
tests_nvme_info_LDADD = $(TEST_LIBS)
tests_bpf_nvme_check_SOURCES = tests/bpf-nvme-check.c
tests_bpf_nvme_check_CFLAGS = $(TEST_CFLAGS)
tests_bpf_nvme_check_LDADD = $(TEST_LIBS)

# BUILT_SOURCES only covers "make all/check"; this covers building one
# target directly (make tests/test-bpf-blk).
$(libtierd_la_OBJECTS): $(BPF_SKELS)

EXTRA_DIST += contrib/grafana/tierd-dashboard.json doc/README-energy.md

# The daemon's telemetry end to end: real tierd, a client, tierctl metrics,
# HTTP and textfile, eBPF against O_DIRECT, attribution, promtool (root).
TESTS += tests/energy-service.sh
EXTRA_DIST += tests/energy-service.sh
