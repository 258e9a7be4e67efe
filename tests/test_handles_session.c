/* test_handles_session.c: every live handle is a session of its own: no transaction, temp table, SET or prepared statement is seen across handles, of one thread or of several. */
#define _GNU_SOURCE
#include "testutil.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Usage: test_handles_session (no arguments). Registered with default settings and with
 * PQDEDUP_UNBIND_AFTER=0 (idle, clean handles lose their connection at every chance).
 *
 *   pair      two live handles X and Y of one thread: X's open transaction, temp table, SET
 *             and PREPARE are not seen on Y, nor Y's on X; X rolls back while Y commits: Y's
 *             rows are there, X's not; and the other way round.
 *   pgbench   8 threads x 4 live handles (two clean, one with a SET, one with a temp table),
 *             many rounds: in each round all four of a thread open a transaction and insert
 *             a row, each sees only its own row of the round (the others are uncommitted),
 *             their backends are four distinct ones, the sticky ones still have their SET or
 *             temp table and the clean ones see neither; then rows commit or roll back by a
 *             fixed pattern, and one clean handle is replaced by a new connect. At the
 *             end the table holds exactly the committed rows. Every live connect returns a
 *             pointer no other live handle has.
 */

#define THREADS 8
#define HANDLES 4

static bool value_is(PGconn *c, const char *sql, const char *want)
{
    char *v = tu_query_value(c, sql);
    bool same = v != NULL && strcmp(v, want) == 0;

    if (!same)
        fprintf(stderr, "  %s -> %s, expected %s (%s)\n", sql, v ? v : "(none)", want, PQerrorMessage(c));
    free(v);
    return same;
}

/* ---- live pointers: every connect must return one no live handle has ---- */

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static PGconn *live[THREADS * (HANDLES + 1) + 2];

static PGconn *connect_distinct(void)
{
    PGconn *c = tu_connect_ok();
    bool dup = false;
    int free_slot = -1;

    pthread_mutex_lock(&live_lock);
    for (int i = 0; i < (int) (sizeof live / sizeof live[0]); i++) {
        dup |= live[i] == c;
        if (live[i] == NULL && free_slot < 0)
            free_slot = i;
    }
    if (free_slot >= 0)
        live[free_slot] = c;
    pthread_mutex_unlock(&live_lock);
    CHECK(!dup, "a connect returned %p, the pointer of a live handle", (void *) c);
    REQUIRE(free_slot >= 0, "more live handles than expected");
    return c;
}

static void finish_distinct(PGconn *c)
{
    pthread_mutex_lock(&live_lock);
    for (int i = 0; i < (int) (sizeof live / sizeof live[0]); i++)
        if (live[i] == c)
            live[i] = NULL;
    pthread_mutex_unlock(&live_lock);
    PQfinish(c);
}

/* ---- pair ---- */

static void test_pair(void)
{
    PGconn *h[2] = {connect_distinct(), connect_distinct()};
    const char *name[2] = {"X", "Y"};
    char sql[160];

    for (int me = 0; me < 2; me++) {
        int other = 1 - me;

        tu_exec_check(h[me], "BEGIN");
        snprintf(sql, sizeof sql, "INSERT INTO pqdt_handles_session VALUES (-1, %d, 0)", me);
        tu_exec_check(h[me], sql);
        tu_exec_check(h[me], "CREATE TEMP TABLE pqdt_pair_tmp (x int)");
        tu_exec_check(h[me], "SET work_mem = '7MB'");
        tu_exec_check(h[me], "PREPARE pqdt_pair AS SELECT 1");

        CHECK(value_is(h[other], "SELECT count(*) FROM pqdt_handles_session WHERE t = -1", "0"),
              "pair: %s sees %s's uncommitted row", name[other], name[me]);
        CHECK(value_is(h[other], "SELECT to_regclass('pg_temp.pqdt_pair_tmp') IS NULL", "t"),
              "pair: %s sees %s's temp table", name[other], name[me]);
        CHECK(value_is(h[other], "SHOW work_mem", "4MB"), "pair: %s sees %s's SET", name[other], name[me]);
        CHECK(value_is(h[other], "SELECT count(*) FROM pg_prepared_statements", "0"),
              "pair: %s sees %s's prepared statement", name[other], name[me]);

        /* The other commits a row while this one rolls back. */
        tu_exec_check(h[other], "BEGIN");
        snprintf(sql, sizeof sql, "INSERT INTO pqdt_handles_session VALUES (-1, %d, 1)", other);
        tu_exec_check(h[other], sql);
        CHECK(value_is(h[me], "SELECT count(*) FROM pqdt_handles_session WHERE t = -1", "1"),
              "pair: %s sees anything but its own row", name[me]);
        tu_exec_check(h[me], "ROLLBACK");
        tu_exec_check(h[other], "COMMIT");
        {
            char want[16];

            snprintf(want, sizeof want, "%d:1", other);
            CHECK(value_is(tu_observer(), "SELECT string_agg(k || ':' || r, ',') FROM pqdt_handles_session "
                           "WHERE t = -1", want),
                  "pair: after %s's rollback and %s's commit", name[me], name[other]);
        }
        tu_exec_check(tu_observer(), "DELETE FROM pqdt_handles_session WHERE t = -1");
        /* The rollback undid the temp table and the SET; the prepared statement outlives it. */
        tu_exec_check(h[me], "DEALLOCATE ALL");
    }
    finish_distinct(h[0]);
    finish_distinct(h[1]);
}

/* ---- pgbench shape ---- */

static long rounds;

struct worker {
    int t;
    pthread_t thread;
    long committed[HANDLES]; /* rows this thread's handle k committed */
};

