/* test_leak.c: a program that never finishes its connections keeps working past max_connections. */
#include "test_leak_common.h"

#include <pthread.h>

/*
 * Usage: test_leak MODE
 *   superuser   leak over the unix socket as postgres until long past max_connections: every
 *               connect answers its queries; the server really was full ("too many clients
 *               already", which a connect for another key then gets); finishing the handles
 *               leaves every other one working.
 *   role        the same over TCP as pqd_alice with a password: the server refuses with
 *               "remaining connection slots are reserved ..." once only reserved slots remain.
 *   async       a leak of async connects (PQconnectStart + poll loop, as Ruby's pg makes
 *               every connect) until the server is full: the connect refused during
 *               PQconnectPoll reports the server's error (MODEL.md, issue 10); a blocking
 *               connect then takes an idle handle's connection, and every handle still works.
 *   busy        handles inside transactions keep their backends: when every connection is
 *               busy, a connect gets the server's error after PQDEDUP_MAX_WAIT; one handle
 *               that goes idle lends its connection to another thread's connect.
 *   exit        run the superuser leak in a child that exits without finishing anything;
 *               afterwards the server has its slots back.
 *   child       (internal) the leak for `exit`, ending without any PQfinish.
 * Registered with PQDEDUP_UNBIND_AFTER=1h (an idle handle's connection moves only under
 * pressure, so the leak really fills the server) and a short PQDEDUP_MAX_WAIT. Every mode
 * saturates the server: register it SERIAL.
 */

/* CHECKs that handles[0..n) are n distinct pointers: every connect is its own handle. */
static void check_distinct_handles(PGconn **handles, long n)
{
    long same = 0;

    for (long i = 0; i < n; i++)
        for (long j = 0; j < i; j++)
            same += handles[i] && handles[i] == handles[j];
    CHECK(same == 0, "%ld of %ld live connects returned a PGconn * already handed out", same, n);
}

/* The leak: connect `cycles` times and never finish; every handle must answer a query with
 * its own number, and the backends of this app stay within max_connections. Fills
 * handles[] and pids[] (the backend each ran its query on). */
static void leak_loop(const char *conninfo, long cycles, long max_conn, PGconn **handles,
                      int *pids)
{
    long failed = 0, most = 0;

    for (long i = 0; i < cycles; i++) {
        PGconn *c = PQconnectdb(conninfo);

        handles[i] = c;
        pids[i] = -1;
        if (CHECK(PQstatus(c) == CONNECTION_OK, "leak cycle %ld: connect failed: %s", i,
                  PQerrorMessage(c)) &&
            CHECK(tu_echo_ok(c, i), "leak cycle %ld: SELECT %ld was not answered: %s", i, i,
                  PQerrorMessage(c)))
            pids[i] = PQbackendPID(c);
        else
            failed++;
        REQUIRE(failed < 5, "giving up after %ld failed cycles", failed);
        if (i % 10 == 9 || i == cycles - 1) {
            long n = tu_count_backends(tu_app_name());

            most = n > most ? n : most;
            CHECK(n >= 0 && n <= max_conn, "after %ld leaked connects: %ld backends for %s, "
                  "max_connections is %ld", i + 1, n, tu_app_name(), max_conn);
        }
    }
    printf("test_leak: %ld leaked connects ran on %ld distinct backends, at most %ld at once\n",
           cycles, pqt_distinct(pids, cycles), most);
    check_distinct_handles(handles, cycles);
}

/* How many leak cycles: three times max_connections, scaled, but always well past it. */
static long leak_cycles(long max_conn)
{
    long cycles = tu_scaled(max_conn * 3);

    return cycles < max_conn + 10 ? max_conn + 10 : cycles;
}

/* While the leak fills the server, a connect with other parameters (another key: no handle
 * of the leak may serve it) gets the server's own refusal, after PQDEDUP_MAX_WAIT: proof that
 * the leak ran past a full server, and of which error plain libpq would have given it. */
