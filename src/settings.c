/* settings.c: reads and checks pqdedup's PQDEDUP_* environment settings. */
#define _GNU_SOURCE
#include "settings.h"
#include "clock.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_DURATION_NS (INT64_C(30) * 24 * 3600 * NS_PER_SEC) /* 30 days */
#define MAX_COUNT 100000

struct pqdedup_settings settings = {
    .disabled = false,
    .unbind_after_ns = 10 * NS_PER_MS,
    .max_per_key = 0,
    .max_wait_ns = 5 * NS_PER_SEC,
    .keep_per_key = 16,
    .idle_timeout_ns = 600 * NS_PER_SEC,
    .max_lifetime_ns = 3600 * NS_PER_SEC,
    .reset_query = "DISCARD ALL",
    .reset_clears_parameters = true,
    .check_after_ns = 30 * NS_PER_SEC,
    .check_timeout_ns = 5 * NS_PER_SEC,
    .log_level = LOG_OFF,
    .log_file = NULL,
    .stats = false,
    .live_stats = true,
    .stats_dir = NULL,
};

int settings_parse_count(const char *text, long max, int *out)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    while (*end == ' ')
        end++;
    if (errno != 0 || end == text || *end != '\0' || value < 0 || value > max)
        return -1;
    *out = (int) value;
    return 0;
}

int settings_parse_duration(const char *text, int64_t *out_ns)
{
    static const struct { const char *suffix; int64_t ns; } units[] = {
        { "", NS_PER_SEC }, { "s", NS_PER_SEC }, { "ms", NS_PER_MS },
        { "min", 60 * NS_PER_SEC }, { "h", 3600 * NS_PER_SEC },
    };
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno != 0 || end == text || value < 0 || text[0] == '-')
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (value > MAX_DURATION_NS / units[i].ns)
                return -1;
            *out_ns = (int64_t) value * units[i].ns;
            return 0;
        }
    }
    return -1;
}

int settings_parse_bool(const char *text, bool *out)
{
    static const char *const yes[] = { "1", "true", "yes", "on" };
    static const char *const no[] = { "0", "false", "no", "off", "" };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (strcasecmp(text, yes[i]) == 0)
            return *out = true, 0;
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (strcasecmp(text, no[i]) == 0)
            return *out = false, 0;
    return -1;
}

int settings_parse_reset_mode(const char *text, bool *only_dirty)
{
    if (strcasecmp(text, "always") == 0)
        return *only_dirty = false, 0;
    if (strcasecmp(text, "dirty") == 0)
        return *only_dirty = true, 0;
    return -1;
}

int settings_parse_level(const char *text, enum log_level *out)
{
    static const char *const names[] = { "off", "error", "warn", "info", "debug" };
    for (int i = 0; i < (int) (sizeof names / sizeof names[0]); i++) {
        if (strcasecmp(text, names[i]) == 0) {
            *out = (enum log_level) i;
            return 0;
        }
    }
    return -1;
}

enum setting_kind { KIND_BOOL, KIND_COUNT, KIND_DURATION, KIND_STRING, KIND_LEVEL, KIND_RESET_MODE };

/* The one table of settings: name, kind, where the value goes. */
static const struct setting {
    const char *name;
    enum setting_kind kind;
    void *target;
    const char *expect; /* said in the warning for a bad value */
} setting_table[] = {
    { "PQDEDUP_DISABLE", KIND_BOOL, &settings.disabled, "1 or 0" },
    { "PQDEDUP_UNBIND_AFTER", KIND_DURATION, &settings.unbind_after_ns, "a duration such as 10ms" },
    { "PQDEDUP_MAX_PER_KEY", KIND_COUNT, &settings.max_per_key, "a count, 0 = off" },
    { "PQDEDUP_MAX_WAIT", KIND_DURATION, &settings.max_wait_ns, "a duration such as 5s or 200ms" },
    { "PQDEDUP_KEEP_PER_KEY", KIND_COUNT, &settings.keep_per_key, "a count, 0 = keep none" },
    { "PQDEDUP_IDLE_TIMEOUT", KIND_DURATION, &settings.idle_timeout_ns, "a duration, 0 = never" },
    { "PQDEDUP_MAX_LIFETIME", KIND_DURATION, &settings.max_lifetime_ns, "a duration, 0 = never" },
    { "PQDEDUP_RESET_QUERY", KIND_STRING, &settings.reset_query, "SQL, empty = none" },
    { "PQDEDUP_RESET", KIND_RESET_MODE, &settings.reset_only_dirty, "always or dirty" },
    { "PQDEDUP_CHECK_AFTER", KIND_DURATION, &settings.check_after_ns, "a duration, 0 = always" },
    { "PQDEDUP_CHECK_TIMEOUT", KIND_DURATION, &settings.check_timeout_ns, "a duration such as 5s" },
    { "PQDEDUP_LOG", KIND_LEVEL, &settings.log_level, "off, error, warn, info or debug" },
    { "PQDEDUP_LOG_FILE", KIND_STRING, &settings.log_file, "a file path" },
    { "PQDEDUP_STATS", KIND_BOOL, &settings.stats, "1 or 0" },
    { "PQDEDUP_LIVE_STATS", KIND_BOOL, &settings.live_stats, "1 or 0" },
    { "PQDEDUP_STATS_DIR", KIND_STRING, &settings.stats_dir, "a directory path" },
};

