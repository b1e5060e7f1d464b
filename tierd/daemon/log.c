/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"

/* Logging state is process-wide by nature (like stderr itself). */
static struct {
	const char *ident;
	int max_level;
	int prefix;		/* -1: decide from isatty() */
} log_state = { "tierd", LOG_INFO, -1 };

static const char *const level_names[] = {
	[LOG_EMERG] = "emerg", [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
	[LOG_ERR] = "err", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
	[LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

void log_init(const char *ident, int max_level)
{
	log_state.ident = ident;
	log_state.max_level = max_level;
}

void log_set_level(int max_level)
{
	log_state.max_level = max_level;
}

int log_get_level(void)
{
	return log_state.max_level;
}

void log_set_prefix(int on)
{
	log_state.prefix = on;
}

int log_level_parse(const char *s)
{
	char *end;
	long v;

	for (int i = 0; i <= LOG_DEBUG; i++)
		if (!strcasecmp(s, level_names[i]))
			return i;
	if (!strcasecmp(s, "error"))
		return LOG_ERR;
	if (!strcasecmp(s, "warn"))
		return LOG_WARNING;
	errno = 0;
	v = strtol(s, &end, 10);
	if (!errno && *s && !*end && v >= LOG_EMERG && v <= LOG_DEBUG)
		return (int)v;
	return -EINVAL;
}

void log_vmsg(int level, const char *fmt, va_list ap)
{
	char buf[1024];
	int saved = errno;
	int prefix;

	if (level > log_state.max_level)
		return;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	/* One write per line keeps lines whole when several processes share stderr. */
	prefix = log_state.prefix >= 0 ? log_state.prefix : !isatty(STDERR_FILENO);
	if (prefix)
		fprintf(stderr, "<%d>%s\n", level, buf);
	else
		fprintf(stderr, "%s: %s: %s\n", log_state.ident, level_names[level & 7], buf);
	errno = saved;
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}
