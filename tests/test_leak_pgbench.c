/* test_leak_pgbench.c: a thread holding 4 live connections for one key (pgbench's shape) gets 4 independent sessions. */
#include "test_leak_common.h"

#include <pthread.h>

#define PER_THREAD 4
#define THREADS 2

static char table[64];

struct worker {
    int index;
    int pids[3][PER_THREAD]; /* per round */
};

/* One round: open 4 connections for the same key, check they are 4 sessions that do not see
 * each other's transaction, rollback, temp table or SET, then finish all 4. */
static void round_of_four(struct worker *w, int round)
{
    PGconn *c[PER_THREAD];
    char sql[256], *v;

    for (int i = 0; i < PER_THREAD; i++) {
        c[i] = PQconnectdb(tu_conninfo(""));
        REQUIRE(PQstatus(c[i]) == CONNECTION_OK, "thread %d round %d connect %d: %s", w->index,
                round, i, PQerrorMessage(c[i]));
    }
    /* All 4 in transactions at once: each needs a backend of its own. */
    for (int i = 0; i < PER_THREAD; i++) {
        CHECK(tu_exec_ok(c[i], "BEGIN"), "BEGIN: %s", PQerrorMessage(c[i]));
        w->pids[round][i] = tu_backend_pid(c[i]);
    }
    CHECK(pqt_distinct(w->pids[round], PER_THREAD) == PER_THREAD,
          "thread %d round %d: 4 live connections in transactions got %ld distinct backends",
          w->index, round, pqt_distinct(w->pids[round], PER_THREAD));
    for (int i = 0; i < PER_THREAD; i++)
        CHECK(tu_exec_ok(c[i], "ROLLBACK"), "ROLLBACK: %s", PQerrorMessage(c[i]));

    /* A row committed on c[3] survives a rollback on c[0]; c[0]'s uncommitted row is not
     * seen on the others. */
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (%d)", table, 100 + w->index);
    CHECK(tu_exec_ok(c[3], sql), "INSERT: %s", PQerrorMessage(c[3]));
    CHECK(tu_exec_ok(c[0], "BEGIN"), "BEGIN: %s", PQerrorMessage(c[0]));
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (%d)", table, w->index);
    CHECK(tu_exec_ok(c[0], sql), "INSERT: %s", PQerrorMessage(c[0]));
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE x = %d", table, w->index);
    for (int i = 1; i < PER_THREAD; i++) {
        v = tu_query_value(c[i], sql);
        CHECK(v && !strcmp(v, "0"), "thread %d: connection %d sees %s uncommitted rows of "
              "connection 0 (a shared session?)", w->index, i, v ? v : "(error)");
        free(v);
        CHECK(PQtransactionStatus(c[i]) == PQTRANS_IDLE, "thread %d: connection %d is in a "
              "transaction it never began", w->index, i);
    }
    CHECK(tu_exec_ok(c[0], "ROLLBACK"), "ROLLBACK: %s", PQerrorMessage(c[0]));
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE x = %d", table, 100 + w->index);
    v = tu_query_value(c[3], sql);
    CHECK(v && atol(v) == round + 1, "thread %d round %d: %s committed rows after a rollback on "
          "another connection, expected %d", w->index, round, v ? v : "(error)", round + 1);
    free(v);

    /* A temp table on c[1] does not exist on c[2]. */
    CHECK(tu_exec_ok(c[1], "CREATE TEMP TABLE pgb_tmp (x int)"), "CREATE TEMP TABLE: %s",
          PQerrorMessage(c[1]));
    v = tu_query_value(c[2], "SELECT coalesce(to_regclass('pg_temp.pgb_tmp')::text, 'none')");
    CHECK(v && !strcmp(v, "none"), "thread %d: connection 2 sees connection 1's temp table (%s)",
          w->index, v ? v : "(error)");
    free(v);

    /* A SET on c[2] does not change c[3]. */
    CHECK(tu_exec_ok(c[2], "SET work_mem = '7777kB'"), "SET: %s", PQerrorMessage(c[2]));
    v = tu_query_value(c[3], "SHOW work_mem");
    CHECK(v && strcmp(v, "7777kB") != 0, "thread %d: connection 3 sees connection 2's SET",
          w->index);
    free(v);

    for (int i = 0; i < PER_THREAD; i++)
        PQfinish(c[i]);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    for (int round = 0; round < 3; round++)
        round_of_four(w, round);
    return NULL;
}

/* Each of two threads holds 4 live connections for the same key at once, three rounds in a
 * row: 4 independent sessions per thread (4 backends when all are in transactions; a
 * transaction, a rollback, a temp table or a SET on one is not seen on another); later
 * rounds reuse kept backends. */
int main(void)
{
    struct worker w[THREADS];
    pthread_t t[THREADS];
    char sql[160];
    long n, reused = 0;

    snprintf(table, sizeof table, "pqd_pgbench_%ld", (long)getpid());
    snprintf(sql, sizeof sql, "CREATE TABLE %s (x int)", table);
    REQUIRE(tu_exec_ok(tu_observer(), sql), "%s: %s", sql, PQerrorMessage(tu_observer()));

    for (int i = 0; i < THREADS; i++) {
        w[i].index = i;
        REQUIRE(pthread_create(&t[i], NULL, worker_main, &w[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);

    /* Later rounds (after every handle was finished) reuse kept backends. */
    for (int th = 0; th < THREADS; th++)
        for (int r = 1; r < 3; r++)
            for (int i = 0; i < PER_THREAD; i++)
                for (int j = 0; j < THREADS * PER_THREAD; j++)
                    if (w[th].pids[r][i] == w[j / PER_THREAD].pids[0][j % PER_THREAD]) {
                        reused++;
                        break;
                    }
    printf("test_leak_pgbench: %ld of %d later connects reused a first-round backend\n", reused,
           2 * THREADS * PER_THREAD);
    CHECK(reused > 0, "no backend was ever reused across rounds");
    n = tu_count_backends(tu_app_name());
    /* At least one thread's 4; connections opened while resets did not answer may add a few, but
     * never more than PQDEDUP_KEEP_PER_KEY (16) stay kept. */
    CHECK(n >= PER_THREAD && n <= 16, "%ld backends kept at the end, expected between %d and "
          "16", n, PER_THREAD);

    snprintf(sql, sizeof sql, "DROP TABLE %s", table);
    CHECK(tu_exec_ok(tu_observer(), sql), "%s: %s", sql, PQerrorMessage(tu_observer()));
    return tu_finish();
}
