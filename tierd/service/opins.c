/* SPDX-License-Identifier: MIT */
/*
 * Operator pins on disk: STATE_DIR/pins, saved before a change is applied
 * (server_pins_save), and loaded and restored at start (server_pins_init).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "log.h"
#include "server-int.h"
#include "smallfile.h"

/*
 * STATE_DIR/pins keeps the operator pins across restarts, by model name (the
 * index of a model can change with the config), written and read by json-c:
 *
 *   {
 *     "format": "tierd-pins",
 *     "version": 2,
 *     "pins": [
 *       { "model": "demo", "layer": 1, "expert": 2, "count": 1 }, ...
 *     ]
 *   }
 *
 * count is how many times the expert is pinned (optional when read: 1).
 * Unknown keys are refused, so that a misspelt one is not silently a pin
 * of something else.  The text format of version 1 ("tierd-pins 1", then one
 * "MODEL LAYER EXPERT" line per pin) is still read, once: the file is then
 * rewritten as JSON.
 */
#define PINS_FORMAT	"tierd-pins"
#define PINS_VERSION	2
#define PINS_V1_HEADER	"tierd-pins 1"
#define PINS_MAX_FILE	(16u << 20)
/* root object, "pins" array, entry object, value: anything deeper is wrong. */
#define PINS_JSON_DEPTH	8

static int json_add(struct json_object *o, const char *key, struct json_object *v)
{
	if (!v || json_object_object_add(o, key, v)) {
		json_object_put(v);
		return -ENOMEM;
	}
	return 0;
}

/* The file's JSON for ps; NULL when out of memory. */
static struct json_object *pins_to_json(struct server *s, const struct pinset *ps)
{
	struct json_object *root = json_object_new_object(), *arr = json_object_new_array();
	int err = root ? 0 : -ENOMEM;

	if (!err)
		err = json_add(root, "format", json_object_new_string(PINS_FORMAT));
	if (!err)
		err = json_add(root, "version", json_object_new_int(PINS_VERSION));
	/* json_add() gives arr to root or drops it; either way it is not ours. */
	if (!err)
		err = json_add(root, "pins", arr);
	else
		json_object_put(arr);
	for (size_t i = 0; !err && i < ps->n; i++) {
		const struct pin *p = &ps->v[i];
		struct json_object *e = json_object_new_object();

		err = e ? 0 : -ENOMEM;
		if (!err)
			err = json_add(e, "model",
				       json_object_new_string(engine_model_name(s->engine, p->key.model)));
		if (!err)
			err = json_add(e, "layer", json_object_new_int64(p->key.layer));
		if (!err)
			err = json_add(e, "expert", json_object_new_int64(p->key.expert));
		if (!err)
			err = json_add(e, "count", json_object_new_int64(p->count));
		if (!err && json_object_array_add(arr, e))
			err = -ENOMEM;
		if (err)
			json_object_put(e);
	}
	if (err) {
		json_object_put(root);
		return NULL;
	}
	return root;
}

/*
 * Writes ps as STATE_DIR/pins.  Returns 0, or a negative errno with the
 * reason in why: the caller then leaves the pins as they were, so that what
 * the daemon holds and what survives a restart never differ.  Every failure
 * is logged and counted until a save succeeds.
 */
int server_pins_save(struct server *s, const struct pinset *ps, char *why, size_t whylen)
{
	struct json_object *root = NULL;
	const char *json;
	char *tmp = NULL;
	FILE *f = NULL;
	int fd = -1, err = 0;

	if (!s->pins_path)
		return 0;
	root = pins_to_json(s, ps);
	json = root ? json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
							  JSON_C_TO_STRING_SPACED |
							  JSON_C_TO_STRING_NOSLASHESCAPE) : NULL;
	if (!json || asprintf(&tmp, "%s.tmp", s->pins_path) < 0) {
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
	fputs(json, f);
	fputc('\n', f);
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
	json_object_put(root);
	if (err) {
		s->pins_save_errors++;
		snprintf(why, whylen, "cannot save operator pins to %s: %s", s->pins_path, strerror(-err));
		log_warn("%s", why);
	}
	return err;
}

/* One entry of the file, checked, before it is restored. */
struct saved_pin {
	const char *model;		/* into the file's text or its JSON tree */
	uint32_t layer, expert, count;
	unsigned line;			/* format 1: the entry's line */
};

struct saved_pins {
	struct saved_pin *v;
	size_t n;
	bool v1;			/* the text format 1: rewrite as JSON */
	struct json_object *root;	/* JSON: owns the model names */
};

static void saved_pins_free(struct saved_pins *sp)
{
	free(sp->v);
	json_object_put(sp->root);
	*sp = (struct saved_pins){ 0 };
}

