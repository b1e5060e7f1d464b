/* SPDX-License-Identifier: MIT */
/*
 * One logging API for the daemon, its library and tierctl.
 *
 * Lines go to stderr with a "<N>" syslog priority prefix when stderr is not a
 * terminal (journald turns the prefix into the entry's priority), and as plain
 * "tierd: level: message" on a terminal.
 */
#ifndef TIERD_LOG_H
#define TIERD_LOG_H

#include <stdarg.h>
#include <syslog.h>

void log_init(const char *ident, int max_level);
void log_set_level(int max_level);
int log_get_level(void);
/* Parses "err", "warning", "notice", "info", "debug" (or 3..7); -EINVAL if unknown. */
int log_level_parse(const char *s);
/* Forces or disables the "<N>" prefix (tests). */
void log_set_prefix(int on);

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(int level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#define log_err(...)     log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...)    log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...)  log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...)    log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)   log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
