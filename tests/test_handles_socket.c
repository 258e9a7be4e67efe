/* test_handles_socket.c: PQsocket of a handle is one number for its life, readable for its own results only, -1 once its connection broke. */
#define _GNU_SOURCE
#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * Usage: test_handles_socket [connecting]. Without an argument, run with PQDEDUP_UNBIND_AFTER=0 and
 * PQDEDUP_KEEP_PER_KEY=0, so that handles A and B of one key pass one backend between them
 * at every query (checked by backend pid).
 *
 *   stable    PQsocket(A) is the same open descriptor while bound, unbound and bound again.
 *   own       after a move, a query sent on A makes PQsocket(A) readable (poll loop).
 *   foreign   while A is unbound and B runs queries on the connection A had, poll() on A's
 *             descriptor sees nothing when B's is readable.
 *   epoll     the same with an epoll registration of A's descriptor made while A was bound
 *             (as an event loop that keeps its registrations): no readiness from B's traffic,
 *             and readiness when A's own result arrives after A was bound again.
 *   broken    A bound, its backend terminated: A's next query fails, PQstatus is
 *             CONNECTION_BAD and PQsocket is -1, as with plain libpq.
 *
 * `churn`: run with default settings, so finished handles' server connections are kept. 200
 * connects in a row each ask PQsocket (as pgbench and psycopg 3 do at every connect): it is a
 * socket, not readable while the connection is idle, readable for the handle's own result; every
 * 10th connect first resets its connection (PQreset: a new socket) and only then asks, and gets
 * the new socket (a copy of the old one would read end-of-file at once). The process's open
 * descriptors do not grow with the connects.
 *
 * `connecting`: run with PQDEDUP_MAX_PER_KEY=1 and PQDEDUP_MAX_WAIT=1s. An asynchronous connect
 * that must wait (A holds the only server connection, in a transaction) gets from PQsocket a
 * socket (as Ruby's pg requires), the same number from PQconnectStart to after it connected,
 * not readable while it waits, readable once A commits; it then runs on A's backend. A second
 * one that waits past PQDEDUP_MAX_WAIT finds its descriptor readable at the deadline (the
 * timer), and its poll then fails with the reason, PQsocket -1 as for a failed connect.
 */

static int shared_pid;

/* c's backend is the shared one (it just took it). */
static void check_on_shared(PGconn *c, const char *who)
{
    int pid = tu_backend_pid(c);

    CHECK(pid == shared_pid, "%s runs on %d, expected the shared backend %d", who, pid, shared_pid);
}

/* Waits (5 s at most) for c's result on its socket; returns its first value (malloc'd). */
static char *wait_result(PGconn *c, int fd)
{
    long deadline = tu_now_ms() + 5000;

    while (PQisBusy(c)) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int left = (int) (deadline - tu_now_ms());

        if (!CHECK(left > 0 && poll(&pfd, 1, left) == 1 && (pfd.revents & POLLIN),
                   "no readability on descriptor %d for a result within 5 s", fd))
            return NULL;
        if (!CHECK(PQconsumeInput(c) == 1, "PQconsumeInput: %s", PQerrorMessage(c)))
            return NULL;
    }
    return tu_result_value(c);
}

static void test_stable_and_own(void)
{
    PGconn *a, *b;
    int fa, fb;

    a = tu_connect_ok();
    fa = PQsocket(a);
    shared_pid = tu_backend_pid(a);
    REQUIRE(fa >= 0 && shared_pid > 0, "stable: PQsocket %d, pid %d", fa, shared_pid);
    b = tu_connect_taking(shared_pid, "stable");
    fb = PQsocket(b);
    CHECK(PQsocket(a) == fa, "stable: unbound A's PQsocket is %d, was %d", PQsocket(a), fa);
    CHECK(fcntl(fa, F_GETFD) >= 0, "stable: unbound A's descriptor %d is open", fa);
    CHECK(fb >= 0 && fb != fa, "stable: B's descriptor %d differs from A's %d", fb, fa);
    for (int round = 0; round < 4; round++) {
        char *v;

        /* A takes the backend back: its query's result is seen on its own descriptor. */
        CHECK(PQsendQuery(a, "SELECT pg_backend_pid()") == 1, "own: PQsendQuery: %s", PQerrorMessage(a));
        CHECK(PQsocket(a) == fa, "stable: A's PQsocket is %d after binding again, was %d", PQsocket(a), fa);
        v = wait_result(a, fa);
        CHECK(v != NULL && atoi(v) == shared_pid, "own: A's result %s, expected pid %d", v ? v : "(none)",
              shared_pid);
        free(v);
        check_on_shared(b, "B");
        CHECK(PQsocket(b) == fb && PQsocket(a) == fa, "stable: descriptors %d/%d, were %d/%d", PQsocket(a),
              PQsocket(b), fa, fb);
    }
    PQfinish(a);
    PQfinish(b);
}

