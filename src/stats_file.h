/* stats_file.h: the live stats file, pqdedup-<pid>.stats: its layout, which the launcher's
 * reader (stat_reader.c) shares, and the library's hooks that keep it current.
 *
 * One file per process, mapped shared by the library and written with relaxed atomic stores
 * and adds only (no lock of its own, no system call after it is made); readers copy it with
 * read(2) and never write it. Layout, at fixed offsets:
 *
 *   struct stats_file_header    who wrote it: magic, layout, pid, uid, start time, command
 *   struct pqdedup_stats        the process's counters (stats.h)
 *   struct stats_file_key[64]   per key: its description, counters and a gauge; record 0
 *                               takes the keys that find the table full
 *   struct stats_file_site[128] where handles were opened: return address, module, function;
 *                               record 0 is "unknown" (and the overflow)
 *   struct stats_file_handle[N] one per handle slot (handle.c), same index: state, key, site,
 *                               opened, last call, waiting since; [0, handles_used) are read
 *
 * Times: CLOCK_MONOTONIC nanoseconds (the same clock in every process of a boot), except
 * start_unix_ns (the wall clock). Gauges the reader derives from the handle records: handles
 * open and bound per key (= server connections bound), connects waiting and the longest wait.
 */
#ifndef PQDEDUP_STATS_FILE_H
#define PQDEDUP_STATS_FILE_H

#include "handle_states.h"
#include "stats.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STATS_FILE_MAGIC "PQDDSTAT"
#define STATS_FILE_VERSION 1
#define STATS_FILE_KEYS 64
#define STATS_FILE_SITES 128
#define STATS_FILE_HANDLES 262144 /* handle.c's slots: 8 MiB of records, sparse */

struct stats_file_header {
    char magic[8];                  /* STATS_FILE_MAGIC, written last when the file is made */
    uint32_t version;               /* STATS_FILE_VERSION */
    uint32_t header_bytes, counters_bytes, key_bytes, site_bytes, handle_bytes; /* record sizes */
    uint32_t keys, sites, handles;  /* record counts */
    uint64_t file_bytes;            /* the whole file */
    int32_t pid;
    uint32_t uid;
    uint64_t start_ticks;           /* the process's start, /proc/<pid>/stat field 22: tells a
                                       reused PID from the writer */
    int64_t start_unix_ns;          /* the process's start on the wall clock */
    _Atomic uint32_t keys_used;     /* key records [0, keys_used) are filled */
    _Atomic uint32_t handles_used;  /* handle records beyond this were never used */
    char program[64];               /* the program's name (first word of the command, no path) */
    char command[448];              /* the command line, arguments joined by spaces, cut */
    char settings[256];             /* "keep_per_key=16 max_per_key=0 ..." as the library read them */
};

struct stats_file_key {
    _Atomic uint64_t id;            /* hash of the key less its passwords (0: the overflow) */
    char name[112];                 /* user@host:port/dbname (key_describe: never a password) */
    struct pqdedup_stats counters;
    _Atomic int32_t server_free;    /* free server connections now (its pool's free stack) */
    int32_t unused;
};

struct stats_file_site {
    _Atomic uint64_t address;       /* the caller's return address (0: slot unused) */
    _Atomic uint32_t ready;         /* 1 once module and function are filled */
    uint32_t unused;
    char module[64];                /* the module's file name, no directory */
    char function[80];              /* the nearest dynamic symbol, or the offset in the module */
};

struct stats_file_handle {
    _Atomic uint32_t state;         /* enum handle_state (handle_states.h); FREE: not open */
    _Atomic uint16_t key;           /* key record */
    _Atomic uint16_t site;          /* site record */
    _Atomic int64_t opened_ns;      /* when the app's connect made it */
    _Atomic int64_t last_call_ns;   /* when its last libpq call ended (a coarse clock, a few ms);
                                       0 while a call is under way */
    _Atomic int64_t wait_since_ns;  /* since when it waits for a server connection (0: not) */
};

_Static_assert(sizeof(struct stats_file_handle) == 32, "a handle record is 32 bytes");

/* Byte offsets of the sections. */
#define STATS_FILE_COUNTERS_AT ((uint64_t) sizeof(struct stats_file_header))
#define STATS_FILE_KEYS_AT (STATS_FILE_COUNTERS_AT + sizeof(struct pqdedup_stats))
#define STATS_FILE_SITES_AT (STATS_FILE_KEYS_AT + (uint64_t) STATS_FILE_KEYS * sizeof(struct stats_file_key))
#define STATS_FILE_HANDLES_AT (STATS_FILE_SITES_AT + (uint64_t) STATS_FILE_SITES * sizeof(struct stats_file_site))
#define STATS_FILE_BYTES (STATS_FILE_HANDLES_AT + (uint64_t) STATS_FILE_HANDLES * sizeof(struct stats_file_handle))

