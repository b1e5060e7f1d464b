/* SPDX-License-Identifier: MIT */
/*
 * Configuration: compiled defaults < file (/etc/tierd/tierd.conf, INI) < command
 * line, merged into one struct and validated once.  Errors name file:line and
 * the key.  Every key is documented in tierd.conf(5).
 *
 * (Named conf.h because config.h is autoconf's.)
 */
#ifndef TIERD_CONF_H
#define TIERD_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TIERD_DEFAULT_CONFIG	"/etc/tierd/tierd.conf"
#define TIERD_DEFAULT_SOCKET	"/run/tierd/tierd.sock"
#define CONF_MAX_IDS		32
/* Pools: one per NUMA node in use, at most this many (the protocol's bound). */
#define CONF_MAX_POOL_NODES	16
#define CONF_MAX_NODE_ID	4095

enum conf_hugepages {
	CONF_HUGEPAGES_AUTO,	/* hugetlb if the pool has pages, else THP-aligned */
	CONF_HUGEPAGES_YES,	/* hugetlb or fail */
	CONF_HUGEPAGES_NO,	/* THP-aligned anonymous memfd */
};

/* A free-form key=value pair of a section the core does not interpret itself. */
struct conf_kv {
	char *key;
	char *value;
	unsigned line;
};

/* [preset NAME]: a tensor-name pattern set; interpreted by the catalog. */
struct conf_preset {
	char *name;
	struct conf_kv *kv;
	size_t nkv;
	unsigned line;
};

/* [model NAME] */
struct conf_model {
	char *name;
	char *path;		/* checkpoint directory */
	char *preset;		/* NULL: detect */
	uint64_t quota_bytes;	/* DDR pool bytes this model may hold; 0: no limit */
	uid_t allow_uid[CONF_MAX_IDS];
	size_t nallow_uid;
	gid_t allow_gid[CONF_MAX_IDS];
	size_t nallow_gid;
	unsigned line;		/* of the [model NAME] header; 0: command line */
};

struct tierd_conf {
	char *path;		/* file (or name) the config came from, or NULL */

	/* [daemon] */
	char *socket_path;
	unsigned socket_mode;		/* permissions of the socket file tierd creates */
	char *state_dir;
	int log_level;
	unsigned drain_timeout_ms;	/* how long SIGTERM waits for in-flight fetches */

	/* [pool] */
	uint64_t pool_size;		/* bytes per NUMA node in use */
	int numa_node;			/* -1: node of the current CPU */
	/* [pool] nodes: the nodes with a pool; none and not auto: one pool on
	 * numa_node (or on the nodes [pool] size names, when it names any). */
	int pool_nodes[CONF_MAX_POOL_NODES];
	unsigned npool_nodes;
	bool pool_nodes_auto;		/* every node of the machine with memory */
	/* [pool] size = NODE:SIZE,...: bytes of the pool of each node named */
	int pool_size_node[CONF_MAX_POOL_NODES];
	uint64_t pool_size_bytes[CONF_MAX_POOL_NODES];
	unsigned npool_sizes;
	enum conf_hugepages hugepages;
	bool pool_lock;			/* mlock the pool */

	/* [fetch] */
	unsigned queue_depth;
	uint64_t request_size;		/* bytes per io_uring read */

	/* [cache] */
	char *policy;			/* "lru" */

	/* [client] */
	unsigned max_pins;		/* per client; 0: auto, half the pool's slots */
	unsigned max_inflight;		/* per client */
	unsigned max_prefetch_inflight;	/* per client: its prefetches' fetches in flight */
	unsigned max_connections_per_uid;
	/* [daemon] */
	unsigned max_clients;		/* connections at once, all clients */
	uint64_t max_queued_bytes;	/* unread answers of all clients together */
	/* [pool] */
	unsigned max_evict_per_alloc;	/* experts one prefetch may evict for its slot */

	/* [energy] pJ per bit and watts (../shared/reference/energy-model.md) */
	double pj_hbm;
	double pj_ddr;
	double pj_flash;
	double ddr_static_w_per_gib;
	double gpu_idle_w;
	unsigned gpus;			/* GPUs whose idle power is charged; 0: none */
	double nvme_default_w;		/* SSD power when its descriptors say nothing */

	/* [metrics] */
	char *metrics_listen;		/* "127.0.0.1:9464"; NULL: off */
	char *metrics_textfile;		/* node_exporter textfile; NULL: off */

	/* [nvme] */
	unsigned nvme_refresh_s;
	bool probes;			/* load eBPF probes when privileged */

	struct conf_model *models;
	size_t nmodels;
	struct conf_preset *presets;
	size_t npresets;
};

/* Fills compiled defaults. */
int conf_init(struct tierd_conf *c);
/*
 * Parses an INI file over the current values.  On error returns -EINVAL (or the
 * errno of opening the file) and writes "file:line: [section] key: reason" to
 * err.
 */
int conf_load_file(struct tierd_conf *c, const char *path, char *err, size_t errlen);
/* Same, from a string (tests, fuzzing); name is used in messages. */
int conf_load_string(struct tierd_conf *c, const char *name, const char *text,
		     char *err, size_t errlen);
/* Sets one "section.key=value" from the command line (e.g. "pool.size=4G"). */
int conf_set(struct tierd_conf *c, const char *assignment, char *err, size_t errlen);
/* Cross-key checks after everything is merged. */
int conf_validate(const struct tierd_conf *c, char *err, size_t errlen);
/*
 * Checks what the file system says about the configuration: every model path
 * exists and is a directory.  Separate from conf_validate so that tools and
 * tests can validate a configuration meant for another machine.
 */
int conf_check_paths(const struct tierd_conf *c, char *err, size_t errlen);
void conf_free(struct tierd_conf *c);

const struct conf_model *conf_model_find(const struct tierd_conf *c, const char *name);
/* "file:line" of a [model] section's header, or "command line"; returns buf. */
const char *conf_model_where(const struct tierd_conf *c, const struct conf_model *m, char *buf, size_t len);

/* "4G", "512M", "4096", "1.5GiB" -> bytes.  -EINVAL / -ERANGE. */
int conf_parse_size(const char *s, uint64_t *out);
int conf_parse_bool(const char *s, bool *out);

#endif
