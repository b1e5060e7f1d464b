/* SPDX-License-Identifier: MIT */
/* tierctl subcommands: each lives in its own file and is listed in tierctl.c. */
#ifndef TIERCTL_H
#define TIERCTL_H

struct tierctl_opts {
	const char *socket_path;	/* -s SOCKET */
	const char *config_path;	/* -c CONFIG, for commands that open the engine */
	int json;			/* --json */
};

/* Every subcommand: argv[0] is the subcommand's name; returns an exit status. */
typedef int (*tierctl_cmd_fn)(const struct tierctl_opts *o, int argc, char **argv);

/* catalog */
int cmd_check(const struct tierctl_opts *o, int argc, char **argv);
int cmd_demo_store(const struct tierctl_opts *o, int argc, char **argv);

/* engine */

/* plan */
int cmd_plan(const struct tierctl_opts *o, int argc, char **argv);

/* energy */

/* service */

#endif
