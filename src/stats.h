/* stats.h: pqdedup's counters: the one list of them, kept in the live stats file
 * (stats_file.h) and printed as one machine-readable line at exit. */
#ifndef PQDEDUP_STATS_H
#define PQDEDUP_STATS_H

#include <stdatomic.h>
#include <stdint.h>

/* The one list of counters: X(name, scope, unit, metric, help).
 *   scope   KEY: counted for the process and for the key it happened to; PROCESS: for the
 *           process only
 *   unit    COUNT, or NS (a time in nanoseconds: the exit line prints it in ms as name_ms,
 *           Prometheus in seconds)
 *   metric  the Prometheus name after "pqdedup_" (pgbouncer_exporter's where the meaning is
 *           the same), in base units, _total for a counter
 * The exit line, the stats file, `pqdedup --stat` (text, JSON, Prometheus) all come from it. */
#define STATS_COUNTERS(X)                                                                        \
    X(connects, KEY, COUNT, "connects_total", "connects the app asked for (not passed through)") \
    X(opened, KEY, COUNT, "server_connections_opened_total", "server connections opened")         \
    X(reused, KEY, COUNT, "reused_total", "connects and rebinds given a free server connection")  \
    X(moved, KEY, COUNT, "moved_total",                                                           \
      "connects and rebinds given the server connection of an idle handle")                      \
    X(resets, KEY, COUNT, "resets_sent_total",                                                    \
      "server connections reset for the next handle (the reset query sent)")                     \
    X(resets_skipped, KEY, COUNT, "resets_skipped_total",                                         \
      "server connections handed on without the reset query (PQDEDUP_RESET=dirty found the "     \
      "session clean, or PQDEDUP_RESET_QUERY is empty)")                                          \
    X(dead, KEY, COUNT, "dead_server_connections_total",                                          \
      "server connections found dead or failing their reset or check, discarded")                 \
    X(closed, KEY, COUNT, "server_connections_closed_total", "server connections pqdedup closed") \
    X(refusals, KEY, COUNT, "refusals_total",                                                     \
      "new connections the server refused for lack of slots")                                    \
    X(waits, KEY, COUNT, "waits_total", "connects and rebinds that waited for a server connection") \
    X(wait_ns, KEY, NS, "client_wait_seconds_total",                                              \
      "time connects and rebinds spent waiting for a server connection")                         \
    X(wait_failures, KEY, COUNT, "wait_failures_total",                                           \
      "connects and rebinds that got no server connection within PQDEDUP_MAX_WAIT")              \
    X(passthrough, PROCESS, COUNT, "passthrough_total", "connects handed to libpq untouched")

enum stats_scope { STATS_SCOPE_KEY, STATS_SCOPE_PROCESS };
enum stats_unit { STATS_UNIT_COUNT, STATS_UNIT_NS };

struct pqdedup_stats {
#define STATS_FIELD(name, scope, unit, metric, help) _Atomic uint64_t name;
    STATS_COUNTERS(STATS_FIELD)
#undef STATS_FIELD
};

/* The process's counters: in the live stats region once the process made its first libpq
 * connect (stats_file.c), before that a static struct. */
extern struct pqdedup_stats *stats_now;

#define stats_add(counter) atomic_fetch_add_explicit(&stats_now->counter, 1, memory_order_relaxed)

/* Adds n to a counter of the process and of a key's counters (NULL: none). */
#define stats_add_n_key(key_counters, counter, n)                                           \
    do {                                                                                    \
        struct pqdedup_stats *stats_key_ = (key_counters);                                   \
        atomic_fetch_add_explicit(&stats_now->counter, (n), memory_order_relaxed);          \
        if (stats_key_ != NULL)                                                             \
            atomic_fetch_add_explicit(&stats_key_->counter, (n), memory_order_relaxed);     \
    } while (0)
#define stats_add_key(key_counters, counter) stats_add_n_key(key_counters, counter, 1)

/* Formats "stats connects=N ..." into buf (always NUL-terminated). */
void stats_format(char *buf, unsigned long size);

/* The process made its first libpq connect or ping: from now on it has a stats line. */
void stats_mark_used(void);

/* Writes the stats line to the log destination when PQDEDUP_STATS is on and the process used
 * libpq (a program that never did prints nothing), then a line for each key and place in the
 * program whose handles were left unfinished. */
void stats_print_if_asked(void);

#endif
