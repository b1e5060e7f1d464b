/* SPDX-License-Identifier: MIT */
/* tierd: thin entry point; the daemon's logic is in libtierd. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "log.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: tierd [-c CONFIG] [-o SECTION.KEY=VALUE]... [-t] [-h] [-V]\n"
		"  -c CONFIG   configuration file (default " TIERD_DEFAULT_CONFIG ")\n"
		"  -o S.K=V    override one configuration key\n"
		"  -t          check the configuration and exit\n");
}

int main(int argc, char **argv)
{
	struct tierd_conf conf;
	const char *path = TIERD_DEFAULT_CONFIG;
	char err[512];
	char **overrides = calloc((size_t)argc, sizeof(char *));
	int noverrides = 0, check_only = 0, opt, r;

	log_init("tierd", LOG_INFO);
	if (!overrides || conf_init(&conf))
		return EXIT_FAILURE;
	while ((opt = getopt(argc, argv, "c:o:thV")) != -1) {
		switch (opt) {
		case 'c': path = optarg; break;
		case 'o': overrides[noverrides++] = optarg; break;
		case 't': check_only = 1; break;
		case 'h': usage(stdout); return EXIT_SUCCESS;
		case 'V': printf("tierd %s\n", PACKAGE_VERSION); return EXIT_SUCCESS;
		default: usage(stderr); return EXIT_FAILURE;
		}
	}
	r = conf_load_file(&conf, path, err, sizeof(err));
	for (int i = 0; !r && i < noverrides; i++)
		r = conf_set(&conf, overrides[i], err, sizeof(err));
	if (!r)
		r = conf_validate(&conf, err, sizeof(err));
	if (r) {
		log_err("%s", err);
		goto out;
	}
	log_set_level(conf.log_level);
	if (check_only) {
		printf("%s: configuration ok\n", path);
		goto out;
	}
	log_err("the service is not built yet");
	r = -ENOSYS;
out:
	conf_free(&conf);
	free(overrides);
	return r ? EXIT_FAILURE : EXIT_SUCCESS;
}
