# bpf: CO-RE programs, built with clang and turned into skeletons by bpftool.
# The objects and skeletons are build products (BUILT_SOURCES, so they exist
# before tierd/telemetry/probes.c compiles); the sources, shared headers and the
# checked-in x86_64 vmlinux.h go into the tarball.
# -mcpu=v3: blkstat claims an entry with a compare-and-swap (kernel 5.12).
BPF_PROG_CFLAGS = -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_$(BPF_ARCH) \
	-I$(top_builddir)/bpf -I$(top_srcdir)/bpf

BPF_SKELS = bpf/blkstat.skel.h bpf/nvmetrace.skel.h
BUILT_SOURCES += $(BPF_SKELS)
CLEANFILES += $(BPF_SKELS) bpf/blkstat.bpf.o bpf/nvmetrace.bpf.o
EXTRA_DIST += bpf/vmlinux.h \
	bpf/blkstat.bpf.c bpf/blkstat.h \
	bpf/nvmetrace.bpf.c bpf/nvmetrace.h

bpf/blkstat.bpf.o: $(top_srcdir)/bpf/blkstat.bpf.c $(top_srcdir)/bpf/blkstat.h $(top_srcdir)/bpf/vmlinux.h
	$(AM_V_CC)$(MKDIR_P) bpf && \
	$(CLANG) $(BPF_PROG_CFLAGS) -c $(top_srcdir)/bpf/blkstat.bpf.c -o $@

bpf/nvmetrace.bpf.o: $(top_srcdir)/bpf/nvmetrace.bpf.c $(top_srcdir)/bpf/nvmetrace.h $(top_srcdir)/bpf/vmlinux.h
	$(AM_V_CC)$(MKDIR_P) bpf && \
	$(CLANG) $(BPF_PROG_CFLAGS) -c $(top_srcdir)/bpf/nvmetrace.bpf.c -o $@

bpf/blkstat.skel.h: bpf/blkstat.bpf.o
	$(AM_V_GEN)$(BPFTOOL) gen skeleton bpf/blkstat.bpf.o name blkstat > $@.tmp && mv $@.tmp $@

bpf/nvmetrace.skel.h: bpf/nvmetrace.bpf.o
	$(AM_V_GEN)$(BPFTOOL) gen skeleton bpf/nvmetrace.bpf.o name nvmetrace > $@.tmp && mv $@.tmp $@