static void test_foreign(void)
{
    PGconn *a, *b;
    int fa, fb;

    tu_connect_pair(&a, &b, &shared_pid, "foreign");
    fa = PQsocket(a); /* asked for while unbound */
    fb = PQsocket(b);
    for (int round = 0; round < 3; round++) {
        struct pollfd pfd[2] = {{.fd = fb, .events = POLLIN}, {.fd = fa, .events = POLLIN}};
        char *v;

        CHECK(PQsendQuery(b, "SELECT pg_sleep(0.05), 7") == 1, "foreign: B sends: %s", PQerrorMessage(b));
        CHECK(poll(pfd, 2, 5000) >= 1 && (pfd[0].revents & POLLIN),
              "foreign: B's descriptor not readable for B's result within 5 s");
        CHECK(pfd[1].revents == 0, "foreign: unbound A's descriptor %d reports %#x from B's traffic", fa,
              pfd[1].revents);
        v = wait_result(b, fb);
        CHECK(v != NULL && strcmp(v, "") == 0, "foreign: B's result");
        free(v);
        pfd[1].revents = 0;
        CHECK(poll(&pfd[1], 1, 100) == 0, "foreign: unbound A's descriptor became readable (%#x)",
              pfd[1].revents);
    }
    PQfinish(a);
    PQfinish(b);
}

/* epoll, both sides of what README ("The socket") says: an event loop that registers the
 * descriptor for each wait (asyncio's add_reader/remove_reader, which psycopg 3 uses) sees the
 * handle's own result after its server connection moved, and nothing of the connection it
 * had; a registration kept across the move stays on the socket the handle had (epoll watches
 * the file, not the number): it reports the other handle's traffic there and misses the
 * handle's own result (the documented limit). */
static void test_epoll(void)
{
    PGconn *a, *b;
    int fa, ep = epoll_create1(EPOLL_CLOEXEC), kept = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN}, got;
    char *v;

    REQUIRE(ep >= 0 && kept >= 0, "epoll_create1");
    a = tu_connect_ok();
    fa = PQsocket(a);
    shared_pid = tu_backend_pid(a);
    REQUIRE(shared_pid > 0, "epoll: pg_backend_pid: %s", PQerrorMessage(a));
    ev.data.fd = fa;
    CHECK(epoll_ctl(kept, EPOLL_CTL_ADD, fa, &ev) == 0, "epoll: registering A's descriptor (kept)");
    b = tu_connect_taking(shared_pid, "epoll");

    /* Registered for the wait only: B's traffic on the socket A had is not A's. */
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fa, &ev) == 0, "epoll: registering A's descriptor for a wait");
    CHECK(PQsendQuery(b, "SELECT pg_sleep(0.05)") == 1, "epoll: B sends: %s", PQerrorMessage(b));
    CHECK(epoll_wait(ep, &got, 1, 500) == 0, "epoll: a registration made after A's move reports "
          "readiness from B's query on the connection A had");
    CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, fa, NULL) == 0, "epoll: unregistering A's descriptor");
    /* The kept registration stays on that socket: it reports B's traffic (the limit). */
    CHECK(epoll_wait(kept, &got, 1, 5000) == 1, "epoll: the registration kept across A's move "
          "did not stay on the socket A had (README says it does)");
    v = wait_result(b, PQsocket(b));
    free(v);

    tu_exec_check(b, "BEGIN"); /* B keeps the backend: A binds to a new one */
    CHECK(PQsendQuery(a, "SELECT pg_backend_pid()") == 1, "epoll: A sends: %s", PQerrorMessage(a));
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fa, &ev) == 0, "epoll: registering A's descriptor again");
    CHECK(epoll_wait(ep, &got, 1, 5000) == 1, "epoll: a registration for this wait never reports "
          "A's own result after A was bound to another connection");
    CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, fa, NULL) == 0, "epoll: unregistering A's descriptor");
    v = wait_result(a, fa);
    CHECK(v != NULL && atoi(v) > 0 && atoi(v) != shared_pid, "epoll: A's result %s", v ? v : "(none)");
    free(v);
    tu_exec_check(b, "COMMIT");
    PQfinish(a);
    PQfinish(b);
    close(ep);
    close(kept);
}