/* The SET value of thread t's handle 2, unique per thread. */
static void work_mem_of(int t, char *buf, size_t size)
{
    snprintf(buf, size, "%dkB", 2001 + 8 * t); /* odd: never a whole number of MB */
}

/* Makes handle k of thread t what it is for the whole run. */
static void make_kind(PGconn *c, int t, int k)
{
    char sql[96], wm[16];

    if (k == 2) {
        work_mem_of(t, wm, sizeof wm);
        snprintf(sql, sizeof sql, "SET work_mem = '%s'", wm);
        tu_exec_check(c, sql);
    } else if (k == 3) {
        tu_exec_check(c, "CREATE TEMP TABLE pqdt_mine (t int)");
        snprintf(sql, sizeof sql, "INSERT INTO pqdt_mine VALUES (%d)", t);
        tu_exec_check(c, sql);
    }
}

/* Handle k of thread t still is what make_kind made it, and sees nothing of the others. */
static void check_kind(PGconn *c, int t, int k, long round)
{
    char sql[96], want[16];

    if (k == 2) {
        work_mem_of(t, want, sizeof want);
        CHECK(value_is(c, "SHOW work_mem", want), "pgbench: thread %d handle 2 lost its SET (round %ld)", t, round);
    } else {
        CHECK(value_is(c, "SHOW work_mem", "4MB"), "pgbench: thread %d handle %d sees a SET (round %ld)", t, k, round);
    }
    if (k == 3) {
        snprintf(want, sizeof want, "%d", t);
        CHECK(value_is(c, "SELECT string_agg(t::text, ',') FROM pg_temp.pqdt_mine", want),
              "pgbench: thread %d handle 3's temp table (round %ld)", t, round);
    } else {
        snprintf(sql, sizeof sql, "SELECT to_regclass('pg_temp.pqdt_mine') IS NULL");
        CHECK(value_is(c, sql, "t"), "pgbench: thread %d handle %d sees a temp table (round %ld)", t, k, round);
    }
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    PGconn *h[HANDLES];
    char sql[160];

    for (int k = 0; k < HANDLES; k++) {
        h[k] = connect_distinct();
        make_kind(h[k], w->t, k);
    }
    for (long r = 0; r < rounds; r++) {
        int pid[HANDLES];

        for (int k = 0; k < HANDLES; k++) {
            tu_exec_check(h[k], "BEGIN");
            snprintf(sql, sizeof sql, "INSERT INTO pqdt_handles_session VALUES (%d, %d, %ld)", w->t, k, r);
            tu_exec_check(h[k], sql);
        }
        for (int k = 0; k < HANDLES; k++) {
            snprintf(sql, sizeof sql, "SELECT count(*) FROM pqdt_handles_session WHERE t = %d AND r = %ld", w->t, r);
            CHECK(value_is(h[k], sql, "1"), "pgbench: thread %d handle %d sees other handles' uncommitted rows "
                  "(round %ld)", w->t, k, r);
            pid[k] = tu_backend_pid(h[k]);
            for (int j = 0; j < k; j++)
                CHECK(pid[j] != pid[k], "pgbench: thread %d handles %d and %d share backend %d inside their "
                      "transactions (round %ld)", w->t, j, k, pid[k], r);
        }
        for (int k = 0; k < HANDLES; k++) {
            bool commit = (r + k) % 2 == 0;

            tu_exec_check(h[k], commit ? "COMMIT" : "ROLLBACK");
            w->committed[k] += commit;
            snprintf(sql, sizeof sql,
                     "SELECT count(*) FROM pqdt_handles_session WHERE t = %d AND k = %d AND r = %ld", w->t, k, r);
            CHECK(value_is(h[k], sql, commit ? "1" : "0"), "pgbench: thread %d handle %d after its %s (round %ld)",
                  w->t, k, commit ? "COMMIT" : "ROLLBACK", r);
            check_kind(h[k], w->t, k, r);
        }
        /* A clean handle is replaced by a new connect (made first, so that it finds no free
         * connection and takes an idle handle's where it may). */
        {
            PGconn *next = connect_distinct();

            finish_distinct(h[r % 2]);
            h[r % 2] = next;
        }
    }
    for (int k = 0; k < HANDLES; k++)
        finish_distinct(h[k]);
    return NULL;
}

static void test_pgbench(void)
{
    struct worker w[THREADS];
    char sql[160], want[24];

    rounds = tu_scaled(30);
    for (int t = 0; t < THREADS; t++) {
        w[t] = (struct worker){.t = t};
        REQUIRE(pthread_create(&w[t].thread, NULL, run_worker, &w[t]) == 0, "pthread_create");
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(w[t].thread, NULL);
    for (int t = 0; t < THREADS; t++)
        for (int k = 0; k < HANDLES; k++) {
            snprintf(sql, sizeof sql, "SELECT count(*) FROM pqdt_handles_session WHERE t = %d AND k = %d", t, k);
            snprintf(want, sizeof want, "%ld", w[t].committed[k]);
            CHECK(value_is(tu_observer(), sql, want), "pgbench: thread %d handle %d: committed rows", t, k);
        }
}

int main(void)
{
    PGconn *obs = tu_observer();

    tu_quiet_notices(obs);
    tu_exec_check(obs, "DROP TABLE IF EXISTS pqdt_handles_session");
    tu_exec_check(obs, "CREATE TABLE pqdt_handles_session (t int, k int, r bigint)");
    test_pair();
    test_pgbench();
    tu_exec_check(obs, "DROP TABLE pqdt_handles_session");
    return tu_finish();
}
