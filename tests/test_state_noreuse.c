/* test_state_noreuse.c: a connection finished mid-query, in pipeline mode, in COPY or with event procs is closed, not reused. */
#define _GNU_SOURCE
#include "testutil.h"

#include <libpq-events.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*
 * Usage: test_state_noreuse (no arguments).
 * Each scenario: a first holder (backend P) is left in a state that cannot be handed on,
 * then finished; two connects with the same parameters (the second while the first is
 * held, so a spare cannot hide anything) must both get other backends, and P must leave
 * pg_stat_activity (the server saw the disconnection). A control scenario first shows
 * that a plain finish is reused, so "another backend" means "not reused".
 */

static char table[64]; /* a table of ours, made by the observer */

/* Is backend pid still in pg_stat_activity? Waits up to timeout_ms for it to go. */
static bool backend_lingers(int pid, int timeout_ms)
{
    char sql[128];
    int waited = 0;

    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
    for (;;) {
        char *v = tu_query_value(tu_observer(), sql);
        bool there;

        REQUIRE(v != NULL, "observer: %s", PQerrorMessage(tu_observer()));
        there = strcmp(v, "0") != 0;
        free(v);
        if (!there || waited >= timeout_ms)
            return there;
        tu_sleep_ms(50);
        waited += 50;
    }
}

/* After the first holder on backend pid was finished in state `what`: the next two
 * connects get other backends and pid goes away. */
static void check_not_reused(const char *what, int pid)
{
    PGconn *a, *b;
    int pa, pb;

    tu_sleep_ms(50); /* had it been kept, its reset would be complete: it would be handed out */
    a = tu_connect_ok();
    b = tu_connect_ok();
    pa = tu_backend_pid(a);
    pb = tu_backend_pid(b);

    CHECK(pa > 0 && pb > 0, "%s: next holders work (%d, %d)", what, pa, pb);
    CHECK(pa != pid && pb != pid, "%s: backend %d was handed to a next holder (%d, %d)", what,
          pid, pa, pb);
    CHECK(PQtransactionStatus(a) == PQTRANS_IDLE && PQtransactionStatus(b) == PQTRANS_IDLE,
          "%s: next holders are idle", what);
    PQfinish(b);
    PQfinish(a);
    CHECK(!backend_lingers(pid, 10000), "%s: backend %d still in pg_stat_activity 10 s after "
          "PQfinish", what, pid);
}

/* Control: a plain finish is reused (the same backend comes back), so the scenarios
 * below really test the decision not to keep. */
static void test_control_reused(void)
{
    int pid, i, p2 = -1;
    PGconn *c = tu_first_holder(&pid);
    PGconn *extra[8];
    int nextra = 0;

    PQfinish(c);
    /* Another backend may come first (a reset that did not answer in time): hold it and try
     * again. */
    for (i = 0; i < 8; i++) {
        c = tu_connect_ok();
        p2 = tu_backend_pid(c);
        if (p2 == pid)
            break;
        extra[nextra++] = c;
        tu_sleep_ms(10 << i);
    }
    CHECK(p2 == pid, "control: a plain PQfinish was not reused (backend %d, then %d)", pid, p2);
    if (p2 == pid)
        PQfinish(c);
    for (i = 0; i < nextra; i++)
        PQfinish(extra[i]);
}

/* Finished while a query (pg_sleep(1)) is in flight: not reused, and its backend exits. */
static void test_mid_query(void)
{
    int pid;
    PGconn *c = tu_first_holder(&pid);

    REQUIRE(PQsendQuery(c, "SELECT pg_sleep(1)") == 1, "PQsendQuery: %s", PQerrorMessage(c));
    REQUIRE(PQisBusy(c) == 1, "a query is in flight");
    PQfinish(c);
    check_not_reused("mid-query", pid);
}

/* Finished in pipeline mode with a query sent and no sync: not reused. */
static void test_pipeline_pending(void)
{
    int pid;
    PGconn *c = tu_first_holder(&pid);

    REQUIRE(PQenterPipelineMode(c) == 1, "PQenterPipelineMode: %s", PQerrorMessage(c));
    REQUIRE(PQsendQueryParams(c, "SELECT 1", 0, NULL, NULL, NULL, NULL, 0) == 1,
            "PQsendQueryParams in pipeline: %s", PQerrorMessage(c));
    PQfinish(c);
    check_not_reused("pipeline with a query in flight", pid);
}

/* Finished in pipeline mode after every result was read (still in pipeline mode): not
 * reused either, as pipeline mode is client-side state the next holder must not get. */