static void test_broken(void)
{
    PGconn *a = tu_connect_ok();
    int pid = tu_backend_pid(a), fa = PQsocket(a);
    char sql[128];
    PGresult *r;

    REQUIRE(pid > 0 && fa >= 0, "broken: pid %d socket %d", pid, fa);
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", pid);
    tu_exec_check(tu_observer(), sql);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
    CHECK(tu_wait_value(sql, "0", 10000), "broken: backend %d still there", pid);
    r = PQexec(a, "SELECT 1");
    CHECK(PQresultStatus(r) != PGRES_TUPLES_OK, "broken: A's query on a terminated backend succeeded");
    PQclear(r);
    CHECK(PQstatus(a) == CONNECTION_BAD, "broken: PQstatus is %d, expected CONNECTION_BAD", (int) PQstatus(a));
    CHECK(PQsocket(a) == -1, "broken: PQsocket is %d, expected -1 as with plain libpq", PQsocket(a));
    PQfinish(a);
}

/* True when fd is an open socket. */
static bool is_socket(int fd)
{
    struct stat st;

    return fd >= 0 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* Polls c's connect to its end, waiting on its socket for up to 5 s per step. */
static PostgresPollingStatusType poll_to_end(PGconn *c, PostgresPollingStatusType status)
{
    while (status == PGRES_POLLING_READING || status == PGRES_POLLING_WRITING) {
        struct pollfd pfd = {.fd = PQsocket(c), .events = status == PGRES_POLLING_READING ? POLLIN : POLLOUT};

        if (!CHECK(poll(&pfd, 1, 5000) == 1, "connecting: no readiness within 5 s"))
            break;
        status = PQconnectPoll(c);
    }
    return status;
}

static void test_connecting(void)
{
    PGconn *a = tu_connect_ok(), *b, *c;
    int pid = tu_backend_pid(a), fb, fc, n;
    struct pollfd pfd;
    char *v;

    REQUIRE(pid > 0, "connecting: pid of A");
    tu_exec_check(a, "BEGIN"); /* A keeps the only server connection */
    b = PQconnectStart(tu_conninfo(""));
    REQUIRE(b != NULL && PQstatus(b) != CONNECTION_BAD, "connecting: PQconnectStart: %s",
            b ? PQerrorMessage(b) : "NULL");
    fb = PQsocket(b);
    CHECK(is_socket(fb), "connecting: PQsocket %d of a connect under way is not a socket", fb);
    CHECK(PQconnectPoll(b) == PGRES_POLLING_READING, "connecting: B's first poll does not wait");
    CHECK(PQsocket(b) == fb && is_socket(fb), "connecting: waiting B's PQsocket is %d (a socket: %d), was %d",
          PQsocket(b), is_socket(PQsocket(b)), fb);
    pfd = (struct pollfd){.fd = fb, .events = POLLIN}; /* (the poll said READING) */
    n = poll(&pfd, 1, 100);
    CHECK(n == 0, "connecting: waiting B's descriptor %d: poll %d (%m), revents %#x while A holds the "
          "connection", fb, n, pfd.revents);
    tu_exec_check(a, "COMMIT");
    CHECK(poll_to_end(b, PGRES_POLLING_READING) == PGRES_POLLING_OK, "connecting: B's connect: %s",
          PQerrorMessage(b));
    CHECK(PQsocket(b) == fb, "connecting: connected B's PQsocket is %d, was %d while connecting",
          PQsocket(b), fb);
    CHECK(PQsendQuery(b, "SELECT pg_backend_pid()") == 1, "connecting: B sends: %s", PQerrorMessage(b));
    v = wait_result(b, fb);
    CHECK(v != NULL && atoi(v) == pid, "connecting: B runs on %s, expected A's backend %d", v ? v : "(none)",
          pid);
    free(v);

    /* The deadline: C waits while B holds the connection in a transaction. */
    tu_exec_check(b, "BEGIN");
    c = PQconnectStart(tu_conninfo(""));
    REQUIRE(c != NULL, "connecting: PQconnectStart of C");
    fc = PQsocket(c);
    CHECK(is_socket(fc) && fc != fb, "connecting: C's PQsocket %d (B's %d)", fc, fb);
    CHECK(PQconnectPoll(c) == PGRES_POLLING_READING, "connecting: C's first poll does not wait");
    pfd = (struct pollfd){.fd = fc, .events = POLLIN};
    CHECK(poll(&pfd, 1, 10000) == 1, "connecting: C's descriptor not readable at PQDEDUP_MAX_WAIT (1s) "
          "within 10 s");
    CHECK(PQconnectPoll(c) == PGRES_POLLING_FAILED, "connecting: C's poll after the deadline did not fail");
    CHECK(PQstatus(c) == CONNECTION_BAD && PQerrorMessage(c)[0] != '\0',
          "connecting: C's status %d, message '%s'", (int) PQstatus(c), PQerrorMessage(c));
    CHECK(PQsocket(c) == -1, "connecting: failed C's PQsocket is %d, expected -1", PQsocket(c));
    PQfinish(c);
    tu_exec_check(b, "COMMIT");
    PQfinish(b);
    PQfinish(a);
}

/* How many descriptors this process has open. */
static int open_descriptors(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");

    REQUIRE(d != NULL, "churn: cannot list /proc/self/fd");
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

static void test_churn(void)
{
    int after_warmup = 0;

    for (int i = 0; i < 200; i++) {
        PGconn *c = tu_connect_ok();
        int pid = tu_backend_pid(c);

        if (i % 10 == 9) {
            PQreset(c);
            REQUIRE(PQstatus(c) == CONNECTION_OK, "churn: PQreset failed: %s", PQerrorMessage(c));
            CHECK(tu_backend_pid(c) != pid, "churn: PQreset kept backend %d", pid);
            pid = tu_backend_pid(c);
        }
        int fd = PQsocket(c);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int n = poll(&pfd, 1, 0);

        CHECK(is_socket(fd), "churn %d: PQsocket %d is not a socket", i, fd);
        CHECK(n == 0, "churn %d: an idle connection's descriptor %d polls %d (revents %#x)%s", i, fd, n,
              pfd.revents, i % 10 == 9 ? " after PQreset" : "");
        CHECK(PQsendQuery(c, "SELECT pg_backend_pid()") == 1, "churn: PQsendQuery: %s", PQerrorMessage(c));
        char *v = wait_result(c, fd);
        CHECK(v != NULL && atoi(v) == pid, "churn %d: result %s on descriptor %d, expected pid %d", i,
              v ? v : "(none)", fd, pid);
        free(v);
        PQfinish(c);
        if (i == 19)
            after_warmup = open_descriptors();
    }
    /* The key has at most a few server connections here (one connect at a time, and a connect
     * never opens a spare beside a resetting one: pool_pick.c), each with libpq's socket and at
     * most one copy: however many of them the first 20 connects opened, at most 6 descriptors
     * more. A copy leaked per connect would be 180 more. */
    int now = open_descriptors();
    CHECK(now <= after_warmup + 6, "churn: %d descriptors open after 200 connects, %d after 20", now,
          after_warmup);
    printf("test_handles_socket: churn: %d descriptors open after 20 connects, %d after 200\n", after_warmup, now);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "churn") == 0) {
        test_churn();
        return tu_finish();
    }
    if (argc > 1 && strcmp(argv[1], "connecting") == 0) {
        test_connecting();
        return tu_finish();
    }
    test_stable_and_own();
    test_foreign();
    test_epoll();
    test_broken();
    return tu_finish();
}
