/* SPDX-License-Identifier: MIT */
/*
 * Fetch engine: reads byte ranges of checkpoint files into pool memory with
 * io_uring, O_DIRECT, fixed files and registered buffers (IORING_OP_READ_FIXED),
 * no copy.
 *
 * A job is a list of extents (file, offset, length, destination), each 4 KiB
 * aligned; it is cut into requests of at most request_size bytes that never
 * cross a registered buffer, and at most queue_depth requests are in flight.
 * Demand jobs are issued before prefetch jobs; a job not yet started can be
 * cancelled.  Short reads are resubmitted for the rest, except a short read
 * that ends at the end of the file (the aligned superset of a file's last
 * tensor reaches past it).  An I/O error fails the job with its errno once its
 * other requests have come back.  When io_uring_submit is refused, -EBUSY or
 * -EAGAIN with reads still in the kernel is retried after the next
 * completion; otherwise every read not in the kernel is withdrawn and its job
 * (and any job still queued) fails with that errno.
 *
 * Completions are signalled on an eventfd (fetch_fd) for the caller's event
 * loop; callbacks run from fetch_process().
 */
#ifndef TIERD_FETCH_H
#define TIERD_FETCH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#define FETCH_ALIGN	4096ULL
#define FETCH_MAX_FILES	4096
/* io_uring file slots a fetch engine registers: FETCH_MAX_FILES, or the
 * open file limit (RLIMIT_NOFILE) where lower; as many checkpoint files. */
unsigned fetch_file_slots(void);

struct fetch;
struct fetch_job;

enum fetch_prio {
	FETCH_DEMAND,
	FETCH_PREFETCH,
};

struct fetch_opts {
	unsigned queue_depth;
	uint64_t request_size;		/* multiple of FETCH_ALIGN */
};

struct fetch_stats {
	uint64_t bytes_read;		/* as returned by the reads */
	uint64_t requests;		/* reads issued, resubmissions included */
	uint64_t requests_fixed;	/* of which IORING_OP_READ_FIXED */
	uint64_t short_reads;		/* resubmitted for the remainder */
	uint64_t retries;		/* -EAGAIN / -EINTR */
	uint64_t errors;		/* reads that failed */
	uint64_t submit_errors;		/* io_uring_submit refusals */
	uint64_t jobs_done;
	uint64_t jobs_failed;
	uint64_t jobs_cancelled;
};

/* err is 0 or a negative errno; bytes is what the job's reads returned. */
typedef void (*fetch_done_fn)(void *arg, int err, uint64_t bytes);

int fetch_create(struct fetch **out, const struct fetch_opts *o, char *err, size_t errlen);
/* Waits for reads in flight; queued jobs are dropped without callbacks. */
void fetch_destroy(struct fetch *f);

/* Registers destination memory; reads into it use IORING_OP_READ_FIXED. */
int fetch_register_buffers(struct fetch *f, const struct iovec *iov, unsigned n);
/* Opens a file O_DIRECT and registers it; returns its index or a negative errno. */
int fetch_file_open(struct fetch *f, const char *path, char *err, size_t errlen);
/*
 * Opens the file's path again in place of the open one (the checkpoint was
 * rewritten or replaced): reads issued from now on go to the new file, reads
 * in flight finish on the old one, which is closed.
 */
int fetch_file_reopen(struct fetch *f, unsigned file, char *err, size_t errlen);
uint64_t fetch_file_size(const struct fetch *f, unsigned file);
int fetch_file_fd(const struct fetch *f, unsigned file);

int fetch_job_create(struct fetch *f, enum fetch_prio prio, fetch_done_fn fn, void *arg,
		     struct fetch_job **out);
/* offset, length and dst must be FETCH_ALIGN aligned: -EINVAL otherwise. */
int fetch_job_add(struct fetch_job *j, unsigned file, uint64_t offset, uint64_t length, void *dst);
/* Queues the job and issues what the queue depth allows.  The job belongs to
 * the engine from here; it is freed after its callback, which always comes
 * from fetch_process or fetch_wait, never from in here.  0, or -EINVAL for a
 * job already submitted or without extents. */
int fetch_job_submit(struct fetch_job *j);
/* Drops a submitted job that has not issued a read yet (no callback): -EBUSY
 * if it has, -EINVAL if it was never submitted. */
int fetch_job_cancel(struct fetch_job *j);
/* A prefetch that a client now waits for moves to the demand queue. */
void fetch_job_promote(struct fetch_job *j);
bool fetch_job_started(const struct fetch_job *j);
/* Frees a job that was never submitted. */
void fetch_job_free(struct fetch_job *j);

int fetch_fd(const struct fetch *f);
/* Reaps completions, runs callbacks, issues queued work.  Returns the number
 * of jobs completed or a negative errno. */
int fetch_process(struct fetch *f);
/* Blocks until at least one read completes, then processes; does not block
 * when the kernel has no read of ours (failed jobs are then called back). */
int fetch_wait(struct fetch *f);
/* Jobs queued or in flight. */
unsigned fetch_pending(const struct fetch *f);
void fetch_get_stats(const struct fetch *f, struct fetch_stats *st);

/* Tests only: submissions go through fn instead of io_uring_submit (NULL
 * restores it), so that the kernel's refusals can be had on demand. */
struct io_uring;
typedef int (*fetch_submit_fn)(struct io_uring *ring, void *arg);
void fetch_set_submit_hook(struct fetch *f, fetch_submit_fn fn, void *arg);

#endif
