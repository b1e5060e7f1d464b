# vm: sources and tests of this area (included by Makefile.am).
# The VM harness (qemu, Debian's kernel, emulated NVMe, debootstrapped
# Debian 12 with systemd) and the suites that run in it.  See doc/README-vm.md.
TESTS += tests/vm/nvme.sh tests/vm/systemd.sh tests/vm/numa.sh
EXTRA_DIST += tests/vm/vm-lib.sh tests/vm/run-vm.sh \
	tests/vm/numa.sh tests/vm/guest-numa.sh \
	tests/vm/nvme.sh tests/vm/guest-nvme.sh \
	tests/vm/systemd.sh tests/vm/guest-systemd.sh

# Pools per NUMA node, from a client: where each pool's pages and each
# acquired tensor are (move_pages), and the per-node counters.  Linked
# without the shared libtierd-client so that the VM's initramfs needs no
# libtool wrapper.
check_PROGRAMS += tests/numa-check
tests_numa_check_SOURCES = tests/numa-check.c
tests_numa_check_CFLAGS = $(AM_CFLAGS) -I$(top_srcdir)/client -I$(top_srcdir)/tierd/proto $(JSONC_CFLAGS) $(NUMA_CFLAGS)
tests_numa_check_LDFLAGS = -static-libtool-libs
tests_numa_check_LDADD = client/libtierd-client.la $(JSONC_LIBS) $(NUMA_LIBS) -lpthread
