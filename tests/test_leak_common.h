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

extern char **environ;

/* Milliseconds on a monotonic clock. */
static inline long pqt_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void pqt_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* True when sql ran to PGRES_COMMAND_OK or PGRES_TUPLES_OK on conn. */
static inline int pqt_exec_ok(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);

    PQclear(res);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

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
    long start = pqt_now_ms(), alive;

    while ((alive = pqt_pid_alive(pid)) > 0 && pqt_now_ms() - start < timeout_ms)
        pqt_sleep_ms(20);
    return alive;
}

/* pqdedup sends the reset query (DISCARD ALL by default) at PQfinish without waiting, and
 * the next connect takes a kept connection only once that reset has answered (else it may
 * open a spare). Waits until the kept backend pid shows the finished reset (idle after
 * DISCARD ALL), plus a moment for the answer to reach the client. Returns 1 when seen. */
static inline int pqt_wait_reset(int pid)
{
    char buf[24];
    long start = pqt_now_ms(), n;

    snprintf(buf, sizeof buf, "%d", pid);
    while ((n = pqt_observe_long("SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int "
                                 "AND state = 'idle' AND query = 'DISCARD ALL'", buf)) == 0 &&
           pqt_now_ms() - start < 5000)
        pqt_sleep_ms(10);
    pqt_sleep_ms(30);
    return n == 1;
}

/* The server's max_connections. */
static inline long pqt_max_connections(void)
{
    return pqt_observe_long("SELECT setting::int FROM pg_settings WHERE name = 'max_connections'",
                            NULL);
}

/* The TCP host of the test server (PQD_TEST_TCP_HOST, else 127.0.0.1). */
static inline const char *pqt_tcp_host(void)
{
    const char *h = getenv("PQD_TEST_TCP_HOST");

    return h && *h ? h : "127.0.0.1";
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
 * NAME=VALUE strings of extra_env (NULL-terminated, may be NULL), which override. Returns
 * the child's pid and sets *status to its wait status, or returns -1 if it could not run. */
static inline pid_t pqt_run_self(char **argv, const char *const *extra_env, int *status)
{
    static char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    size_t nenv = 0, nextra = 0, k = 0;
    char **envp;
    pid_t pid;
    int rc;

    if (n <= 0)
        return -1;
    self[n] = '\0';
    argv[0] = self;
    while (environ[nenv])
        nenv++;
    while (extra_env && extra_env[nextra])
        nextra++;
    envp = calloc(nenv + nextra + 1, sizeof *envp);
    if (!envp)
        return -1;
    for (size_t i = 0; i < nenv; i++) {
        int overridden = 0;

        for (size_t j = 0; j < nextra; j++) {
            size_t len = strcspn(extra_env[j], "=") + 1;

            if (strncmp(environ[i], extra_env[j], len) == 0)
                overridden = 1;
        }
        if (!overridden)
            envp[k++] = environ[i];
    }
    for (size_t j = 0; j < nextra; j++)
        envp[k++] = (char *)extra_env[j];
    envp[k] = NULL;
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
