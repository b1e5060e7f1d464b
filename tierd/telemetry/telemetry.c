/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "nvme.h"
#include "telemetry.h"

#define TELEMETRY_LAT_LO	12
#define TELEMETRY_LAT_HI	34

struct telemetry_nvme {
	struct nvmedev *dev;
	struct nvmedev_map map;
};

struct telemetry {
	unsigned refresh_s;
	char *textfile;
	struct probes *probes;
	struct probes_snapshot snap;
	bool have_snap;
	struct energy *energy;
	struct telemetry_nvme *nvme;
	size_t nnvme;
	struct metrics_http *http;
	struct engine_stats engine;
	bool have_engine;
	const struct metrics_hist *fetch_latency;
	/* The engine's log2 histogram as Prometheus buckets: slots
	 * TELEMETRY_LAT_LO..TELEMETRY_LAT_HI (8 us .. 34 s). */
	struct metrics_hist engine_lat;
	double lat_le[TELEMETRY_LAT_HI - TELEMETRY_LAT_LO + 1];
	uint64_t lat_counts[TELEMETRY_LAT_HI - TELEMETRY_LAT_LO + 2];
	bool textfile_warned;
	bool export_warned;		/* rendering or HTTP publishing failed */
	struct metrics_model *models;	/* the engine's, as of the last refresh */
	size_t nmodels;
	struct metrics_pool pools[CONF_MAX_POOL_NODES];	/* as of the last refresh */
	size_t npools;
	telemetry_service_fn service_fn;
	void *service_arg;
};

uint64_t telemetry_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* One entry per distinct disk that holds a configured checkpoint. */
static int telemetry_add_devices(struct telemetry *t, const struct tierd_conf *conf)
{
	for (size_t i = 0; i < conf->nmodels; i++) {
		const struct conf_model *cm = &conf->models[i];
		struct telemetry_nvme *n;
		struct nvmedev_map m;
		bool seen = false;
		int r = nvmedev_map_path(cm->path, &m);

		if (r) {
			log_warn("energy: model %s: %s: no block device (%s); its device energy is "
				 "not measured", cm->name, cm->path, strerror(-r));
			continue;
		}
		for (size_t k = 0; k < t->nnvme; k++)
			seen |= t->nvme[k].map.major == m.major && t->nvme[k].map.minor == m.minor;
		if (seen)
			continue;
		r = energy_device_add(t->energy, m.disk, m.major, m.minor);
		if (r)
			return r;
		n = realloc(t->nvme, (t->nnvme + 1) * sizeof(*n));
		if (!n)
			return -ENOMEM;
		t->nvme = n;
		n = &t->nvme[t->nnvme++];
		memset(n, 0, sizeof(*n));
		n->map = m;
		if (!m.is_nvme) {
			log_info("energy: %s (model %s) is not NVMe: no power states", m.disk, cm->name);
			continue;
		}
		r = nvmedev_open(&n->dev, m.ctrl);
		if (r)
			log_warn("energy: %s: cannot open controller %s: %s; no power states",
				 m.disk, m.ctrl, strerror(-r));
	}
	return 0;
}

int telemetry_create(struct telemetry **out, const struct tierd_conf *conf,
		     const struct telemetry_opts *o, uint64_t pool_bytes, uint64_t now_ns)
{
	struct telemetry *t = calloc(1, sizeof(*t));
	struct energy_params p;
	int r;

	*out = NULL;
	if (!t)
		return -ENOMEM;
	t->refresh_s = conf->nvme_refresh_s;
	if (o->exports && conf->metrics_textfile) {
		t->textfile = strdup(conf->metrics_textfile);
		if (!t->textfile) {
			r = -ENOMEM;
			goto fail;
		}
	}
	if (o->probes) {
		struct probes_opts po;

		probes_opts_init(&po);
		r = probes_create(&t->probes, &po);
		if (r)
			probes_log_unavailable(r);
	}
	energy_params_from_conf(&p, conf);
	r = energy_create(&t->energy, &p, pool_bytes,
			  t->probes ? ENERGY_SOURCE_EBPF : ENERGY_SOURCE_TIERD, now_ns);
	if (r)
		goto fail;
	r = telemetry_add_devices(t, conf);
	if (r)
		goto fail;
	if (o->exports && conf->metrics_listen) {
		r = metrics_http_create(&t->http, conf->metrics_listen);
		if (r)
			goto fail;
		/* The port, for "port 0" configurations (tests). */
		log_notice("metrics: serving http://%s/metrics (port %u)", conf->metrics_listen,
			   (unsigned)metrics_http_port(t->http));
	}
	*out = t;
	return 0;
fail:
	telemetry_destroy(t);
	return r;
}

