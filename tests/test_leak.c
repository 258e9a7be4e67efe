/* test_leak.c: a program that never finishes its connections keeps working past max_connections. */
#include "test_leak_common.h"

#include <poll.h>
#include <pthread.h>

/*
 * Usage: test_leak MODE
 *   superuser   leak over the unix socket as postgres: the server refuses with "too many
 *               clients already" once full; then finish every handle (shared ones included).
 *   role        the same over TCP as pqd_alice with a password: the server refuses with
 *               "remaining connection slots are reserved ..." once only reserved slots remain.
 *   async       a leak of async connects (PQconnectStart + poll loop, as Ruby's pg makes
 *               every connect): as the README documents, the refusal arrives in
 *               PQconnectPoll and the app sees the server's error; a blocking connect of the
 *               same thread then shares one of the async-opened connections.
 *   busy        connections held inside transactions are never shared: the refused connect
 *               gets the server's error; an idle one is shared, but not with another thread.
 *   exit        run the superuser leak in a child that exits without finishing anything;
 *               afterwards the server has its slots back.
 *   child       (internal) the leak for `exit`, ending without any PQfinish.
 * Every mode saturates the server: register it SERIAL.
 */

/* The leak: connect `cycles` times and never finish; every handle must run a query, and the
 * backends of this app stay within max_connections. Fills handles[] and pids[]. */
static void leak_loop(const char *conninfo, long cycles, long max_conn, PGconn **handles,
                      int *pids)
{
    long failed = 0;

    for (long i = 0; i < cycles; i++) {
        PGconn *c = PQconnectdb(conninfo);

        handles[i] = c;
        pids[i] = -1;
        if (CHECK(PQstatus(c) == CONNECTION_OK, "leak cycle %ld: connect failed: %s", i,
                  PQerrorMessage(c))) {
            pids[i] = tu_backend_pid(c);
            CHECK(pids[i] > 0, "leak cycle %ld: SELECT pg_backend_pid() failed: %s", i,
                  PQerrorMessage(c));
        }
        if (pids[i] <= 0)
            failed++;
        REQUIRE(failed < 5, "giving up after %ld failed cycles", failed);
        if (i % 10 == 9 || i == cycles - 1) {
            long n = tu_count_backends(tu_app_name());

            CHECK(n >= 0 && n <= max_conn, "after %ld leaked connects: %ld backends for %s, "
                  "max_connections is %ld", i + 1, n, tu_app_name(), max_conn);
        }
    }
}

/* Drives an async connect (PQconnectStart) to its end with PQconnectPoll, PQsocket and
 * poll(), as Ruby's pg and psycopg2's async mode do. */
static PGconn *connect_async(const char *conninfo)
{
    PGconn *c = PQconnectStart(conninfo);
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    long t0 = tu_now_ms();

    if (!c || PQstatus(c) == CONNECTION_BAD)
        return c;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED && tu_now_ms() - t0 < 20000) {
        struct pollfd pfd = {PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0};

        poll(&pfd, 1, 1000);
        st = PQconnectPoll(c);
    }
    return c;
}

/* How many leak cycles: three times max_connections, scaled, but always well past it. */
static long leak_cycles(long max_conn)
{
    long cycles = tu_scaled(max_conn * 3);

    return cycles < max_conn + 10 ? max_conn + 10 : cycles;
}

/* Leaking past max_connections: every connect answers and runs a query, the server is really
 * full (fewer distinct backends than connects), and finishing the handles one by one never
 * breaks a handle still held (shared connections are reference-counted). */