static void check_server_full(const char *other_conninfo, const char *refusal)
{
    long t0 = tu_now_ms(), took;
    PGconn *c = PQconnectdb(other_conninfo);

    took = tu_now_ms() - t0;
    CHECK(PQstatus(c) == CONNECTION_BAD && strstr(PQerrorMessage(c), refusal),
          "a connect for another key while the leak holds the server: expected the server's "
          "\"%s\", got %s", refusal,
          PQstatus(c) == CONNECTION_OK ? "a connection (the server was not full)" : PQerrorMessage(c));
    CHECK(took >= pqt_max_wait_ms() - 50 && took < pqt_max_wait_ms() + 10000, "the refused connect for "
          "another key returned after %ld ms; PQDEDUP_MAX_WAIT is %ld ms", took, pqt_max_wait_ms());
    PQfinish(c);
}

/* Leaking past max_connections: every connect answers its queries, the server was really
 * full, and finishing every other handle leaves each remaining one answering correctly. */
static void leak_then_finish(const char *conninfo, const char *other_conninfo,
                             const char *refusal)
{
    long max_conn = pqt_max_connections();
    long cycles, left;
    PGconn **handles;
    int *pids;

    REQUIRE(max_conn > 0, "cannot read max_connections");
    cycles = leak_cycles(max_conn);
    handles = calloc((size_t)cycles, sizeof *handles);
    pids = calloc((size_t)cycles, sizeof *pids);
    REQUIRE(handles && pids, "out of memory");
    printf("test_leak: %ld leaked connects as %s, max_connections=%ld\n", cycles, tu_app_name(),
           max_conn);

    leak_loop(conninfo, cycles, max_conn, handles, pids);
    CHECK(pqt_distinct(pids, cycles) < cycles, "%ld distinct backends for %ld connects: the "
          "server should have been full", pqt_distinct(pids, cycles), cycles);
    check_server_full(other_conninfo, refusal);

    /* Unbound handles still say what a connection says. */
    for (long i = 0; i < cycles; i++)
        if (!CHECK(PQstatus(handles[i]) == CONNECTION_OK &&
                   PQtransactionStatus(handles[i]) == PQTRANS_IDLE,
                   "leaked handle %ld: status %d, transaction status %d", i,
                   (int)PQstatus(handles[i]), (int)PQtransactionStatus(handles[i])))
            break;

    /* Finish every other handle; each remaining handle must still answer correctly. */
    for (long i = 0; i < cycles; i += 2)
        PQfinish(handles[i]);
    for (long i = 1; i < cycles; i += 2)
        CHECK(tu_echo_ok(handles[i], 1000 + i), "handle %ld after finishing other handles: %s",
              i, PQerrorMessage(handles[i]));
    for (long i = 1; i < cycles; i += 2)
        PQfinish(handles[i]);

    /* Finished: at most PQDEDUP_KEEP_PER_KEY (16) are kept, the rest really closed. */
    left = tu_wait_backends(tu_app_name(), 16, 5000);
    CHECK(left >= 0 && left <= 16, "%ld backends left after finishing every handle, expected "
          "at most 16 kept", left);

    /* And both keys work normally again. */
    {
        PGconn *c = PQconnectdb(conninfo), *o = PQconnectdb(other_conninfo);

        CHECK(PQstatus(c) == CONNECTION_OK && tu_echo_ok(c, 7),
              "connect after finishing the leak: %s", PQerrorMessage(c));
        CHECK(PQstatus(o) == CONNECTION_OK && tu_echo_ok(o, 8),
              "connect for the other key after finishing the leak: %s", PQerrorMessage(o));
        PQfinish(c);
        PQfinish(o);
    }
    free(handles);
    free(pids);
}

/* Thread body for leak_busy: connect, BEGIN, report the backend; the handle is handed back
 * to the main thread still inside its transaction. */
struct other {
    PGconn *c;
    int pid;
    long took_ms;
};

static void *other_thread_connect(void *arg)
{
    struct other *o = arg;
    long t0 = tu_now_ms();

    o->c = PQconnectdb(tu_conninfo(""));
    o->took_ms = tu_now_ms() - t0;
    o->pid = -1;
    if (PQstatus(o->c) == CONNECTION_OK && tu_exec_ok(o->c, "BEGIN"))
        o->pid = tu_backend_pid(o->c);
    return NULL;
}