void telemetry_destroy(struct telemetry *t)
{
	if (!t)
		return;
	metrics_http_destroy(t->http);
	for (size_t i = 0; i < t->nnvme; i++)
		nvmedev_close(t->nvme[i].dev);
	free(t->nvme);
	energy_destroy(t->energy);
	probes_snapshot_free(&t->snap);
	probes_destroy(t->probes);
	for (size_t i = 0; i < t->nmodels; i++)
		free(t->models[i].name);
	free(t->models);
	free(t->textfile);
	free(t);
}

unsigned telemetry_period_ms(const struct telemetry *t)
{
	return 1000;
}

static void telemetry_refresh_nvme(struct telemetry *t, uint64_t now_ns)
{
	for (size_t i = 0; i < t->nnvme; i++) {
		struct telemetry_nvme *n = &t->nvme[i];
		struct energy_nvme_model m;
		uint64_t io = UINT64_MAX;

		if (!n->dev)
			continue;
		if (t->have_snap) {
			const struct probes_dev *d = probes_snapshot_dev(&t->snap, n->map.major,
									n->map.minor);

			io = d ? d->issued : 0;
		} else {
			/* Without probes tierd's own reads are the activity it knows. */
			io = energy_tierd_bytes(t->energy);
		}
		if (!nvmedev_refresh_due(n->dev, now_ns, t->refresh_s, io))
			continue;
		if (nvmedev_refresh(n->dev))
			continue;
		nvmedev_refresh_mark(n->dev, io);
		energy_nvme_model_from_info(&m, nvmedev_info(n->dev));
		if (energy_device_set_nvme(t->energy, n->map.major, n->map.minor, &m))
			log_debug("energy: %s: no usable power state table", n->map.disk);
	}
}

int telemetry_tick(struct telemetry *t, uint64_t now_ns)
{
	char *text = NULL;
	size_t len = 0;
	int r;

	if (t->probes) {
		struct probes_snapshot s;

		r = probes_read(t->probes, &s);
		if (r) {
			log_warn("probes: read failed: %s", strerror(-r));
		} else {
			probes_snapshot_free(&t->snap);
			t->snap = s;
			t->have_snap = true;
			for (size_t i = 0; i < s.ndev; i++)
				energy_device_sample(t->energy, &s.dev[i]);	/* -ENOENT: not ours */
		}
	}
	telemetry_refresh_nvme(t, now_ns);
	energy_advance(t->energy, now_ns);
	if (!t->http && !t->textfile)
		return 0;
	r = telemetry_render(t, &text, &len);
	if (!r && t->http)
		r = metrics_http_publish(t->http, text, len);
	/* Said once, like the textfile's: the caller (a timer) drops r. */
	if (r && !t->export_warned)
		log_warn("metrics: cannot %s the metrics: %s", text ? "publish" : "render", strerror(-r));
	t->export_warned = r != 0;
	if (!text)
		return r;
	if (t->textfile) {
		int rt = metrics_textfile_write(t->textfile, text, len);

		/* Said once: the loop ticks every second. */
		if (rt && !t->textfile_warned)
			log_warn("metrics: cannot write %s: %s", t->textfile, strerror(-rt));
		t->textfile_warned = rt != 0;
		if (!r)
			r = rt;
	}
	free(text);
	return r;
}

int telemetry_render(struct telemetry *t, char **text, size_t *len)
{
	return telemetry_render_as(t, METRICS_TEXT, text, len);
}

int telemetry_render_as(struct telemetry *t, enum metrics_format format, char **text, size_t *len)
{
	struct metrics_nvme *nv = NULL;
	struct metrics_input in = { 0 };
	size_t n = 0;
	int r;

	if (t->nnvme) {
		nv = calloc(t->nnvme, sizeof(*nv));
		if (!nv)
			return -ENOMEM;
	}
	for (size_t i = 0; i < t->nnvme; i++)
		if (t->nvme[i].dev) {
			nv[n].device = t->nvme[i].map.disk;
			nv[n].info = nvmedev_info(t->nvme[i].dev);
			n++;
		}
	in.probes_mode = t->probes ? probes_block_mode(t->probes) : NULL;
	in.probes = t->have_snap ? &t->snap : NULL;
	in.energy = t->energy;
	in.nvme = nv;
	in.nnvme = n;
	in.engine = t->have_engine ? &t->engine : NULL;
	in.fetch_latency = t->fetch_latency;
	in.models = t->models;
	in.nmodels = t->nmodels;
	in.pools = t->pools;
	in.npools = t->npools;
	in.service = t->service_fn ? t->service_fn(t->service_arg) : NULL;
	r = metrics_render_as(&in, format, text, len);
	free(nv);
	return r;
}