/* The file's name in its directory, for a pid. */
#define STATS_FILE_PREFIX "pqdedup-"
#define STATS_FILE_SUFFIX ".stats"

/* The directory the files of this user go to: `configured` (PQDEDUP_STATS_DIR) when not
 * NULL or empty; else $XDG_RUNTIME_DIR/pqdedup when that is set; else /run/pqdedup for root;
 * else /tmp/pqdedup-<uid>. Writes into buf (always NUL-terminated) and returns buf. Shared by
 * the library and the reader. */
char *stats_file_dir(const char *configured, char *buf, unsigned long size);

/* The region, in the library: NULL until the process's first libpq connect. Its address never
 * changes afterwards (a forked child gets a private copy at the same address). */
struct stats_region;
extern struct stats_region *stats_region;

/* Makes the process's region: the stats file in its directory when PQDEDUP_LIVE_STATS is on
 * and the directory is safe, else (one warning says why) private memory, which still feeds
 * the exit report. Called once, at the process's first libpq connect or ping, before any
 * handle exists. Never fails (no region at all only when even memory cannot be had). */
void stats_file_start(void);

/* At a connect of a forked child that has no file of its own yet: makes it now. Cheap when
 * there is nothing to do. */
void stats_file_connect_hook(void);

/* In a forked child (pthread_atfork child handler, one thread): the parent's file is never
 * written again here: the region becomes a private copy at the same address, with the
 * counters at zero, until the child's first connect makes its own file. */
void stats_file_after_fork_child(void);

/* The record of key `key` (a full key: it is hashed without its passwords and described with
 * key_describe), found or added; record 0 when the table is full; NULL without a region.
 * Caller holds the pool's lock (the only writer of the key table). */
struct stats_file_key *stats_file_key(const char *key);

/* The site record index of a return address in the program (0 when unknown or the table is
 * full). The first time an address is seen it is resolved with dladdr. */
uint16_t stats_file_site(const void *caller);

/* The handle record with this slot index, or NULL (no region, index past the table). Inline:
 * every libpq call of the app asks it twice. */
static inline struct stats_file_handle *stats_file_handle_record(uint32_t index)
{
    if (stats_region == NULL || index >= STATS_FILE_HANDLES)
        return NULL;
    return (struct stats_file_handle *) (void *) ((char *) stats_region + STATS_FILE_HANDLES_AT) + index;
}

/* The key record's index (for a handle record). */
uint16_t stats_file_key_index(const struct stats_file_key *k);

/* The counters of a key record (NULL: none). */
static inline struct pqdedup_stats *stats_key_counters(struct stats_file_key *k)
{
    return k != NULL ? &k->counters : NULL;
}

/* A key's free server connections are now n. */
static inline void stats_file_key_free(struct stats_file_key *k, int n)
{
    if (k != NULL)
        atomic_store_explicit(&k->server_free, n, memory_order_relaxed);
}

/* ---- handle record hooks (rec may be NULL); the caller holds the handle's lock ---- */

/* A handle slot was taken for a connect made at `opened_ns`. */
void stats_file_handle_opened(struct stats_file_handle *rec, int64_t opened_ns);

/* The handle's state is now `state`; anything but WAITING ends a wait. */
void stats_file_handle_state(struct stats_file_handle *rec, enum handle_state state);

/* The outermost libpq call of the app on the handle begins / ends. */
static inline void stats_file_call_begins(struct stats_file_handle *rec)
{
    if (rec != NULL)
        atomic_store_explicit(&rec->last_call_ns, 0, memory_order_relaxed);
}

/* now_coarse: monotonic_coarse_ns() (clock.h), read by the caller, which needs it too. */
static inline void stats_file_call_ends(struct stats_file_handle *rec, int64_t now_coarse)
{
    if (rec != NULL)
        atomic_store_explicit(&rec->last_call_ns, now_coarse, memory_order_relaxed);
}

/* The handle starts waiting for a server connection at `now` (monotonic ns), unless it
 * already waits; the wait ends at its next state change (or when the slot is given back),
 * and its time is added to wait_ns of its key and of the process. */
void stats_file_wait_begins(struct stats_file_handle *rec, int64_t now);
void stats_file_wait_ends(struct stats_file_handle *rec);

/* The handle belongs to key k / was opened at site `site`. */
void stats_file_handle_key(struct stats_file_handle *rec, const struct stats_file_key *k);
void stats_file_handle_site(struct stats_file_handle *rec, uint16_t site);

/* For the exit report: calls fn for each group of handles still open (not finished), by key
 * and site: their count and the oldest one's age in ns. */
void stats_file_for_each_unfinished(void (*fn)(const char *key, const char *module, const char *function,
                                               unsigned count, int64_t oldest_ns, void *arg),
                                    void *arg);

#endif
