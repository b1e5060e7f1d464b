/* SPDX-License-Identifier: MIT */
/*
 * tierd: thin entry point.  Reads the configuration (defaults < file <
 * -o overrides), creates the engine, the loop and the server, talks to
 * systemd when it runs under it (sd_notify, socket activation, watchdog), and
 * unwinds in reverse order.  The daemon's logic is in libtierd.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "catalog.h"
#include "conf.h"
#include "engine.h"
#include "fetch.h"
#include "log.h"
#include "reload.h"
#include "loop.h"
#include "server.h"
#include "telemetry.h"
#include "usage.h"

#define STATUS_INTERVAL_MS	5000
/* Descriptors besides checkpoint files and clients: stdio, epoll, io_uring,
 * eventfds, timers, signals, the pools' memfds, metrics, probes, NVMe
 * devices, the state file. */
#define NOFILE_MARGIN		64
#define NOFILE_HINT		"raise LimitNOFILE= in the unit or ulimit -n"

/* The daemon's one context. */
struct tierd {
	const char *config_path;
	bool config_given;
	char **overrides;
	int noverrides;
	/* The engine keeps the configuration it was created with for its
	 * lifetime; reloads produce a new one for the server. */
	struct tierd_conf engine_conf;
	struct tierd_conf *conf;	/* current: &engine_conf or a reloaded copy */
	struct loop *loop;
	struct engine *engine;
	struct server *server;
	struct telemetry *telemetry;	/* energy, probes, metrics exports */
	struct usage *usage;		/* what clients did: hints, tokens, energy */
	bool systemd;			/* NOTIFY_SOCKET is set */
	/* Prefixed to STATUS= until a reload succeeds: a refused reload must
	 * stay visible in systemctl status, not only in the log. */
	char status_note[640];
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: tierd [-c CONFIG] [-o SECTION.KEY=VALUE]... [-t] [-h] [-V]\n"
		"  -c CONFIG   configuration file (default " TIERD_DEFAULT_CONFIG ")\n"
		"  -o S.K=V    override one configuration key (after the file)\n"
		"  -t          check the configuration and exit\n"
		"Runs in the foreground; see tierd(8).\n");
}

/* defaults < file < command line, then validated. */
static int tierd_load_conf(const struct tierd *t, struct tierd_conf *c, char *err, size_t errlen)
{
	int r = conf_init(c);

	if (r) {
		snprintf(err, errlen, "out of memory");
		return r;
	}
	r = conf_load_file(c, t->config_path, err, errlen);
	/* Without -c, a missing default file means "all defaults". */
	if (r == -ENOENT && !t->config_given) {
		log_notice("%s not found: using the built-in defaults", t->config_path);
		r = 0;
	}
	for (int i = 0; !r && i < t->noverrides; i++)
		r = conf_set(c, t->overrides[i], err, errlen);
	if (!r)
		r = conf_validate(c, err, errlen);
	if (!r)
		r = conf_check_paths(c, err, errlen);
	if (r)
		conf_free(c);
	return r;
}

static void tierd_summary(const struct tierd *t, char *buf, size_t len)
{
	uint64_t v[TIERD_STAT_COUNT];

	server_get_stats(t->server, v);
	snprintf(buf, len,
		 "%llu models, %.1f of %.1f MiB resident, %llu clients, %llu pins, %llu hits, %llu misses",
		 (unsigned long long)v[TIERD_STAT_MODELS], v[TIERD_STAT_BYTES_RESIDENT] / 1048576.0,
		 v[TIERD_STAT_POOL_BYTES] / 1048576.0, (unsigned long long)v[TIERD_STAT_CLIENTS],
		 (unsigned long long)v[TIERD_STAT_PINS], (unsigned long long)v[TIERD_STAT_HITS],
		 (unsigned long long)v[TIERD_STAT_MISSES]);
}

static void tierd_notify_status(const struct tierd *t, const char *extra)
{
	char status[256];

	if (!t->systemd)
		return;
	tierd_summary(t, status, sizeof(status));
	sd_notifyf(0, "%sSTATUS=%s%s%s", extra ? extra : "", t->status_note,
		   *t->status_note ? "; " : "", status);
}

