/* SPDX-License-Identifier: MIT */
/*
 * The predictor learns a deterministic synthetic chain exactly (layer L
 * expert e, then L+1 expert e+1; token t+1 at layer L expert e+1), and the
 * daemon's prefetch choice follows it without displacing what is pinned or
 * more likely needed.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cache.h"
#include "predict.h"
#include "prefetch.h"

#define NL	6
#define NE	16
#define K	2

/* The chain: token t, layer l uses experts (t + l + i * 8) % NE, i < K. */
static void chain(uint32_t t, uint32_t l, uint32_t *x)
{
	for (uint32_t i = 0; i < K; i++)
		x[i] = (t + l + i * 8) % NE;
}

static bool in_chain(uint32_t t, uint32_t l, uint32_t e)
{
	uint32_t x[K];

	chain(t, l, x);
	for (uint32_t i = 0; i < K; i++)
		if (x[i] == e)
			return true;
	return false;
}

static void test_chain_learned(void **state)
{
	struct predict *p;
	uint32_t x[K];
	double w[PREDICT_NEST];

	assert_int_equal(predict_create(&p, 4), 0);
	assert_int_equal(predict_model(p, 0, NL, NE), 0);
	/* Nothing known yet: no guess. */
	assert_int_equal(predict_guess(p, 0, 1, 0.5, NULL, 0), 0);
	for (uint32_t t = 0; t < 3 * NE; t++)
		for (uint32_t l = 0; l < NL; l++) {
			chain(t, l, x);
			assert_int_equal(predict_observe(p, 0, 1, l, x, K, false), 0);
		}
	/* From now on, before each layer runs, the guess for it is exactly
	 * what it uses, the wrong experts near 0. */
	for (uint32_t t = 3 * NE; t < 4 * NE; t++)
		for (uint32_t l = 0; l < NL; l++) {
			struct predict_guess g[8];
			size_t n = predict_guess(p, 0, 1, 0.5, g, 8);

			assert_int_equal(n, K);
			for (size_t i = 0; i < n; i++) {
				assert_int_equal(g[i].layer, l);
				assert_true(in_chain(t, l, g[i].expert));
				if (g[i].p < 0.9)
					fail_msg("token %u layer %u expert %u: p %g", t, l, g[i].expert, g[i].p);
			}
			for (uint32_t e = 0; e < NE; e++)
				if (!in_chain(t, l, e))
					assert_true(predict_prob(p, 0, l, e, PREDICT_ALL) < 0.01);
			chain(t, l, x);
			assert_int_equal(predict_observe(p, 0, 1, l, x, K, false), 0);
		}
	/* The exact estimates earned the weight. */
	predict_weights(p, 0, w);
	assert_true(w[PREDICT_XLAYER] + w[PREDICT_XTOKEN] > 0.99);
	/* Out of shape. */
	x[0] = NE;
	assert_int_equal(predict_observe(p, 0, 1, 0, x, 1, false), -ERANGE);
	assert_int_equal(predict_observe(p, 0, 1, NL, x, 0, false), -ERANGE);
	assert_int_equal(predict_observe(p, 1, 1, 0, x, 0, false), -ERANGE);
	/* Forgotten sequence: no position, no guess. */
	predict_forget(p, 1);
	assert_int_equal(predict_next_layer(p, 0, &x[0], &x[1]), -ENOENT);
	predict_destroy(p);
}

/* Hints (a prompt) teach the same as acquires, and a hint and an acquire of
 * the same layer belong to one token. */
static void test_hints(void **state)
{
	struct predict *p;
	uint32_t x[K], L, nl;

	assert_int_equal(predict_create(&p, 4), 0);
	assert_int_equal(predict_model(p, 0, NL, NE), 0);
	for (uint32_t t = 0; t < 3 * NE; t++)
		for (uint32_t l = 0; l < NL; l++) {
			chain(t, l, x);
			assert_int_equal(predict_observe(p, 0, 9, l, x, K, true), 0);
			assert_int_equal(predict_observe(p, 0, 9, l, x, K, false), 0);
		}
	assert_int_equal(predict_next_layer(p, 0, &L, &nl), 0);
	assert_int_equal(L, 0);
	assert_int_equal(nl, NL);
	for (uint32_t e = 0; e < NE; e++)
		assert_true((predict_prob(p, 0, 0, e, PREDICT_ALL) > 0.99) == in_chain(3 * NE, 0, e));
	predict_destroy(p);
}

/* The ranking follows each step at once.  Layer 0 draws at random, each
 * later layer follows the one before exactly: only the cross-layer estimate
 * knows, and right after layer l ran, layer l+1's experts are expected next
 * and the others far off (a layer's vector kept from before layer l ran would
 * not know them). Every layer is ranked after each step, as eviction scans do. */
