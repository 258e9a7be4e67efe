/* test_handles_queued.c: a nonblocking handle's command that must wait for a server connection is kept and sent once one is freed, never blocking the caller. */
#define _GNU_SOURCE
#include "testutil.h"

#include <arpa/inet.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/*
 * Usage: test_handles_queued released|deadline|resetting. Run with PQDEDUP_MAX_PER_KEY=1 (one server
 * connection for the key) and PQDEDUP_UNBIND_AFTER=0, and PQDEDUP_MAX_WAIT=20s (released) or
 * 1s (deadline). One thread plays an event loop: B holds the only server connection in a
 * transaction while A, nonblocking and unbound, sends a command.
 *
 *   released  A's PQsendQueryParams (a binary parameter) returns 1 at once (a call that waited
 *             inside would wait for B, which this thread only commits afterwards, and fail at
 *             PQDEDUP_MAX_WAIT); PQisBusy is 1, PQtransactionStatus ACTIVE, PQflush 0,
 *             PQsocket a socket not readable. B commits: A's descriptor turns readable, and
 *             A's result arrives through PQconsumeInput/PQisBusy/PQgetResult, computed on the
 *             one backend. Then the same with PQsendQuery, and PQsendPrepare +
 *             PQsendQueryPrepared of the unnamed statement.
 *   deadline  B keeps its transaction: A's descriptor turns readable at PQDEDUP_MAX_WAIT, and
 *             A's command then answers one error result (why), then NULL, its status BAD.
 *             C's kept command, read with PQgetResult at once (which waits, as libpq's does),
 *             answers the same error after the wait.
 *   resetting (PQDEDUP_RESET_QUERY='SELECT pg_sleep(1)', PQDEDUP_UNBIND_AFTER=0): A's
 *             PQsendQuery takes idle B's server connection, whose reset is a second long: the
 *             call returns while the backend still runs the reset (seen in pg_stat_activity),
 *             A reads busy with the connection's socket to poll, and its result (its backend's
 *             pid) arrives after the reset, collected by PQconsumeInput.
 */

