/* test_handles_cancel.c: a handle's cancel object cancels that handle's query only, wherever its server connection is. */
#define _GNU_SOURCE
#include "testutil.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Usage: test_handles_cancel (no arguments). Run with PQDEDUP_UNBIND_AFTER=0: a connect that
 * finds no free connection takes an idle, clean handle's at once.
 *
 *   own       PQcancel through PQgetCancel(A), from another thread, cancels A's pg_sleep
 *             (SQLSTATE 57014).
 *   moved     B took A's backend and runs pg_sleep there: PQcancel through A's earlier cancel
 *             object returns 1 with an empty error, sends nothing (B's query completes).
 *   follows   A bound again to another backend (B busy in a transaction): the same cancel
 *             object cancels A's query there.
 *   request   PQrequestCancel(A) from another thread cancels A's query.
 *   signal    PQcancel from a SIGALRM handler in the thread running A's pg_sleep cancels it.
 *   finished  after PQfinish(A), its backend serves C: PQcancel through A's old cancel object
 *             does not cancel C's pg_sleep; PQfreeCancel afterwards is fine.
 *   fresh     PQrequestCancel cancels the query of a handle that never called PQgetCancel.
 */

/* A blocking query on another thread. */
struct runner {
    PGconn *conn;
    const char *sql;
    pthread_t thread;
    ExecStatusType status;
    char sqlstate[6];
    long ms;
};

static void *run_query(void *arg)
{
    struct runner *r = arg;
    long start = tu_now_ms();
    PGresult *res = PQexec(r->conn, r->sql);

    r->ms = tu_now_ms() - start;
    r->status = PQresultStatus(res);
    snprintf(r->sqlstate, sizeof r->sqlstate, "%s", tu_sqlstate(res));
    PQclear(res);
    return NULL;
}

static void start_query(struct runner *r, PGconn *c, const char *sql)
{
    *r = (struct runner){.conn = c, .sql = sql};
    REQUIRE(pthread_create(&r->thread, NULL, run_query, r) == 0, "pthread_create");
}

/* Waits until a backend of this test (other than not_pid) runs a query containing fragment;
 * returns its pid, or -1 after 10 s. */
static int wait_running(const char *fragment, int not_pid)
{
    char sql[512];
    long deadline = tu_now_ms() + 10000;

    snprintf(sql, sizeof sql,
             "SELECT pid FROM pg_stat_activity WHERE application_name = '%s' AND state = 'active' "
             "AND strpos(query, '%s') > 0 AND pid <> %d AND pid <> pg_backend_pid()",
             tu_app_name(), fragment, not_pid);
    while (tu_now_ms() < deadline) {
        char *v = tu_query_value(tu_observer(), sql);
        int pid = v ? atoi(v) : -1;

        free(v);
        if (pid > 0)
            return pid;
        tu_sleep_ms(10);
    }
    return -1;
}

static void check_cancelled(struct runner *r, const char *scenario)
{
    pthread_join(r->thread, NULL);
    CHECK(r->status == PGRES_FATAL_ERROR && strcmp(r->sqlstate, "57014") == 0,
          "%s: the query ended with status %d, SQLSTATE %s, after %ld ms; expected 57014 (cancelled)",
          scenario, (int) r->status, r->sqlstate, r->ms);
}

static PGcancel *volatile signal_cancel;
static volatile sig_atomic_t signal_result = -1;

static void on_alarm(int sig)
{
    char errbuf[256];

    (void) sig;
    signal_result = PQcancel(signal_cancel, errbuf, sizeof errbuf);
}

struct alarm_arg {
    pthread_t target;
    int pid;
};

/* Sends SIGALRM to the target thread once pid runs pg_sleep. */
static void *send_alarm(void *arg)
{
    struct alarm_arg *a = arg;

    if (CHECK(tu_wait_active(a->pid, "pg_sleep", 10000), "signal: A's pg_sleep is not seen running"))
        pthread_kill(a->target, SIGALRM);
    return NULL;
}

int main(void)
{
    PGconn *a, *b, *c, *d;
    PGcancel *ca;
    struct runner r;
    char errbuf[256];
    int p, q, pid, rc;
    PGresult *res;

    /* own */
    a = tu_connect_ok();
    p = tu_backend_pid(a);
    REQUIRE(p > 0, "pg_backend_pid: %s", PQerrorMessage(a));
    ca = PQgetCancel(a);
    REQUIRE(ca != NULL, "PQgetCancel: %s", PQerrorMessage(a));
    start_query(&r, a, "SELECT pg_sleep(30)");
    CHECK(tu_wait_active(p, "pg_sleep", 10000), "own: A's pg_sleep not seen running on %d", p);
    CHECK(PQcancel(ca, errbuf, sizeof errbuf) == 1, "own: PQcancel: %s", errbuf);
    check_cancelled(&r, "own");

    /* moved: B runs on P, A is unbound */
    b = tu_connect_taking(p, "moved");
    CHECK(PQsendQuery(b, "SELECT pg_sleep(1), 'b-done'") == 1, "moved: B sends: %s", PQerrorMessage(b));
    CHECK(tu_wait_active(p, "pg_sleep", 10000), "moved: B's pg_sleep not seen running on %d", p);
    strcpy(errbuf, "untouched");
    CHECK(PQcancel(ca, errbuf, sizeof errbuf) == 1 && errbuf[0] == '\0',
          "moved: PQcancel through unbound A's object must send nothing and return 1 (errbuf \"%s\")", errbuf);
    res = PQgetResult(b);
    CHECK(PQresultStatus(res) == PGRES_TUPLES_OK,
          "moved: B's query was cancelled through A's cancel object (SQLSTATE %s)", tu_sqlstate(res));
    PQclear(res);
    PQclear(PQgetResult(b));

    /* follows: B busy, A binds to a new backend */
    tu_exec_check(b, "BEGIN");
    start_query(&r, a, "SELECT pg_sleep(30) AS follows");
    q = wait_running("follows", p);
    CHECK(q > 0, "follows: A's query not seen running on another backend");
    CHECK(PQcancel(ca, errbuf, sizeof errbuf) == 1, "follows: PQcancel: %s", errbuf);
    check_cancelled(&r, "follows");
    CHECK(PQbackendPID(a) == q, "follows: A ran on %d, seen on %d", PQbackendPID(a), q);
    CHECK(PQtransactionStatus(b) == PQTRANS_INTRANS && tu_backend_pid(b) == p,
          "follows: B still in its transaction on %d", p);

    /* request */
    start_query(&r, a, "SELECT pg_sleep(30) AS request");
    CHECK(tu_wait_active(q, "request", 10000), "request: A's query not seen running on %d", q);
    /* Nothing else on A meanwhile: any other call on A waits for the running one to end. */
    rc = PQrequestCancel(a);
    CHECK(rc == 1, "request: PQrequestCancel returned %d", rc);
    check_cancelled(&r, "request");

    /* signal */
    {
        struct sigaction sa = {.sa_handler = on_alarm};
        struct alarm_arg arg = {.target = pthread_self(), .pid = q};
        pthread_t sender;

        sigemptyset(&sa.sa_mask);
        REQUIRE(sigaction(SIGALRM, &sa, NULL) == 0, "sigaction");
        signal_cancel = ca;
        REQUIRE(pthread_create(&sender, NULL, send_alarm, &arg) == 0, "pthread_create");
        r = (struct runner){.conn = a, .sql = "SELECT pg_sleep(30) AS signalled"};
        run_query(&r);
        pthread_join(sender, NULL);
        CHECK(signal_result == 1, "signal: PQcancel in the handler returned %d", (int) signal_result);
        CHECK(r.status == PGRES_FATAL_ERROR && strcmp(r.sqlstate, "57014") == 0,
              "signal: the query ended with status %d, SQLSTATE %s after %ld ms; expected 57014",
              (int) r.status, r.sqlstate, r.ms);
        signal(SIGALRM, SIG_DFL);
    }
    tu_exec_check(b, "COMMIT");

    /* finished: A's backend Q serves C */
    PQfinish(a);
    CHECK(tu_wait_reset(q), "finished: A's backend %d was not reset and kept", q);
    c = tu_connect_ok();
    pid = tu_backend_pid(c);
    CHECK(pid == q, "finished: C got backend %d, expected A's kept %d", pid, q);
    CHECK(PQsendQuery(c, "SELECT pg_sleep(1), 'c-done'") == 1, "finished: C sends: %s", PQerrorMessage(c));
    CHECK(tu_wait_active(pid, "pg_sleep", 10000), "finished: C's pg_sleep not seen running on %d", pid);
    PQcancel(ca, errbuf, sizeof errbuf);
    res = PQgetResult(c);
    CHECK(PQresultStatus(res) == PGRES_TUPLES_OK,
          "finished: C's query was cancelled through finished A's cancel object (SQLSTATE %s)", tu_sqlstate(res));
    PQclear(res);
    PQclear(PQgetResult(c));
    PQfreeCancel(ca);

    /* request, fresh: PQrequestCancel on a handle that never asked for a cancel object */
    tu_exec_check(b, "BEGIN"); /* busy, as is C below: D opens a backend of its own */
    tu_exec_check(c, "BEGIN");
    d = tu_connect_ok();
    start_query(&r, d, "SELECT pg_sleep(10) AS fresh");
    pid = wait_running("fresh", 0);
    CHECK(pid > 0, "request, fresh: D's query not seen running");
    rc = PQrequestCancel(d);
    CHECK(rc == 1, "request, fresh: PQrequestCancel returned %d", rc);
    check_cancelled(&r, "request on a handle without PQgetCancel");
    PQfinish(d);
    PQfinish(c);
    PQfinish(b);
    return tu_finish();
}
