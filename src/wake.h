/* wake.h: what an asynchronous connect that waits for a server connection gives the app to
 * poll: a socket that turns readable when the pool changes, or at a time. */
#ifndef PQDEDUP_WAKE_H
#define PQDEDUP_WAKE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* A socket pair: the app polls `fd` (a socket, as Ruby's pg requires of PQsocket); pqdedup
 * writes one byte into `writer` to wake it. Zeroed memory is not a valid wake: wake_open or
 * wake_init first. */
struct wake {
    int fd, writer;               /* -1 when closed */
    _Atomic bool fired;           /* a byte is (or is about to be) waiting in `fd` */
    bool timed;                   /* on the timer's list, to fire at `at` */
    int64_t at;                   /* CLOCK_MONOTONIC ns */
    struct wake *prev, *next;     /* the timer's list */
};

/* A closed wake. */
void wake_init(struct wake *w);

/* Opens w's sockets (not readable yet). Returns false, w closed, when the system refuses
 * (out of descriptors): errno says why. */
bool wake_open(struct wake *w);

/* Makes w readable now (at most one byte ever waits). Safe from any thread, under any of
 * pqdedup's locks. */
void wake_fire(struct wake *w);

/* Makes w readable at `when` (CLOCK_MONOTONIC ns), unless fired or closed before. The first
 * timed wake of a process starts one timer thread (all signals blocked), which sleeps while
 * no wake is timed. Falls back to firing at once if the thread cannot be started. */
void wake_at(struct wake *w, int64_t when);

/* Reads what was fired, so that w is not readable until fired again. Call before looking at
 * what w waits for, so a change after the look fires it again. */
void wake_drain(struct wake *w);

/* Takes w off the timer and closes its sockets. A closed wake is allowed. */
void wake_close(struct wake *w);

/* Fork handlers (pool.c calls them with its own): the timer's lock is held across fork; in
 * the child the timer thread is gone and is started again at its next timed wake. */
void wake_lock_for_fork(void);
void wake_unlock_after_fork(bool in_child);

#endif
