/* test_leak_common.h: static helpers shared by the leak, cap, auth and connect-path tests. */
#ifndef PQDEDUP_TEST_LEAK_COMMON_H
#define PQDEDUP_TEST_LEAK_COMMON_H

#include "testutil.h"

#include <errno.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The first value of sql (one optional text parameter) on the observer, as a long; -1 on
 * error or NULL. Use from one thread at a time. */
static inline long pqt_observe_long(const char *sql, const char *param)
{
    PGconn *obs = tu_observer();
    PGresult *res = PQexecParams(obs, sql, param ? 1 : 0, NULL, param ? &param : NULL, NULL,
                                 NULL, 0);
    long v = -1;

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
        v = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    else
        fprintf(stderr, "observer query failed: %s: %s", sql, PQerrorMessage(obs));
    PQclear(res);
    return v;
}

/* 1 if a backend with this pid exists, 0 if not, -1 on error. */
static inline long pqt_pid_alive(int pid)
{
    char buf[24];

    snprintf(buf, sizeof buf, "%d", pid);
    return pqt_observe_long("SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", buf);
}

/* Waits until the backend pid is gone (up to timeout_ms); returns the last pqt_pid_alive. */
static inline long pqt_wait_pid_gone(int pid, int timeout_ms)
{
    long start = tu_now_ms(), alive;

    while ((alive = pqt_pid_alive(pid)) > 0 && tu_now_ms() - start < timeout_ms)
        tu_sleep_ms(20);
    return alive;
}

/* The server's max_connections. */
static inline long pqt_max_connections(void)
{
    return pqt_observe_long("SELECT setting::int FROM pg_settings WHERE name = 'max_connections'",
                            NULL);
}

/* PQDEDUP_MAX_WAIT of this run in ms, as the test registration set it ("300ms", "2s" or
 * seconds); the library's default, 5000, when unset. */
static inline long pqt_max_wait_ms(void)
{
    const char *v = getenv("PQDEDUP_MAX_WAIT");
    char *end;
    long n = v ? strtol(v, &end, 10) : -1;

    if (n < 0)
        return 5000;
    return !strcmp(end, "ms") ? n : n * 1000;
}

/* Number of distinct positive values among n ints (order is not kept). */
static inline long pqt_distinct(const int *v, long n)
{
    long d = 0;

    for (long i = 0; i < n; i++) {
        long j;

        if (v[i] <= 0)
            continue;
        for (j = 0; j < i; j++)
            if (v[j] == v[i])
                break;
        if (j == i)
            d++;
    }
    return d;
}

/* Runs this same program again with argv (argv[0] is replaced) and the environment plus the
 * NAME=VALUE strings of extra_env (NULL-terminated, may be NULL; see tu_environ_with). Returns
 * the child's pid and sets *status to its wait status, or returns -1 if it could not run. */
static inline pid_t pqt_run_self(char **argv, const char *const *extra_env, int *status)
{
    static char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    char **envp;
    pid_t pid;
    int rc;

    if (n <= 0)
        return -1;
    self[n] = '\0';
    argv[0] = self;
    envp = tu_environ_with(extra_env);
    rc = posix_spawn(&pid, self, NULL, NULL, argv, envp);
    free(envp);
    if (rc != 0)
        return -1;
    while (waitpid(pid, status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return pid;
}

#endif
