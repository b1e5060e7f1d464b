bin_PROGRAMS += client/tierctl
client_tierctl_SOURCES = client/tierctl.c client/tierctl.h
client_tierctl_CFLAGS = $(libtierd_la_CFLAGS)
# The planner first: it uses the daemon library (log, json), not the reverse.
client_tierctl_LDADD = libtierdplan.la libtierd.la

pkgconfig_DATA += client/libtierd-client.pc
EXTRA_DIST += client/libtierd-client.pc.in
