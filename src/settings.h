/* settings.h: pqdedup's PQDEDUP_* environment settings, read once per process. */
#ifndef PQDEDUP_SETTINGS_H
#define PQDEDUP_SETTINGS_H

#include <stdbool.h>
#include <stdint.h>

enum log_level { LOG_OFF = 0, LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

struct pqdedup_settings {
    bool disabled;             /* PQDEDUP_DISABLE: pure pass-through */
    int64_t unbind_after_ns;   /* PQDEDUP_UNBIND_AFTER: an idle, clean handle's server connection
                                  may move to a handle that needs one after this long */
    int max_per_key;           /* PQDEDUP_MAX_PER_KEY: 0 = off */
    int64_t max_wait_ns;       /* PQDEDUP_MAX_WAIT: wait for a finish at the cap */
    int keep_per_key;          /* PQDEDUP_KEEP_PER_KEY: idle connections kept per key */
    int64_t idle_timeout_ns;   /* PQDEDUP_IDLE_TIMEOUT: 0 = never */
    int64_t max_lifetime_ns;   /* PQDEDUP_MAX_LIFETIME: 0 = never */
    const char *reset_query;   /* PQDEDUP_RESET_QUERY: "" = no reset query */
    bool reset_clears_parameters; /* the reset query has DISCARD ALL or RESET ALL in it (worked
                                     out from it by settings_load): only then do handles carry
                                     SETs instead of keeping their connections (handle.c) */
    bool reset_only_dirty;     /* PQDEDUP_RESET=dirty: skip the reset when pqdedup saw nothing
                                  that can change session state; =always (default) */
    int64_t check_after_ns;    /* PQDEDUP_CHECK_AFTER: round trip before reusing a connection
                                  idle this long; 0 = before every reuse */
    int64_t check_timeout_ns;  /* PQDEDUP_CHECK_TIMEOUT: longest wait for a kept connection's
                                  reset or check before it is given up */
    enum log_level log_level;  /* PQDEDUP_LOG */
    bool log_level_given;      /* PQDEDUP_LOG was set to a valid value */
    const char *log_file;      /* PQDEDUP_LOG_FILE: NULL = stderr */
    bool stats;                /* PQDEDUP_STATS: one line of counters at exit */
    bool live_stats;           /* PQDEDUP_LIVE_STATS: the live stats file (stats_file.h) */
    const char *stats_dir;     /* PQDEDUP_STATS_DIR: where it goes (NULL: stats_file_dir's default) */
};

extern struct pqdedup_settings settings;

/* Reads every PQDEDUP_* variable into `settings` (a bad value leaves its default). Strings it
 * keeps are copies owned by `settings` for the life of the process. Prints nothing: see
 * settings_report. Never fails. */
void settings_load(void);

/* Opens the log destination and reports each bad value read by settings_load, once per
 * process (see log.h). Called at the first libpq call, so that programs that never use libpq
 * print nothing and create no log file. */
void settings_report(void);

/* Checks `value` for the variable `name` (e.g. "PQDEDUP_MAX_WAIT") without storing
 * it. Returns 0 when valid, -1 when bad or when `name` is not a pqdedup setting;
 * on -1, *expect (if not NULL) says what the setting takes. */
int settings_check(const char *name, const char *value, const char **expect);

/* Parses a duration such as "500ms", "30s", "10min", "2h" or "45" (seconds) into
 * nanoseconds. Returns 0 on success, -1 when the text is not a duration in range. */
int settings_parse_duration(const char *text, int64_t *out_ns);

/* Parses a whole number in [0, max]. Returns 0 on success, -1 otherwise. */
int settings_parse_count(const char *text, long max, int *out);

/* Parses 1/0, true/false, yes/no, on/off. Returns 0 on success, -1 otherwise. */
int settings_parse_bool(const char *text, bool *out);

/* Parses always/dirty into *only_dirty. Returns 0 on success, -1 otherwise. */
int settings_parse_reset_mode(const char *text, bool *only_dirty);

/* Parses off/error/warn/info/debug. Returns 0 on success, -1 otherwise. */
int settings_parse_level(const char *text, enum log_level *out);

#endif
