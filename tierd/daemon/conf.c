/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "conf.h"
#include "log.h"

/* inih hands the handler no line number (Debian builds it without
 * INI_HANDLER_LINENO), so the reader counts lines itself. */
struct conf_reader {
	FILE *f;		/* file, or NULL for a string */
	const char *s;		/* remaining string */
	unsigned line;
};

/* A section header seen in this file, to find repeated sections. */
struct conf_section {
	char *name;
	unsigned line;
};

struct conf_parse {
	struct conf_reader rd;	/* first: the reader's stream is the parse */
	struct tierd_conf *c;
	const char *name;
	char *err;
	size_t errlen;
	int failed;
	struct conf_section *sections;
	size_t nsections;
};

static struct conf_model *model_get(struct tierd_conf *c, const char *name, unsigned line);
static struct conf_preset *preset_get(struct tierd_conf *c, const char *name, unsigned line);

enum conf_section_kind {
	CONF_SECTION_FIXED,	/* [daemon], [pool], ...: one per file */
	CONF_SECTION_MODEL,
	CONF_SECTION_PRESET,
};

/* The kind of a section, and for [model NAME] / [preset NAME] the name
 * (possibly empty). */
static enum conf_section_kind section_kind(const char *section, const char **name)
{
	enum conf_section_kind k;

	if (!strncasecmp(section, "model ", 6))
		k = CONF_SECTION_MODEL;
	else if (!strncasecmp(section, "preset ", 7))
		k = CONF_SECTION_PRESET;
	else
		return CONF_SECTION_FIXED;
	*name = strchr(section, ' ') + 1;
	while (**name == ' ')
		(*name)++;
	return k;
}

static bool section_same(const char *a, const char *b)
{
	const char *na = NULL, *nb = NULL;
	enum conf_section_kind ka = section_kind(a, &na), kb = section_kind(b, &nb);

	if (ka != kb)
		return false;
	/* Model and preset names are case-sensitive, like their lookups. */
	return ka == CONF_SECTION_FIXED ? !strcasecmp(a, b) : !strcmp(na, nb);
}

static int conf_parse_fail(struct conf_parse *p, int r, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int conf_parse_fail(struct conf_parse *p, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->err, p->errlen, fmt, ap);
	va_end(ap);
	p->failed = r;
	return r;
}

/*
 * Looks at a section header before inih does, because inih says nothing of
 * what this file needs: an unterminated header (inih would go on filing the
 * next keys under the previous section), a section repeated (inih merges),
 * and a [model]/[preset] section without keys (inih never calls the handler
 * for it, so it would vanish).  Such sections are created here, with the
 * header's line, and checked by conf_validate.
 */
static int conf_section_header(struct conf_parse *p, const char *text)
{
	enum conf_section_kind kind;
	struct conf_section *sec;
	const char *end, *name = NULL;
	size_t len;
	char *section;

	while (*text == ' ' || *text == '\t')
		text++;
	if (*text != '[')
		return 0;
	len = strcspn(text, "\r\n");
	end = memchr(text, ']', len);
	if (!end)
		return conf_parse_fail(p, -EINVAL, "%s:%u: section header \"%.*s\" is unterminated "
				       "(expected ']' at the end)", p->name, p->rd.line, (int)len, text);
	section = strndup(text + 1, (size_t)(end - text - 1));
	if (!section)
		return conf_parse_fail(p, -ENOMEM, "%s: out of memory", p->name);
	for (size_t i = 0; i < p->nsections; i++) {
		if (section_same(p->sections[i].name, section)) {
			conf_parse_fail(p, -EINVAL, "%s:%u: [%s] repeats the section at %s:%u "
					"(merge the two into one)", p->name, p->rd.line, section,
					p->name, p->sections[i].line);
			free(section);
			return -EINVAL;
		}
	}
	sec = realloc(p->sections, (p->nsections + 1) * sizeof(*sec));
	if (!sec) {
		free(section);
		return conf_parse_fail(p, -ENOMEM, "%s: out of memory", p->name);
	}
	p->sections = sec;
	p->sections[p->nsections].name = section;
	p->sections[p->nsections].line = p->rd.line;
	p->nsections++;

	kind = section_kind(section, &name);
	if (kind == CONF_SECTION_FIXED)
		return 0;
	if (!*name)
		return conf_parse_fail(p, -EINVAL, "%s:%u: [%s] needs a name (e.g. [model mixtral])",
				       p->name, p->rd.line, section);
	if (kind == CONF_SECTION_MODEL ? !model_get(p->c, name, p->rd.line) : !preset_get(p->c, name, p->rd.line))
		return conf_parse_fail(p, -ENOMEM, "%s: out of memory", p->name);
	return 0;
}

