/* test_handles_connect.c: a handle's life at its ends: asynchronous connects answered by the pool, and calls after PQfinish. */
#define _GNU_SOURCE
#include "testutil.h"

#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * Usage: test_handles_connect (no arguments); default settings.
 *
 *   async-pooled  with a kept connection (backend P) whose reset is done, PQconnectStart and
 *                 PQconnectStartParams return a handle that reads CONNECTION_STARTED (and
 *                 PQTRANS_UNKNOWN) until the first PQconnectPoll, whose PQsocket is writable
 *                 as libpq's documented loop waits for first, and whose first PQconnectPoll
 *                 returns PGRES_POLLING_OK; then CONNECTION_OK, on P.
 *   async-new     with no connection to take (the other handle in a transaction), the
 *                 documented PQconnectPoll loop on PQsocket opens a new backend and the handle
 *                 works.
 *   finished      calls on a finished handle fail as on a failed connection: PQstatus
 *                 CONNECTION_BAD, PQerrorMessage mentions PQfinish (also after a failed
 *                 PQexec on it), PQsocket -1, PQtransactionStatus UNKNOWN; a second PQfinish is
 *                 ignored; libpq's connect loop (PQconnectPoll) does not connect it; two
 *                 threads using finished handles at once (ASan/TSan clean).
 *   distinct      every live connect gets its own pointer.
 *   load          a program that never calls libpq (this one with --exit; not /bin/true, which
 *                 hangs at exit under a preloaded ASan runtime), started with the library
 *                 preloaded and PGHOST pointing at a socket of this test, makes no connection.
 */

/* libpq's documented loop: before the first PQconnectPoll, as after PGRES_POLLING_WRITING,
 * wait until the socket is writable. Returns the last polling status (5 s at most). */
