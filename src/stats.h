/* stats.h: pqdedup's counters, printed as one machine-readable line at exit. */
#ifndef PQDEDUP_STATS_H
#define PQDEDUP_STATS_H

#include <stdatomic.h>
#include <stdint.h>

#define STATS_COUNTERS(X) \
    X(connects)      /* connects the app asked for (not passed through) */ \
    X(opened)        /* server connections opened for the app */ \
    X(reused)        /* connects answered with a kept connection */ \
    X(shared)        /* connects answered with a connection another handle holds */ \
    X(resets)        /* connections cleaned and kept at finish */ \
    X(dead)          /* kept connections found dead and discarded */ \
    X(closed)        /* server connections pqdedup really closed */ \
    X(cap_waits)     /* connects that waited at PQDEDUP_MAX_PER_KEY */ \
    X(cap_failures)  /* connects refused at PQDEDUP_MAX_PER_KEY */ \
    X(passthrough)   /* connects and finishes handed to libpq untouched */

struct pqdedup_stats {
#define STATS_FIELD(name) _Atomic uint64_t name;
    STATS_COUNTERS(STATS_FIELD)
#undef STATS_FIELD
};

extern struct pqdedup_stats stats;

#define stats_add(counter) atomic_fetch_add_explicit(&stats.counter, 1, memory_order_relaxed)

/* Formats "pqdedup_stats pid=N connects=N ..." into buf (always NUL-terminated). */
void stats_format(char *buf, unsigned long size);

/* Writes the stats line to the log destination when PQDEDUP_STATS is on. */
void stats_print_if_asked(void);

#endif