static char *conf_reader_gets(char *str, int num, void *stream)
{
	struct conf_parse *p = stream;
	struct conf_reader *rd = &p->rd;
	size_t n = 0;

	if (p->failed)
		return NULL;
	if (rd->f) {
		if (!fgets(str, num, rd->f))
			return NULL;
		n = strlen(str);
	} else {
		if (!*rd->s)
			return NULL;
		while (rd->s[n] && rd->s[n] != '\n' && n + 1 < (size_t)num - 1)
			n++;
		if (rd->s[n] == '\n')
			n++;
		memcpy(str, rd->s, n);
		str[n] = '\0';
		rd->s += n;
	}
	rd->line++;
	/* inih would parse the rest of a long line as a line of its own. */
	if (n && str[n - 1] != '\n' && (rd->f ? !feof(rd->f) : *rd->s != '\0')) {
		conf_parse_fail(p, -EINVAL, "%s:%u: line longer than %d characters", p->name, rd->line, num - 2);
		return NULL;
	}
	if (conf_section_header(p, rd->line == 1 && !strncmp(str, "\xEF\xBB\xBF", 3) ? str + 3 : str))
		return NULL;
	return str;
}

int conf_parse_size(const char *s, uint64_t *out)
{
	char *end;
	double v;
	uint64_t mult = 1;

	while (*s == ' ' || *s == '\t')
		s++;
	if (!*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || !isfinite(v) || v < 0)
		return -EINVAL;
	while (*end == ' ')
		end++;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': mult = 1ULL << 10; end++; break;
	case 'm': case 'M': mult = 1ULL << 20; end++; break;
	case 'g': case 'G': mult = 1ULL << 30; end++; break;
	case 't': case 'T': mult = 1ULL << 40; end++; break;
	default: return -EINVAL;
	}
	if (mult > 1 && (!strcasecmp(end, "ib") || !strcasecmp(end, "b")))
		end += strlen(end);
	if (*end && strcasecmp(end, "b"))
		return -EINVAL;
	if (v * (double)mult >= 18446744073709551615.0)
		return -ERANGE;
	*out = (uint64_t)(v * (double)mult);
	return 0;
}

