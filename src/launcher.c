/* launcher.c: `pqdedup [options] [--] command [args...]` runs a program with libpqdedup.so preloaded
 * and its loader auditor, libpqdedup-audit.so, in LD_AUDIT. */
#define _GNU_SOURCE
#include "check.h"
#include "locate.h"
#include "settings.h"
#include "stat_reader.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXIT_USAGE 2
#define EXIT_LAUNCHER_FAILED 125 /* as env(1) */
#define EXIT_CANNOT_RUN 126
#define EXIT_NOT_FOUND 127

static const char usage_text[] =
    "Usage: pqdedup [options] [--] command [args...]\n"
    "       pqdedup [options] --check program [args...]\n"
    "       pqdedup --stat [--watch [--interval T] | --json | --prometheus] [PID...]\n"
    "Runs command with libpqdedup.so preloaded (and libpqdedup-audit.so in LD_AUDIT,\n"
    "for modules that bypass LD_PRELOAD). Each libpq connection the command opens is\n"
    "its own session, served by a PostgreSQL connection that pqdedup keeps open: when\n"
    "the command finishes a connection, or leaves one idle, that server connection is\n"
    "rolled back, reset and given to its next connect with the same parameters, so\n"
    "connections it forgets to close do not use up the server.\n"
    "Each option sets the environment variable named beside it.\n"
    "\n"
    "Options:\n"
    "  -d, --disable             PQDEDUP_DISABLE=1: pure pass-through to libpq\n"
    "  -k, --keep-per-key N      PQDEDUP_KEEP_PER_KEY: idle connections kept per key (16)\n"
    "  -i, --idle-timeout T      PQDEDUP_IDLE_TIMEOUT: close kept connections idle this long\n"
    "                            (600s; 0 = never)\n"
    "  -l, --max-lifetime T      PQDEDUP_MAX_LIFETIME: close connections this old at their\n"
    "                            next finish or connect (3600s; 0 = never)\n"
    "  -r, --reset-query SQL     PQDEDUP_RESET_QUERY: run at each finish before keeping\n"
    "                            (\"DISCARD ALL\"; \"\" = none, session state then leaks)\n"
    "      --reset MODE          PQDEDUP_RESET: always, or dirty to skip the reset when no\n"
    "                            SQL that can change session state was seen (always)\n"
    "  -c, --check-after T       PQDEDUP_CHECK_AFTER: a kept connection idle this long gets a\n"
    "                            round trip before it is handed out (30s; 0 = always)\n"
    "  -t, --check-timeout T     PQDEDUP_CHECK_TIMEOUT: longest wait for a kept connection's\n"
    "                            reset or check before another is used (5s)\n"
    "  -u, --unbind-after T      PQDEDUP_UNBIND_AFTER: a connection idle this long,\n"
    "                            outside a transaction and with no session state, may\n"
    "                            lend its server connection to one that needs it (10ms)\n"
    "  -m, --max-per-key N       PQDEDUP_MAX_PER_KEY: at most N server connections per key\n"
    "                            in the process (0 = off)\n"
    "  -w, --max-wait T          PQDEDUP_MAX_WAIT: how long a connect waits for a server\n"
    "                            connection to be freed, at that cap or when the server\n"
    "                            is full, before failing (5s)\n"
    "      --log LEVEL           PQDEDUP_LOG: off, error, warn, info or debug (off)\n"
    "      --log-file PATH       PQDEDUP_LOG_FILE: append log lines here (stderr)\n"
    "      --stats               PQDEDUP_STATS=1: one line of counters at exit, and the\n"
    "                            connections left unfinished\n"
    "      --no-live-stats       PQDEDUP_LIVE_STATS=0: no live stats file for --stat\n"
    "      --stats-dir DIR       PQDEDUP_STATS_DIR: where the live stats files go (auto;\n"
    "                            $XDG_RUNTIME_DIR/pqdedup, /run/pqdedup for root, else\n"
    "                            /tmp/pqdedup-UID)\n"
    "      --no-audit            PQDEDUP_AUDIT=0: do not put libpqdedup-audit.so in\n"
    "                            LD_AUDIT; modules loaded with RTLD_DEEPBIND and libpq\n"
    "                            functions found with dlsym then use plain libpq\n"
    "      --check PROGRAM       run nothing: say whether pqdedup would reach PROGRAM (found\n"
    "                            on PATH, through #! lines): set-ID, static or dynamic,\n"
    "                            libpq linked and which file, the auditor; exit 0 when\n"
    "                            it would (or may at run time), 1 when it would not\n"
    "      --stat [PID...]       run nothing: show this user's processes under pqdedup\n"
    "                            (all, or these), per key what their pools hold and their\n"
    "                            counters, and the connections they left unfinished\n"
    "      --watch               with --stat: redraw every interval, as top\n"
    "      --interval T          with --watch: how often (2s)\n"
    "      --json                with --stat: JSON, for scripts\n"
    "      --prometheus          with --stat: Prometheus text format, for node_exporter's\n"
    "                            textfile collector\n"
    "  -h, --help                show this help and exit\n"
    "  -V, --version             show the version and exit\n"
    "\n"
    "T is a duration: 250ms, 30s, 10min, 2h, or a number of seconds.\n"
    "Exit status: the command's; 2 for a usage error; 126 if the command cannot be\n"
    "run; 127 if it is not found; 125 if the library is missing.\n";