static bool is_socket(int fd)
{
    struct stat st;

    return fd >= 0 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

static bool readable_within(int fd, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    return poll(&pfd, 1, timeout_ms) == 1 && (pfd.revents & POLLIN);
}

/* A and B on one backend (B took it; A is unbound and nonblocking), B in a transaction. */
static void setup(PGconn **a, PGconn **b, int *pid)
{
    *a = tu_connect_ok();
    *pid = tu_backend_pid(*a);
    REQUIRE(*pid > 0, "pid of A");
    REQUIRE(PQsetnonblocking(*a, 1) == 0, "PQsetnonblocking: %s", PQerrorMessage(*a));
    *b = tu_connect_taking(*pid, "setup");
    tu_exec_check(*b, "BEGIN");
}

/* A's command is kept: the call returned 1 at once, and A reads as busy. */
static void check_kept(PGconn *a, int sent, const char *what)
{
    CHECK(sent == 1, "%s: the send returned %d (%s)", what, sent, PQerrorMessage(a));
    CHECK(PQisBusy(a) == 1, "%s: PQisBusy is 0 while its command waits", what);
    CHECK(PQtransactionStatus(a) == PQTRANS_ACTIVE, "%s: PQtransactionStatus %d, expected ACTIVE", what,
          (int) PQtransactionStatus(a));
    CHECK(PQflush(a) == 0, "%s: PQflush is not 0", what);
    CHECK(is_socket(PQsocket(a)), "%s: PQsocket %d is not a socket", what, PQsocket(a));
    CHECK(!readable_within(PQsocket(a), 0), "%s: A's descriptor is readable while B holds the connection",
          what);
    CHECK(PQconsumeInput(a) == 1 && PQisBusy(a) == 1, "%s: PQconsumeInput changed A's state", what);
}

/* Collects A's one result the way an event loop does; returns its first value (malloc'd). */
static char *collect(PGconn *a, const char *what)
{
    long deadline = tu_now_ms() + 10000;
    PGresult *r, *extra;
    char *v = NULL;

    while (PQisBusy(a)) {
        if (!CHECK(readable_within(PQsocket(a), (int) (deadline - tu_now_ms())), "%s: no readiness in 10 s",
                   what))
            return NULL;
        if (!CHECK(PQconsumeInput(a) == 1, "%s: PQconsumeInput: %s", what, PQerrorMessage(a)))
            return NULL;
    }
    r = PQgetResult(a);
    if (CHECK(r != NULL && PQresultStatus(r) == PGRES_TUPLES_OK, "%s: result %s: %s", what,
              r ? PQresStatus(PQresultStatus(r)) : "NULL", PQerrorMessage(a)))
        v = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    extra = PQgetResult(a);
    CHECK(extra == NULL, "%s: more than one result", what);
    PQclear(extra);
    return v;
}

static void test_released(void)
{
    PGconn *a, *b;
    int pid;
    uint32_t n = htonl(21);
    const char *values[1] = {(const char *) &n};
    const int lengths[1] = {4}, formats[1] = {1};
    const Oid types[1] = {23};
    char expect[64], *v;

    setup(&a, &b, &pid);
    check_kept(a, PQsendQueryParams(a, "SELECT ($1::int4 * 2) || ' ' || pg_backend_pid()", 1, types, values,
                                    lengths, formats, 0),
               "params");
    tu_exec_check(b, "COMMIT"); /* B idle: its connection may go to A */
    CHECK(readable_within(PQsocket(a), 10000), "params: A's descriptor not readable within 10 s of B's commit");
    v = collect(a, "params");
    snprintf(expect, sizeof expect, "42 %d", pid);
    CHECK(v != NULL && strcmp(v, expect) == 0, "params: A's result '%s', expected '%s'", v ? v : "", expect);
    free(v);

    tu_exec_check(b, "BEGIN"); /* B takes it back (A idle, UNBIND_AFTER=0) */
    check_kept(a, PQsendQuery(a, "SELECT 'simple'"), "query");
    tu_exec_check(b, "COMMIT");
    v = collect(a, "query");
    CHECK(v != NULL && strcmp(v, "simple") == 0, "query: A's result '%s'", v ? v : "");
    free(v);

    tu_exec_check(b, "BEGIN");
    check_kept(a, PQsendPrepare(a, "", "SELECT $1::text || '!'", 1, NULL), "prepare");
    tu_exec_check(b, "COMMIT");
    while (PQisBusy(a))
        if (!CHECK(readable_within(PQsocket(a), 10000) && PQconsumeInput(a) == 1, "prepare: no answer"))
            break;
    PQclear(PQgetResult(a));
    PQclear(PQgetResult(a));
    values[0] = "prepared";
    CHECK(PQsendQueryPrepared(a, "", 1, values, NULL, NULL, 0) == 1, "prepared: send: %s", PQerrorMessage(a));
    v = collect(a, "prepared");
    CHECK(v != NULL && strcmp(v, "prepared!") == 0, "prepared: A's result '%s'", v ? v : "");
    free(v);
    PQfinish(a);
    PQfinish(b);
}

/* The error result a kept command answers after PQDEDUP_MAX_WAIT, then NULL. */
static void check_failed(PGconn *c, const char *what)
{
    PGresult *r = PQgetResult(c);

    CHECK(r != NULL && PQresultStatus(r) == PGRES_FATAL_ERROR, "%s: result %s, expected FATAL_ERROR", what,
          r ? PQresStatus(PQresultStatus(r)) : "NULL");
    CHECK(r != NULL && strstr(PQresultErrorMessage(r), "PQDEDUP_MAX_PER_KEY") != NULL,
          "%s: the error does not say why: '%s'", what, r ? PQresultErrorMessage(r) : "");
    PQclear(r);
    r = PQgetResult(c);
    CHECK(r == NULL, "%s: a second result after the error", what);
    PQclear(r);
    CHECK(PQstatus(c) == CONNECTION_BAD, "%s: status %d, expected CONNECTION_BAD", what, (int) PQstatus(c));
}

static void test_deadline(void)
{
    PGconn *a, *b, *c;
    int pid;

    a = tu_connect_ok();
    pid = tu_backend_pid(a);
    REQUIRE(pid > 0, "deadline: pid of A");
    c = tu_connect_taking(pid, "deadline");
    b = tu_connect_taking(pid, "deadline");
    REQUIRE(PQsetnonblocking(a, 1) == 0 && PQsetnonblocking(c, 1) == 0, "PQsetnonblocking");
    tu_exec_check(b, "BEGIN"); /* and keeps it */

    check_kept(a, PQsendQuery(a, "SELECT 1"), "deadline A");
    CHECK(readable_within(PQsocket(a), 10000), "deadline: A's descriptor not readable at PQDEDUP_MAX_WAIT "
          "(1s) within 10 s");
    PQconsumeInput(a); /* (fails: the connection is bad now) */
    CHECK(PQisBusy(a) == 0, "deadline: A still busy after its wait ended");
    check_failed(a, "deadline A");

    check_kept(c, PQsendQuery(c, "SELECT 1"), "deadline C");
    check_failed(c, "deadline C (PQgetResult at once)");

    tu_exec_check(b, "COMMIT");
    PQfinish(a);
    PQfinish(b);
    PQfinish(c);
}

static void test_resetting(void)
{
    PGconn *a = tu_connect_ok(), *b;
    int pid = tu_backend_pid(a);
    char expect[32], *v;

    REQUIRE(pid > 0, "resetting: pid of A");
    REQUIRE(PQsetnonblocking(a, 1) == 0, "PQsetnonblocking: %s", PQerrorMessage(a));
    b = tu_connect_taking(pid, "resetting"); /* B idle on A's backend, A unbound */
    CHECK(PQsendQuery(a, "SELECT pg_backend_pid()") == 1, "resetting: A's send: %s", PQerrorMessage(a));
    CHECK(tu_wait_active(pid, "pg_sleep", 5000), "resetting: A's send returned after the reset on backend %d "
          "had ended (it waited for it)", pid);
    CHECK(PQisBusy(a) == 1, "resetting: A not busy while its command waits for the reset");
    CHECK(is_socket(PQsocket(a)), "resetting: PQsocket %d is not a socket", PQsocket(a));
    v = collect(a, "resetting");
    snprintf(expect, sizeof expect, "%d", pid);
    CHECK(v != NULL && strcmp(v, expect) == 0, "resetting: A's result '%s', expected %s", v ? v : "", expect);
    free(v);
    PQfinish(a);
    PQfinish(b);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "released") == 0)
        test_released();
    else if (argc > 1 && strcmp(argv[1], "deadline") == 0)
        test_deadline();
    else if (argc > 1 && strcmp(argv[1], "resetting") == 0)
        test_resetting();
    else
        REQUIRE(0, "usage: test_handles_queued released|deadline|resetting");
    return tu_finish();
}