int conf_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "1", "yes", "true", "on" };
	static const char *const no[] = { "0", "no", "false", "off" };

	for (size_t i = 0; i < 4; i++) {
		if (!strcasecmp(s, yes[i])) {
			*out = true;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

static int parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
	char *end;
	unsigned long long v;

	if (!*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end)
		return -EINVAL;
	if (v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

static int parse_double(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < 0)
		return -EINVAL;
	*out = v;
	return 0;
}

static int set_str(char **dst, const char *v)
{
	char *d = strdup(v);

	if (!d)
		return -ENOMEM;
	free(*dst);
	*dst = d;
	return 0;
}

/* "1000,1001" -> ids; names are not resolved here (the daemon may run in a
 * chroot-like sandbox), numeric only. */
static int parse_ids(const char *v, unsigned *ids, size_t *n)
{
	char buf[512], *save = NULL, *tok;

	if (strlen(v) >= sizeof(buf))
		return -ERANGE;
	strcpy(buf, v);
	*n = 0;
	for (tok = strtok_r(buf, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		unsigned long long id;
		int r = parse_uint(tok, UINT_MAX - 1, &id);

		if (r)
			return r;
		if (*n == CONF_MAX_IDS)
			return -ERANGE;
		ids[(*n)++] = (unsigned)id;
	}
	return 0;
}

static struct conf_model *model_get(struct tierd_conf *c, const char *name, unsigned line)
{
	struct conf_model *m;

	for (size_t i = 0; i < c->nmodels; i++)
		if (!strcmp(c->models[i].name, name))
			return &c->models[i];
	m = realloc(c->models, (c->nmodels + 1) * sizeof(*m));
	if (!m)
		return NULL;
	c->models = m;
	m = &c->models[c->nmodels];
	memset(m, 0, sizeof(*m));
	m->name = strdup(name);
	if (!m->name)
		return NULL;
	m->line = line;
	c->nmodels++;
	return m;
}

static struct conf_preset *preset_get(struct tierd_conf *c, const char *name, unsigned line)
{
	struct conf_preset *p;

	for (size_t i = 0; i < c->npresets; i++)
		if (!strcmp(c->presets[i].name, name))
			return &c->presets[i];
	p = realloc(c->presets, (c->npresets + 1) * sizeof(*p));
	if (!p)
		return NULL;
	c->presets = p;
	p = &c->presets[c->npresets];
	memset(p, 0, sizeof(*p));
	p->name = strdup(name);
	if (!p->name)
		return NULL;
	p->line = line;
	c->npresets++;
	return p;
}

static int preset_add_kv(struct conf_preset *p, const char *key, const char *value, unsigned line)
{
	struct conf_kv *kv = realloc(p->kv, (p->nkv + 1) * sizeof(*kv));

	if (!kv)
		return -ENOMEM;
	p->kv = kv;
	kv = &p->kv[p->nkv];
	kv->key = strdup(key);
	kv->value = strdup(value);
	kv->line = line;
	if (!kv->key || !kv->value) {
		free(kv->key);
		free(kv->value);
		return -ENOMEM;
	}
	p->nkv++;
	return 0;
}

static bool node_listed(const int *ids, unsigned n, int id)
{
	for (unsigned i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

/* "0:64G,1:32G" */
static int parse_node_sizes(struct tierd_conf *c, const char *v)
{
	char buf[512], *save = NULL, *tok;
	unsigned n = 0;

	if (strlen(v) >= sizeof(buf))
		return -ERANGE;
	strcpy(buf, v);
	for (tok = strtok_r(buf, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		char *colon = strchr(tok, ':');
		unsigned long long id;
		uint64_t size;
		int r;

		if (!colon)
			return -EINVAL;
		*colon = '\0';
		r = parse_uint(tok, CONF_MAX_NODE_ID, &id);
		if (r)
			return r;
		r = conf_parse_size(colon + 1, &size);
		if (r)
			return r;
		if (n == CONF_MAX_POOL_NODES || node_listed(c->pool_size_node, n, (int)id))
			return -EINVAL;
		c->pool_size_node[n] = (int)id;
		c->pool_size_bytes[n] = size;
		n++;
	}
	if (!n)
		return -EINVAL;
	c->npool_sizes = n;
	return 0;
}

/* "auto" or "0,1" */
static int parse_nodes(struct tierd_conf *c, const char *v)
{
	char buf[512], *save = NULL, *tok;
	unsigned n = 0;

	if (!strcasecmp(v, "auto")) {
		c->pool_nodes_auto = true;
		c->npool_nodes = 0;
		return 0;
	}
	if (strlen(v) >= sizeof(buf))
		return -ERANGE;
	strcpy(buf, v);
	for (tok = strtok_r(buf, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		unsigned long long id;
		int r = parse_uint(tok, CONF_MAX_NODE_ID, &id);

		if (r)
			return r;
		if (n == CONF_MAX_POOL_NODES || node_listed(c->pool_nodes, n, (int)id))
			return -EINVAL;
		c->pool_nodes[n++] = (int)id;
	}
	if (!n)
		return -EINVAL;
	c->npool_nodes = n;
	c->pool_nodes_auto = false;
	return 0;
}

/* Returns 0, or a negative errno with *why set to a static reason. */
static int conf_apply(struct tierd_conf *c, const char *section, const char *key,
		      const char *v, unsigned line, const char **why)
{
	unsigned long long u;
	int r;

#define IS(s, k) (!strcasecmp(section, s) && !strcasecmp(key, k))
#define SIZE(field) do { r = conf_parse_size(v, &(field)); \
		if (r) \
			*why = "expected a size such as 4096, 512M or 4G"; \
		return r; } while (0)
#define UINT(field, max) do { r = parse_uint(v, (max), &u); \
		if (r) { *why = "expected a non-negative integer in range"; return r; } \
		(field) = u; return 0; } while (0)
#define BOOL(field) do { r = conf_parse_bool(v, &(field)); \
		if (r) \
			*why = "expected yes or no"; \
		return r; } while (0)
#define DBL(field) do { r = parse_double(v, &(field)); \
		if (r) \
			*why = "expected a non-negative number"; \
		return r; } while (0)

	const char *name = NULL;
	enum conf_section_kind kind = section_kind(section, &name);

	if (kind != CONF_SECTION_FIXED) {
		if (!*name) {
			*why = "section needs a name";
			return -EINVAL;
		}
		if (kind == CONF_SECTION_PRESET) {
			struct conf_preset *p = preset_get(c, name, line);

			return p ? preset_add_kv(p, key, v, line) : -ENOMEM;
		}
		struct conf_model *m = model_get(c, name, line);

		if (!m)
			return -ENOMEM;
		if (!strcasecmp(key, "path"))
			return set_str(&m->path, v);
		if (!strcasecmp(key, "preset"))
			return set_str(&m->preset, v);
		if (!strcasecmp(key, "quota"))
			SIZE(m->quota_bytes);
		if (!strcasecmp(key, "allow_uid")) {
			r = parse_ids(v, (unsigned *)m->allow_uid, &m->nallow_uid);
			if (r)
				*why = "expected numeric uids separated by commas";
			return r;
		}
		if (!strcasecmp(key, "allow_gid")) {
			r = parse_ids(v, (unsigned *)m->allow_gid, &m->nallow_gid);
			if (r)
				*why = "expected numeric gids separated by commas";
			return r;
		}
		*why = "unknown key";
		return -EINVAL;
	}

	if (IS("daemon", "socket"))
		return set_str(&c->socket_path, v);
	if (IS("daemon", "socket_mode"))
		UINT(c->socket_mode, 0777);
	if (IS("daemon", "state_dir"))
		return set_str(&c->state_dir, v);
	if (IS("daemon", "log_level")) {
		r = log_level_parse(v);
		if (r < 0) {
			*why = "expected err, warning, notice, info or debug";
			return r;
		}
		c->log_level = r;
		return 0;
	}
	if (IS("daemon", "drain_timeout_ms"))
		UINT(c->drain_timeout_ms, 3600000);
	if (IS("pool", "size")) {
		if (strchr(v, ':')) {
			r = parse_node_sizes(c, v);
			if (r)
				*why = "expected NODE:SIZE pairs separated by commas, such as 0:64G,1:32G, "
				       "each node once";
			return r;
		}
		c->npool_sizes = 0;
		SIZE(c->pool_size);
	}
	if (IS("pool", "nodes")) {
		r = parse_nodes(c, v);
		if (r)
			*why = "expected auto or node numbers separated by commas, such as 0,1, each once";
		return r;
	}
	if (IS("pool", "numa_node")) {
		if (!strcmp(v, "-1") || !strcasecmp(v, "auto")) {
			c->numa_node = -1;
			return 0;
		}
		UINT(c->numa_node, 4095);
	}
	if (IS("pool", "hugepages")) {
		if (!strcasecmp(v, "auto"))
			c->hugepages = CONF_HUGEPAGES_AUTO;
		else if (!strcasecmp(v, "yes"))
			c->hugepages = CONF_HUGEPAGES_YES;
		else if (!strcasecmp(v, "no"))
			c->hugepages = CONF_HUGEPAGES_NO;
		else {
			*why = "expected auto, yes or no";
			return -EINVAL;
		}
		return 0;
	}
	if (IS("pool", "lock"))
		BOOL(c->pool_lock);
	if (IS("fetch", "queue_depth"))
		UINT(c->queue_depth, 4096);
	if (IS("fetch", "request_size"))
		SIZE(c->request_size);
	if (IS("cache", "policy"))
		return set_str(&c->policy, v);
	if (IS("client", "max_pins")) {
		if (!strcasecmp(v, "auto")) {
			c->max_pins = 0;
			return 0;
		}
		r = parse_uint(v, 1u << 24, &u);
		if (r) {
			*why = "expected auto or a number of pins";
			return r;
		}
		c->max_pins = (unsigned)u;
		return 0;
	}
	if (IS("client", "max_inflight"))
		UINT(c->max_inflight, 1u << 24);
	if (IS("client", "max_prefetch_inflight"))
		UINT(c->max_prefetch_inflight, 1u << 24);
	if (IS("client", "max_connections_per_uid"))
		UINT(c->max_connections_per_uid, 1u << 20);
	if (IS("daemon", "max_clients"))
		UINT(c->max_clients, 1u << 20);
	if (IS("daemon", "max_queued_bytes"))
		SIZE(c->max_queued_bytes);
	if (IS("pool", "max_evict_per_alloc"))
		UINT(c->max_evict_per_alloc, 1u << 20);
	if (IS("energy", "hbm_pj_per_bit"))
		DBL(c->pj_hbm);
	if (IS("energy", "ddr_pj_per_bit"))
		DBL(c->pj_ddr);
	if (IS("energy", "flash_pj_per_bit"))
		DBL(c->pj_flash);
	if (IS("energy", "ddr_static_w_per_gib"))
		DBL(c->ddr_static_w_per_gib);
	if (IS("energy", "gpu_idle_w"))
		DBL(c->gpu_idle_w);
	if (IS("energy", "gpus"))
		UINT(c->gpus, 4096);
	if (IS("energy", "nvme_default_w"))
		DBL(c->nvme_default_w);
	if (IS("metrics", "listen")) {
		if (!*v || !strcasecmp(v, "off")) {
			free(c->metrics_listen);
			c->metrics_listen = NULL;
			return 0;
		}
		return set_str(&c->metrics_listen, v);
	}
	if (IS("metrics", "textfile")) {
		if (!*v || !strcasecmp(v, "off")) {
			free(c->metrics_textfile);
			c->metrics_textfile = NULL;
			return 0;
		}
		return set_str(&c->metrics_textfile, v);
	}
	if (IS("nvme", "refresh_s"))
		UINT(c->nvme_refresh_s, 86400);
	if (IS("nvme", "probes"))
		BOOL(c->probes);

	static const char *const sections[] = {
		"daemon", "pool", "fetch", "cache", "client", "energy", "metrics", "nvme",
	};
	*why = "unknown section";
	for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
		if (!strcasecmp(section, sections[i]))
			*why = "unknown key";
	return -EINVAL;
#undef IS
#undef SIZE
#undef UINT
#undef BOOL
#undef DBL
}

static int conf_ini_handler(void *user, const char *section, const char *key, const char *value)
{
	struct conf_parse *p = user;
	const char *why = "out of memory";
	int r;

	if (p->failed)
		return 0;
	r = conf_apply(p->c, section, key, value, p->rd.line, &why);
	if (r) {
		snprintf(p->err, p->errlen, "%s:%u: [%s] %s: %s (got \"%s\")",
			 p->name, p->rd.line, section, key, why, value);
		p->failed = r;
		return 0;
	}
	return 1;
}

static int conf_parse_common(struct conf_parse *p)
{
	int r = ini_parse_stream(conf_reader_gets, p, conf_ini_handler, p);

	for (size_t i = 0; i < p->nsections; i++)
		free(p->sections[i].name);
	free(p->sections);
	p->sections = NULL;
	p->nsections = 0;
	if (p->failed)
		return p->failed;
	if (r > 0) {
		snprintf(p->err, p->errlen, "%s:%d: syntax error (expected [section] or key = value)",
			 p->name, r);
		return -EINVAL;
	}
	if (r < 0) {
		snprintf(p->err, p->errlen, "%s: cannot parse", p->name);
		return r == -2 ? -ENOMEM : -EIO;
	}
	return 0;
}

int conf_load_file(struct tierd_conf *c, const char *path, char *err, size_t errlen)
{
	struct conf_parse p = { .c = c, .name = path, .err = err, .errlen = errlen };
	int r;

	p.rd.f = fopen(path, "re");
	if (!p.rd.f) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
		return r;
	}
	r = conf_parse_common(&p);
	fclose(p.rd.f);
	if (!r)
		r = set_str(&c->path, path);
	return r;
}

int conf_load_string(struct tierd_conf *c, const char *name, const char *text,
		     char *err, size_t errlen)
{
	struct conf_parse p = { .c = c, .name = name, .err = err, .errlen = errlen };

	int r;

	p.rd.s = text;
	r = conf_parse_common(&p);
	if (!r)
		r = set_str(&c->path, name);
	return r;
}

int conf_set(struct tierd_conf *c, const char *assignment, char *err, size_t errlen)
{
	char section[128], key[128];
	const char *dot, *eq, *why = "out of memory";
	int r;

	eq = strchr(assignment, '=');
	dot = eq ? memrchr(assignment, '.', (size_t)(eq - assignment)) : NULL;
	if (!eq || !dot || dot == assignment || eq == dot + 1 ||
	    (size_t)(dot - assignment) >= sizeof(section) ||
	    (size_t)(eq - dot - 1) >= sizeof(key)) {
		snprintf(err, errlen, "command line: \"%s\": expected section.key=value", assignment);
		return -EINVAL;
	}
	memcpy(section, assignment, (size_t)(dot - assignment));
	section[dot - assignment] = '\0';
	memcpy(key, dot + 1, (size_t)(eq - dot - 1));
	key[eq - dot - 1] = '\0';
	r = conf_apply(c, section, key, eq + 1, 0, &why);
	if (r)
		snprintf(err, errlen, "command line: [%s] %s: %s (got \"%s\")", section, key, why, eq + 1);
	return r;
}

const char *conf_model_where(const struct tierd_conf *c, const struct conf_model *m, char *buf, size_t len)
{
	if (m->line)
		snprintf(buf, len, "%s:%u", c->path ? c->path : "configuration", m->line);
	else
		snprintf(buf, len, "command line");
	return buf;
}

int conf_validate(const struct tierd_conf *c, char *err, size_t errlen)
{
	const char *name = c->path ? c->path : "configuration";
	char where[256];

	if (!c->socket_path || !*c->socket_path) {
		snprintf(err, errlen, "%s: [daemon] socket: must not be empty", name);
		return -EINVAL;
	}
	if (strlen(c->socket_path) >= 108) {
		snprintf(err, errlen, "%s: [daemon] socket: path longer than 107 bytes", name);
		return -ENAMETOOLONG;
	}
	if (c->queue_depth < 1) {
		snprintf(err, errlen, "%s: [fetch] queue_depth: must be at least 1", name);
		return -EINVAL;
	}
	if (c->request_size < 4096 || c->request_size % 4096 || c->request_size > (64u << 20)) {
		snprintf(err, errlen, "%s: [fetch] request_size: must be a multiple of 4 KiB between 4K and 64M",
			 name);
		return -EINVAL;
	}
	if (c->pool_size < (2u << 20)) {
		snprintf(err, errlen, "%s: [pool] size: must be at least 2M", name);
		return -EINVAL;
	}
	for (unsigned i = 0; i < c->npool_sizes; i++) {
		if (c->pool_size_bytes[i] < (2u << 20)) {
			snprintf(err, errlen, "%s: [pool] size: node %d: must be at least 2M", name,
				 c->pool_size_node[i]);
			return -EINVAL;
		}
		/* A size for a node without a pool is a typo, not a wish. */
		if (c->npool_nodes && !node_listed(c->pool_nodes, c->npool_nodes, c->pool_size_node[i])) {
			snprintf(err, errlen, "%s: [pool] size: node %d is not in [pool] nodes", name,
				 c->pool_size_node[i]);
			return -EINVAL;
		}
	}
	for (unsigned i = 0; c->npool_sizes && i < c->npool_nodes; i++) {
		if (!node_listed(c->pool_size_node, c->npool_sizes, c->pool_nodes[i])) {
			snprintf(err, errlen, "%s: [pool] size: no size for node %d of [pool] nodes "
				 "(give NODE:SIZE for each, or one size for all)", name, c->pool_nodes[i]);
			return -EINVAL;
		}
	}
	if (c->numa_node >= 0 && (c->npool_nodes || c->pool_nodes_auto || c->npool_sizes)) {
		snprintf(err, errlen, "%s: [pool] numa_node: set together with [pool] nodes or a size per "
			 "node: keep one (numa_node = N is nodes = N)", name);
		return -EINVAL;
	}
	/* 0 would refuse every connection or drop every client with an answer
	 * waiting: never meant.  (0 prefetches in flight or evictions by a
	 * prefetch is a policy: no prefetching, or prefetching into free room.) */
	if (!c->max_clients) {
		snprintf(err, errlen, "%s: [daemon] max_clients: must be at least 1", name);
		return -EINVAL;
	}
	/* Below one client's own bound (4 MiB, a whole METRICS answer), a
	 * single slow reader would trip the bound meant for many. */
	if (c->max_queued_bytes < (4u << 20)) {
		snprintf(err, errlen, "%s: [daemon] max_queued_bytes: must be at least 4M (what one client may leave unread)", name);
		return -EINVAL;
	}
	if (!c->max_connections_per_uid) {
		snprintf(err, errlen, "%s: [client] max_connections_per_uid: must be at least 1", name);
		return -EINVAL;
	}
	for (size_t i = 0; i < c->nmodels; i++) {
		const struct conf_model *m = &c->models[i];

		if (!m->path || !*m->path) {
			snprintf(err, errlen, "%s: [model %s] path: missing: add path = DIR, the checkpoint directory",
				 conf_model_where(c, m, where, sizeof(where)), m->name);
			return -EINVAL;
		}
	}
	return 0;
}

int conf_check_paths(const struct tierd_conf *c, char *err, size_t errlen)
{
	char where[256];

	for (size_t i = 0; i < c->nmodels; i++) {
		const struct conf_model *m = &c->models[i];
		struct stat st;
		int r;

		if (!m->path)
			continue;	/* conf_validate's to say */
		if (stat(m->path, &st)) {
			r = -errno;
			snprintf(err, errlen, "%s: [model %s] path = %s: %s%s",
				 conf_model_where(c, m, where, sizeof(where)), m->name, m->path, strerror(-r),
				 r == -ENOENT ? " (correct the path or remove the section)" : "");
			return r;
		}
		if (!S_ISDIR(st.st_mode)) {
			snprintf(err, errlen, "%s: [model %s] path = %s: not a directory (name the checkpoint "
				 "directory that holds model.safetensors or model.safetensors.index.json)",
				 conf_model_where(c, m, where, sizeof(where)), m->name, m->path);
			return -ENOTDIR;
		}
	}
	return 0;
}

int conf_init(struct tierd_conf *c)
{
	memset(c, 0, sizeof(*c));
	c->socket_path = strdup(TIERD_DEFAULT_SOCKET);
	c->state_dir = strdup("/var/lib/tierd");
	c->policy = strdup("lru");
	if (!c->socket_path || !c->state_dir || !c->policy) {
		conf_free(c);
		return -ENOMEM;
	}
	c->socket_mode = 0660;
	c->log_level = LOG_INFO;
	c->drain_timeout_ms = 10000;
	c->pool_size = 1ULL << 30;
	c->numa_node = -1;
	c->hugepages = CONF_HUGEPAGES_AUTO;
	c->pool_lock = true;
	c->queue_depth = 32;
	c->request_size = 1u << 20;
	c->max_inflight = 1024;
	c->max_pins = 0;	/* auto */
	c->max_prefetch_inflight = 64;
	c->max_connections_per_uid = 64;
	c->max_clients = 1024;
	c->max_queued_bytes = 64u << 20;
	c->max_evict_per_alloc = 8;
	/* ../shared/reference/energy-model.md */
	c->pj_hbm = 4.2;
	c->pj_ddr = 9.2;
	c->pj_flash = 102.4;
	c->ddr_static_w_per_gib = 57.0 / 256.0;
	c->gpu_idle_w = 70.0;
	c->nvme_refresh_s = 60;
	c->probes = true;
	return 0;
}

void conf_free(struct tierd_conf *c)
{
	free(c->path);
	free(c->socket_path);
	free(c->state_dir);
	free(c->policy);
	free(c->metrics_listen);
	free(c->metrics_textfile);
	for (size_t i = 0; i < c->nmodels; i++) {
		free(c->models[i].name);
		free(c->models[i].path);
		free(c->models[i].preset);
	}
	free(c->models);
	for (size_t i = 0; i < c->npresets; i++) {
		for (size_t j = 0; j < c->presets[i].nkv; j++) {
			free(c->presets[i].kv[j].key);
			free(c->presets[i].kv[j].value);
		}
		free(c->presets[i].kv);
		free(c->presets[i].name);
	}
	free(c->presets);
	memset(c, 0, sizeof(*c));
}

const struct conf_model *conf_model_find(const struct tierd_conf *c, const char *name)
{
	for (size_t i = 0; i < c->nmodels; i++)
		if (!strcmp(c->models[i].name, name))
			return &c->models[i];
	return NULL;
}
