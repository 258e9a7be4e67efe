/* test_hostile_common.h: static helpers shared by the hostile-input and security tests (test_hostile.c, test_security.c). */
#ifndef PQDEDUP_TEST_HOSTILE_COMMON_H
#define PQDEDUP_TEST_HOSTILE_COMMON_H

#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Milliseconds on a monotonic clock. */
static inline long hq_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void hq_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* True when sql ran to PGRES_COMMAND_OK or PGRES_TUPLES_OK on conn. */
static inline int hq_exec_ok(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);

    PQclear(res);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* The TCP host and port of the test server (PQD_TEST_TCP_HOST, PGPORT). */
static inline const char *hq_tcp_host(void)
{
    const char *h = getenv("PQD_TEST_TCP_HOST");

    return h && *h ? h : "127.0.0.1";
}

static inline const char *hq_port(void)
{
    const char *p = getenv("PGPORT");

    return p && *p ? p : "5432";
}

/* Runs sql on the observer; REQUIREs success. */
static inline void hq_observer_exec(const char *sql)
{
    PGconn *obs = tu_observer();

    REQUIRE(hq_exec_ok(obs, sql), "observer: %s: %s", sql, PQerrorMessage(obs));
}

/* pqdedup sends the reset query (DISCARD ALL) at PQfinish without waiting, and a connect
 * opens a spare rather than wait for it. Waits until backend pid shows the finished reset,
 * plus a moment for the answer to arrive. Returns 1 when seen. */
static inline int hq_wait_reset(int pid)
{
    PGconn *obs = tu_observer();
    char sql[256];
    long start = hq_now_ms();
    int seen = 0;

    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d "
             "AND state = 'idle' AND query = 'DISCARD ALL'", pid);
    while (!seen && hq_now_ms() - start < 5000) {
        PGresult *res = PQexec(obs, sql);

        seen = PQresultStatus(res) == PGRES_TUPLES_OK && atoi(PQgetvalue(res, 0, 0)) == 1;
        PQclear(res);
        if (!seen)
            hq_sleep_ms(10);
    }
    hq_sleep_ms(30);
    return seen;
}

/* Creates (or re-creates) a LOGIN role with this password and CONNECT on both test
 * databases. Name and password are quoted here. */
static inline void hq_create_role(const char *name, const char *password)
{
    PGconn *obs = tu_observer();
    char *ident = PQescapeIdentifier(obs, name, strlen(name));
    char *lit = PQescapeLiteral(obs, password, strlen(password));
    char sql[1024];

    REQUIRE(ident && lit, "escaping: %s", PQerrorMessage(obs));
    snprintf(sql, sizeof sql, "DROP ROLE IF EXISTS %s", ident);
    hq_observer_exec(sql);
    snprintf(sql, sizeof sql, "CREATE ROLE %s LOGIN PASSWORD %s", ident, lit);
    hq_observer_exec(sql);
    snprintf(sql, sizeof sql, "GRANT CONNECT ON DATABASE postgres, pqd_other TO %s", ident);
    hq_observer_exec(sql);
    PQfreemem(ident);
    PQfreemem(lit);
}

/* Drops a role made by hq_create_role after its backends are gone (best effort). */
static inline void hq_drop_role(const char *name)
{
    PGconn *obs = tu_observer();
    char *ident = PQescapeIdentifier(obs, name, strlen(name));
    char *lit = PQescapeLiteral(obs, name, strlen(name));
    char sql[512];

    if (!ident || !lit) {
        PQfreemem(ident);
        PQfreemem(lit);
        return;
    }
    snprintf(sql, sizeof sql,
             "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", lit);
    hq_exec_ok(obs, sql);
    for (int i = 0; i < 50; i++) {
        snprintf(sql, sizeof sql, "DROP ROLE IF EXISTS %s", ident);
        if (hq_exec_ok(obs, sql))
            break;
        hq_sleep_ms(100);
    }
    PQfreemem(ident);
    PQfreemem(lit);
}

/* The whole of a file as a malloc'd NUL-terminated string ("" if unreadable). */
static inline char *hq_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    char chunk[8192];

    if (f) {
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
            if (len + n + 1 > cap) {
                cap = (len + n + 1) * 2;
                buf = realloc(buf, cap);
                REQUIRE(buf != NULL, "out of memory");
            }
            memcpy(buf + len, chunk, n);
            len += n;
        }
        fclose(f);
    }
    if (!buf) {
        buf = malloc(1);
        REQUIRE(buf != NULL, "out of memory");
    }
    buf[len] = '\0';
    return buf;
}

/* Runs `path` (NULL: this program) with argv (argv[0] is replaced by the path) and the
 * environment plus extra_env's NAME=VALUE strings (override; a bare NAME unsets it).
 * Its stdout and stderr are captured into *out and *err (malloc'd, may be NULL to drop).
 * Returns the wait status, or -1 if it could not run. */
static inline int hq_run_capture(const char *path, char **argv, const char *const *extra_env,
                                 char **out, char **err)
{
    static char self[PATH_MAX];
    char out_path[] = "/tmp/pqd-hq-out-XXXXXX", err_path[] = "/tmp/pqd-hq-err-XXXXXX";
    size_t nenv = 0, nextra = 0, k = 0;
    posix_spawn_file_actions_t fa;
    char **envp;
    pid_t pid;
    int status = -1, fd_out, fd_err, rc;

    if (!path) {
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);

        if (n <= 0)
            return -1;
        self[n] = '\0';
        path = self;
    }
    argv[0] = (char *)path;
    while (environ[nenv])
        nenv++;
    while (extra_env && extra_env[nextra])
        nextra++;
    envp = calloc(nenv + nextra + 1, sizeof *envp);
    REQUIRE(envp != NULL, "out of memory");
    for (size_t i = 0; i < nenv; i++) {
        int overridden = 0;

        for (size_t j = 0; j < nextra; j++) {
            size_t len = strcspn(extra_env[j], "=");

            if (strncmp(environ[i], extra_env[j], len) == 0 && environ[i][len] == '=')
                overridden = 1;
        }
        if (!overridden)
            envp[k++] = environ[i];
    }
    for (size_t j = 0; j < nextra; j++)
        if (strchr(extra_env[j], '='))
            envp[k++] = (char *)extra_env[j];
    envp[k] = NULL;

    fd_out = mkstemp(out_path);
    fd_err = mkstemp(err_path);
    REQUIRE(fd_out >= 0 && fd_err >= 0, "mkstemp: %s", strerror(errno));
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd_out, 1);
    posix_spawn_file_actions_adddup2(&fa, fd_err, 2);
    rc = posix_spawn(&pid, path, &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    free(envp);
    close(fd_out);
    close(fd_err);
    if (rc == 0) {
        while (waitpid(pid, &status, 0) < 0)
            if (errno != EINTR) {
                status = -1;
                break;
            }
    } else {
        fprintf(stderr, "cannot run %s: %s\n", path, strerror(rc));
    }
    if (out)
        *out = hq_read_file(out_path);
    if (err)
        *err = hq_read_file(err_path);
    unlink(out_path);
    unlink(err_path);
    return rc == 0 ? status : -1;
}

/* Number of lines of text that contain every one of the NULL-terminated needles. */
static inline int hq_count_lines(const char *text, const char *const *needles)
{
    int count = 0;
    const char *line = text;

    while (line && *line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char *copy = strndup(line, len);
        int all = copy != NULL;

        for (const char *const *n = needles; all && *n; n++)
            all = strstr(copy, *n) != NULL;
        count += all;
        free(copy);
        line = end ? end + 1 : NULL;
    }
    return count;
}

#endif