static int __attribute__((format(printf, 3, 4))) pins_bad(char *msg, size_t msglen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, msglen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Parses one line "MODEL LAYER EXPERT" of format 1 in place (the last two
 * fields are the numbers): -EINVAL if malformed. */
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

static bool pins_is_v1(const char *text)
{
	size_t n = strlen(PINS_V1_HEADER);

	return !strncmp(text, PINS_V1_HEADER, n) && (text[n] == '\n' || !text[n]);
}

/*
 * Reads the text format 1 (whose header pins_is_v1() found) in place: one
 * "MODEL LAYER EXPERT" line per hold, a model name may hold spaces.  Kept for
 * the upgrade only: without it, the first start of this version would move
 * the pins of the previous one aside and start without them.
 */
static int pins_parse_v1(const char *path, char *text, struct saved_pins *sp, char *msg, size_t msglen)
{
	unsigned lineno = 1;
	size_t cap = 1;
	char *line, *next;

	for (const char *c = text; *c; c++)
		cap += *c == '\n';
	sp->v1 = true;
	sp->v = calloc(cap, sizeof(*sp->v));
	if (!sp->v)
		return -ENOMEM;
	next = strchr(text, '\n');
	for (line = next ? next + 1 : NULL; line && *line; line = next) {
		struct saved_pin *p = &sp->v[sp->n];
		char orig[81];

		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		lineno++;
		/* The parser cuts the line: keep what to quote. */
		snprintf(orig, sizeof(orig), "%s", line);
		if (pins_parse_line(line, &p->model, &p->layer, &p->expert))
			return pins_bad(msg, msglen, "%s:%u: expected \"MODEL LAYER EXPERT\", got \"%s\"",
					path, lineno, orig);
		p->count = 1;
		p->line = lineno;
		sp->n++;
	}
	return 0;
}

/* Where byte off of text is, as line and column (from 1). */
static void text_position(const char *text, size_t off, unsigned *line, unsigned *col)
{
	const char *bol = text;

	*line = 1;
	for (size_t i = 0; i < off; i++)
		if (text[i] == '\n') {
			(*line)++;
			bol = text + i + 1;
		}
	*col = (unsigned)(text + off - bol) + 1;
}

/* A number key of entry i: from lo to UINT32_MAX; dflt when absent, or
 * missing when dflt is 0. */
static int pins_entry_u32(const char *path, size_t i, struct json_object *e, const char *key,
			  uint32_t lo, uint32_t dflt, uint32_t *out, char *msg, size_t msglen)
{
	struct json_object *v = NULL;
	int64_t x;

	if (!json_object_object_get_ex(e, key, &v)) {
		if (dflt) {
			*out = dflt;
			return 0;
		}
		return pins_bad(msg, msglen, "%s: pins[%zu]: missing key \"%s\"", path, i, key);
	}
	x = json_object_get_int64(v);
	if (!json_object_is_type(v, json_type_int) || x < lo || x > UINT32_MAX)
		return pins_bad(msg, msglen, "%s: pins[%zu]: key \"%s\": expected an integer from %u to %u, got %s %.40s",
				path, i, key, lo, UINT32_MAX, json_type_to_name(json_object_get_type(v)),
				json_object_to_json_string(v));
	*out = (uint32_t)x;
	return 0;
}

/* Checks entry i of "pins" into p. */
static int pins_parse_entry(const char *path, size_t i, struct json_object *e, struct saved_pin *p,
			    char *msg, size_t msglen)
{
	struct json_object *v = NULL;
	int err;

	if (!json_object_is_type(e, json_type_object))
		return pins_bad(msg, msglen, "%s: pins[%zu]: expected an object, got %s", path, i,
				json_type_to_name(json_object_get_type(e)));
	json_object_object_foreach(e, key, val) {
		(void)val;
		if (strcmp(key, "model") && strcmp(key, "layer") && strcmp(key, "expert") &&
		    strcmp(key, "count"))
			return pins_bad(msg, msglen, "%s: pins[%zu]: unknown key \"%.40s\"", path, i, key);
	}
	if (!json_object_object_get_ex(e, "model", &v))
		return pins_bad(msg, msglen, "%s: pins[%zu]: missing key \"model\"", path, i);
	/* A \u0000 would cut the name short: it would pin another model. */
	if (!json_object_is_type(v, json_type_string) || !json_object_get_string_len(v) ||
	    strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v))
		return pins_bad(msg, msglen, "%s: pins[%zu]: key \"model\": expected a model name, got %s %.40s",
				path, i, json_type_to_name(json_object_get_type(v)), json_object_to_json_string(v));
	p->model = json_object_get_string(v);
	err = pins_entry_u32(path, i, e, "layer", 0, 0, &p->layer, msg, msglen);
	if (!err)
		err = pins_entry_u32(path, i, e, "expert", 0, 0, &p->expert, msg, msglen);
	if (!err)
		err = pins_entry_u32(path, i, e, "count", 1, 1, &p->count, msg, msglen);
	return err;
}

