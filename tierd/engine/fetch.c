/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch.h"
#include "log.h"

struct fetch_extent {
	unsigned file;
	uint64_t offset;
	uint64_t length;
	uint8_t *dst;
};

struct fetch_job {
	struct fetch *f;
	enum fetch_prio prio;
	fetch_done_fn fn;
	void *arg;
	struct fetch_extent *ext;
	unsigned next, count, cap;	/* next extent to issue from */
	uint64_t next_off;		/* within ext[next] */
	unsigned inflight;
	uint64_t bytes;
	int err;
	bool started, queued;
	TAILQ_ENTRY(fetch_job) qlink;	/* in its queue, when queued */
	STAILQ_ENTRY(fetch_job) dlink;	/* in fetch.done */
};

/* One read in flight; also where a short read's remainder is kept. */
struct fetch_req {
	struct fetch_job *job;
	unsigned file;
	uint64_t offset;
	uint64_t length;
	uint8_t *dst;
	bool resubmit;			/* waiting in fetch.redo */
	struct io_uring_sqe *sqe;	/* while the kernel has not taken it */
	uint64_t seq;			/* of the SQE, in fetch.sq_prepared */
};

/* user_data of a withdrawn SQE (turned into a no-op): its CQE is dropped. */
#define FETCH_UD_VOID UINT64_MAX

TAILQ_HEAD(fetch_queue, fetch_job);
STAILQ_HEAD(fetch_done_list, fetch_job);

struct fetch_file {
	int fd;
	uint64_t size;
	char *path;
};

struct fetch {
	struct io_uring ring;
	bool ring_ok;
	int efd;
	unsigned depth;
	uint64_t request_size;
	struct iovec *bufs;
	unsigned nbufs;
	struct fetch_file *files;
	unsigned nfiles;
	unsigned max_files;		/* io_uring file slots registered */
	struct fetch_req *reqs;		/* depth of them */
	unsigned *free_reqs, nfree;
	unsigned *redo, nredo;		/* requests waiting to be issued again */
	unsigned inflight;		/* SQEs prepared and not reaped */
	uint64_t sq_prepared;		/* SQEs prepared, ever */
	unsigned njobs;
	struct fetch_done_list done;	/* failed outside fetch_process: called back there */
	struct fetch_queue q[2];	/* by enum fetch_prio: demand first */
	struct fetch_stats st;
	fetch_submit_fn submit_hook;
	void *submit_arg;
};

unsigned fetch_file_slots(void)
{
	struct rlimit rl;

	/* The kernel refuses a file table larger than the soft limit. */
	if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur >= FETCH_MAX_FILES)
		return FETCH_MAX_FILES;
	return rl.rlim_cur ? (unsigned)rl.rlim_cur : 1;
}