/* Counts the rows of table t that conn sees; -1 on error. */
static long rows_seen(PGconn *conn, const char *t)
{
    char sql[128], *v;
    long n;

    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", t);
    v = tu_query_value(conn, sql);
    n = v ? strtol(v, NULL, 10) : -1;
    free(v);
    return n;
}

/* Handles inside transactions (each with an uncommitted row) fill the server: the next
 * connect gets the server's "too many clients already" after PQDEDUP_MAX_WAIT, so do four
 * at once from other threads, and every busy handle kept its backend and its transaction. One goes idle: another thread's connect
 * takes its connection at once; when that one is busy too, the idle handle's next query has
 * nothing to run on and fails as a broken connection would, with the server's error. */
static void leak_busy(void)
{
    long max_conn = pqt_max_connections(), n = 0, i, t0, took = 0;
    PGconn **held;
    PGconn *c = NULL;
    int *pids;
    char table[64], sql[160];
    struct other other;
    pthread_t t;

    REQUIRE(max_conn > 0, "cannot read max_connections");
    snprintf(table, sizeof table, "pqd_busy_%ld", (long)getpid());
    snprintf(sql, sizeof sql, "CREATE TABLE %s (x int)", table);
    REQUIRE(tu_exec_ok(tu_observer(), sql), "%s: %s", sql, PQerrorMessage(tu_observer()));
    held = calloc((size_t)max_conn + 5, sizeof *held);
    pids = calloc((size_t)max_conn + 5, sizeof *pids);
    REQUIRE(held && pids, "out of memory");
    for (i = 0; i < max_conn + 5; i++) {
        t0 = tu_now_ms();
        c = PQconnectdb(tu_conninfo(""));
        took = tu_now_ms() - t0;
        if (PQstatus(c) != CONNECTION_OK)
            break;
        held[n] = c;
        snprintf(sql, sizeof sql, "BEGIN; INSERT INTO %s VALUES (%ld)", table, n);
        CHECK(tu_exec_ok(c, sql), "%s: %s", sql, PQerrorMessage(c));
        pids[n] = tu_backend_pid(c);
        n++;
    }
    printf("test_leak: %ld handles in transactions, then: %s", n,
           PQstatus(c) == CONNECTION_OK ? "(no refusal)\n" : PQerrorMessage(c));
    REQUIRE(i < max_conn + 5, "the server never refused a connect");
    CHECK(pqt_distinct(pids, n) == n, "%ld distinct backends for %ld handles in transactions",
          pqt_distinct(pids, n), n);
    CHECK(strstr(PQerrorMessage(c), "too many clients already") != NULL, "the refused connect "
          "did not get the server's error: %s", PQerrorMessage(c));
    CHECK(took >= pqt_max_wait_ms() - 50, "the refused connect failed after %ld ms, before "
          "PQDEDUP_MAX_WAIT=%ld ms", took, pqt_max_wait_ms());
    PQfinish(c);

    /* Four threads connect at once, the server still full: each fails with the server's words,
     * whether it asked the server itself or waited out the back-off after another's refusal
     * (then pqdedup says why it did not ask). */
    {
        struct other others[4];
        pthread_t threads[4];

        for (i = 0; i < 4; i++)
            REQUIRE(pthread_create(&threads[i], NULL, other_thread_connect, &others[i]) == 0, "pthread_create");
        for (i = 0; i < 4; i++) {
            const char *msg;

            pthread_join(threads[i], NULL);
            msg = PQerrorMessage(others[i].c);
            CHECK(PQstatus(others[i].c) == CONNECTION_BAD && strstr(msg, "too many clients already") &&
                  !strstr(msg, "connection option"), "a connect of 4 at once with the server full: "
                  "status %d, expected a failure with the server's error: %s",
                  (int)PQstatus(others[i].c), msg);
            PQfinish(others[i].c);
        }
    }

    /* Every busy handle is where it was: same backend, same transaction, its own row only. */
    for (i = 0; i < n; i++) {
        long rows = rows_seen(held[i], table);

        if (!CHECK(tu_backend_pid(held[i]) == pids[i] &&
                   PQtransactionStatus(held[i]) == PQTRANS_INTRANS && rows == 1,
                   "handle %ld in a transaction: backend %d (was %d), transaction status %d, "
                   "sees %ld rows (expected its own 1): %s", i, tu_backend_pid(held[i]), pids[i],
                   (int)PQtransactionStatus(held[i]), rows, PQerrorMessage(held[i])))
            break;
    }

    /* One goes idle: another thread's connect gets its connection, at once. */
    CHECK(tu_exec_ok(held[0], "ROLLBACK"), "ROLLBACK: %s", PQerrorMessage(held[0]));
    REQUIRE(pthread_create(&t, NULL, other_thread_connect, &other) == 0, "pthread_create");
    pthread_join(t, NULL);
    CHECK(PQstatus(other.c) == CONNECTION_OK && other.pid == pids[0],
          "another thread's connect with one idle handle and the server full: expected the idle "
          "handle's backend %d, got %d: %s", pids[0], other.pid, PQerrorMessage(other.c));
    CHECK(other.took_ms < pqt_max_wait_ms(), "that connect waited %ld ms", other.took_ms);
    CHECK(rows_seen(other.c, table) == 0, "the new handle sees uncommitted rows of another");

    /* Now every connection is busy again: the idle handle's next query cannot run. */
    t0 = tu_now_ms();
    c = held[0];
    {
        int answered = tu_echo_ok(c, 1);
        ConnStatusType st = PQstatus(c);
        const char *msg = PQerrorMessage(c);

        CHECK(!answered && st == CONNECTION_BAD, "a query on an idle handle whose connection "
              "went to a busy one, the server full: expected it to fail on a broken connection, "
              "got %s, status %d: %s", answered ? "an answer" : "no answer", (int)st, msg);
        /* MODEL.md: "PQerrorMessage says why" (the server's refusal). */
        CHECK(strstr(msg, "too many clients already") != NULL, "the failed query's error does "
              "not say why the handle has no connection: %s", msg);
    }
    CHECK(tu_now_ms() - t0 >= pqt_max_wait_ms() - 50, "the query failed after %ld ms, before "
          "PQDEDUP_MAX_WAIT", tu_now_ms() - t0);
    for (i = 1; i < n; i++)
        if (!CHECK(tu_backend_pid(held[i]) == pids[i] && rows_seen(held[i], table) == 1,
                   "busy handle %ld disturbed", i))
            break;

    /* The other thread's handle commits; the held ones roll back: one row stays. */
    CHECK(tu_exec_ok(other.c, "COMMIT"), "COMMIT: %s", PQerrorMessage(other.c));
    PQfinish(other.c);
    for (i = 0; i < n; i++)
        PQfinish(held[i]);
    snprintf(sql, sizeof sql, "DROP TABLE %s", table);
    CHECK(rows_seen(tu_observer(), table) == 0, "rows of rolled-back transactions were committed");
    CHECK(tu_exec_ok(tu_observer(), sql), "%s: %s", sql, PQerrorMessage(tu_observer()));
    free(held);
    free(pids);
}