static void test_pipeline_idle(void)
{
    int pid, syncs = 0, guard = 0;
    PGconn *c = tu_first_holder(&pid);
    PGresult *res;

    REQUIRE(PQenterPipelineMode(c) == 1, "PQenterPipelineMode: %s", PQerrorMessage(c));
    REQUIRE(PQsendQueryParams(c, "SELECT 1", 0, NULL, NULL, NULL, NULL, 0) == 1,
            "PQsendQueryParams in pipeline: %s", PQerrorMessage(c));
    REQUIRE(PQpipelineSync(c) == 1, "PQpipelineSync: %s", PQerrorMessage(c));
    while (syncs == 0 && guard++ < 10) {
        while ((res = PQgetResult(c)) != NULL) {
            syncs += PQresultStatus(res) == PGRES_PIPELINE_SYNC;
            PQclear(res);
        }
    }
    REQUIRE(syncs == 1, "pipeline results read up to the sync");
    REQUIRE(PQpipelineStatus(c) == PQ_PIPELINE_ON, "still in pipeline mode");
    PQfinish(c);
    check_not_reused("pipeline mode, idle", pid);
}

/* Finished in COPY FROM STDIN with a row sent: not reused, and the row is not committed. */
static void test_copy_in(void)
{
    char sql[128];
    int pid;
    PGconn *c = tu_first_holder(&pid);
    PGresult *res;
    char *v;

    snprintf(sql, sizeof sql, "COPY %s FROM STDIN", table);
    res = PQexec(c, sql);
    REQUIRE(PQresultStatus(res) == PGRES_COPY_IN, "COPY FROM STDIN: %s", PQerrorMessage(c));
    PQclear(res);
    REQUIRE(PQputCopyData(c, "1\n", 2) == 1, "PQputCopyData: %s", PQerrorMessage(c));
    PQfinish(c);
    check_not_reused("COPY IN", pid);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    v = tu_query_value(tu_observer(), sql);
    CHECK(v && strcmp(v, "0") == 0, "COPY IN rows finished without PQputCopyEnd were "
          "committed (%s)", v ? v : PQerrorMessage(tu_observer()));
    free(v);
}

/* Finished in COPY TO STDOUT with the data not read: not reused. */
static void test_copy_out(void)
{
    int pid;
    PGconn *c = tu_first_holder(&pid);
    PGresult *res;

    res = PQexec(c, "COPY (SELECT generate_series(1, 100000)) TO STDOUT");
    REQUIRE(PQresultStatus(res) == PGRES_COPY_OUT, "COPY TO STDOUT: %s", PQerrorMessage(c));
    PQclear(res);
    PQfinish(c);
    check_not_reused("COPY OUT", pid);
}

struct event_counts {
    int registered, destroyed, other;
};

static int event_proc(PGEventId id, void *info, void *pass)
{
    struct event_counts *n = pass;

    (void) info;
    if (id == PGEVT_REGISTER)
        n->registered++;
    else if (id == PGEVT_CONNDESTROY)
        n->destroyed++;
    else
        n->other++;
    return 1;
}

/* A connection with an event procedure (PQregisterEventProc) is not reused, and its
 * PGEVT_CONNDESTROY fires exactly once, at the app's PQfinish. */
static void test_event_proc(void)
{
    static struct event_counts n;
    int pid;
    PGconn *c = tu_first_holder(&pid);

    REQUIRE(PQregisterEventProc(c, event_proc, "pqd_state_events", &n) == 1,
            "PQregisterEventProc");
    CHECK(n.registered == 1, "PGEVT_REGISTER fired %d times", n.registered);
    tu_exec_check(c, "SELECT 1");
    CHECK(n.destroyed == 0, "CONNDESTROY fired %d times before PQfinish", n.destroyed);
    PQfinish(c);
    CHECK(n.destroyed == 1, "PGEVT_CONNDESTROY fired %d times at PQfinish, expected 1",
          n.destroyed);
    check_not_reused("event procedure", pid);
    CHECK(n.destroyed == 1 && n.registered == 1, "events after the finish: CONNDESTROY %d, "
          "REGISTER %d, expected 1 each", n.destroyed, n.registered);
}

int main(void)
{
    char sql[128];

    printf("test_state_noreuse: as %s\n", tu_app_name());
    snprintf(table, sizeof table, "pqd_state_copy_%ld", (long) getpid());
    snprintf(sql, sizeof sql, "CREATE TABLE %s (x int)", table);
    REQUIRE(tu_exec_check(tu_observer(), sql), "observer creates %s", table);

    test_control_reused();
    test_mid_query();
    test_pipeline_pending();
    test_pipeline_idle();
    test_copy_in();
    test_copy_out();
    test_event_proc();
    test_control_reused(); /* the pool still works after all that */

    snprintf(sql, sizeof sql, "DROP TABLE %s", table);
    tu_exec_check(tu_observer(), sql);
    return tu_finish();
}
