/* slots.c: idle connections pqdedup keeps for one key must not cost another key a server slot that plain libpq would have had. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * A program that opens n connections with parameters A, finishes them all, then opens n
 * connections with parameters B and keeps them all busy at once (each inside a transaction with
 * a write), never holding more than n at once: with plain libpq it fits any server with n free
 * slots. Under pqdedup the finished A connections stay kept (up to PQDEDUP_KEEP_PER_KEY=16)
 * and occupy slots; the B connects must still all succeed, as with plain libpq, as n sessions
 * on n distinct backends (busy handles cannot lend their connections to each other), e.g. by
 * closing kept idle connections when the server refuses for lack of slots. The A connections
 * are held in transactions too, so that they really open n backends before they are finished.
 * n = the free slots the server has now, less 2 for safety.
 */

static long observe(const char *sql)
{
    char *v = tu_query_value(tu_observer(), sql);
    long n = v ? strtol(v, NULL, 10) : -1;

    free(v);
    return n;
}

/* Opens n connections with application_name app, each kept busy inside a transaction with an
 * INSERT into table (all n at once); their backends into pids. Returns how many worked. */
static long open_busy(PGconn **c, int *pids, long n, const char *app, const char *table)
{
    char extra[128], sql[160];
    long ok = 0;
    char *first_error = NULL;

    snprintf(extra, sizeof extra, "application_name=%s", app);
    for (long i = 0; i < n; i++) {
        c[i] = PQconnectdb(extra);
        snprintf(sql, sizeof sql, "BEGIN; INSERT INTO %s VALUES (%ld)", table, i);
        pids[i] = PQstatus(c[i]) == CONNECTION_OK && tu_exec_ok(c[i], sql) ? tu_backend_pid(c[i]) : -1;
        if (pids[i] > 0)
            ok++;
        else if (!first_error)
            first_error = strdup(PQerrorMessage(c[i]));
    }
    if (first_error)
        fprintf(stderr, "slots: %s: %ld of %ld busy connects failed; first: %s", app, n - ok, n, first_error);
    free(first_error);
    return ok;
}

/* Number of distinct positive pids among n. */
static long distinct(const int *pids, long n)
{
    long d = 0;

    for (long i = 0; i < n; i++) {
        long j = 0;

        while (j < i && pids[j] != pids[i])
            j++;
        d += j == i && pids[i] > 0;
    }
    return d;
}

int main(void)
{
    long max = observe("SELECT setting::int FROM pg_settings WHERE name = 'max_connections'");
    long used = observe("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'");
    long n = max - used - 2, ok, kept;
    char app_a[80], app_b[80], table[64], sql[128];
    PGconn **c;
    int *pids;

    REQUIRE(max > 0 && used > 0 && n >= 20, "max_connections %ld, %ld in use: too few free slots", max, used);
    c = calloc((size_t)n, sizeof *c);
    pids = calloc((size_t)n, sizeof *pids);
    REQUIRE(c && pids, "out of memory");
    snprintf(app_a, sizeof app_a, "%s_A", tu_app_name());
    snprintf(app_b, sizeof app_b, "%s_B", tu_app_name());
    snprintf(table, sizeof table, "pqd_slots_%ld", (long)getpid());
    snprintf(sql, sizeof sql, "CREATE TABLE %s (x int)", table);
    REQUIRE(tu_exec_ok(tu_observer(), sql), "%s: %s", sql, PQerrorMessage(tu_observer()));
    printf("slots: %ld free slots; %ld busy connections A, all finished, then %ld busy connections B\n", n + 2,
           n, n);

    ok = open_busy(c, pids, n, app_a, table);
    CHECK(ok == n && distinct(pids, n) == n, "%ld of %ld A connects worked, on %ld backends", ok, n,
          distinct(pids, n));
    for (long i = 0; i < n; i++)
        PQfinish(c[i]);
    kept = tu_wait_backends(app_a, n < 16 ? n : 16, 3000);
    printf("slots: %ld A backends kept after finishing all\n", kept);
    CHECK(kept > 0, "no A connection was kept: the test proves nothing");

    ok = open_busy(c, pids, n, app_b, table);
    CHECK(ok == n, "only %ld of %ld B connects worked while %ld finished A connections were kept: plain "
          "libpq serves all %ld", ok, n, tu_count_backends(app_a), n);
    CHECK(distinct(pids, n) == n, "the %ld busy B handles ran on only %ld distinct backends: plain libpq "
          "gives %ld sessions", n, distinct(pids, n), n);
    for (long i = 0; i < n; i++)
        PQfinish(c[i]);
    CHECK(observe(strcat(strcpy(sql, "SELECT count(*) FROM "), table)) == 0,
          "rows of transactions that were never committed are in %s", table);
    snprintf(sql, sizeof sql, "DROP TABLE %s", table);
    CHECK(tu_exec_ok(tu_observer(), sql), "%s: %s", sql, PQerrorMessage(tu_observer()));
    free(c);
    free(pids);
    return tu_finish();
}