/* What to do about an error the system gave for lack of descriptors; "" for
 * any other. */
static const char *nofile_hint(int r, const char *msg)
{
	/* The fetch engine's own limit of registered files is also -EMFILE but
	 * its message does not carry strerror's text: no hint for it. */
	if (r == -EMFILE && strstr(msg, strerror(EMFILE)))
		return " (" NOFILE_HINT ")";
	if (r == -ENFILE)
		return " (the system's open file table is full: raise fs.file-max)";
	return "";
}

/* *.safetensors files in the models' directories: what the engine keeps
 * open (at most; an index may name fewer). */
static rlim_t count_checkpoint_files(const struct tierd_conf *c)
{
	static const char suffix[] = ".safetensors";
	rlim_t n = 0;

	for (size_t i = 0; i < c->nmodels; i++) {
		DIR *d = opendir(c->models[i].path);
		struct dirent *de;

		if (!d)
			continue;	/* the catalog says why, with the path */
		while ((de = readdir(d))) {
			size_t len = strlen(de->d_name);

			if (len > sizeof(suffix) - 1 && !strcmp(de->d_name + len - (sizeof(suffix) - 1), suffix))
				n++;
		}
		closedir(d);
	}
	return n;
}

/*
 * RLIMIT_NOFILE.  The engine keeps every checkpoint file open, and registers
 * io_uring file slots for them (FETCH_MAX_FILES, or the soft limit where
 * lower: the kernel refuses more); each client is a socket.  Short of that, the soft limit is raised
 * to the hard one (tierd polls with epoll, never select, so a high limit costs
 * nothing).  Returns -EMFILE where even the hard limit leaves too few for the
 * checkpoint files and a few clients: the daemon does not start; with
 * check_only (tierd -t) nothing is changed.
 */