int fetch_create(struct fetch **out, const struct fetch_opts *o, char *err, size_t errlen)
{
	struct fetch *f;
	int e;

	if (!o->queue_depth || o->queue_depth > 4096 || !o->request_size ||
	    o->request_size % FETCH_ALIGN || o->request_size > (1ULL << 30)) {
		snprintf(err, errlen, "fetch: queue depth %u or request size %llu out of range",
			 o->queue_depth, (unsigned long long)o->request_size);
		return -EINVAL;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->efd = -1;
	f->depth = o->queue_depth;
	TAILQ_INIT(&f->q[FETCH_DEMAND]);
	TAILQ_INIT(&f->q[FETCH_PREFETCH]);
	STAILQ_INIT(&f->done);
	f->request_size = o->request_size;
	f->reqs = calloc(f->depth, sizeof(*f->reqs));
	f->free_reqs = calloc(f->depth, sizeof(*f->free_reqs));
	f->redo = calloc(f->depth, sizeof(*f->redo));
	f->max_files = fetch_file_slots();
	f->files = calloc(f->max_files, sizeof(*f->files));
	if (!f->reqs || !f->free_reqs || !f->redo || !f->files) {
		e = -ENOMEM;
		goto fail;
	}
	for (unsigned i = 0; i < f->depth; i++)
		f->free_reqs[f->nfree++] = f->depth - 1 - i;
	e = io_uring_queue_init(f->depth, &f->ring, 0);
	if (e < 0) {
		snprintf(err, errlen, "fetch: io_uring_queue_init(%u): %s%s", f->depth, strerror(-e),
			 e == -EPERM ? " (io_uring disabled? see /proc/sys/kernel/io_uring_disabled)" : "");
		goto fail;
	}
	f->ring_ok = true;
	e = io_uring_register_files_sparse(&f->ring, f->max_files);
	if (e < 0) {
		snprintf(err, errlen, "fetch: registering %u file slots: %s", f->max_files, strerror(-e));
		goto fail;
	}
	f->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (f->efd < 0) {
		e = -errno;
		snprintf(err, errlen, "fetch: eventfd: %s", strerror(-e));
		goto fail;
	}
	e = io_uring_register_eventfd(&f->ring, f->efd);
	if (e < 0) {
		snprintf(err, errlen, "fetch: registering the completion eventfd: %s", strerror(-e));
		goto fail;
	}
	*out = f;
	return 0;
fail:
	fetch_destroy(f);
	return e;
}

static void queue_remove(struct fetch *f, struct fetch_job *j)
{
	if (!j->queued)
		return;
	TAILQ_REMOVE(&f->q[j->prio], j, qlink);
	j->queued = false;
}

static void queue_append(struct fetch *f, struct fetch_job *j)
{
	TAILQ_INSERT_TAIL(&f->q[j->prio], j, qlink);
	j->queued = true;
}

void fetch_job_free(struct fetch_job *j)
{
	if (!j)
		return;
	free(j->ext);
	free(j);
}

/* Reads the kernel has taken and not yet completed (or not reaped). */
static unsigned in_kernel(struct fetch *f)
{
	return f->inflight - io_uring_sq_ready(&f->ring);
}

void fetch_destroy(struct fetch *f)
{
	if (!f)
		return;
	if (f->ring_ok) {
		/* The kernel still writes into our buffers until these come back;
		 * SQEs it never took (a refused submission) never will. */
		while (in_kernel(f)) {
			struct io_uring_cqe *cqe;

			if (io_uring_wait_cqe(&f->ring, &cqe) < 0)
				break;
			io_uring_cqe_seen(&f->ring, cqe);
			f->inflight--;
		}
		io_uring_queue_exit(&f->ring);
	}
	while (!STAILQ_EMPTY(&f->done)) {
		struct fetch_job *j = STAILQ_FIRST(&f->done);

		STAILQ_REMOVE_HEAD(&f->done, dlink);
		fetch_job_free(j);
	}
	/* Jobs still queued or half done: drop them (each once). */
	for (unsigned i = 0; i < f->depth && f->reqs; i++) {
		struct fetch_job *j = f->reqs[i].job;

		if (j && !j->queued) {
			for (unsigned k = i; k < f->depth; k++)
				if (f->reqs[k].job == j)
					f->reqs[k].job = NULL;
			fetch_job_free(j);
		}
	}
	for (int p = 0; p < 2; p++) {
		struct fetch_job *j;

		while ((j = TAILQ_FIRST(&f->q[p]))) {
			TAILQ_REMOVE(&f->q[p], j, qlink);
			for (unsigned k = 0; k < f->depth && f->reqs; k++)
				if (f->reqs[k].job == j)
					f->reqs[k].job = NULL;
			fetch_job_free(j);
		}
	}
	for (unsigned i = 0; i < f->nfiles; i++) {
		if (f->files[i].fd >= 0)
			close(f->files[i].fd);
		free(f->files[i].path);
	}
	if (f->efd >= 0)
		close(f->efd);
	free(f->files);
	free(f->bufs);
	free(f->reqs);
	free(f->free_reqs);
	free(f->redo);
	free(f);
}

int fetch_register_buffers(struct fetch *f, const struct iovec *iov, unsigned n)
{
	struct iovec *copy;
	int e;

	if (f->bufs)
		return -EBUSY;
	copy = calloc(n, sizeof(*copy));
	if (!copy)
		return -ENOMEM;
	memcpy(copy, iov, n * sizeof(*copy));
	e = io_uring_register_buffers(&f->ring, copy, n);
	if (e < 0) {
		free(copy);
		log_err("fetch: registering %u buffers with io_uring: %s%s", n, strerror(-e),
			e == -ENOMEM ? " (RLIMIT_MEMLOCK too small? registered buffers count against it)" : "");
		return e;
	}
	f->bufs = copy;
	f->nbufs = n;
	return 0;
}

int fetch_file_open(struct fetch *f, const char *path, char *err, size_t errlen)
{
	struct fetch_file *ff;
	struct stat sb;
	int fd, e;

	if (f->nfiles >= f->max_files) {
		snprintf(err, errlen, "%s: more than %u checkpoint files open%s", path, f->max_files,
			 f->max_files < FETCH_MAX_FILES ? " (the open file limit: raise LimitNOFILE= or ulimit -n)" : "");
		return -EMFILE;
	}
	fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0 && errno == EINVAL) {
		/* A file system without O_DIRECT: reads go through the page cache. */
		log_warn("%s: O_DIRECT not supported by this file system; reading through the page cache", path);
		fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	if (fd < 0) {
		e = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-e));
		return e;
	}
	if (fstat(fd, &sb)) {
		e = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-e));
		close(fd);
		return e;
	}
	if (!S_ISREG(sb.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		close(fd);
		return -EINVAL;
	}
	e = io_uring_register_files_update(&f->ring, f->nfiles, &fd, 1);
	if (e < 0) {
		snprintf(err, errlen, "%s: registering with io_uring: %s", path, strerror(-e));
		close(fd);
		return e;
	}
	ff = &f->files[f->nfiles];
	ff->fd = fd;
	ff->size = (uint64_t)sb.st_size;
	ff->path = strdup(path);
	if (!ff->path) {
		close(fd);
		return -ENOMEM;
	}
	return (int)f->nfiles++;
}