static void test_ranking_follows(void **state)
{
	struct predict *p;
	uint32_t x[K], bad = 0;
	uint64_t r = 7;

	assert_int_equal(predict_create(&p, 4), 0);
	assert_int_equal(predict_model(p, 0, NL, NE), 0);
	for (uint32_t t = 0; t < 200; t++) {
		uint32_t x0;

		r = r * 6364136223846793005ull + 1442695040888963407ull;
		x0 = (uint32_t)(r >> 33) % 8;
		for (uint32_t l = 0; l < NL; l++) {
			x[0] = (x0 + 3 * l) % NE;
			x[1] = (x0 + 3 * l + 8) % NE;
			assert_int_equal(predict_observe(p, 0, 1, l, x, K, false), 0);
			for (uint32_t o = 0; o < NL; o++)
				(void)predict_next_use(p, 0, o, 0, PREDICT_ALL);
			if (t < 100 || l + 1 == NL)
				continue;
			for (uint32_t e = 0; e < NE; e++) {
				double nu = predict_next_use(p, 0, l + 1, e, PREDICT_ALL);
				bool next = e == (x0 + 3 * (l + 1)) % NE || e == (x0 + 3 * (l + 1) + 8) % NE;

				if (next ? nu > 2 : nu < 4 * NL)
					bad++;
			}
		}
	}
	assert_int_equal(bad, 0);
	predict_destroy(p);
}

/* Decoding repeats itself: a sequence that loops over P tokens of random
 * sets is predicted by the copy estimate alone (asked through its mask) once
 * it has been round the loop: the matched earlier token's successor. */
static void test_copy_repeats(void **state)
{
	enum { P = 5 };
	uint32_t sets[P][NL][K], miss = 0, guessed = 0;
	struct predict *p;
	uint64_t r = 99;

	for (uint32_t t = 0; t < P; t++)
		for (uint32_t l = 0; l < NL; l++) {
			r = r * 6364136223846793005ull + 1442695040888963407ull;
			sets[t][l][0] = (uint32_t)(r >> 33) % NE;
			sets[t][l][1] = (sets[t][l][0] + 1 + (uint32_t)(r >> 40) % (NE - 1)) % NE;
		}
	assert_int_equal(predict_create(&p, 4), 0);
	assert_int_equal(predict_model(p, 0, NL, NE), 0);
	for (uint32_t t = 0; t < 12 * P; t++)
		for (uint32_t l = 0; l < NL; l++) {
			const uint32_t *x = sets[t % P][l];

			if (t >= 4 * P)
				for (uint32_t e = 0; e < NE; e++) {
					double pc = predict_prob(p, 0, l, e, 1u << PREDICT_COPY);
					bool used = e == x[0] || e == x[1];

					miss += used ? pc < 0.75 : pc > 0.25;
				}
			if (t >= 8 * P) {
				struct predict_guess g[K];
				size_t n = predict_guess(p, 0, 1, 0.5, g, K);

				for (size_t i = 0; i < n; i++)
					guessed += g[i].layer == l && (g[i].expert == x[0] || g[i].expert == x[1]);
			}
			assert_int_equal(predict_observe(p, 0, 1, l, x, K, false), 0);
		}
	assert_int_equal(miss, 0);
	/* The mixture learnt to trust it: the daemon's prefetch guesses each
	 * layer's two experts. */
	assert_int_equal(guessed, 4 * P * NL * K);
	predict_destroy(p);

	/* A client that hints each layer, then acquires it: one token, and
	 * the acquire scores the copy estimate of that token's layer (not of
	 * the next token's), so the estimate keeps its weight. */
	for (int hinted = 0; hinted < 2; hinted++) {
		double w[PREDICT_NEST];

		assert_int_equal(predict_create(&p, 4), 0);
		assert_int_equal(predict_model(p, 0, NL, NE), 0);
		for (uint32_t t = 0; t < 12 * P; t++)
			for (uint32_t l = 0; l < NL; l++) {
				if (hinted)
					assert_int_equal(predict_observe(p, 0, 1, l, sets[t % P][l], K, true), 0);
				assert_int_equal(predict_observe(p, 0, 1, l, sets[t % P][l], K, false), 0);
			}
		predict_weights(p, 0, w);
		if (w[PREDICT_COPY] < 0.15)
			fail_msg("hinted %d: copy estimate's weight %g", hinted, w[PREDICT_COPY]);
		predict_destroy(p);
	}
}