static int tierd_nofile(const struct tierd_conf *c, bool check_only)
{
	rlim_t files = count_checkpoint_files(c), start, want, limit;
	struct rlimit rl;

	start = files + NOFILE_MARGIN;
	want = files + c->max_clients + NOFILE_MARGIN > start ? files + c->max_clients + NOFILE_MARGIN : start;
	if (getrlimit(RLIMIT_NOFILE, &rl))
		return 0;	/* cannot happen; the engine would say */
	if (rl.rlim_cur < want && rl.rlim_max > rl.rlim_cur && !check_only) {
		struct rlimit raised = { .rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max };

		if (setrlimit(RLIMIT_NOFILE, &raised) == 0) {
			log_info("open file limit raised from %llu to the hard limit %llu",
				 (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
			rl.rlim_cur = rl.rlim_max;
		}
	}
	/* tierd -t judges what the daemon will reach by raising its limit. */
	limit = check_only ? rl.rlim_max : rl.rlim_cur;
	if (limit >= want)
		return 0;
	if (limit < start) {
		log_msg(LOG_ERR,
			"open file limit %llu is below the %llu tierd needs to start (%llu checkpoint files and "
			"%d for the rest): " NOFILE_HINT, (unsigned long long)limit,
			(unsigned long long)start, (unsigned long long)files, NOFILE_MARGIN);
		return -EMFILE;
	}
	log_warn("open file limit %llu is below the %llu this configuration needs (%llu checkpoint files + "
		 "[daemon] max_clients %u + %d): connections beyond it are refused; " NOFILE_HINT,
		 (unsigned long long)limit, (unsigned long long)want, (unsigned long long)files,
		 c->max_clients, NOFILE_MARGIN);
	return 0;
}

/* tierd -t: every model's checkpoint opens as the engine would open it. */
static int tierd_check_models(const struct tierd_conf *c)
{
	char err[512], where[256];
	int r;

	for (size_t i = 0; i < c->nmodels; i++) {
		const struct conf_model *m = &c->models[i];
		struct catalog *cat;

		r = catalog_open(&cat, m->path, m->preset, c, err, sizeof(err));
		if (r) {
			log_err("%s: [model %s] path = %s: %s%s", conf_model_where(c, m, where, sizeof(where)),
				m->name, m->path, err, nofile_hint(r, err));
			return r;
		}
		catalog_free(cat);
	}
	return 0;
}

static void on_engine(struct loop_source *src, int fd, uint32_t events, void *arg)
{
	struct tierd *t = arg;
	int r = engine_process(t->engine);

	if (r < 0 && r != -EAGAIN)
		log_warn("engine: %s", strerror(-r));
}

static void on_ckwatch(struct loop_source *src, int fd, uint32_t events, void *arg)
{
	struct tierd *t = arg;
	int r = engine_watch_process(t->engine);

	if (r < 0)
		log_warn("checkpoint watch: %s", strerror(-r));
}

static void on_check_files(struct loop_source *src, void *arg)
{
	struct tierd *t = arg;

	engine_check_files(t->engine);
}

/* Checkpoint files changed on disk: inotify, and a periodic identity check
 * for what inotify cannot see.  Without inotify tierd still runs. */
static int tierd_watch_checkpoints(struct tierd *t)
{
	int fd = engine_watch_start(t->engine), r;

	if (fd < 0) {
		log_warn("checkpoint files: no inotify (%s): changes are found by a check every %d s and "
			 "at the end of each fetch", strerror(-fd), ENGINE_CHECK_FILES_MS / 1000);
	} else {
		r = loop_add_fd(t->loop, fd, EPOLLIN, on_ckwatch, t, NULL);
		if (r)
			return r;
	}
	return loop_add_timer(t->loop, ENGINE_CHECK_FILES_MS, ENGINE_CHECK_FILES_MS, on_check_files, t, NULL);
}

/* Serves again the models a change of their checkpoint files stopped. */
static void tierd_reload_models(struct tierd *t)
{
	char err[512];

	engine_check_files(t->engine);
	for (int i = 0; i < engine_model_count(t->engine); i++) {
		int r = engine_model_reload(t->engine, (uint32_t)i, &t->engine_conf, err, sizeof(err));

		if (r < 0 && r != -EALREADY)
			log_err("reload: %s; not served", err);
	}
}

static void on_telemetry(struct loop_source *src, void *arg)
{
	struct tierd *t = arg;

	/* Export failures are logged once by telemetry itself. */
	telemetry_refresh(t->telemetry, t->engine, telemetry_now_ns());
}

static void on_watchdog(struct loop_source *src, void *arg)
{
	sd_notify(0, "WATCHDOG=1");
}

static void on_status(struct loop_source *src, void *arg)
{
	tierd_notify_status(arg, NULL);
}

/*
 * SIGHUP: re-read the configuration and apply what can change without
 * dropping resident experts (log level, client quotas, allow lists).  Keys
 * that shape the pool or the set of models need a restart: logged, not
 * applied.  A bad file keeps the running configuration.  Models stopped by a
 * change of their checkpoint files are reloaded either way.
 */
static void tierd_reload(struct tierd *t)
{
	struct tierd_conf *c = malloc(sizeof(*c));
	char changed[512];
	char err[512];
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (t->systemd)
		sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading %s",
			   (unsigned long long)now.tv_sec * 1000000ull + (unsigned long long)now.tv_nsec / 1000,
			   t->config_path);
	log_notice("reloading %s", t->config_path);
	if (!c) {
		log_err("reload: out of memory");
		snprintf(t->status_note, sizeof(t->status_note), "reload refused: out of memory");
		goto out;
	}
	if (tierd_load_conf(t, c, err, sizeof(err))) {
		log_err("reload refused, keeping the running configuration: %s", err);
		snprintf(t->status_note, sizeof(t->status_note),
			 "reload refused, running the previous configuration: %s", err);
		free(c);
		goto out;
	}
	t->status_note[0] = '\0';
	if (reload_restart_keys(&t->engine_conf, c, changed, sizeof(changed)))
		log_warn("reload: %s changed: takes effect at the next restart", changed);
	log_set_level(c->log_level);
	server_set_conf(t->server, c);
	server_count_reload(t->server);
	if (t->conf != &t->engine_conf) {
		conf_free(t->conf);
		free(t->conf);
	}
	t->conf = c;
out:
	tierd_reload_models(t);
	tierd_notify_status(t, "READY=1\n");
}

static void on_signal(struct loop_source *src, int signo, void *arg)
{
	struct tierd *t = arg;

	if (signo == SIGHUP) {
		tierd_reload(t);
		return;
	}
	log_notice("%s: stopping", strsignal(signo));
	if (t->systemd)
		sd_notify(0, "STOPPING=1\nSTATUS=stopping: draining in-flight fetches");
	loop_quit(t->loop, 0);
}

static void on_drain_timeout(int signo)
{
	static const char msg[] = "<3>in-flight fetches did not drain within [daemon] drain_timeout_ms: exiting\n";

	(void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
	_exit(EXIT_FAILURE);
}

/* SIGTERM: wait for reads in flight (they land in pool slots), but not
 * forever: a stuck device must not hold up a stop. */
static void tierd_drain(struct tierd *t)
{
	struct itimerval it = { .it_value = {
		.tv_sec = t->conf->drain_timeout_ms / 1000,
		.tv_usec = (suseconds_t)(t->conf->drain_timeout_ms % 1000) * 1000 } };
	struct timespec a, b;
	int r;

	/* 0: no limit.  Never skip the drain itself: completions of reads in
	 * flight must not find the server gone. */
	if (t->conf->drain_timeout_ms) {
		signal(SIGALRM, on_drain_timeout);
		setitimer(ITIMER_REAL, &it, NULL);
	}
	clock_gettime(CLOCK_MONOTONIC, &a);
	r = engine_drain(t->engine);
	clock_gettime(CLOCK_MONOTONIC, &b);
	memset(&it, 0, sizeof(it));
	setitimer(ITIMER_REAL, &it, NULL);
	if (r)
		log_warn("draining in-flight fetches: %s", strerror(-r));
	else
		log_info("in-flight fetches drained in %ld ms",
			 (long)((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000));
}

/* systemd socket activation: *fd is the one SOCK_SEQPACKET listening socket
 * systemd passed, or -1 when it passed none. */
static int tierd_listen_fd(int *fd)
{
	int n = sd_listen_fds(1);

	*fd = -1;
	if (n <= 0)
		return n;
	if (n > 1) {
		log_err("systemd passed %d sockets; tierd.socket must listen on one", n);
		return -EINVAL;
	}
	if (sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_SEQPACKET, 1, NULL, 0) <= 0) {
		log_err("the socket systemd passed is not a listening AF_UNIX SOCK_SEQPACKET socket "
			"(ListenSequentialPacket= in tierd.socket)");
		return -EINVAL;
	}
	log_info("using the socket passed by systemd");
	*fd = SD_LISTEN_FDS_START;
	return 0;
}

static int tierd_run(struct tierd *t)
{
	static const int signals[] = { SIGTERM, SIGINT, SIGHUP };
	uint64_t wd_usec = 0;
	char err[512];
	int listen_fd, r;

	/* Before the engine opens the checkpoints and registers their files. */
	r = tierd_nofile(&t->engine_conf, false);
	if (r)
		return r;
	r = engine_create(&t->engine, &t->engine_conf, err, sizeof(err));
	if (r) {
		log_err("%s%s", err, nofile_hint(r, err));
		return r;
	}
	r = loop_create(&t->loop);
	if (r)
		goto out_engine;
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++) {
		r = loop_add_signal(t->loop, signals[i], on_signal, t, NULL);
		if (r)
			goto out_loop;
	}
	r = loop_add_fd(t->loop, engine_fd(t->engine), EPOLLIN, on_engine, t, NULL);
	if (r)
		goto out_loop;
	r = tierd_watch_checkpoints(t);
	if (r)
		goto out_loop;
	r = tierd_listen_fd(&listen_fd);
	if (r)
		goto out_loop;
	{
		uint64_t pool_bytes = 0;

		for (int i = 0; i < engine_pool_count(t->engine); i++)
			pool_bytes += engine_pool_size(t->engine, (uint32_t)i);
		/* Never fails for lack of privileges: runs without probes and
		 * says so once.  A metrics address that cannot be bound does. */
		r = telemetry_create(&t->telemetry, &t->engine_conf,
				     &(struct telemetry_opts){ .probes = t->engine_conf.probes, .exports = true },
				     pool_bytes, telemetry_now_ns());
		if (r) {
			log_err("telemetry: %s", strerror(-r));
			goto out_loop;
		}
		r = loop_add_timer(t->loop, telemetry_period_ms(t->telemetry),
				   telemetry_period_ms(t->telemetry), on_telemetry, t, NULL);
		if (r)
			goto out_telemetry;
	}
	r = server_create(&t->server, t->loop, t->engine, t->conf, listen_fd);
	if (r) {
		log_err("cannot serve on %s: %s", t->conf->socket_path, strerror(-r));
		goto out_telemetry;
	}
	server_set_telemetry(t->server, t->telemetry);
	r = usage_create(&t->usage, t->engine, telemetry_energy(t->telemetry));
	if (r) {
		log_err("usage bookkeeping: %s", strerror(-r));
		goto out_server;
	}
	server_set_observer(t->server, usage_observer(), t->usage);
	/* The first export now, not a period later. */
	telemetry_refresh(t->telemetry, t->engine, telemetry_now_ns());
	if (t->systemd) {
		r = loop_add_timer(t->loop, STATUS_INTERVAL_MS, STATUS_INTERVAL_MS, on_status, t, NULL);
		if (r)
			goto out_server;
		/* WatchdogSec=: ping at half the interval. */
		if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec >= 2000) {
			r = loop_add_timer(t->loop, 0, wd_usec / 2000, on_watchdog, t, NULL);
			if (r)
				goto out_server;
		}
	}
	log_notice("tierd %s ready on %s (%d models)", PACKAGE_VERSION,
		   listen_fd >= 0 ? "the systemd socket" : t->conf->socket_path,
		   engine_model_count(t->engine));
	tierd_notify_status(t, "READY=1\n");

	r = loop_run(t->loop);

	/* Drain before the server goes: completions still find their clients. */
	tierd_drain(t);
out_server:
	server_destroy(t->server);
	usage_destroy(t->usage);
out_telemetry:
	telemetry_destroy(t->telemetry);
out_loop:
	loop_destroy(t->loop);
out_engine:
	engine_destroy(t->engine);
	return r;
}