int fetch_file_reopen(struct fetch *f, unsigned file, char *err, size_t errlen)
{
	struct fetch_file *ff;
	struct stat sb;
	int fd, e;

	if (file >= f->nfiles) {
		snprintf(err, errlen, "fetch: file %u: not open", file);
		return -EBADF;
	}
	ff = &f->files[file];
	fd = open(ff->path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0 && errno == EINVAL)
		fd = open(ff->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		e = -errno;
		snprintf(err, errlen, "%s: %s", ff->path, strerror(-e));
		return e;
	}
	e = fstat(fd, &sb) ? -errno : S_ISREG(sb.st_mode) ? 0 : -EINVAL;
	if (e) {
		snprintf(err, errlen, "%s: %s", ff->path, e == -EINVAL ? "not a regular file" : strerror(-e));
		close(fd);
		return e;
	}
	/* The ring holds its own reference to the old file for reads in flight. */
	e = io_uring_register_files_update(&f->ring, file, &fd, 1);
	if (e < 0) {
		snprintf(err, errlen, "%s: registering with io_uring: %s", ff->path, strerror(-e));
		close(fd);
		return e;
	}
	close(ff->fd);
	ff->fd = fd;
	ff->size = (uint64_t)sb.st_size;
	return 0;
}

uint64_t fetch_file_size(const struct fetch *f, unsigned file)
{
	return file < f->nfiles ? f->files[file].size : 0;
}

int fetch_file_fd(const struct fetch *f, unsigned file)
{
	return file < f->nfiles ? f->files[file].fd : -EBADF;
}

int fetch_job_create(struct fetch *f, enum fetch_prio prio, fetch_done_fn fn, void *arg,
		     struct fetch_job **out)
{
	struct fetch_job *j = calloc(1, sizeof(*j));

	if (!j)
		return -ENOMEM;
	j->f = f;
	j->prio = prio;
	j->fn = fn;
	j->arg = arg;
	*out = j;
	return 0;
}