static void leak_then_finish(const char *conninfo)
{
    long max_conn = pqt_max_connections();
    long cycles, distinct, left;
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
    distinct = pqt_distinct(pids, cycles);
    printf("test_leak: %ld distinct backends served %ld connects\n", distinct, cycles);
    CHECK(distinct < cycles && distinct <= max_conn,
          "%ld distinct backends for %ld connects: the server should have been full", distinct,
          cycles);
    CHECK(distinct >= max_conn / 2, "only %ld distinct backends before sharing began "
          "(max_connections %ld): sharing should start only when the server refuses", distinct,
          max_conn);
    /* Each refused connect shares the least recently handed out connection: round robin. */
    for (long i = distinct; i < cycles; i++)
        if (!CHECK(pids[i] == pids[i - distinct], "leak cycle %ld got backend %d, expected the "
                   "least recently handed out one, %d", i, pids[i], pids[i - distinct]))
            break;

    /* Finish every other handle; each remaining handle must still work. */
    for (long i = 0; i < cycles; i += 2)
        PQfinish(handles[i]);
    for (long i = 1; i < cycles; i += 2) {
        int pid = tu_backend_pid(handles[i]);

        CHECK(pid == pids[i], "handle %ld after finishing other handles: backend pid %d, "
              "expected %d (%s)", i, pid, pids[i], PQerrorMessage(handles[i]));
    }
    for (long i = 1; i < cycles; i += 2)
        PQfinish(handles[i]);

    /* Finished: at most PQDEDUP_KEEP_PER_KEY (16) are kept, the rest really closed. */
    left = tu_wait_backends(tu_app_name(), distinct < 16 ? distinct : 16, 5000);
    CHECK(left >= 0 && left <= 16, "%ld backends left after finishing every handle, expected "
          "at most 16 kept", left);

    /* And the key works normally again. */
    {
        PGconn *c = PQconnectdb(conninfo);

        CHECK(PQstatus(c) == CONNECTION_OK && tu_backend_pid(c) > 0,
              "connect after finishing the leak: %s", PQerrorMessage(c));
        PQfinish(c);
    }
    free(handles);
    free(pids);
}

/* Thread body for leak_busy: one connect from another thread while the server is full. */
static void *other_thread_connect(void *arg)
{
    PGconn **out = arg;

    *out = PQconnectdb(tu_conninfo(""));
    return NULL;
}

/* While every connection this thread holds is inside a transaction, a connect the server
 * refuses gets the server's own error (nothing may be shared); once one is idle, the next
 * connect shares it, but another thread's connect still gets the server's error. */
static void leak_busy(void)
{
    long max_conn = pqt_max_connections(), n = 0, i;
    PGconn **held;
    PGconn *c = NULL, *other = NULL;
    int *pids, shared_pid;
    pthread_t t;

    REQUIRE(max_conn > 0, "cannot read max_connections");
    held = calloc((size_t)max_conn + 5, sizeof *held);
    pids = calloc((size_t)max_conn + 5, sizeof *pids);
    REQUIRE(held && pids, "out of memory");
    for (i = 0; i < max_conn + 5; i++) {
        c = PQconnectdb(tu_conninfo(""));
        if (PQstatus(c) != CONNECTION_OK)
            break;
        held[n] = c;
        pids[n] = tu_backend_pid(c);
        CHECK(tu_exec_ok(c, "BEGIN"), "BEGIN: %s", PQerrorMessage(c));
        n++;
    }
    printf("test_leak: %ld connections in transactions, then: %s", n,
           PQstatus(c) == CONNECTION_OK ? "(no refusal)\n" : PQerrorMessage(c));
    REQUIRE(i < max_conn + 5, "the server never refused a connect");
    CHECK(pqt_distinct(pids, n) == n, "%ld distinct backends for %ld connections in "
          "transactions: one was shared", pqt_distinct(pids, n), n);
    CHECK(strstr(PQerrorMessage(c), "too many clients already") != NULL, "the refused connect "
          "did not get the server's error: %s", PQerrorMessage(c));
    PQfinish(c);

    /* One goes idle: this thread's next connect shares it, another thread's does not. */
    CHECK(tu_exec_ok(held[0], "ROLLBACK"), "ROLLBACK: %s", PQerrorMessage(held[0]));
    REQUIRE(pthread_create(&t, NULL, other_thread_connect, &other) == 0, "pthread_create");
    pthread_join(t, NULL);
    CHECK(PQstatus(other) == CONNECTION_BAD &&
          strstr(PQerrorMessage(other), "too many clients already") != NULL,
          "another thread's connect while the server is full: expected the server's error, got "
          "%s", PQstatus(other) == CONNECTION_OK ? "a connection" : PQerrorMessage(other));
    PQfinish(other);
    c = PQconnectdb(tu_conninfo(""));
    shared_pid = PQstatus(c) == CONNECTION_OK ? tu_backend_pid(c) : -1;
    CHECK(shared_pid == pids[0], "this thread's connect with an idle held connection: backend "
          "%d, expected to share %d: %s", shared_pid, pids[0], PQerrorMessage(c));
    PQfinish(c);
    CHECK(tu_backend_pid(held[0]) == pids[0], "the shared connection broke when one handle "
          "finished");
    for (i = 0; i < n; i++)
        PQfinish(held[i]);
    free(held);
    free(pids);
}