struct launcher_option {
    const char *long_name;
    int short_name;
    const char *variable;
    bool takes_value;
};

static const struct launcher_option launcher_options[] = {
    { "disable", 'd', "PQDEDUP_DISABLE", false },
    { "keep-per-key", 'k', "PQDEDUP_KEEP_PER_KEY", true },
    { "idle-timeout", 'i', "PQDEDUP_IDLE_TIMEOUT", true },
    { "max-lifetime", 'l', "PQDEDUP_MAX_LIFETIME", true },
    { "reset-query", 'r', "PQDEDUP_RESET_QUERY", true },
    { "reset", 1003, "PQDEDUP_RESET", true },
    { "check-after", 'c', "PQDEDUP_CHECK_AFTER", true },
    { "check-timeout", 't', "PQDEDUP_CHECK_TIMEOUT", true },
    { "unbind-after", 'u', "PQDEDUP_UNBIND_AFTER", true },
    { "max-per-key", 'm', "PQDEDUP_MAX_PER_KEY", true },
    { "max-wait", 'w', "PQDEDUP_MAX_WAIT", true },
    { "log", 1000, "PQDEDUP_LOG", true },
    { "log-file", 1001, "PQDEDUP_LOG_FILE", true },
    { "stats", 1002, "PQDEDUP_STATS", false },
    { "stats-dir", 1004, "PQDEDUP_STATS_DIR", true },
};
#define N_LAUNCHER_OPTIONS (sizeof launcher_options / sizeof launcher_options[0])

/* --no-audit sets PQDEDUP_AUDIT=0, a value no launcher_options row gives. */
#define OPTION_NO_AUDIT 1100
/* --check runs nothing: it reports on the command instead (check.c). */
#define OPTION_CHECK 1101
/* --no-live-stats sets PQDEDUP_LIVE_STATS=0. */
#define OPTION_NO_LIVE_STATS 1102
/* --stat runs nothing: it reads the live stats files (stat_reader.c); the others shape it. */
#define OPTION_STAT 1103
#define OPTION_WATCH 1104
#define OPTION_INTERVAL 1105
#define OPTION_JSON 1106
#define OPTION_PROMETHEUS 1107

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "pqdedup: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'pqdedup --help' for more information.\n");
    return EXIT_USAGE;
}

