/* SPDX-License-Identifier: MIT */
/*
 * tierctl bench fetch: the engine's fetch rate against fio reading the same
 * extents in the same run (tierctl-engine.c opens the engine).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "catalog.h"
#include "fetch.h"
#include "log.h"
#include "pool.h"
#include "tierctl-direct.h"

struct fio_result {
	uint64_t bytes;
	double seconds;
};

/* What fio replays: the engine's own reads, and how fio is to hold its buffers. */
struct fio_plan {
	char log[64];			/* the iolog file; "" when none */
	uint64_t reads;
	uint64_t bytes;
	const char *iomem;		/* shmhuge (hugetlb) when there are free pages, else mmapshared */
	bool fixed;			/* registered buffers */
};

/*
 * Writes the engine's reads for experts [0, nexp) as a fio version 2 iolog:
 * every extent of every expert cut exactly as the fetch engine cuts it (at
 * request_size and at the pool's fixed-buffer boundaries, from where each
 * slot lies in the pool), in the engine's order.  fio replays it with one
 * job at the same depth, so both read the same bytes in the same order with
 * the same concurrency.
 */
static int fio_plan_write(const struct direct *d, uint32_t nexp, const struct acq *a, uint64_t bs,
			  struct fio_plan *fp)
{
	uint32_t nf = d->cat->nfiles;
	bool *used = calloc(nf, sizeof(*used));
	FILE *f = NULL;
	int fd, r = -EIO;

	fp->reads = fp->bytes = 0;
	if (!used)
		return -ENOMEM;
	for (uint32_t i = 0; i < nexp; i++)
		for (uint32_t k = 0; k < d->cat->experts[i].nextents; k++)
			used[d->cat->experts[i].extents[k].file] = true;
	for (uint32_t fi = 0; fi < nf; fi++)
		if (used[fi] && strpbrk(d->cat->files[fi].path, " \t\n")) {
			/* fio's iolog parser splits lines at white space. */
			fprintf(stderr, "tierctl: %s: fio cannot replay reads of a path with white space: no comparison\n",
				d->cat->files[fi].path);
			r = -EINVAL;
			goto out;
		}
	snprintf(fp->log, sizeof(fp->log), "%s/tierctl-fio-XXXXXX", getenv("TMPDIR") ?: "/tmp");
	fd = mkstemp(fp->log);
	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		fprintf(stderr, "tierctl: %s: %s\n", fp->log, strerror(-r));
		fp->log[0] = '\0';
		goto out;
	}
	fputs("fio version 2 iolog\n", f);
	for (uint32_t fi = 0; fi < nf; fi++)
		if (used[fi])
			fprintf(f, "%s add\n%s open\n", d->cat->files[fi].path, d->cat->files[fi].path);
	for (uint32_t i = 0; i < nexp; i++) {
		const struct catalog_expert *x = &d->cat->experts[i];

		for (uint32_t k = 0; k < x->nextents; k++) {
			const struct catalog_extent *ex = &x->extents[k];
			uint64_t size = d->cat->files[ex->file].size, dst = a[i].info.offset + ex->slot_offset;

			for (uint64_t done = 0; done < ex->length;) {
				uint64_t len = ex->length - done, room = POOL_IOVEC_MAX - (dst + done) % POOL_IOVEC_MAX;
				uint64_t off = ex->offset + done;

				len = len < bs ? len : bs;
				len = len < room ? len : room;
				done += len;
				/* The engine's read past the end of the file comes back short;
				 * fio would count that an error: stop at the last whole sector. */
				if (off + len > size)
					len = off < size ? (size - off) & ~511ULL : 0;
				if (!len)
					continue;
				fprintf(f, "%s read %" PRIu64 " %" PRIu64 "\n", d->cat->files[ex->file].path, off, len);
				fp->reads++;
				fp->bytes += len;
			}
		}
	}
	for (uint32_t fi = 0; fi < nf; fi++)
		if (used[fi])
			fprintf(f, "%s close\n", d->cat->files[fi].path);
	r = 0;
