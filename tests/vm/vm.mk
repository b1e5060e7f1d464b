# vm: sources and tests of this area (included by Makefile.am).
# The VM harness (qemu, Debian's kernel, emulated NVMe, debootstrapped
# Debian 12 with systemd) and the suites that run in it.  See doc/README-vm.md.
TESTS += tests/vm/nvme.sh tests/vm/systemd.sh
EXTRA_DIST += tests/vm/vm-lib.sh tests/vm/run-vm.sh \
	tests/vm/nvme.sh tests/vm/guest-nvme.sh \
	tests/vm/systemd.sh tests/vm/guest-systemd.sh