/* Leaking async connects with default settings: each works until the server is full; the
 * refused one reports the server's own error through PQconnectPoll (the README: too late to
 * swap handles), nothing hangs; a blocking connect of the same thread then shares one of the
 * held connections, and every handle, failed ones included, finishes cleanly. */
static void leak_async(void)
{
    long max_conn = pqt_max_connections(), n = 0, i, left;
    PGconn **held, *c = NULL;
    int *pids, pid;

    REQUIRE(max_conn > 0, "cannot read max_connections");
    held = calloc((size_t)max_conn + 5, sizeof *held);
    pids = calloc((size_t)max_conn + 5, sizeof *pids);
    REQUIRE(held && pids, "out of memory");
    for (i = 0; i < max_conn + 5; i++) {
        c = connect_async(tu_conninfo(""));
        if (PQstatus(c) != CONNECTION_OK)
            break;
        held[n] = c;
        pids[n] = tu_backend_pid(c);
        CHECK(pids[n] > 0, "async leak cycle %ld: query failed: %s", i, PQerrorMessage(c));
        n++;
    }
    printf("test_leak: %ld async connects, then: %s", n,
           PQstatus(c) == CONNECTION_OK ? "(no refusal)\n" : PQerrorMessage(c));
    REQUIRE(i < max_conn + 5, "the server never refused an async connect");
    CHECK(n >= max_conn / 2 && pqt_distinct(pids, n) == n, "%ld async connects got %ld distinct "
          "backends before the refusal", n, pqt_distinct(pids, n));
    CHECK(strstr(PQerrorMessage(c), "too many clients already") != NULL, "the refused async "
          "connect did not report the server's error: %s", PQerrorMessage(c));
    PQfinish(c);

    /* Containment still works for this thread's blocking connects. */
    c = PQconnectdb(tu_conninfo(""));
    pid = PQstatus(c) == CONNECTION_OK ? tu_backend_pid(c) : -1;
    CHECK(pid == pids[0], "blocking connect with the server full: backend %d, expected to "
          "share the least recently handed out %d: %s", pid, pids[0], PQerrorMessage(c));
    PQfinish(c);
    for (i = 0; i < n; i++)
        PQfinish(held[i]);
    left = tu_wait_backends(tu_app_name(), n < 16 ? n : 16, 5000);
    CHECK(left >= 0 && left <= 16, "%ld backends left after finishing, expected at most 16", left);
    free(held);
    free(pids);
}

/* A role's conninfo over TCP with its password. */
static const char *role_conninfo(void)
{
    static char extra[256];

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
 * server accepts connections again. */
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

    /* Most slots are free again: hold that many connections at once, all distinct. */
    want = max_conn - 10;
    held = calloc((size_t)want, sizeof *held);
    pids = calloc((size_t)want, sizeof *pids);
    REQUIRE(held && pids, "out of memory");
    for (long i = 0; i < want; i++) {
        held[i] = PQconnectdb(tu_conninfo(""));
        pids[i] = PQstatus(held[i]) == CONNECTION_OK ? tu_backend_pid(held[i]) : -1;
    }
    CHECK(pqt_distinct(pids, want) == want, "after the child exited, only %ld of %ld "
          "simultaneous connections got their own backend", pqt_distinct(pids, want), want);
    for (long i = 0; i < want; i++)
        PQfinish(held[i]);
    free(held);
    free(pids);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";

    if (!strcmp(mode, "child"))
        return leak_child();
    tu_observer(); /* before the server is full */
    if (!strcmp(mode, "superuser"))
        leak_then_finish(tu_conninfo(""));
    else if (!strcmp(mode, "role"))
        leak_then_finish(role_conninfo());
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
