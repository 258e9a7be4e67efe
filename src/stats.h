/* stats.h: pqdedup's counters, printed as one machine-readable line at exit. */
#ifndef PQDEDUP_STATS_H
#define PQDEDUP_STATS_H

#include <stdatomic.h>
#include <stdint.h>

#define STATS_COUNTERS(X) \
    X(connects)      /* connects the app asked for (not passed through) */ \
    X(opened)        /* server connections opened */ \
    X(reused)        /* handles given a free server connection */ \
    X(moved)         /* handles given the server connection of an idle handle */ \
    X(resets)        /* server connections reset for the next handle */ \
    X(dead)          /* server connections found dead or failing their reset, discarded */ \
    X(closed)        /* server connections pqdedup really closed */ \
    X(refusals)      /* new connections the server refused for lack of slots */ \
    X(waits)         /* connects and rebinds that waited for a server connection */ \
    X(wait_failures) /* ... and got none within PQDEDUP_MAX_WAIT */ \
    X(passthrough)   /* connects handed to libpq untouched */

struct pqdedup_stats {
#define STATS_FIELD(name) _Atomic uint64_t name;
    STATS_COUNTERS(STATS_FIELD)
#undef STATS_FIELD
};

extern struct pqdedup_stats stats;

#define stats_add(counter) atomic_fetch_add_explicit(&stats.counter, 1, memory_order_relaxed)

/* Formats "pqdedup_stats pid=N connects=N ..." into buf (always NUL-terminated). */
void stats_format(char *buf, unsigned long size);

/* The process made its first libpq connect or ping: from now on it has a stats line. */
void stats_mark_used(void);

/* Writes the stats line to the log destination when PQDEDUP_STATS is on and the process used
 * libpq (a program that never did prints nothing). */
void stats_print_if_asked(void);

#endif