static PostgresPollingStatusType connect_loop(PGconn *c, int *polls)
{
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    long deadline = tu_now_ms() + 5000;

    *polls = 0;
    while (st == PGRES_POLLING_READING || st == PGRES_POLLING_WRITING) {
        struct pollfd pfd = {.fd = PQsocket(c), .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        int left = (int) (deadline - tu_now_ms());

        if (!CHECK(left > 0 && pfd.fd >= 0 && poll(&pfd, 1, left) == 1,
                   "async: socket %d not ready (%s) within 5 s", pfd.fd,
                   st == PGRES_POLLING_READING ? "read" : "write"))
            return PGRES_POLLING_FAILED;
        st = PQconnectPoll(c);
        ++*polls;
    }
    return st;
}

static PGconn *start_async(bool params)
{
    if (params) {
        const char *keywords[] = {"dbname", NULL};
        const char *values[] = {tu_conninfo(""), NULL};

        return PQconnectStartParams(keywords, values, 1);
    }
    return PQconnectStart(tu_conninfo(""));
}

static void test_async_pooled(bool params)
{
    const char *what = params ? "PQconnectStartParams" : "PQconnectStart";
    PGconn *a = tu_connect_ok(), *s;
    int p = tu_backend_pid(a), polls = 0;

    REQUIRE(p > 0, "%s: pg_backend_pid: %s", what, PQerrorMessage(a));
    PQfinish(a);
    REQUIRE(tu_wait_reset(p), "%s: backend %d was not reset and kept", what, p);
    s = start_async(params);
    REQUIRE(s != NULL, "%s: out of memory", what);
    CHECK(PQstatus(s) == CONNECTION_STARTED, "%s: a pooled answer reads %d before the first poll, "
          "expected CONNECTION_STARTED", what, (int) PQstatus(s));
    CHECK(PQtransactionStatus(s) == PQTRANS_UNKNOWN, "%s: PQtransactionStatus %d before the first poll",
          what, (int) PQtransactionStatus(s));
    CHECK(connect_loop(s, &polls) == PGRES_POLLING_OK && polls == 1,
          "%s: the first PQconnectPoll must return PGRES_POLLING_OK (%d polls)", what, polls);
    CHECK(PQstatus(s) == CONNECTION_OK && PQtransactionStatus(s) == PQTRANS_IDLE, "%s: OK and idle after the poll",
          what);
    CHECK(PQconnectPoll(s) == PGRES_POLLING_OK, "%s: polling again says OK", what);
    CHECK(tu_backend_pid(s) == p, "%s: runs on %d, expected the kept backend %d", what, PQbackendPID(s), p);
    PQfinish(s);
}

static void test_async_new(void)
{
    PGconn *a = tu_connect_ok(), *s;
    int p, polls = 0;

    tu_exec_check(a, "BEGIN");
    p = tu_backend_pid(a);
    s = start_async(false);
    REQUIRE(s != NULL && PQstatus(s) != CONNECTION_BAD, "async-new: %s", s ? PQerrorMessage(s) : "out of memory");
    CHECK(connect_loop(s, &polls) == PGRES_POLLING_OK, "async-new: the connect loop ends OK: %s", PQerrorMessage(s));
    CHECK(PQstatus(s) == CONNECTION_OK, "async-new: PQstatus %d", (int) PQstatus(s));
    CHECK(tu_backend_pid(s) > 0 && PQbackendPID(s) != p, "async-new: runs on %d (A in its transaction on %d)",
          PQbackendPID(s), p);
    tu_exec_check(a, "COMMIT");
    PQfinish(s);
    PQfinish(a);
}

/* A finished handle answers as a failed connection whose error names PQfinish. */
static void check_finished(PGconn *f, const char *when)
{
    CHECK(PQstatus(f) == CONNECTION_BAD, "finished (%s): PQstatus %d", when, (int) PQstatus(f));
    CHECK(strstr(PQerrorMessage(f), "PQfinish") != NULL, "finished (%s): PQerrorMessage \"%s\" does not "
          "mention PQfinish", when, PQerrorMessage(f));
    CHECK(PQsocket(f) == -1, "finished (%s): PQsocket %d", when, PQsocket(f));
    CHECK(PQtransactionStatus(f) == PQTRANS_UNKNOWN, "finished (%s): PQtransactionStatus %d", when,
          (int) PQtransactionStatus(f));
}

/* Uses a finished handle from a thread; returns how many calls did not fail (as a pointer). */
static void *use_finished(void *arg)
{
    PGconn *f = arg;
    long worked = 0;

    for (long i = 0; i < tu_scaled(200); i++) {
        PGresult *r = PQexec(f, "SELECT 1");

        worked += PQresultStatus(r) == PGRES_TUPLES_OK || PQstatus(f) != CONNECTION_BAD;
        PQclear(r);
    }
    return (void *) worked;
}

static void test_finished(void)
{
    PGconn *f = tu_connect_ok(), *g = tu_connect_ok(), *others[3];
    PGresult *r;
    pthread_t t[2];

    tu_exec_check(f, "SELECT 1");
    PQfinish(f);
    check_finished(f, "right after PQfinish");
    r = PQexec(f, "SELECT 1");
    CHECK(PQresultStatus(r) != PGRES_TUPLES_OK, "finished: PQexec on a finished handle succeeded");
    PQclear(r);
    check_finished(f, "after a PQexec on it");
    CHECK(PQsendQuery(f, "SELECT 1") == 0, "finished: PQsendQuery must fail");
    CHECK(PQgetResult(f) == NULL, "finished: PQgetResult gives nothing");
    PQfinish(f); /* ignored */
    for (int i = 0; i < 3; i++)
        others[i] = tu_connect_ok();
    check_finished(f, "after a second PQfinish and three connects");
    PQfinish(g);
    REQUIRE(pthread_create(&t[0], NULL, use_finished, f) == 0 && pthread_create(&t[1], NULL, use_finished, g) == 0,
            "pthread_create");
    for (int i = 0; i < 2; i++) {
        void *worked;

        pthread_join(t[i], &worked);
        CHECK(worked == NULL, "finished (threads): %ld calls on a finished handle did not fail", (long) worked);
    }
    /* libpq's documented connect loop run on a finished handle must not connect it (last: if it
     * does, the finished handles share one live connection, which the threads above would hang on). */
    {
        PostgresPollingStatusType st = PGRES_POLLING_WRITING;
        int polls = 0;

        for (long deadline = tu_now_ms() + 2000; tu_now_ms() < deadline && st != PGRES_POLLING_OK &&
                                                 st != PGRES_POLLING_FAILED; polls++) {
            struct pollfd pfd = {.fd = PQsocket(f), .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};

            if (pfd.fd < 0)
                break;
            poll(&pfd, 1, 100);
            st = PQconnectPoll(f);
        }
        CHECK(st != PGRES_POLLING_OK, "finished: PQconnectPoll on a finished handle connected it (%d polls)",
              polls);
        r = PQexec(f, "SELECT 1");
        CHECK(PQresultStatus(r) != PGRES_TUPLES_OK, "finished: after PQconnectPoll, PQexec on the finished "
              "handle ran a query");
        PQclear(r);
    }
    for (int i = 0; i < 3; i++) {
        CHECK(tu_backend_pid(others[i]) > 0, "finished: a live handle works: %s", PQerrorMessage(others[i]));
        PQfinish(others[i]);
    }
}

static void test_distinct(void)
{
    enum { N = 30 };
    PGconn *c[N];
    int n = 0;

    /* Connect, finish one of every three at once: finished slots must not come back while
     * a pointer equal to them is alive. */
    for (int i = 0; i < N; i++) {
        c[n] = tu_connect_ok();
        for (int j = 0; j < n; j++)
            CHECK(c[j] != c[n], "distinct: connect %d returned the pointer of live handle %d", i, j);
        if (i % 3 == 2)
            PQfinish(c[n]);
        else
            n++;
    }
    for (int j = 0; j < n; j++)
        PQfinish(c[j]);
}

static void test_load(void)
{
    char dir[] = "/tmp/pqdt_loadXXXXXX", path[108], host[64];
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    const char *extra[] = {host, "PGPORT=5432", NULL};
    char exe[4096], *argv[] = {exe, "--exit", NULL}, **envp;
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    struct pollfd pfd;
    pid_t pid;
    int listener, status = -1;

    REQUIRE(len > 0, "readlink /proc/self/exe");
    exe[len] = '\0';
    REQUIRE(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(path, sizeof path, "%s/.s.PGSQL.5432", dir);
    snprintf(host, sizeof host, "PGHOST=%s", dir);
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
    listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    REQUIRE(listener >= 0 && bind(listener, (struct sockaddr *) &addr, sizeof addr) == 0 &&
            listen(listener, 8) == 0, "listening on %s", path);
    envp = tu_environ_with(extra);
    REQUIRE(posix_spawn(&pid, argv[0], NULL, NULL, argv, envp) == 0, "spawning %s --exit", exe);
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "load: this program's --exit under the library exited with status %#x", status);
    pfd = (struct pollfd){.fd = listener, .events = POLLIN};
    CHECK(poll(&pfd, 1, 0) == 0, "load: a program with the library preloaded (and no libpq call) "
          "connected to the PostgreSQL socket PGHOST names");
    free(envp);
    close(listener);
    unlink(path);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--exit") == 0)
        return 0; /* test_load's child: loaded, calls nothing */
    test_load();
    test_async_pooled(false);
    test_async_pooled(true);
    test_async_new();
    test_finished();
    test_distinct();
    return tu_finish();
}
