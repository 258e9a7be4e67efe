/* log.c: writes pqdedup's prefixed log lines to stderr or PQDEDUP_LOG_FILE. */
#define _GNU_SOURCE
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int log_fd = STDERR_FILENO;

static const char *const level_labels[] = { "", "error: ", "warning: ", "info: ", "debug: " };

void log_open(void)
{
    if (settings.log_file == NULL)
        return;
    int fd = open(settings.log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
        log_fd = fd;
    } else {
        int saved = errno;
        log_setting_warning("cannot open PQDEDUP_LOG_FILE (%s); logging to stderr",
                            strerror(saved));
    }
}

/* Formats the prefix, the message and a newline into one buffer, written at once. */
static void write_line(const char *label, const char *fmt, va_list args)
{
    int saved_errno = errno;
    char line[1024];
    int used = snprintf(line, sizeof line, "pqdedup[%ld]: %s", (long) getpid(), label);
    if (used < 0)
        used = 0;
    int more = vsnprintf(line + used, sizeof line - (size_t) used - 1, fmt, args);
    if (more < 0)
        more = 0;
    size_t len = (size_t) used + (size_t) more;
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t ignored = write(log_fd, line, len);
    (void) ignored;
    errno = saved_errno;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level) || level == LOG_OFF)
        return;
    va_list args;
    va_start(args, fmt);
    write_line(level_labels[level], fmt, args);
    va_end(args);
}

void log_setting_warning(const char *fmt, ...)
{
    if (settings.log_level_given && settings.log_level == LOG_OFF)
        return;
    va_list args;
    va_start(args, fmt);
    write_line(level_labels[LOG_WARN], fmt, args);
    va_end(args);
}

/* Writes a line with no level label; used for output the user asked for (stats). */
static void write_plain(const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    write_line("", fmt, args);
    va_end(args);
}

void log_always(const char *text)
{
    write_plain("%s", text);
}
