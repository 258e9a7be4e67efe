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

/* The TCP port of the test server (PGPORT, else 5432); its host is tu_tcp_host(). */
static inline const char *hq_port(void)
{
    const char *p = getenv("PGPORT");

    return p && *p ? p : "5432";
}

/* Runs sql on the observer; REQUIREs success. */
static inline void hq_observer_exec(const char *sql)
{
    PGconn *obs = tu_observer();

    REQUIRE(tu_exec_ok(obs, sql), "observer: %s: %s", sql, PQerrorMessage(obs));
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
    tu_exec_ok(obs, sql);
    for (int i = 0; i < 50; i++) {
        snprintf(sql, sizeof sql, "DROP ROLE IF EXISTS %s", ident);
        if (tu_exec_ok(obs, sql))
            break;
        tu_sleep_ms(100);
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
    envp = tu_environ_with(extra_env);

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