out:
	if (f && fclose(f) && r == 0) {
		r = -errno;
		fprintf(stderr, "tierctl: %s: %s\n", fp->log, strerror(-r));
	}
	free(used);
	return r;
}

static void fio_plan_remove(struct fio_plan *fp)
{
	if (fp->log[0])
		unlink(fp->log);
	fp->log[0] = '\0';
}

/*
 * One fio job replaying the plan's log with io_uring, O_DIRECT, registered
 * buffers, at the engine's depth.  Its buffers are hugetlb pages when the
 * system has free ones: on a virtio disk, fio's few reused buffers in 4 KiB
 * pages alone cost it 40 % of its throughput, which made it a poor reference.  Its time is fio's own
 * job runtime (the I/O phase, without fio's start-up), as tierd's is the
 * time from the first acquire to the last completion.  Its bytes are the
 * log's: fio 3.33 leaves the reads still in flight when a replayed log ends
 * out of io_bytes (it waits for them inside its runtime), so total_ios is
 * checked against the log instead.
 */
static int run_fio(const struct fio_plan *fp, unsigned depth, struct fio_result *res)
{
	char depth_opt[32], iomem_opt[32], log_opt[96];
	char *args[] = { "fio", "--output-format=json", "--name=tierd-reads", "--ioengine=io_uring",
			 "--direct=1", depth_opt, fp->fixed ? "--fixedbufs=1" : "--fixedbufs=0", iomem_opt,
			 log_opt, NULL };
	char *out = NULL;
	size_t len = 0, cap = 0;
	struct json_object *root = NULL, *jobs, *job, *rd, *v;
	int p[2] = { -1, -1 }, status, r = -EIO;
	uint64_t ios = 0;
	pid_t pid;

	snprintf(depth_opt, sizeof(depth_opt), "--iodepth=%u", depth);
	snprintf(iomem_opt, sizeof(iomem_opt), "--iomem=%s", fp->iomem);
	snprintf(log_opt, sizeof(log_opt), "--read_iolog=%s", fp->log);
	if (pipe(p) < 0)
		goto out;
	pid = fork();
	if (pid < 0)
		goto out;
	if (pid == 0) {
		dup2(p[1], STDOUT_FILENO);
		close(p[0]);
		close(p[1]);
		execvp("fio", args);
		_exit(127);
	}
	close(p[1]);
	p[1] = -1;
	for (;;) {
		ssize_t got;

		if (len + 4096 > cap) {
			char *nb = realloc(out, cap = cap ? cap * 2 : 65536);

			if (!nb)
				break;
			out = nb;
		}
		got = read(p[0], out + len, cap - len - 1);
		if (got <= 0)
			break;
		len += (size_t)got;
	}
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
			fprintf(stderr, "tierctl: fio is not installed: no comparison\n");
			r = -ENOENT;
		}
		goto out;
	}
	if (!out)
		goto out;
	out[len] = '\0';
	/* fio may print notes before its JSON. */
	root = json_tokener_parse(strchr(out, '{') ? strchr(out, '{') : out);
	if (!root || !json_object_object_get_ex(root, "jobs", &jobs) || json_object_array_length(jobs) != 1 ||
	    !(job = json_object_array_get_idx(jobs, 0)) || !json_object_object_get_ex(job, "read", &rd)) {
		fprintf(stderr, "tierctl: could not read fio's JSON output\n");
		goto out;
	}
	if (json_object_object_get_ex(job, "error", &v) && json_object_get_int(v)) {
		fprintf(stderr, "tierctl: fio: %s\n", strerror(json_object_get_int(v)));
		goto out;
	}
	if (json_object_object_get_ex(rd, "total_ios", &v))
		ios = (uint64_t)json_object_get_int64(v);
	if (ios != fp->reads) {
		fprintf(stderr, "tierctl: fio issued %" PRIu64 " of the %" PRIu64 " reads of its log\n", ios, fp->reads);
		goto out;
	}
	if (!json_object_object_get_ex(rd, "runtime", &v)) {
		fprintf(stderr, "tierctl: fio's JSON output has no runtime\n");
		goto out;
	}
	/* fio counts whole milliseconds: a run under one counts as one (tiny checkpoints). */
	*res = (struct fio_result){ .bytes = fp->bytes,
				    .seconds = (double)(json_object_get_int64(v) > 1 ? json_object_get_int64(v) : 1) / 1e3 };
	r = 0;