/* Stores `text` into the setting's target, or into `scratch` when checking only.
 * Returns 0 on success, -1 for a bad value. */
static int parse_setting(const struct setting *s, const char *text, void *target)
{
    switch (s->kind) {
    case KIND_BOOL:
        return settings_parse_bool(text, target);
    case KIND_COUNT:
        return settings_parse_count(text, MAX_COUNT, target);
    case KIND_DURATION:
        return settings_parse_duration(text, target);
    case KIND_LEVEL:
        return settings_parse_level(text, target);
    case KIND_RESET_MODE:
        return settings_parse_reset_mode(text, target);
    case KIND_STRING:
        if (target == s->target) {
            char *copy = strdup(text);
            if (copy == NULL)
                return -1;
            *(const char **) target = copy;
        }
        return 0;
    }
    return -1;
}

int settings_check(const char *name, const char *value, const char **expect)
{
    union { bool b; int i; int64_t d; enum log_level l; } scratch;
    for (size_t i = 0; i < sizeof setting_table / sizeof setting_table[0]; i++) {
        if (strcmp(setting_table[i].name, name) == 0) {
            if (expect != NULL)
                *expect = setting_table[i].expect;
            return parse_setting(&setting_table[i], value, &scratch);
        }
    }
    return -1;
}

/* Variables earlier versions read, and what became of them: said once if set. */
static const struct removed_setting {
    const char *name;
    const char *instead;
} removed_settings[] = {
    { "PQDEDUP_SHARE_AFTER", "every connection is its own session now; an idle one lends its server "
                             "connection to one that needs it (PQDEDUP_UNBIND_AFTER)" },
};

/* Names of the variables whose values were bad, for settings_report. */
static const char *bad_names[sizeof setting_table / sizeof setting_table[0]];
static int nbad;

void settings_load(void)
{
    for (size_t i = 0; i < sizeof setting_table / sizeof setting_table[0]; i++) {
        const struct setting *s = &setting_table[i];
        const char *text = getenv(s->name);
        if (text == NULL)
            continue;
        if (parse_setting(s, text, s->target) != 0)
            bad_names[nbad++] = s->name;
        else if (s->target == &settings.log_level)
            settings.log_level_given = true;
    }
    settings.reset_clears_parameters =
        strcasestr(settings.reset_query, "DISCARD ALL") != NULL || strcasestr(settings.reset_query, "RESET ALL") != NULL;
    if (settings.log_file != NULL && settings.log_file[0] == '\0')
        settings.log_file = NULL;
    if (settings.stats_dir != NULL && settings.stats_dir[0] == '\0')
        settings.stats_dir = NULL;
}

void settings_report(void)
{
    log_open();
    for (size_t i = 0; i < sizeof removed_settings / sizeof removed_settings[0]; i++)
        if (getenv(removed_settings[i].name) != NULL)
            log_setting_warning("ignoring %s: no longer used (%s)", removed_settings[i].name,
                                removed_settings[i].instead);
    for (int i = 0; i < nbad; i++) {
        for (size_t j = 0; j < sizeof setting_table / sizeof setting_table[0]; j++) {
            if (setting_table[j].name == bad_names[i])
                log_setting_warning("ignoring %s: not %s; using the default",
                                    bad_names[i], setting_table[j].expect);
        }
    }
}