int fetch_job_add(struct fetch_job *j, unsigned file, uint64_t offset, uint64_t length, void *dst)
{
	if (j->queued || j->started || file >= j->f->nfiles || !length ||
	    (offset | length | (uintptr_t)dst) % FETCH_ALIGN)
		return -EINVAL;
	if (j->count == j->cap) {
		unsigned cap = j->cap ? j->cap * 2 : 4;
		struct fetch_extent *e = realloc(j->ext, cap * sizeof(*e));

		if (!e)
			return -ENOMEM;
		j->ext = e;
		j->cap = cap;
	}
	j->ext[j->count++] = (struct fetch_extent){ file, offset, length, dst };
	return 0;
}

/* Index of the registered buffer holding dst and how far it reaches, or
 * -ENOENT (a plain read then) with no limit on the reach. */
static int buf_find(const struct fetch *f, const uint8_t *dst, uint64_t *room)
{
	for (unsigned i = 0; i < f->nbufs; i++) {
		const uint8_t *b = f->bufs[i].iov_base;

		if (dst >= b && dst < b + f->bufs[i].iov_len) {
			*room = (uint64_t)(b + f->bufs[i].iov_len - dst);
			return (int)i;
		}
	}
	*room = UINT64_MAX;
	return -ENOENT;
}

static bool issue(struct fetch *f, unsigned ri)
{
	struct fetch_req *r = &f->reqs[ri];
	struct io_uring_sqe *sqe = io_uring_get_sqe(&f->ring);
	uint64_t room;
	int buf;

	if (!sqe)
		return false;
	buf = buf_find(f, r->dst, &room);
	if (buf >= 0) {
		io_uring_prep_read_fixed(sqe, (int)r->file, r->dst, (unsigned)r->length, r->offset, buf);
		f->st.requests_fixed++;
	} else {
		io_uring_prep_read(sqe, (int)r->file, r->dst, (unsigned)r->length, r->offset);
	}
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(sqe, ri);
	r->sqe = sqe;
	r->seq = f->sq_prepared++;
	r->resubmit = false;
	f->inflight++;
	f->st.requests++;
	return true;
}

/* Cuts the job's next request; false when it has nothing more to issue. */
static bool next_request(struct fetch *f, struct fetch_job *j, struct fetch_req *r)
{
	struct fetch_extent *e;
	uint64_t len, room;

	if (j->err || j->next >= j->count)
		return false;
	e = &j->ext[j->next];
	len = e->length - j->next_off;
	if (len > f->request_size)
		len = f->request_size;
	buf_find(f, e->dst + j->next_off, &room);
	if (len > room)
		len = room;
	*r = (struct fetch_req){ .job = j, .file = e->file, .offset = e->offset + j->next_off,
				 .length = len, .dst = e->dst + j->next_off };
	j->next_off += len;
	if (j->next_off == e->length) {
		j->next++;
		j->next_off = 0;
	}
	return true;
}

/* A job that failed where its callback cannot run (inside submit_more,
 * perhaps called from fetch_job_submit while the caller is mid-way): it is
 * called back from fetch_process, which the eventfd wakes. */
static void job_defer(struct fetch *f, struct fetch_job *j)
{
	queue_remove(f, j);
	STAILQ_INSERT_TAIL(&f->done, j, dlink);
	if (eventfd_write(f->efd, 1))
		log_err("fetch: waking the event loop: %s", strerror(errno));
}

static void job_fail(struct fetch_job *j, int err)
{
	if (!j->err)
		j->err = err;
}

/*
 * The kernel refused a submission and nothing will bring us back to retry it:
 * everything not in the kernel fails with err.  SQEs it has not taken are
 * still ours to rewrite: each becomes a no-op whose completion is dropped, so
 * the read never lands in memory its job's owner has moved on from.
 */
static void fail_outside_kernel(struct fetch *f, int err)
{
	uint64_t taken = f->sq_prepared - io_uring_sq_ready(&f->ring);

	for (unsigned ri = 0; ri < f->depth; ri++) {
		struct fetch_req *r = &f->reqs[ri];
		struct fetch_job *j = r->job;

		if (!j || (r->seq < taken && !r->resubmit))
			continue;
		if (!r->resubmit) {
			io_uring_prep_nop(r->sqe);
			io_uring_sqe_set_data64(r->sqe, FETCH_UD_VOID);
		}
		r->job = NULL;
		r->resubmit = false;
		f->free_reqs[f->nfree++] = ri;
		job_fail(j, err);
		if (--j->inflight == 0)
			job_defer(f, j);
	}
	f->nredo = 0;
	for (int p = FETCH_DEMAND; p <= FETCH_PREFETCH; p++) {
		struct fetch_job *j;

		while ((j = TAILQ_FIRST(&f->q[p]))) {
			job_fail(j, err);
			j->started = true;
			queue_remove(f, j);
			if (j->inflight == 0)
				job_defer(f, j);
		}
	}
}