/* Leaking async connects (issue 10): twice max_connections of them, each driven by a poll
 * loop that waits on PQsocket, all work: a refusal that arrives during PQconnectPoll is
 * answered with an idle handle's server connection (or a wait the poll loop drives), as for a
 * blocking connect. Every handle stays its own and answers again at the end; the server never
 * has more backends of the key than max_connections. */
static void leak_async(void)
{
    long max_conn = pqt_max_connections(), n = 2 * max_conn, i, left;
    PGconn **held;

    REQUIRE(max_conn > 0, "cannot read max_connections");
    held = calloc((size_t)n, sizeof *held);
    REQUIRE(held, "out of memory");
    for (i = 0; i < n; i++) {
        held[i] = tu_connect_async(tu_conninfo(""));
        if (!CHECK(PQstatus(held[i]) == CONNECTION_OK, "async leak connect %ld of %ld failed: %s", i, n,
                   PQerrorMessage(held[i])))
            break;
        CHECK(tu_echo_ok(held[i], i), "async leak cycle %ld: query failed: %s", i, PQerrorMessage(held[i]));
        long backends = tu_count_backends(tu_app_name());
        CHECK(backends <= max_conn, "%ld backends after %ld async connects (max_connections %ld)",
              backends, i + 1, max_conn);
    }
    n = i;
    check_distinct_handles(held, n);
    for (i = 0; i < n; i++)
        if (!CHECK(tu_echo_ok(held[i], 100 + i), "async handle %ld after the leak: %s", i,
                   PQerrorMessage(held[i])))
            break;
    for (i = 0; i < n; i++)
        PQfinish(held[i]);
    left = tu_wait_backends(tu_app_name(), 16, 5000);
    CHECK(left >= 0 && left <= 16, "%ld backends left after finishing, expected at most 16", left);
    free(held);
}

