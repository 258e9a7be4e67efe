/* log.h: pqdedup's own log lines, silent unless PQDEDUP_LOG asks for them. */
#ifndef PQDEDUP_LOG_H
#define PQDEDUP_LOG_H

#include "settings.h"

/* Opens PQDEDUP_LOG_FILE (append) or falls back to stderr. Never fails. */
void log_open(void);

/* True when lines of `level` are written. */
#define log_enabled(level) (settings.log_level >= (level))

/* Writes one line "pqdedup[pid]: level: message" when `level` is enabled.
 * Preserves errno; never allocates; long messages are cut. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A bad PQDEDUP_* value is the user's own request going wrong, so it is said
 * even when PQDEDUP_LOG is unset; only an explicit PQDEDUP_LOG=off silences it. */
void log_setting_warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Writes `text` as one prefixed line whatever the level (for PQDEDUP_STATS). */
void log_always(const char *text);

#endif