/*
 * Hands the prepared SQEs to the kernel.  A refusal that completions clear
 * (-EBUSY: the completion queue is backed up; -EAGAIN: no memory for
 * requests) is retried on the next fetch_process while reads are in the
 * kernel; with none there, or for any other error, nothing would come back to
 * retry, and what is not in the kernel fails with the errno.
 */
static void ring_submit(struct fetch *f)
{
	int e;

	if (!io_uring_sq_ready(&f->ring))
		return;
	do
		e = f->submit_hook ? f->submit_hook(&f->ring, f->submit_arg) : io_uring_submit(&f->ring);
	while (e == -EINTR);
	if (e >= 0 && (!io_uring_sq_ready(&f->ring) || in_kernel(f)))
		return;
	f->st.submit_errors++;
	if (e >= 0)
		e = -EAGAIN;	/* took nothing, said nothing */
	if ((e == -EBUSY || e == -EAGAIN) && in_kernel(f))
		return;
	log_err("fetch: io_uring_submit: %s; failing the reads not in the kernel", strerror(-e));
	fail_outside_kernel(f, e);
}

static void submit_more(struct fetch *f)
{
	while (f->nredo) {
		if (!issue(f, f->redo[f->nredo - 1]))
			goto submit;
		f->nredo--;
	}
	for (int p = FETCH_DEMAND; p <= FETCH_PREFETCH; p++) {
		struct fetch_job *j;

		while ((j = TAILQ_FIRST(&f->q[p])) && f->nfree) {
			unsigned ri = f->free_reqs[f->nfree - 1];

			if (!next_request(f, j, &f->reqs[ri])) {
				queue_remove(f, j);
				continue;
			}
			if (!issue(f, ri)) {
				/* Undo the cut: the job issues it again next time. */
				struct fetch_req *r = &f->reqs[ri];

				if (j->next_off == 0)
					j->next--, j->next_off = j->ext[j->next].length;
				j->next_off -= r->length;
				r->job = NULL;
				goto submit;
			}
			f->nfree--;
			j->started = true;
			j->inflight++;
			if (j->next >= j->count)
				queue_remove(f, j);
		}
	}
submit:
	/* Also when nothing new was cut: SQEs a refused submission left. */
	ring_submit(f);
}

int fetch_job_submit(struct fetch_job *j)
{
	if (j->queued || j->started || !j->count)
		return -EINVAL;
	j->f->njobs++;
	queue_append(j->f, j);
	submit_more(j->f);
	return 0;
}

int fetch_job_cancel(struct fetch_job *j)
{
	struct fetch *f = j->f;

	if (j->started)
		return -EBUSY;
	/* Never submitted: the caller still owns it (fetch_job_free). */
	if (!j->queued)
		return -EINVAL;
	queue_remove(f, j);
	f->njobs--;
	f->st.jobs_cancelled++;
	fetch_job_free(j);
	return 0;
}

void fetch_job_promote(struct fetch_job *j)
{
	bool queued = j->queued;

	if (j->prio == FETCH_DEMAND)
		return;
	queue_remove(j->f, j);
	j->prio = FETCH_DEMAND;
	if (queued)
		queue_append(j->f, j);
}

bool fetch_job_started(const struct fetch_job *j)
{
	return j->started;
}

static void job_finish(struct fetch *f, struct fetch_job *j)
{
	queue_remove(f, j);
	f->njobs--;
	if (j->err)
		f->st.jobs_failed++;
	else
		f->st.jobs_done++;
	if (j->fn)
		j->fn(j->arg, j->err, j->bytes);
	fetch_job_free(j);
}

