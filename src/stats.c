/* stats.c: formats pqdedup's counters, and what was left unfinished, for the exit report. */
#define _GNU_SOURCE
#include "stats.h"
#include "clock.h"
#include "log.h"
#include "stats_file.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static _Atomic bool libpq_used;

void stats_mark_used(void)
{
    atomic_store(&libpq_used, true);
}

/* Unfinished handles at exit, counted by stats_count_unfinished. */
static void count_unfinished(const char *key, const char *module, const char *function, unsigned count,
                             int64_t oldest_ns, void *arg)
{
    (void) key, (void) module, (void) function, (void) oldest_ns;
    *(unsigned long long *) arg += count;
}

void stats_format(char *buf, unsigned long size)
{
    int used = snprintf(buf, size, "stats");
    /* A time is printed in whole milliseconds as name_ms (wait_ns: wait_ms). */
#define STATS_PRINT(name, scope, unit, metric, help)                                                   \
    if (used >= 0 && (unsigned long) used < size) {                                                    \
        unsigned long long value = atomic_load_explicit(&stats_now->name, memory_order_relaxed);       \
        if (STATS_UNIT_##unit == STATS_UNIT_NS)                                                        \
            used += snprintf(buf + used, size - (unsigned long) used, " %.*s_ms=%llu",                 \
                             (int) strlen(#name) - 3, #name, value / (unsigned long long) NS_PER_MS); \
        else                                                                                           \
            used += snprintf(buf + used, size - (unsigned long) used, " " #name "=%llu", value);       \
    }
    STATS_COUNTERS(STATS_PRINT)
#undef STATS_PRINT
    unsigned long long unfinished = 0;
    stats_file_for_each_unfinished(count_unfinished, &unfinished);
    if (used >= 0 && (unsigned long) used < size)
        snprintf(buf + used, size - (unsigned long) used, " unfinished=%llu", unfinished);
}

/* One line per key and site with handles left unfinished. */
static void print_unfinished(const char *key, const char *module, const char *function, unsigned count,
                             int64_t oldest_ns, void *arg)
{
    (void) arg;
    char line[512];
    snprintf(line, sizeof line, "unfinished handles=%u key=%s site=%s%s%s oldest=%.1fs", count, key, module,
             function[0] != '\0' ? ":" : "", function, (double) oldest_ns / (double) NS_PER_SEC);
    log_always(line);
}

void stats_print_if_asked(void)
{
    if (!settings.stats || !atomic_load(&libpq_used))
        return;
    char line[1024];
    stats_format(line, sizeof line);
    log_always(line);
    stats_file_for_each_unfinished(print_unfinished, NULL);
}
