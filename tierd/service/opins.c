/* SPDX-License-Identifier: MIT */
/*
 * Operator pins on disk: STATE_DIR/pins, saved before a change is applied
 * (server_pins_save), and loaded and restored at start (server_pins_init).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "server-int.h"
#include "smallfile.h"

/*
 * STATE_DIR/pins keeps the operator pins across restarts, by model name (the
 * index of a model can change with the config):
 *
 *   tierd-pins 1
 *   MODEL LAYER EXPERT
 *
 * one line per pin (an expert pinned twice appears twice).  A model name may
 * hold spaces: the last two fields are the numbers.
 */
#define PINS_HEADER "tierd-pins 1"

/*
 * Writes ps as STATE_DIR/pins.  Returns 0, or a negative errno with the
 * reason in why: the caller then leaves the pins as they were, so that what
 * the daemon holds and what survives a restart never differ.  Every failure
 * is logged and counted until a save succeeds.
 */
int server_pins_save(struct server *s, const struct pinset *ps, char *why, size_t whylen)
{
	char *tmp = NULL;
	FILE *f = NULL;
	int fd = -1, err = 0;

	if (!s->pins_path)
		return 0;
	if (asprintf(&tmp, "%s.tmp", s->pins_path) < 0) {
		tmp = NULL;
		err = -ENOMEM;
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	f = fdopen(fd, "w");
	if (!f) {
		err = -errno;
		goto out;
	}
	fd = -1;
	fprintf(f, "%s\n", PINS_HEADER);
	for (size_t i = 0; i < ps->n; i++)
		for (uint32_t j = 0; j < ps->v[i].count; j++)
			fprintf(f, "%s %u %u\n", engine_model_name(s->engine, ps->v[i].key.model),
				ps->v[i].key.layer, ps->v[i].key.expert);
	/* The rename must not expose a file whose data is not on disk yet. */
	if (fflush(f) || fsync(fileno(f))) {
		err = -errno;
		goto out;
	}
	if (fclose(f)) {
		f = NULL;
		err = -errno;
		goto out;
	}
	f = NULL;
	if (rename(tmp, s->pins_path))
		err = -errno;
out:
	if (f)
		fclose(f);
	if (fd >= 0)
		close(fd);
	if (err && tmp)
		unlink(tmp);
	free(tmp);
	if (err) {
		s->pins_save_errors++;
		snprintf(why, whylen, "cannot save operator pins to %s: %s", s->pins_path, strerror(-err));
		log_warn("%s", why);
	}
	return err;
}

/* Parses one line "MODEL LAYER EXPERT" in place: -EINVAL if malformed. */
static int pins_parse_line(char *line, const char **model, uint32_t *layer, uint32_t *expert)
{
	char *num[2];
	unsigned long v[2];
	char *end = line + strlen(line);

	for (int i = 1; i >= 0; i--) {
		while (end > line && end[-1] == ' ')
			end--;
		*end = '\0';
		char *sp = strrchr(line, ' ');

		if (!sp)
			return -EINVAL;
		num[i] = sp + 1;
		end = sp;
	}
	while (end > line && end[-1] == ' ')
		end--;
	*end = '\0';
	if (!*line)
		return -EINVAL;
	for (int i = 0; i < 2; i++) {
		char *e;

		if (num[i][0] < '0' || num[i][0] > '9')
			return -EINVAL;
		errno = 0;
		v[i] = strtoul(num[i], &e, 10);
		if (errno || *e || v[i] > UINT32_MAX)
			return -EINVAL;
	}
	*model = line;
	*layer = (uint32_t)v[0];
	*expert = (uint32_t)v[1];
	return 0;
}

struct pin_restore {
	int err;
	bool done;
};

static void pin_restore_done(void *arg, int err, const struct engine_slot_info *info)
{
	struct pin_restore *r = arg;

	(void)info;
	r->err = err;
	r->done = true;
}

/* Pins one entry of the file; a negative errno when it is dropped. */
static int server_pins_restore_one(struct server *s, const char *where, const char *model,
				   uint32_t layer, uint32_t expert)
{
	struct pin_restore *r;
	int idx = engine_model_index(s->engine, model);
	struct tierd_key k;
	int err;

	if (idx < 0) {
		log_warn("%s: model %s is not configured: pin dropped", where, model);
		return idx;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	k = (struct tierd_key){ (uint32_t)idx, layer, expert };
	err = engine_acquire_for(s->engine, &k, ENGINE_DEMAND, ENGINE_OWNER_NONE, pin_restore_done, r);
	/* Start-up is not served yet: waiting here makes the pinned experts
	 * resident before the daemon says it is ready. */
	if (!err && !r->done) {
		int e = engine_drain(s->engine);

		if (!r->done) {
			/* The engine may still call back into r: leave it allocated. */
			log_err("%s: waiting for model %s layer %u expert %u: %s", where, model, layer,
				expert, strerror(e ? -e : EIO));
			return e ? e : -EIO;
		}
	}
	if (!err)
		err = r->err;
	free(r);
	if (!err) {
		err = pinset_add(&s->opins, &k);
		if (err)
			engine_release(s->engine, &k);
	}
	if (err)
		log_warn("%s: model %s layer %u expert %u: %s: pin dropped", where, model, layer, expert,
			 err == -ENOENT ? "no such expert" : strerror(-err));
	return err;
}

/* Reads STATE_DIR/pins and pins what it names.  Never fails the start. */
static void server_pins_load(struct server *s)
{
	char *text = NULL, *check = NULL, *line, *next, *bad = NULL;
	char msg[512];
	size_t len;
	unsigned lineno = 0, ok = 0, dropped = 0;
	int err;

	err = smallfile_read(s->pins_path, 16u << 20, &text, &len, msg, sizeof(msg));
	if (err == -ENOENT)
		return;
	if (err) {
		log_err("%s: operator pins not restored", msg);
		return;
	}
	/* Check the whole file first (on a copy: parsing cuts the lines): a
	 * malformed one pins nothing. */
	check = strdup(text);
	if (!check) {
		log_err("%s: out of memory: operator pins not restored", s->pins_path);
		goto out;
	}
	for (line = check; line && *line; line = next) {
		const char *model;
		uint32_t l, x;

		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		lineno++;
		if (lineno == 1) {
			if (strcmp(line, PINS_HEADER)) {
				snprintf(msg, sizeof(msg), "%s:1: expected the header \"%s\"", s->pins_path,
					 PINS_HEADER);
				goto malformed;
			}
			continue;
		}
		if (pins_parse_line(line, &model, &l, &x)) {
			/* line was cut by the parser: quote the original. */
			const char *orig = text + (line - check);

			snprintf(msg, sizeof(msg), "%s:%u: expected \"MODEL LAYER EXPERT\", got \"%.*s\"",
				 s->pins_path, lineno, (int)strcspn(orig, "\n") > 80 ? 80 : (int)strcspn(orig, "\n"),
				 orig);
			goto malformed;
		}
	}
	if (lineno == 0) {
		snprintf(msg, sizeof(msg), "%s:1: empty file, expected the header \"%s\"", s->pins_path,
			 PINS_HEADER);
		goto malformed;
	}
	lineno = 0;
	for (line = text; line && *line; line = next) {
		const char *model;
		uint32_t l, x;
		char where[64];

		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (++lineno == 1 || pins_parse_line(line, &model, &l, &x))
			continue;
		snprintf(where, sizeof(where), "pins:%u", lineno);
		if (server_pins_restore_one(s, where, model, l, x))
			dropped++;
		else
			ok++;
	}
	log_notice("%s: %u operator pins restored, %u dropped", s->pins_path, ok, dropped);
	if (dropped)
		server_pins_save(s, &s->opins, msg, sizeof(msg));
	goto out;
malformed:
	log_err("%s: operator pins not restored", msg);
	if (asprintf(&bad, "%s.bad", s->pins_path) < 0)
		bad = NULL;
	if (!bad || rename(s->pins_path, bad))
		log_err("%s: cannot move aside to %s.bad: %s", s->pins_path, s->pins_path,
			bad ? strerror(errno) : "out of memory");
	else
		log_warn("%s: moved aside to %s", s->pins_path, bad);
out:
	free(bad);
	free(check);
	free(text);
}

/* Finds STATE_DIR/pins and pins what it names.  Without a state_dir, pins
 * live in memory only; with one that is not writable, every pin change is
 * refused until it is (an operator pin that silently does not survive a
 * restart is worse than one refused). */
void server_pins_init(struct server *s)
{
	const char *dir = s->conf->state_dir;

	if (!dir || !*dir) {
		log_warn("state_dir not set: operator pins will not survive a restart");
		return;
	}
	if (access(dir, W_OK | X_OK))
		log_warn("state_dir %s: %s: operator pin changes are refused until it is writable",
			 dir, strerror(errno));
	if (asprintf(&s->pins_path, "%s/pins", dir) < 0) {
		s->pins_path = NULL;
		log_warn("out of memory: operator pins will not survive a restart");
		return;
	}
	server_pins_load(s);
}