/* True for a sanitizer runtime, which must stay first in LD_PRELOAD. */
static bool is_sanitizer_runtime(const char *entry, size_t len)
{
    static const char *const prefixes[] = { "libasan", "libtsan", "libubsan", "liblsan", "libclang_rt" };
    const char *base = entry;
    for (size_t i = 0; i < len; i++)
        if (entry[i] == '/')
            base = entry + i + 1;
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (strncmp(base, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
}

/* Puts the auditor first in LD_AUDIT, keeping the entries that were there after it (one
 * copy of ours only). First, because glibc hands a binding to the next auditor only after
 * one that took it (elf/dl-audit.c). LD_AUDIT is split on ':' only. Returns 0 or an exit code. */
static int prepend_audit(const char *auditor)
{
    const char *old = getenv("LD_AUDIT");
    if (old == NULL)
        old = "";
    size_t size = strlen(auditor) + strlen(old) + 2;
    char *audit = malloc(size);
    if (audit == NULL) {
        perror("pqdedup: setting LD_AUDIT");
        return EXIT_LAUNCHER_FAILED;
    }
    size_t used = (size_t) snprintf(audit, size, "%s", auditor);
    for (const char *entry = old; *entry != '\0';) {
        size_t len = strcspn(entry, ":");
        if (len > 0 && !(len == strlen(auditor) && strncmp(entry, auditor, len) == 0))
            used += (size_t) snprintf(audit + used, size - used, ":%.*s", (int) len, entry);
        entry += len + (entry[len] == ':');
    }
    int rc = setenv("LD_AUDIT", audit, 1);
    free(audit);
    if (rc != 0) {
        perror("pqdedup: setting LD_AUDIT");
        return EXIT_LAUNCHER_FAILED;
    }
    return 0;
}

/* With an auditor, glibc sets up thread-local storage before it loads the preloaded and
 * needed libraries, so their static TLS must fit in a small surplus: the TSan and LSan
 * runtimes' does not (768 and 55 KiB), and the program would not start. When one of them
 * leads LD_PRELOAD, the surplus is raised through GLIBC_TUNABLES (unless it was set).
 * Returns 0 or an exit code. */
static int make_room_for_sanitizer_tls(void)
{
    const char *preload = getenv("LD_PRELOAD");
    if (preload == NULL)
        return 0;
    preload += strspn(preload, ": ");
    size_t len = strcspn(preload, ": ");
    const char *base = preload;
    for (size_t i = 0; i < len; i++)
        if (preload[i] == '/')
            base = preload + i + 1;
    if (strncmp(base, "libtsan", 7) != 0 && strncmp(base, "liblsan", 7) != 0)
        return 0;
    const char *tunables = getenv("GLIBC_TUNABLES");
    if (tunables != NULL && strstr(tunables, "glibc.rtld.optional_static_tls=") != NULL)
        return 0;
    char *value = NULL;
    if (asprintf(&value, "%s%sglibc.rtld.optional_static_tls=2097152", tunables ? tunables : "",
                 tunables && tunables[0] ? ":" : "") < 0 || setenv("GLIBC_TUNABLES", value, 1) != 0) {
        perror("pqdedup: setting GLIBC_TUNABLES");
        free(value);
        return EXIT_LAUNCHER_FAILED;
    }
    free(value);
    return 0;
}

/* Puts the library first in LD_PRELOAD, after any leading sanitizer runtimes,
 * keeping everything that was there. Returns 0 or an exit code. */
static int prepend_preload(const char *library)
{
    if (strpbrk(library, ": ") != NULL) {
        fprintf(stderr, "pqdedup: the library path %s contains ':' or ' ', which LD_PRELOAD cannot carry\n",
                library);
        return EXIT_LAUNCHER_FAILED;
    }
    const char *old = getenv("LD_PRELOAD");
    if (old == NULL)
        old = "";
    /* Leading entries that are sanitizer runtimes stay in front. */
    size_t keep = 0;
    for (;;) {
        size_t skip = strspn(old + keep, ": ");
        size_t len = strcspn(old + keep + skip, ": ");
        if (len == 0 || !is_sanitizer_runtime(old + keep + skip, len))
            break;
        keep += skip + len;
    }
    const char *rest = old + keep + strspn(old + keep, ": ");
    char *preload = NULL;
    int rc = asprintf(&preload, "%.*s%s%s%s%s", (int) keep, old, keep ? ":" : "", library,
                      rest[0] ? ":" : "", rest);
    if (rc < 0 || setenv("LD_PRELOAD", preload, 1) != 0) {
        perror("pqdedup: setting LD_PRELOAD");
        free(preload);
        return EXIT_LAUNCHER_FAILED;
    }
    free(preload);
    return 0;
}

int main(int argc, char **argv)
{
    struct option long_options[N_LAUNCHER_OPTIONS + 12];
    char short_options[64] = "+hV";
    size_t n = 0;
    for (; n < N_LAUNCHER_OPTIONS; n++) {
        const struct launcher_option *o = &launcher_options[n];
        long_options[n] = (struct option) { o->long_name, o->takes_value ? required_argument : no_argument,
                                            NULL, o->short_name };
        if (o->short_name < 256) {
            size_t len = strlen(short_options);
            short_options[len] = (char) o->short_name;
            short_options[len + 1] = o->takes_value ? ':' : '\0';
            short_options[len + 2] = '\0';
        }
    }
    long_options[n++] = (struct option) { "no-audit", no_argument, NULL, OPTION_NO_AUDIT };
    long_options[n++] = (struct option) { "check", no_argument, NULL, OPTION_CHECK };
    long_options[n++] = (struct option) { "no-live-stats", no_argument, NULL, OPTION_NO_LIVE_STATS };
    long_options[n++] = (struct option) { "stat", no_argument, NULL, OPTION_STAT };
    long_options[n++] = (struct option) { "watch", no_argument, NULL, OPTION_WATCH };
    long_options[n++] = (struct option) { "interval", required_argument, NULL, OPTION_INTERVAL };
    long_options[n++] = (struct option) { "json", no_argument, NULL, OPTION_JSON };
    long_options[n++] = (struct option) { "prometheus", no_argument, NULL, OPTION_PROMETHEUS };
    long_options[n++] = (struct option) { "help", no_argument, NULL, 'h' };
    long_options[n++] = (struct option) { "version", no_argument, NULL, 'V' };
    long_options[n] = (struct option) { 0 };

    int c;
    bool check = false, stat = false, watch = false, shaped = false;
    enum stat_output output = STAT_TEXT;
    int64_t interval_ns = 2 * 1000000000LL;
    opterr = 0;
    while ((c = getopt_long(argc, argv, short_options, long_options, NULL)) != -1) {
        if (c == 'h') {
            fputs(usage_text, stdout);
            return 0;
        }
        if (c == 'V') {
            printf("pqdedup %s\n", PQDEDUP_VERSION);
            return 0;
        }
        if (c == OPTION_CHECK) {
            check = true;
            continue;
        }
        if (c == OPTION_STAT) {
            stat = true;
            continue;
        }
        if (c == OPTION_WATCH || c == OPTION_JSON || c == OPTION_PROMETHEUS) {
            if (c == OPTION_WATCH)
                watch = true;
            else
                output = c == OPTION_JSON ? STAT_JSON : STAT_PROMETHEUS;
            shaped = true;
            continue;
        }
        if (c == OPTION_INTERVAL) {
            if (settings_parse_duration(optarg, &interval_ns) != 0 || interval_ns <= 0) {
                fprintf(stderr, "pqdedup: --interval takes a duration such as 2s or 500ms\n");
                return EXIT_USAGE;
            }
            shaped = true;
            continue;
        }
        if (c == OPTION_NO_LIVE_STATS) {
            if (setenv("PQDEDUP_LIVE_STATS", "0", 1) != 0) {
                perror("pqdedup: setenv");
                return EXIT_LAUNCHER_FAILED;
            }
            continue;
        }
        if (c == OPTION_NO_AUDIT) {
            if (setenv("PQDEDUP_AUDIT", "0", 1) != 0) {
                perror("pqdedup: setenv");
                return EXIT_LAUNCHER_FAILED;
            }
            continue;
        }
        const struct launcher_option *o = NULL;
        for (size_t i = 0; i < N_LAUNCHER_OPTIONS; i++)
            if (launcher_options[i].short_name == c)
                o = &launcher_options[i];
        if (o == NULL)
            return usage_error("unknown option or missing value: %s", argv[optind - 1]);
        const char *value = o->takes_value ? optarg : "1";
        const char *expect = NULL;
        if (settings_check(o->variable, value, &expect) != 0) {
            fprintf(stderr, "pqdedup: --%s takes %s\n", o->long_name, expect ? expect : "a valid value");
            return EXIT_USAGE;
        }
        if (setenv(o->variable, value, 1) != 0) {
            perror("pqdedup: setenv");
            return EXIT_LAUNCHER_FAILED;
        }
    }
    if (shaped && !stat)
        return usage_error("%s", "--watch, --interval, --json and --prometheus go with --stat");
    if (stat) {
        if (check)
            return usage_error("%s", "--stat and --check do not go together");
        if (watch && output != STAT_TEXT)
            return usage_error("%s", "--watch shows text: not with --json or --prometheus");
        long *pids = calloc((size_t) (argc - optind) + 1, sizeof *pids);
        if (pids == NULL) {
            perror("pqdedup");
            return EXIT_LAUNCHER_FAILED;
        }
        unsigned npids = 0;
        for (int i = optind; i < argc; i++) {
            char *end;
            errno = 0;
            long pid = strtol(argv[i], &end, 10);
            if (errno != 0 || end == argv[i] || *end != '\0' || pid <= 0 || argv[i][0] == '+') {
                free(pids);
                return usage_error("--stat takes process IDs, not %s", argv[i]);
            }
            pids[npids++] = pid;
        }
        int status = stat_main(pids, npids, output, watch, interval_ns);
        free(pids);
        return status;
    }
    if (optind >= argc)
        return usage_error("%s", check ? "--check needs a program" : "no command given");
    /* The auditor, unless PQDEDUP_AUDIT (or --no-audit) turned it off. */
    bool audit = true;
    const char *audit_setting = getenv("PQDEDUP_AUDIT");
    if (audit_setting != NULL && settings_parse_bool(audit_setting, &audit) != 0)
        audit = true; /* a bad value: the library warns about it and uses the default */
    if (check)
        return check_program(argv[optind], audit);

    char *library = locate_library();
    if (library == NULL) {
        fprintf(stderr, "pqdedup: libpqdedup.so not found; looked in:\n");
        locate_print_candidates(stderr, "  ");
        return EXIT_LAUNCHER_FAILED;
    }
    int rc = prepend_preload(library);
    char *auditor = rc == 0 && audit ? locate_auditor(library) : NULL;
    if (auditor != NULL)
        rc = prepend_audit(auditor);
    if (auditor != NULL && rc == 0)
        rc = make_room_for_sanitizer_tls();
    free(auditor);
    free(library);
    if (rc != 0)
        return rc;

    execvp(argv[optind], &argv[optind]);
    int err = errno;
    fprintf(stderr, "pqdedup: %s: %s\n", argv[optind], strerror(err));
    return err == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_RUN;
}
