# The daemon's logic lives in a convenience library that tests and tierctl link.
noinst_LTLIBRARIES += libtierd.la
libtierd_la_SOURCES = \
	tierd/daemon/log.c tierd/daemon/log.h \
	tierd/daemon/conf.c tierd/daemon/conf.h \
	tierd/daemon/reload.c tierd/daemon/reload.h \
	tierd/store/catalog.h tierd/engine/engine.h
libtierd_la_CFLAGS = $(AM_CFLAGS) $(URING_CFLAGS) $(NUMA_CFLAGS) $(JSONC_CFLAGS) \
	$(INIH_CFLAGS) $(SYSTEMD_CFLAGS) $(NVME_CFLAGS) $(BPF_CFLAGS) $(MHD_CFLAGS) $(XXHASH_CFLAGS)
libtierd_la_LIBADD = $(URING_LIBS) $(NUMA_LIBS) $(JSONC_LIBS) $(INIH_LIBS) \
	$(SYSTEMD_LIBS) $(NVME_LIBS) $(BPF_LIBS) $(MHD_LIBS) $(XXHASH_LIBS) -lm

sbin_PROGRAMS += tierd/tierd
tierd_tierd_SOURCES = tierd/daemon/main.c
tierd_tierd_CFLAGS = $(libtierd_la_CFLAGS)
tierd_tierd_LDADD = libtierd.la