/* A role's conninfo over TCP with its password; app_suffix makes another key. */
static const char *role_conninfo(const char *app_suffix)
{
    char extra[256];

    if (app_suffix)
        snprintf(extra, sizeof extra, "host=%s user=pqd_alice password=alice_pw "
                 "dbname=postgres application_name=%s%s", tu_tcp_host(), tu_app_name(),
                 app_suffix);
    else
        snprintf(extra, sizeof extra, "host=%s user=pqd_alice password=alice_pw dbname=postgres",
                 tu_tcp_host());
    return tu_conninfo(extra);
}

/* The child of `exit`: leak past max_connections, check, and exit without any PQfinish. */
static int leak_child(void)
{
    long max_conn = pqt_max_connections();
    long cycles;
    PGconn **handles;
    int *pids;

    REQUIRE(max_conn > 0, "cannot read max_connections");
    cycles = leak_cycles(max_conn);
    handles = calloc((size_t)cycles, sizeof *handles);
    pids = calloc((size_t)cycles, sizeof *pids);
    REQUIRE(handles && pids, "out of memory");
    leak_loop(tu_conninfo(""), cycles, max_conn, handles, pids);
    CHECK(pqt_distinct(pids, cycles) < cycles, "the server never refused a connect");
    free(handles);
    free(pids);
    /* tu_finish closes only the observer; the leaked handles stay open until exit. */
    return tu_finish();
}

/* After a leaking program exits without finishing anything, its backends go away and the
 * server accepts connections again: all but 10 of its slots, held at once by handles inside
 * transactions (so each needs a backend of its own). */
static void leak_exit(void)
{
    char *argv[] = {NULL, "child", NULL};
    char app[64];
    int status = 0;
    long left, max_conn = pqt_max_connections();
    pid_t child = pqt_run_self(argv, NULL, &status);
    PGconn **held;
    int *pids;
    long want;

    REQUIRE(child > 0, "could not run the child: %s", strerror(errno));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the leaking child failed (status %d)",
          status);
    snprintf(app, sizeof app, "pqdt_test_leak_%ld", (long)child);
    left = tu_wait_backends(app, 0, 10000);
    CHECK(left == 0, "%ld backends of the exited child %s still open", left, app);

    want = max_conn - 10;
    held = calloc((size_t)want, sizeof *held);
    pids = calloc((size_t)want, sizeof *pids);
    REQUIRE(held && pids, "out of memory");
    for (long i = 0; i < want; i++) {
        held[i] = PQconnectdb(tu_conninfo(""));
        pids[i] = PQstatus(held[i]) == CONNECTION_OK && tu_exec_ok(held[i], "BEGIN")
                      ? tu_backend_pid(held[i]) : -1;
    }
    CHECK(pqt_distinct(pids, want) == want, "after the child exited, only %ld of %ld "
          "simultaneous transactions got their own backend", pqt_distinct(pids, want), want);
    for (long i = 0; i < want; i++)
        PQfinish(held[i]);
    free(held);
    free(pids);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    char other[96];

    if (!strcmp(mode, "child"))
        return leak_child();
    tu_observer(); /* before the server is full */
    snprintf(other, sizeof other, "application_name=%s_other", tu_app_name());
    if (!strcmp(mode, "superuser"))
        leak_then_finish(tu_conninfo(""), other, "too many clients already");
    else if (!strcmp(mode, "role"))
        leak_then_finish(role_conninfo(NULL), role_conninfo("_other"),
                         "remaining connection slots are reserved");
    else if (!strcmp(mode, "async"))
        leak_async();
    else if (!strcmp(mode, "busy"))
        leak_busy();
    else if (!strcmp(mode, "exit"))
        leak_exit();
    else {
        fprintf(stderr, "usage: test_leak superuser|role|async|busy|exit\n");
        return 2;
    }
    return tu_finish();
}
