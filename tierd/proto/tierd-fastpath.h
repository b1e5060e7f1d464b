/* SPDX-License-Identifier: MIT */
/*
 * The no-system-call hit path: the shared memory the daemon and its clients
 * use beside the socket (protocol 1.3).  Both ends are on one host and built
 * from this header; the daemon checks nothing a client writes except through
 * the bounds below.
 *
 * Two memfds come with WELCOME, after the pool descriptors, when the client
 * speaks 1.3 and may map the pool:
 *
 *   the residency table: read-only for clients (sealed against writes the
 *     way the pool is); a header, then one entry per expert of every model,
 *     entry index = models[m].base + layer * experts_per_layer + expert.
 *     An entry says where the expert lies (pool, offset of its slot) and
 *     carries a generation: odd while the expert is not servable (absent,
 *     being evicted, being written), even while it is resident there.
 *   the client's pin area: one struct tierd_fast_pin per table entry,
 *     written only by that client (a memfd of its own the daemon made,
 *     sized and sealed against growing and shrinking before handing it
 *     over), read by the daemon; then one struct tierd_fast_area_tail, the
 *     one word the daemon writes: revoked, set when it drops the client
 *     (its pins protect nothing from then on: every acquire goes to the
 *     socket, which finds the connection closed).  The table header's
 *     flags get TIERD_FAST_F_SOCKET when the daemon stops.
 *
 * Acquire (client):               Evict (daemon, one thread):
 *   g1 = gen (acquire)              gen = g + 1, odd (seq_cst)
 *   g1 odd: socket                  fence (seq_cst)
 *   read pool, offset, layout       p = every area's pins[i] (seq_cst)
 *     (acquire)                     p != 0: gen = g + 2 (release), kept
 *   pins[i] += 1 (seq_cst)          else: slot freed, maybe reused
 *   g2 = gen (seq_cst)
 *   g2 != g1: pins[i] -= 1, socket
 * Release: pins[i] -= 1 (release).
 * Publish (daemon): fields (relaxed) while gen is odd, then gen = g + 1,
 * even (release).
 *
 * Each side stores to one location and then loads the other's, all
 * seq_cst (one total order): of two racing sides at least one sees the
 * other's store (store-load ordering, as in Dekker's algorithm), so either
 * the client sees the generation move and backs off, or the daemon sees the
 * pin and keeps the slot.  Generations only grow (64 bits never wrap), so
 * a slot evicted and refilled with the same expert between g1 and g2 is not
 * mistaken for the one read.  The daemon writes an entry's fields only
 * while its generation is odd, after a fence; a client's acquire load that
 * sees such a write also sees the odd generation, so fields read between
 * two equal even loads are one consistent version (a seqlock).  The client
 * uses no fence (ThreadSanitizer does not model them).  The protocol is
 * modelled in tests/fastpath.pml and checked with spin.
 *
 * Accesses: every fast acquire adds one to uses[i] (relaxed); the daemon
 * sums the differences into its hit counters and the eviction policy.
 */
#ifndef TIERD_FASTPATH_H
#define TIERD_FASTPATH_H

#include <stdatomic.h>
#include <stdint.h>

#include "tierd-proto.h"

#define TIERD_FAST_MAGIC	0x54534146u	/* "FAST" on little-endian */
#define TIERD_FAST_VERSION	1u
/* Entries in one table: bounds both mappings (8 bytes of pin area each). */
#define TIERD_FAST_MAX_ENTRIES	(1u << 22)

struct tierd_fast_model {
	uint32_t base;			/* first entry of the model */
	uint32_t nlayers;
	uint32_t experts_per_layer;
	uint32_t flags;			/* TIERD_FAST_MODEL_F_*; 0: no entries */
};

#define TIERD_FAST_MODEL_F_ON	0x1u
/* Every acquire through the socket for now: the daemon records a trace,
 * which must see each acquire (an acquire that read the flag before it was
 * set may still go without: a recording starts once clients see it). */
#define TIERD_FAST_F_SOCKET	0x1u

/* At offset 0 of the table; written once, before any client maps it,
 * except flags. */
struct tierd_fast_hdr {
	uint32_t magic;
	uint32_t version;
	uint32_t nmodels;
	uint32_t nentries;
	uint64_t entries_offset;	/* bytes from the table's start */
	_Atomic uint64_t flags;		/* TIERD_FAST_F_*, read at each acquire */
	struct tierd_fast_model models[TIERD_PROTO_MAX_MODELS];
};

struct tierd_fast_entry {
	_Atomic uint64_t gen;		/* odd: not servable */
	_Atomic uint64_t offset;	/* of the slot in its pool */
	_Atomic uint32_t pool;		/* 0; an index when pools are per NUMA node */
	_Atomic uint32_t layout;	/* changes when a reload may move tensors */
	uint64_t reserved;
};

struct tierd_fast_pin {
	_Atomic uint32_t pins;		/* the client's pins of the entry */
	_Atomic uint32_t uses;		/* fast acquires, wrapping */
};

/* After the last entry's pin: written by the daemon only. */
struct tierd_fast_area_tail {
	_Atomic uint64_t revoked;	/* non-zero: use the socket */
};

#endif
