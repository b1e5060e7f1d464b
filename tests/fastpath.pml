/*
 * SPDX-License-Identifier: MIT
 *
 * The no-system-call acquire protocol (tierd/proto/tierd-fastpath.h),
 * checked by tests/fastpath-model.sh with spin: one residency table entry
 * and the slot it names, NCLIENTS clients pinning it through their own pin
 * areas, and the daemon evicting it, reusing the slot for another expert
 * and filling it again with the same expert (the ABA case the generations
 * are for).  A client may die at any point, a pin held; the daemon then
 * drops its area (its socket closed).
 *
 * Spin interleaves statements of a sequentially consistent machine; the
 * C code gets the same order from seq_cst atomics.  Every atomic access of
 * the C code is one statement here.
 *
 * Safety: while a client holds a pin it validated, the slot holds its
 * expert (assertion, and the LTL property below).  Broken orderings, to
 * show that the check catches them:
 *   -DBROKEN_DAEMON  the daemon scans the pins before it unpublishes
 *   -DBROKEN_CLIENT  the client re-reads the generation before it pins
 *   -DNO_GENERATION  the client checks "published" only, not "the same
 *                    generation" (misses the ABA of evict, reuse, refill)
 */

#define NCLIENTS	2
#define ROUNDS		2	/* acquires per client */
#define EVICTIONS	2	/* eviction attempts by the daemon */
#define KEY		1	/* the expert the entry describes */
#define OTHER		2	/* another expert, reusing the slot */

byte gen = 0;			/* even: published */
byte where = 0;			/* the slot the entry names */
byte slot[2];			/* what each slot holds now */
byte pins[NCLIENTS];		/* each client's pin area, its entry */
bool alive[NCLIENTS];
bool held[NCLIENTS];		/* a validated pin, in use */

byte mine[NCLIENTS];		/* the slot each client read from the entry */

ltl safe { [] ((!held[0] || slot[mine[0]] == KEY) && (!held[1] || slot[mine[1]] == KEY)) }

proctype client(byte id)
{
	byte g1, g2, n = 0;

	do
	:: n < ROUNDS ->
		n++;
		g1 = gen;
		if
		:: g1 % 2 == 1 -> skip		/* not servable: the socket */
		:: else ->
			mine[id] = where;
#ifdef BROKEN_CLIENT
			g2 = gen;
			pins[id]++;
#else
			pins[id]++;
			g2 = gen;
#endif
			if
#ifdef NO_GENERATION
			:: g2 % 2 == 1 -> pins[id]--
			:: else ->
#else
			:: g2 != g1 -> pins[id]--
			:: else ->
#endif
				held[id] = true;
				assert(slot[mine[id]] == KEY);
				if
				:: true ->
					assert(slot[mine[id]] == KEY);
					held[id] = false;
					pins[id]--
				:: true ->
					goto die	/* killed holding the pin */
				fi
			fi
		fi
	:: true -> goto die			/* killed between acquires */
	:: n == ROUNDS -> break
	od;
	goto out;
die:
	/* The kernel closes its socket; the daemon drops the area with it. */
	atomic { held[id] = false; alive[id] = false };
out:
	skip
}

proctype daemon()
{
	byte i, k = 0;
	bool pinned;

	do
	:: k < EVICTIONS && gen % 2 == 0 ->
		k++;
		pinned = false;
#ifndef BROKEN_DAEMON
		gen++;				/* unpublish: odd */
#endif
		i = 0;
		do
		:: i < NCLIENTS ->
			if
			:: alive[i] && pins[i] > 0 -> pinned = true
			:: else -> skip
			fi;
			i++
		:: i == NCLIENTS -> break
		od;
#ifdef BROKEN_DAEMON
		gen++;
#endif
		if
		:: pinned ->
			gen++			/* kept: published again, new generation */
		:: else ->
			slot[where] = OTHER;	/* freed, reused by another expert */
			where = 1 - where;	/* the expert fetched again, elsewhere */
			slot[where] = KEY;
			gen++			/* published again */
		fi
	:: k == EVICTIONS || gen % 2 == 1 -> break
	od
}

init
{
	byte i = 0;

	atomic {
		slot[0] = KEY;
		slot[1] = OTHER;
		do
		:: i < NCLIENTS -> alive[i] = true; i++
		:: i == NCLIENTS -> break
		od;
		i = 0;
		do
		:: i < NCLIENTS -> run client(i); i++
		:: i == NCLIENTS -> break
		od;
		run daemon()
	}
}