/* One completion; returns true when its job is finished. */
static bool complete(struct fetch *f, unsigned ri, int res)
{
	struct fetch_req *r = &f->reqs[ri];
	struct fetch_job *j = r->job;
	struct fetch_file *ff = &f->files[r->file];

	if (res == -EAGAIN || res == -EINTR) {
		f->st.retries++;
		f->redo[f->nredo++] = ri;
		r->resubmit = true;
		return false;
	}
	if (res < 0) {
		f->st.errors++;
		log_err("fetch: %s: read of %llu bytes at %llu failed: %s", ff->path,
			(unsigned long long)r->length, (unsigned long long)r->offset, strerror(-res));
		if (!j->err)
			j->err = res;
	} else {
		uint64_t got = (uint64_t)res;

		f->st.bytes_read += got;
		j->bytes += got;
		if (got < r->length && r->offset + got < ff->size) {
			if (got == 0) {
				/* No progress before the end of the file: it shrank. */
				log_err("fetch: %s: read at %llu returned nothing before the end of the file (%llu)",
					ff->path, (unsigned long long)r->offset, (unsigned long long)ff->size);
				if (!j->err)
					j->err = -EIO;
			} else if (!j->err) {
				f->st.short_reads++;
				r->offset += got;
				r->dst += got;
				r->length -= got;
				f->redo[f->nredo++] = ri;
				r->resubmit = true;
				return false;
			}
		}
		/* Short at the end of the file: the rest of the aligned superset
		 * is past EOF and belongs to no tensor. */
	}
	r->job = NULL;
	f->free_reqs[f->nfree++] = ri;
	j->inflight--;
	if (j->err)
		queue_remove(f, j);
	if (j->inflight == 0 && (j->err || j->next >= j->count)) {
		job_finish(f, j);
		return true;
	}
	return false;
}

/* Calls back the jobs job_defer set aside (each list once: a callback that
 * queues work that fails again is called back on the next round). */
static int run_deferred(struct fetch *f)
{
	struct fetch_done_list now = STAILQ_HEAD_INITIALIZER(now);
	struct fetch_job *j;
	int n = 0;

	STAILQ_CONCAT(&now, &f->done);
	while ((j = STAILQ_FIRST(&now))) {
		STAILQ_REMOVE_HEAD(&now, dlink);
		job_finish(f, j);
		n++;
	}
	return n;
}

int fetch_process(struct fetch *f)
{
	struct io_uring_cqe *cqe;
	uint64_t v;
	int done = 0;

	/* Clears the eventfd; completions are read from the ring below. */
	if (read(f->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return -errno;
	done += run_deferred(f);
	for (;;) {
		while (io_uring_peek_cqe(&f->ring, &cqe) == 0) {
			uint64_t ud = io_uring_cqe_get_data64(cqe);
			int res = cqe->res;

			io_uring_cqe_seen(&f->ring, cqe);
			f->inflight--;
			if (ud < f->depth && f->reqs[ud].job)
				done += complete(f, (unsigned)ud, res);
		}
		submit_more(f);
		/* Callbacks may have queued more; stop when the ring is quiet. */
		if (io_uring_cq_ready(&f->ring) == 0)
			break;
	}
	return done;
}

int fetch_wait(struct fetch *f)
{
	struct io_uring_cqe *cqe;
	int e;

	if (!in_kernel(f))
		submit_more(f);
	/* Waiting is only for reads the kernel has: anything else would block
	 * for good. */
	if (!STAILQ_EMPTY(&f->done) || !in_kernel(f))
		return fetch_process(f);
	e = io_uring_wait_cqe(&f->ring, &cqe);
	if (e < 0 && e != -EINTR)
		return e;
	return fetch_process(f);
}

int fetch_fd(const struct fetch *f)
{
	return f->efd;
}

unsigned fetch_pending(const struct fetch *f)
{
	return f->njobs;
}

void fetch_get_stats(const struct fetch *f, struct fetch_stats *st)
{
	*st = f->st;
}

void fetch_set_submit_hook(struct fetch *f, fetch_submit_fn fn, void *arg)
{
	f->submit_hook = fn;
	f->submit_arg = arg;
}
