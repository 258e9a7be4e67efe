/* stat_reader.h: `pqdedup --stat`: reads the live stats files of this user's processes under
 * pqdedup (stats_file.h), checks each one, and prints them (stat_format.c). */
#ifndef PQDEDUP_STAT_READER_H
#define PQDEDUP_STAT_READER_H

#include "stats.h"
#include "stats_file.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* The counters as an array, in STATS_COUNTERS order. */
enum stat_counter {
#define STAT_COUNTER_INDEX(name, scope, unit, metric, help) STAT_##name,
    STATS_COUNTERS(STAT_COUNTER_INDEX)
#undef STAT_COUNTER_INDEX
    STAT_COUNTERS
};

/* One key of a process: its counters and what its pool holds now. */
struct stat_key {
    uint64_t id;
    char name[112];            /* user@host:port/dbname */
    char label[128];           /* name, with "#" and 6 hex digits of the id when another key of
                                  the process has the same name */
    uint64_t counters[STAT_COUNTERS];
    unsigned handles[HANDLE_STATE_COUNT]; /* open handles by state (FREE: connects under way) */
    unsigned handles_open;     /* not FREE */
    unsigned handles_bound;    /* holding a server connection (BOUND, STARTED, PREPARING) */
    unsigned waiting;          /* connects and rebinds waiting for a server connection now */
    double longest_wait_s;     /* the longest of those waits so far (0: none) */
    long server_open, server_free, server_bound, server_busy;
};

/* Open handles of one key opened at one place in the program: the leak report's row. */
struct stat_group {
    unsigned key, site;        /* indexes into the process's keys and sites */
    unsigned count, in_call;   /* handles, and how many are inside a libpq call now */
    unsigned handles[HANDLE_STATE_COUNT];
    double oldest_s, newest_s; /* ages */
    double max_idle_s, min_idle_s; /* time since their last libpq call ended */
};

struct stat_site {
    char module[64], function[80];
};

struct stat_process {
    char path[4096];
    long pid;
    unsigned uid;
    char program[64], command[448], settings[256];
    double uptime_s, start_unix_s;
    uint64_t counters[STAT_COUNTERS];
    struct stat_key *keys;
    unsigned nkeys;
    struct stat_site *sites;
    unsigned nsites;
    struct stat_group *groups;
    unsigned ngroups;
};

/* What was read: the live processes, and a sentence for each file that was not shown. */
struct stat_snapshot {
    char dir[4096];
    struct stat_process *processes;
    unsigned nprocesses;
    char **notes;              /* "pqdedup-123.stats: ...: removed" and the like */
    unsigned nnotes;
    bool missing_pid;          /* a PID asked for had no readable file */
};

/* Reads every file in dir (or only those of `pids`, npids > 0), removing the files of processes
 * that are gone (dead, PID reused, or no longer mapping it after an exec). Never fails: a file
 * it cannot use becomes a note. Free with stat_snapshot_free. */
void stat_snapshot_read(struct stat_snapshot *snap, const char *dir, const long *pids, unsigned npids);
void stat_snapshot_free(struct stat_snapshot *snap);

/* Printers (stat_format.c). */
void stat_print_text(FILE *out, const struct stat_snapshot *snap);
void stat_print_json(FILE *out, const struct stat_snapshot *snap);
void stat_print_prometheus(FILE *out, const struct stat_snapshot *snap);

/* How `pqdedup --stat` prints. */
enum stat_output { STAT_TEXT, STAT_JSON, STAT_PROMETHEUS };

/* `pqdedup --stat [PID...]`: prints once, or with watch every interval_ns until interrupted.
 * Returns the exit status: 0, or 1 when a PID asked for was not found. */
int stat_main(const long *pids, unsigned npids, enum stat_output output, bool watch, int64_t interval_ns);

#endif