struct energy *telemetry_energy(struct telemetry *t)
{
	return t->energy;
}

const struct probes_snapshot *telemetry_probes(const struct telemetry *t)
{
	return t->have_snap ? &t->snap : NULL;
}

void telemetry_set_engine_stats(struct telemetry *t, const struct engine_stats *st)
{
	const unsigned nb = TELEMETRY_LAT_HI - TELEMETRY_LAT_LO + 1;

	t->engine = *st;
	t->have_engine = true;
	memset(t->lat_counts, 0, sizeof(t->lat_counts));
	for (unsigned i = 0; i < ENGINE_LAT_SLOTS; i++) {
		/* Slot i holds values below 2^(i+1) ns: the bucket whose bound is that. */
		unsigned b = i < TELEMETRY_LAT_LO ? 0 : i > TELEMETRY_LAT_HI ? nb : i - TELEMETRY_LAT_LO;

		t->lat_counts[b] += st->fetch_ns_hist[i];
	}
	for (unsigned i = 0; i < nb; i++)
		t->lat_le[i] = (double)(1ULL << (TELEMETRY_LAT_LO + i + 1)) / 1e9;
	t->engine_lat.n = nb;
	t->engine_lat.le = t->lat_le;
	t->engine_lat.counts = t->lat_counts;
	t->engine_lat.sum = (double)st->fetch_ns_sum / 1e9;
	if (!t->fetch_latency)
		t->fetch_latency = &t->engine_lat;
}

/* The models' checkpoint state; names are copied once (models never go). */
static void telemetry_set_models(struct telemetry *t, const struct engine *e)
{
	size_t n = (size_t)engine_model_count(e);

	if (n != t->nmodels) {
		struct metrics_model *m = calloc(n ? n : 1, sizeof(*m));

		bool ok = m != NULL;

		for (size_t i = 0; ok && i < n; i++)
			ok = (m[i].name = strdup(engine_model_name(e, (uint32_t)i))) != NULL;
		if (!ok) {
			for (size_t i = 0; m && i < n; i++)
				free(m[i].name);
			free(m);
			return;
		}
		for (size_t i = 0; i < t->nmodels; i++)
			free(t->models[i].name);
		free(t->models);
		t->models = m;
		t->nmodels = n;
	}
	for (size_t i = 0; i < n; i++) {
		struct engine_model_status st;

		if (engine_model_status(e, (uint32_t)i, &st) == 0) {
			t->models[i].stale = st.stale;
			t->models[i].changes = st.changes;
			t->models[i].reloads = st.reloads;
		}
	}
}

int telemetry_refresh(struct telemetry *t, const struct engine *e, uint64_t now_ns)
{
	struct engine_stats st;

	engine_get_stats(e, &st);
	telemetry_set_engine_stats(t, &st);
	telemetry_set_models(t, e);
	t->npools = 0;
	for (int p = 0; p < engine_pool_count(e) && p < CONF_MAX_POOL_NODES; p++) {
		struct metrics_pool *mp = &t->pools[t->npools];

		if (engine_get_pool_stats(e, (uint32_t)p, &mp->st) < 0)
			continue;
		mp->node = engine_pool_node(e, (uint32_t)p);
		mp->size = engine_pool_size(e, (uint32_t)p);
		t->npools++;
	}
	return telemetry_tick(t, now_ns);
}

void telemetry_set_fetch_latency(struct telemetry *t, const struct metrics_hist *h)
{
	t->fetch_latency = h;
}

void telemetry_set_service_source(struct telemetry *t, telemetry_service_fn fn, void *arg)
{
	t->service_fn = fn;
	t->service_arg = arg;
}

uint16_t telemetry_http_port(const struct telemetry *t)
{
	return t->http ? metrics_http_port(t->http) : 0;
}