/* Layer 0 runs after the last layer: its ranking follows that layer's run.
 * Tokens A, then B followed by D or C followed by E at random: B and C share
 * layer 0 and differ later, D and E differ at layer 0.  Right after B's or
 * C's last layer, the copy estimate ranks D's (or E's) layer 0 experts
 * before the other's. */
static void test_ranking_wraps(void **state)
{
	uint32_t set[5][NL][K], bad = 0;
	struct predict *p;
	uint64_t r = 5;

	for (uint32_t k = 0; k < 5; k++)
		for (uint32_t l = 0; l < NL; l++) {
			set[k][l][0] = (k * 3 + l * 5) % NE;
			set[k][l][1] = (k * 3 + l * 5 + 8) % NE;
		}
	/* B and C share layer 0; D and E differ there (k = 3, 4 as drawn). */
	memcpy(set[2][0], set[1][0], sizeof(set[1][0]));
	assert_int_equal(predict_create(&p, 4), 0);
	assert_int_equal(predict_model(p, 0, NL, NE), 0);
	for (uint32_t round = 0; round < 40; round++) {
		uint32_t b;

		r = r * 6364136223846793005ull + 1442695040888963407ull;
		b = (r >> 40) & 1;
		for (uint32_t i = 0; i < 3; i++) {
			uint32_t k = i == 0 ? 0 : i == 1 ? 1 + b : 3 + b;

			for (uint32_t l = 0; l < NL; l++) {
				assert_int_equal(predict_observe(p, 0, 1, l, set[k][l], K, false), 0);
				/* Every layer ranked after each step, as eviction does. */
				for (uint32_t o = 0; o < NL; o++)
					(void)predict_next_use(p, 0, o, 0, 1u << PREDICT_COPY);
			}
			if (round < 10 || i != 1)
				continue;
			/* Next: D (b = 0) or E (b = 1) at layer 0. */
			for (uint32_t j = 0; j < K; j++)
				for (uint32_t q = 0; q < K; q++)
					bad += predict_next_use(p, 0, 0, set[3 + b][0][j], 1u << PREDICT_COPY) >=
					       predict_next_use(p, 0, 0, set[4 - b][0][q], 1u << PREDICT_COPY);
		}
	}
	assert_int_equal(bad, 0);
	predict_destroy(p);
}

/* Two sequences decode side by side (A always uses experts 0 and 1, B 8
 * and 9): a key either needs is expected soon, whichever acted last; one
 * neither uses is not; a sequence that stopped (or was forgotten) no longer
 * keeps its keys. */
static void test_sequences_side_by_side(void **state)
{
	const uint32_t a[K] = { 0, 1 }, b[K] = { 8, 9 };
	const unsigned masks[] = { PREDICT_ALL, PREDICT_ACTIVATION, PREDICT_ALL | PREDICT_STACKED };
	struct predict *p;

	assert_int_equal(predict_create(&p, 16), 0);
	assert_int_equal(predict_model(p, 0, NL, NE), 0);
	/* Ten connections that acquired once and went idle: they neither
	 * rank nor widen the window of who is still decoding. */
	for (uint64_t q = 10; q < 20; q++)
		assert_int_equal(predict_observe(p, 0, q, 0, a, 1, false), 0);
	for (uint32_t t = 0; t < 8; t++)
		for (uint32_t l = 0; l < NL; l++) {
			assert_int_equal(predict_observe(p, 0, 1, l, a, K, false), 0);
			assert_int_equal(predict_observe(p, 0, 2, l, b, K, false), 0);
		}
	/* A new client's prompt, a hundred tokens of hints, does not age A. */
	for (uint32_t t = 0; t < 100; t++)
		for (uint32_t l = 0; l < NL; l++)
			assert_int_equal(predict_observe(p, 0, 3, l, b, K, true), 0);
	for (size_t i = 0; i < sizeof(masks) / sizeof(masks[0]); i++)
		for (uint32_t l = 0; l < NL; l++) {
			/* At most the distance to the layer plus a fraction of a pass. */
			assert_true(predict_next_use(p, 0, l, 0, masks[i]) < 2 * NL);
			assert_true(predict_next_use(p, 0, l, 8, masks[i]) < 2 * NL);
			assert_true(predict_next_use(p, 0, l, 4, masks[i]) > 10 * NL);
		}
	/* A stops; B runs eight more tokens (more than two turns of A, B and
	 * the client that hinted): A's keys are no longer needed. */
	for (uint32_t t = 0; t < 8; t++)
		for (uint32_t l = 0; l < NL; l++)
			assert_int_equal(predict_observe(p, 0, 2, l, b, K, false), 0);
	assert_true(predict_next_use(p, 0, 0, 0, PREDICT_ALL) > 10 * NL);
	assert_true(predict_next_use(p, 0, 0, 8, PREDICT_ALL) < 2 * NL);
	/* A comes back, then is forgotten (its client left). */
	assert_int_equal(predict_observe(p, 0, 1, 0, a, K, false), 0);
	assert_true(predict_next_use(p, 0, 1, 0, PREDICT_ALL) < 2 * NL);
	assert_int_equal(predict_observe(p, 0, 2, 0, b, K, false), 0);
	assert_true(predict_next_use(p, 0, 1, 0, PREDICT_ALL) < 2 * NL);
	predict_forget(p, 1);
	assert_true(predict_next_use(p, 0, 1, 0, PREDICT_ALL) > 10 * NL);
	predict_destroy(p);
}

