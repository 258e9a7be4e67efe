/* stats.c: formats pqdedup's counters. */
#define _GNU_SOURCE
#include "stats.h"
#include "log.h"

#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

struct pqdedup_stats stats;
static _Atomic bool libpq_used;

void stats_mark_used(void)
{
    atomic_store(&libpq_used, true);
}

void stats_format(char *buf, unsigned long size)
{
    int used = snprintf(buf, size, "stats");
#define STATS_PRINT(name)                                                              \
    if (used >= 0 && (unsigned long) used < size)                                      \
        used += snprintf(buf + used, size - (unsigned long) used, " " #name "=%llu",     \
                         (unsigned long long) atomic_load_explicit(&stats.name, memory_order_relaxed));
    STATS_COUNTERS(STATS_PRINT)
#undef STATS_PRINT
}

void stats_print_if_asked(void)
{
    if (!settings.stats || !atomic_load(&libpq_used))
        return;
    char line[512];
    stats_format(line, sizeof line);
    log_always(line);
}