/* Reads the JSON format (len bytes of text). */
static int pins_parse_json(const char *path, const char *text, size_t len, struct saved_pins *sp,
			   char *msg, size_t msglen)
{
	struct json_tokener *tok = json_tokener_new_ex(PINS_JSON_DEPTH);
	struct json_object *v = NULL, *arr = NULL;
	enum json_tokener_error je;
	int err = 0;

	if (!tok)
		return -ENOMEM;
	/* Strict: no comments, no single quotes, nothing after the object. */
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	sp->root = json_tokener_parse_ex(tok, text, (int)len);
	je = json_tokener_get_error(tok);
	if (je != json_tokener_success) {
		size_t off = json_tokener_get_parse_end(tok);
		int near = (int)strcspn(text + off, "\n");
		unsigned line, col;

		text_position(text, off, &line, &col);
		near = near > 20 ? 20 : near;
		err = pins_bad(msg, msglen, "%s:%u:%u: not valid JSON: %s at byte %zu%s%.*s%s", path, line, col,
			       je == json_tokener_continue ? "unexpected end" : json_tokener_error_desc(je), off,
			       near ? ", near \"" : "", near, text + off, near ? "\"" : "");
		goto out;
	}
	if (!json_object_is_type(sp->root, json_type_object)) {
		err = pins_bad(msg, msglen, "%s: expected a JSON object, got %s", path,
			       json_type_to_name(json_object_get_type(sp->root)));
		goto out;
	}
	if (!json_object_object_get_ex(sp->root, "format", &v) || !json_object_is_type(v, json_type_string) ||
	    strcmp(json_object_get_string(v), PINS_FORMAT)) {
		err = pins_bad(msg, msglen, "%s: key \"format\": expected \"%s\"", path, PINS_FORMAT);
		goto out;
	}
	if (!json_object_object_get_ex(sp->root, "version", &v) || !json_object_is_type(v, json_type_int) ||
	    json_object_get_int64(v) != PINS_VERSION) {
		err = pins_bad(msg, msglen, "%s: key \"version\": expected %d (this tierd's), got %.40s", path,
			       PINS_VERSION, v ? json_object_to_json_string(v) : "nothing");
		goto out;
	}
	json_object_object_foreach(sp->root, key, val) {
		(void)val;
		if (strcmp(key, "format") && strcmp(key, "version") && strcmp(key, "pins")) {
			err = pins_bad(msg, msglen, "%s: unknown key \"%.40s\"", path, key);
			goto out;
		}
	}
	if (!json_object_object_get_ex(sp->root, "pins", &arr) || !json_object_is_type(arr, json_type_array)) {
		err = pins_bad(msg, msglen, "%s: key \"pins\": expected an array", path);
		goto out;
	}
	sp->n = json_object_array_length(arr);
	sp->v = calloc(sp->n ? sp->n : 1, sizeof(*sp->v));
	if (!sp->v) {
		err = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; !err && i < sp->n; i++)
		err = pins_parse_entry(path, i, json_object_array_get_idx(arr, i), &sp->v[i], msg, msglen);
out:
	json_tokener_free(tok);
	return err;
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
	struct saved_pins sp = { 0 };
	char *text = NULL, *bad = NULL;
	char msg[512];
	size_t len;
	unsigned long long ok = 0, dropped = 0;
	int err;

	err = smallfile_read(s->pins_path, PINS_MAX_FILE, &text, &len, msg, sizeof(msg));
	if (err == -ENOENT)
		return;
	if (err) {
		log_err("%s: operator pins not restored", msg);
		return;
	}
	/* The whole file is checked first: a malformed one pins nothing. */
	if (pins_is_v1(text))
		err = pins_parse_v1(s->pins_path, text, &sp, msg, sizeof(msg));
	else
		err = pins_parse_json(s->pins_path, text, len, &sp, msg, sizeof(msg));
	if (err == -EINVAL)
		goto malformed;
	if (err) {
		log_err("%s: %s: operator pins not restored", s->pins_path, strerror(-err));
		goto out;
	}
	for (size_t i = 0; i < sp.n; i++) {
		const struct saved_pin *p = &sp.v[i];
		char where[40];

		if (sp.v1)
			snprintf(where, sizeof(where), "pins:%u", p->line);
		else
			snprintf(where, sizeof(where), "pins[%zu]", i);
		for (uint32_t j = 0; j < p->count; j++) {
			if (server_pins_restore_one(s, where, p->model, p->layer, p->expert)) {
				/* The other holds of this expert would fail alike. */
				dropped += p->count - j;
				break;
			}
			ok++;
		}
	}
	log_notice("%s: %llu operator pins restored, %llu dropped", s->pins_path, ok, dropped);
	if (sp.v1)
		log_notice("%s: format 1 read: rewritten as JSON (version %d)", s->pins_path, PINS_VERSION);
	if (dropped || sp.v1)
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
	saved_pins_free(&sp);
	free(bad);
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