/* The prefetch choice: the chain's next layer, nothing resident again, the
 * budget held, and a guess never displaces a pinned expert. */
static void test_prefetch_plan(void **state)
{
	struct prefetch_conf pc = { .depth = 2, .min_prob = 0.5 };
	struct predict_guess g[16];
	struct cache *c;
	struct cache_entry *e;
	uint32_t x[K];
	size_t n;

	assert_int_equal(cache_create(&c, "predictive"), 0);
	assert_int_equal(predict_model(cache_predictor(c), 0, NL, NE), 0);
	for (uint32_t t = 0; t < 3 * NE; t++)
		for (uint32_t l = 0; l < 3; l++) {
			chain(t, l, x);
			assert_int_equal(cache_observe(c, 0, 1, l, x, K, false), 0);
		}
	/* Layer 2 of token 3*NE-1 ran; layers 3 to 5 never route (as dense
	 * layers would not): the next two that do are 0 and 1 of token 3*NE. */
	n = prefetch_plan(&pc, c, 0, 0, 0, 100, g, 16);
	assert_int_equal(n, 2 * K);
	for (size_t i = 0; i < n; i++)
		assert_true(g[i].layer == i / K && in_chain(3 * NE, g[i].layer, g[i].expert));
	for (uint32_t t = 3 * NE; t < 4 * NE; t++)
		for (uint32_t l = 0; l < NL; l++) {
			chain(t, l, x);
			assert_int_equal(cache_observe(c, 0, 1, l, x, K, false), 0);
		}
	n = prefetch_plan(&pc, c, 0, 0, 0, 100, g, 16);
	assert_int_equal(n, 2 * K);
	for (size_t i = 0; i < n; i++)
		assert_true(in_chain(4 * NE, g[i].layer, g[i].expert) && g[i].layer == i / K);
	/* Resident already: left out. */
	{
		struct tierd_key k = { 0, g[0].layer, g[0].expert };

		assert_int_equal(cache_add(c, &k, 0, &e), 0);
		cache_set_resident(c, e);
	}
	assert_int_equal(prefetch_plan(&pc, c, 0, 0, 0, 100, g, 16), 2 * K - 1);
	/* Budgets: slots outstanding, bytes in flight. */
	pc.max_slots = 3;
	assert_int_equal(prefetch_plan(&pc, c, 0, 2, 0, 100, g, 16), 1);
	pc.max_slots = 0;
	pc.max_bytes = 250;
	assert_int_equal(prefetch_plan(&pc, c, 0, 0, 100, 100, g, 16), 1);
	pc.max_bytes = 0;
	/* The resident chain expert is needed sooner than a guess for layer 1:
	 * not displaced; an expert never used is. */
	n = prefetch_plan(&pc, c, 0, 0, 0, 100, g, 16);
	{
		struct predict_guess later = { .layer = 1, .expert = g[0].expert, .p = 0.9 };
		struct tierd_key k = { 0, 5, 3 };
		struct cache_entry *cold;

		assert_false(prefetch_may_displace(c, 0, &later, e));
		assert_int_equal(cache_add(c, &k, 1, &cold), 0);
		cache_set_resident(c, cold);
		assert_true(prefetch_may_displace(c, 0, &g[0], cold));
		/* Pinned: the cache never offers it, so nothing is displaced. */
		cache_pin(c, cold);
		cache_pin(c, e);
		assert_int_equal(cache_victim(c, NULL, NULL, &e), -ENOSPC);
	}
	cache_destroy(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chain_learned),
		cmocka_unit_test(test_hints),
		cmocka_unit_test(test_ranking_follows),
		cmocka_unit_test(test_copy_repeats),
		cmocka_unit_test(test_ranking_wraps),
		cmocka_unit_test(test_sequences_side_by_side),
		cmocka_unit_test(test_prefetch_plan),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