int main(int argc, char **argv)
{
	struct tierd t = { .config_path = TIERD_DEFAULT_CONFIG };
	char err[512];
	int check_only = 0, opt, r;

	log_init("tierd", LOG_INFO);
	t.overrides = calloc((size_t)argc, sizeof(char *));
	if (!t.overrides)
		return EXIT_FAILURE;
	while ((opt = getopt(argc, argv, "c:o:thV")) != -1) {
		switch (opt) {
		case 'c': t.config_path = optarg; t.config_given = true; break;
		case 'o': t.overrides[t.noverrides++] = optarg; break;
		case 't': check_only = 1; break;
		case 'h': usage(stdout); free(t.overrides); return EXIT_SUCCESS;
		case 'V': printf("tierd %s\n", PACKAGE_VERSION); free(t.overrides); return EXIT_SUCCESS;
		default: usage(stderr); free(t.overrides); return EXIT_FAILURE;
		}
	}
	if (optind < argc) {
		usage(stderr);
		free(t.overrides);
		return EXIT_FAILURE;
	}
	r = tierd_load_conf(&t, &t.engine_conf, err, sizeof(err));
	if (r) {
		log_err("%s", err);
		free(t.overrides);
		return EXIT_FAILURE;
	}
	t.conf = &t.engine_conf;
	log_set_level(t.conf->log_level);
	if (check_only) {
		r = tierd_check_models(t.conf);
		if (!r)
			r = tierd_nofile(t.conf, true);
		if (!r)
			printf("%s: configuration ok\n", t.config_path);
		goto out;
	}
	/* Answers go out with MSG_NOSIGNAL; a stray SIGPIPE must not kill us either. */
	signal(SIGPIPE, SIG_IGN);
	t.systemd = getenv("NOTIFY_SOCKET") != NULL;
	r = tierd_run(&t);
	if (t.systemd && r)
		sd_notifyf(0, "ERRNO=%d", -r);
out:
	if (t.conf != &t.engine_conf) {
		conf_free(t.conf);
		free(t.conf);
	}
	conf_free(&t.engine_conf);
	free(t.overrides);
	return r ? EXIT_FAILURE : EXIT_SUCCESS;
}
