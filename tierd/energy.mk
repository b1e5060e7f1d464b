# energy: eBPF probes (user side), NVMe facts, the energy model, metrics export.
libtierd_la_SOURCES += \
	tierd/probes.c tierd/probes.h \
	tierd/nvme.c tierd/nvme.h \
	tierd/energy.c tierd/energy.h
# probes.c includes the skeletons, which BUILT_SOURCES makes first.
