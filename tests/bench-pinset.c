/* SPDX-License-Identifier: MIT */
/*
 * Pin-set micro-benchmark (not a test: built by `make tests/bench-pinset`).
 * For sets of 16 to 4096 experts, what the service does per key of an
 * ACQUIRE and its RELEASE: one more hold on a key held and one fewer, and a
 * key not held added and dropped (its entry made and removed).  Prints the
 * best of three runs in ns per such round of four calls.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "pinset.h"

#define BENCH_ROUNDS 2000000u

/* pinset_release_all() is not measured. */
int engine_release(struct engine *e, const struct tierd_key *key)
{
	(void)e;
	(void)key;
	return 0;
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(void)
{
	static const size_t sizes[] = { 16, 64, 256, 1024, 4096 };

	printf("experts held  ns per round (add+drop held, add+drop new)\n");
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		size_t n = sizes[s];
		struct pinset ps = { 0 };
		double best = 0;

		for (size_t i = 0; i < n; i++) {
			struct tierd_key k = { 0, (uint32_t)(i / 64), (uint32_t)(i % 64) };

			if (pinset_add(&ps, &k)) {
				fprintf(stderr, "bench-pinset: out of memory\n");
				return 1;
			}
		}
		for (int run = 0; run < 3; run++) {
			double t0 = now_s(), dt;
			int err = 0;

			for (uint32_t i = 0; i < BENCH_ROUNDS; i++) {
				/* Held keys visited in a scattered order. */
				uint32_t j = (uint32_t)((i * 2654435761u) % n);
				struct tierd_key held = { 0, j / 64, j % 64 }, other = { 1, j / 64, j % 64 };

				err |= pinset_add(&ps, &held) | pinset_drop(&ps, &held);
				err |= pinset_add(&ps, &other) | pinset_drop(&ps, &other);
			}
			dt = (now_s() - t0) * 1e9 / BENCH_ROUNDS;
			if (err) {
				fprintf(stderr, "bench-pinset: a pin set call failed\n");
				return 1;
			}
			if (!run || dt < best)
				best = dt;
		}
		printf("%12zu  %8.1f\n", n, best);
		pinset_free(&ps);
	}
	return 0;
}