out:
	if (p[0] >= 0)
		close(p[0]);
	if (p[1] >= 0)
		close(p[1]);
	json_object_put(root);
	free(out);
	return r;
}

static int bench_fetch(const struct tierctl_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "experts", required_argument, NULL, 'n' },
		{ "depth", required_argument, NULL, 'd' },
		{ "request-size", required_argument, NULL, 'r' },
		{ "runs", required_argument, NULL, 'R' },
		{ "no-fio", no_argument, NULL, 'F' },
		{ "verify", no_argument, NULL, 'v' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *usage =
		"Usage: tierctl bench fetch CHECKPOINT_DIR [--experts N] [--depth D] [--request-size S]\n"
		"       [--runs R] [--no-fio] [--verify] [--json]\n";
	uint64_t nexp = 0, depth = 0, req = 0, runs = 3, ebytes = 0, tbytes = 0;
	double tsec = 0, ssec[64] = { 0 };
	uint64_t sbytes[64] = { 0 };
	struct fio_result fio = { 0 }, fr[64];
	bool use_fio = true, verify = false, json = o->json, fio_ok = true;
	struct direct d = { 0 };
	struct engine_stats st0, st1;
	struct fio_plan fplan = { .log = "" };
	struct acq *a = NULL;
	int opt, rc = 1;

	memset(fr, 0, sizeof(fr));
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		int r = 0;

		switch (opt) {
		case 'n': r = tierctl_parse_u64("--experts", optarg, UINT32_MAX, &nexp); break;
		/* 0 would mean "the default" below: refuse it rather than ignore it. */
		case 'd':
			r = tierctl_parse_u64("--depth", optarg, 4096, &depth);
			if (!r && !depth) {
				fprintf(stderr, "tierctl: --depth: must be at least 1\n");
				r = -EINVAL;
			}
			break;
		case 'r':
			r = tierctl_parse_size("--request-size", optarg, &req);
			if (!r && !req) {
				fprintf(stderr, "tierctl: --request-size: must not be 0\n");
				r = -EINVAL;
			}
			break;
		case 'R': r = tierctl_parse_u64("--runs", optarg, 64, &runs); break;
		case 'F': use_fio = false; break;
		case 'v': verify = true; break;
		case 'j': json = true; break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 2;
		}
		if (r)
			return 2;
	}
	if (optind != argc - 1 || runs < 1) {
		fputs(usage, stderr);
		return 2;
	}
	if (direct_conf_prepare(&d, o) < 0)
		goto out;
	if (depth)
		d.conf.queue_depth = (unsigned)depth;
	if (req)
		d.conf.request_size = req;
	{
		/* Size the pool for the experts asked for, at most half the memory. */
		struct catalog *cat;
		char err[1024];
		uint64_t ram = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
		uint64_t slot, fit;

		if (catalog_open(&cat, argv[optind], NULL, &d.conf, err, sizeof(err)) < 0) {
			fprintf(stderr, "tierctl: %s\n", err);
			goto out;
		}
		slot = (cat->slot_bytes + CHUNK - 1) / CHUNK * CHUNK;
		fit = ram / 2 / slot;
		if (!nexp || nexp > cat->nexperts)
			nexp = cat->nexperts;
		if (nexp > fit) {
			log_notice("bench: %" PRIu64 " experts would not fit in half the memory; fetching %" PRIu64,
				   nexp, fit);
			nexp = fit;
		}
		catalog_free(cat);
		if (!nexp) {
			fprintf(stderr, "tierctl: bench: no expert fits in memory\n");
			goto out;
		}
	}
	if (direct_open(&d, argv[optind], nexp) < 0)
		goto out;
	a = calloc(nexp, sizeof(*a));
	if (!a)
		goto out;
	for (uint32_t i = 0; i < nexp; i++)
		ebytes += d.cat->experts[i].bytes;
	/* Alternate tierd and fio so that both see the same disk weather. */
	for (uint64_t run = 0; run < runs; run++) {
		double t0;
		int r;

		direct_drop_caches(&d);
		engine_get_stats(d.e, &st0);
		t0 = tierctl_now_s();
		if (direct_acquire_range(&d, 0, (uint32_t)nexp, a) < 0)
			goto out;
		ssec[run] = tierctl_now_s() - t0;
		engine_get_stats(d.e, &st1);
		sbytes[run] = st1.bytes_read - st0.bytes_read;
		tsec += ssec[run];
		tbytes += sbytes[run];
		if (verify && run == 0 && direct_verify_range(&d, 0, (uint32_t)nexp, a) < 0)
			goto out;
		if (use_fio && fio_ok && run == 0) {
			/* Where the slots lie decides where the engine cut its reads. */
			fplan.iomem = "shmhuge";
			fplan.fixed = true;
			if (fio_plan_write(&d, (uint32_t)nexp, a, d.conf.request_size, &fplan) < 0)
				fio_ok = false;
		}
		direct_release_range(&d, 0, (uint32_t)nexp, true);
		if (use_fio && fio_ok) {
			direct_drop_caches(&d);
			r = run_fio(&fplan, d.conf.queue_depth, &fr[run]);
			if (r == -EIO && strcmp(fplan.iomem, "shmhuge") == 0) {
				/* No free hugetlb pages (or the pool holds them all). */
				fprintf(stderr, "tierctl: fio got no hugetlb pages for its buffers; comparing with 4 KiB pages, "
					"which can make fio much slower (see vm.nr_hugepages)\n");
				fplan.iomem = "mmapshared";
				r = run_fio(&fplan, d.conf.queue_depth, &fr[run]);
			}
			if (r == -EIO && fplan.fixed) {
				/* Registered buffers need RLIMIT_MEMLOCK room (root has it). */
				fprintf(stderr, "tierctl: fio with fixedbufs failed; comparing with plain buffers\n");
				fplan.fixed = false;
				r = run_fio(&fplan, d.conf.queue_depth, &fr[run]);
			}
			if (r < 0) {
				if (r != -ENOENT)
					fprintf(stderr, "tierctl: fio failed: no comparison\n");
				fio_ok = false;
				continue;
			}
			fio.bytes += fr[run].bytes;
			fio.seconds += fr[run].seconds;
		}
	}
	use_fio = use_fio && fio_ok;
	if (json) {
		struct json_object *j = json_object_new_object(), *rs = json_object_new_array();

		json_object_object_add(j, "checkpoint", json_object_new_string(argv[optind]));
		json_object_object_add(j, "experts", json_object_new_int64((int64_t)nexp));
		json_object_object_add(j, "expert_bytes", json_object_new_int64((int64_t)ebytes));
		json_object_object_add(j, "queue_depth", json_object_new_int64(d.conf.queue_depth));
		json_object_object_add(j, "request_size", json_object_new_int64((int64_t)d.conf.request_size));
		json_object_object_add(j, "runs", json_object_new_int64((int64_t)runs));
		json_object_object_add(j, "pool_hugetlb", json_object_new_boolean(engine_pool_hugetlb(d.e, 0)));
		json_object_object_add(j, "bytes", json_object_new_int64((int64_t)tbytes));
		json_object_object_add(j, "seconds", json_object_new_double(tsec));
		json_object_object_add(j, "gbps", json_object_new_double((double)tbytes / tsec / 1e9));
		for (uint64_t run = 0; run < runs; run++) {
			struct json_object *r1 = json_object_new_object();

			json_object_object_add(r1, "tierd_gbps", json_object_new_double((double)sbytes[run] / ssec[run] / 1e9));
			if (use_fio)
				json_object_object_add(r1, "fio_gbps",
						       json_object_new_double((double)fr[run].bytes / fr[run].seconds / 1e9));
			json_object_array_add(rs, r1);
		}
		json_object_object_add(j, "per_run", rs);
		if (use_fio) {
			struct json_object *f = json_object_new_object();

			json_object_object_add(f, "bytes", json_object_new_int64((int64_t)fio.bytes));
			json_object_object_add(f, "seconds", json_object_new_double(fio.seconds));
			json_object_object_add(f, "gbps", json_object_new_double((double)fio.bytes / fio.seconds / 1e9));
			json_object_object_add(f, "fixedbufs", json_object_new_boolean(fplan.fixed));
			json_object_object_add(f, "iomem", json_object_new_string(fplan.iomem));
			json_object_object_add(f, "reads", json_object_new_int64((int64_t)fplan.reads));
			json_object_object_add(j, "fio", f);
			json_object_object_add(j, "ratio", json_object_new_double(
				((double)tbytes / tsec) / ((double)fio.bytes / fio.seconds)));
		}
		puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY));
		json_object_put(j);
	} else {
		printf("checkpoint %s: %" PRIu64 " experts, %.1f MiB of tensors, queue depth %u, request size %" PRIu64
		       " KiB, pool in %s pages, %" PRIu64 " run(s), page cache dropped before each\n", argv[optind], nexp,
		       (double)ebytes / MiB, d.conf.queue_depth, d.conf.request_size >> 10,
		       engine_pool_hugetlb(d.e, 0) ? "hugetlb" : "4 KiB", runs);
		for (uint64_t run = 0; run < runs; run++) {
			printf("run %" PRIu64 ": tierd %.2f GB/s", run + 1, (double)sbytes[run] / ssec[run] / 1e9);
			if (use_fio)
				printf(", fio %.2f GB/s", (double)fr[run].bytes / fr[run].seconds / 1e9);
			putchar('\n');
		}
		printf("tierd: %" PRIu64 " bytes in %.3f s = %.2f GB/s%s\n", tbytes, tsec, (double)tbytes / tsec / 1e9,
		       verify ? " (every byte verified)" : "");
		if (use_fio) {
			printf("fio:   %" PRIu64 " bytes in %.3f s = %.2f GB/s (one io_uring job replaying tierd's %" PRIu64
			       " reads at depth %u, O_DIRECT, %s buffers%s)\n", fio.bytes, fio.seconds,
			       (double)fio.bytes / fio.seconds / 1e9, fplan.reads, d.conf.queue_depth,
			       strcmp(fplan.iomem, "shmhuge") ? "shmem" : "hugetlb", fplan.fixed ? ", registered" : "");
			printf("ratio tierd/fio: %.3f\n", ((double)tbytes / tsec) / ((double)fio.bytes / fio.seconds));
		}
	}
	rc = 0;
out:
	fio_plan_remove(&fplan);
	free(a);
	direct_close(&d);
	return rc;
}

int cmd_bench(const struct tierctl_opts *o, int argc, char **argv)
{
	/* bench acquire: the service's benchmark (client/tierctl-service.c). */
	if (argc >= 2 && !strcmp(argv[1], "acquire"))
		return cmd_bench_acquire(o, argc - 1, argv + 1);
	if (argc < 2 || strcmp(argv[1], "fetch")) {
		fprintf(stderr, "Usage: tierctl bench fetch CHECKPOINT_DIR [options] (see tierctl bench fetch --help)\n"
				"       tierctl bench acquire [options] (see tierctl(8))\n");
		return 2;
	}
	return bench_fetch(o, argc - 1, argv + 1);
}
