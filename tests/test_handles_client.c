/* test_handles_client.c: client-side state (notice hooks, verbosity, context, nonblocking, trace) belongs to the handle and follows it across moves. */
#define _GNU_SOURCE
#include "testutil.h"

#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * Usage: test_handles_client (no arguments). Run with PQDEDUP_UNBIND_AFTER=0 and
 * PQDEDUP_KEEP_PER_KEY=0: two handles A and B of one key, both idle and clean between
 * calls, take one server connection from each other at every query (checked by backend pid),
 * so every call below runs right after a move.
 *
 *   notices   A has a notice receiver, B a notice processor, each with its own argument; a
 *             notice raised on either after a move reaches only its own callback with its
 *             own argument; after A's PQfinish its callback is never called again (its
 *             argument is freed: ASan/valgrind would see a call).
 *   errors    A has PQERRORS_VERBOSE and PQSHOW_CONTEXT_NEVER, B the defaults: each error
 *             text follows its own handle's settings; the setters of an unbound handle return
 *             its own previous values.
 *   nonblock  A is nonblocking, B not: PQisnonblocking of each stays its own across moves,
 *             and A's query runs with a nonblocking send and a poll loop.
 *   trace     A traces to one file, B to another: each file holds its own handle's queries
 *             only, none of pqdedup's resets, and nothing after PQuntrace / PQfinish.
 */

static const char *functions =
    "CREATE OR REPLACE FUNCTION pqdt_notice(t text) RETURNS int LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE NOTICE 'pqdt %', t; RETURN 1; END $$; "
    "CREATE OR REPLACE FUNCTION pqdt_fail() RETURNS int LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'pqdt-fail'; END $$";

struct notice_log {
    const char *owner; /* "A" or "B" */
    int count;
    char last[128];
};

static void log_notice(struct notice_log *log, const char *text)
{
    log->count++;
    snprintf(log->last, sizeof log->last, "%s", text);
}

static void receiver(void *arg, const PGresult *res)
{
    const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

    log_notice(arg, m != NULL ? m : "");
}

static void processor(void *arg, const char *message)
{
    log_notice(arg, message);
}

/* Both handles' backend: the one connection they pass between them. */
static int shared_pid;

/* Runs sql on c, which must run on the shared backend (it just moved to c). */
static void run_moved(PGconn *c, const char *who, const char *sql)
{
    tu_exec_check(c, sql);
    CHECK(PQbackendPID(c) == shared_pid, "%s ran \"%s\" on backend %d, expected the shared %d", who,
          sql, PQbackendPID(c), shared_pid);
}

static void test_notices(void)
{
    PGconn *a, *b;
    struct notice_log *la = calloc(1, sizeof *la), lb = {"B", 0, ""};
    char sql[96];

    REQUIRE(la != NULL, "out of memory");
    la->owner = "A";
    tu_connect_pair(&a, &b, &shared_pid, "notices");
    PQsetNoticeReceiver(a, receiver, la); /* A is unbound here */
    PQsetNoticeProcessor(b, processor, &lb);
    for (int round = 0; round < 5; round++) {
        snprintf(sql, sizeof sql, "SELECT pqdt_notice('a-%d')", round);
        run_moved(a, "A", sql);
        CHECK(la->count == round + 1 && strstr(la->last, "pqdt a-") != NULL,
              "notices: A's receiver heard %d notices, last \"%s\"", la->count, la->last);
        snprintf(sql, sizeof sql, "SELECT pqdt_notice('b-%d')", round);
        run_moved(b, "B", sql);
        CHECK(lb.count == round + 1 && strstr(lb.last, "pqdt b-") != NULL,
              "notices: B's processor heard %d notices, last \"%s\"", lb.count, lb.last);
        CHECK(la->count == round + 1, "notices: A's receiver heard B's notice (%d)", la->count);
    }
    CHECK(PQsetNoticeReceiver(a, NULL, NULL) == receiver, "notices: A's receiver is its own");
    CHECK(PQsetNoticeProcessor(b, NULL, NULL) == processor, "notices: B's processor is its own");
    PQfinish(a);
    free(la); /* a call to A's receiver from now on is a use after free */
    for (int round = 0; round < 3; round++)
        tu_exec_check(b, "SELECT pqdt_notice('b-after')");
    CHECK(lb.count == 8, "notices: B heard %d notices, expected 8", lb.count);
    PQfinish(b);
}

static void test_errors(void)
{
    PGconn *a, *b;
    const char *m;

    tu_connect_pair(&a, &b, &shared_pid, "errors");
    /* A is unbound: its setters answer its own previous values. */
    CHECK(PQsetErrorVerbosity(a, PQERRORS_VERBOSE) == PQERRORS_DEFAULT, "errors: A's verbosity was DEFAULT");
    CHECK(PQsetErrorVerbosity(a, PQERRORS_VERBOSE) == PQERRORS_VERBOSE, "errors: unbound A returns its own VERBOSE");
    CHECK(PQsetErrorContextVisibility(a, PQSHOW_CONTEXT_NEVER) == PQSHOW_CONTEXT_ERRORS, "errors: A's context was ERRORS");
    CHECK(PQsetErrorContextVisibility(a, PQSHOW_CONTEXT_NEVER) == PQSHOW_CONTEXT_NEVER, "errors: unbound A returns its own NEVER");
    for (int round = 0; round < 3; round++) {
        CHECK(!tu_exec_ok(a, "SELECT pqdt_fail()"), "errors: pqdt_fail fails");
        CHECK(PQbackendPID(a) == shared_pid, "errors: A on the shared backend");
        m = PQerrorMessage(a);
        CHECK(strstr(m, "P0001:") != NULL && strstr(m, "LOCATION:") != NULL && strstr(m, "CONTEXT:") == NULL,
              "errors: A's error is not verbose without context: %s", m);
        CHECK(!tu_exec_ok(b, "SELECT pqdt_fail()"), "errors: pqdt_fail fails");
        CHECK(PQbackendPID(b) == shared_pid, "errors: B on the shared backend");
        m = PQerrorMessage(b);
        CHECK(strstr(m, "P0001:") == NULL && strstr(m, "LOCATION:") == NULL && strstr(m, "CONTEXT:") != NULL,
              "errors: B's error is not default with context: %s", m);
        /* B is bound now, A unbound: each setter answers its own handle's value. */
        CHECK(PQsetErrorVerbosity(b, PQERRORS_DEFAULT) == PQERRORS_DEFAULT, "errors: B's verbosity is DEFAULT");
        CHECK(PQsetErrorVerbosity(a, PQERRORS_VERBOSE) == PQERRORS_VERBOSE, "errors: A's verbosity is VERBOSE");
        CHECK(PQsetErrorContextVisibility(b, PQSHOW_CONTEXT_ERRORS) == PQSHOW_CONTEXT_ERRORS, "errors: B's context");
        CHECK(PQsetErrorContextVisibility(a, PQSHOW_CONTEXT_NEVER) == PQSHOW_CONTEXT_NEVER, "errors: A's context");
    }
    PQfinish(a);
    PQfinish(b);
}

/* Sends sql on nonblocking c and polls its socket until the result is in (5 s at most).
 * Returns the first value, malloc'd, or NULL. */
static char *query_polling(PGconn *c, const char *sql)
{
    long deadline = tu_now_ms() + 5000;

    if (!CHECK(PQsendQuery(c, sql) == 1, "nonblock: PQsendQuery: %s", PQerrorMessage(c)))
        return NULL;
    for (;;) {
        struct pollfd pfd = {.fd = PQsocket(c), .events = POLLIN};
        int flushed = PQflush(c);

        if (flushed == 1)
            pfd.events |= POLLOUT;
        if (flushed == 0 && !PQisBusy(c))
            break;
        if (!CHECK(tu_now_ms() < deadline, "nonblock: no result within 5 s"))
            return NULL;
        if (poll(&pfd, 1, 100) > 0 && (pfd.revents & POLLIN) && !PQconsumeInput(c))
            break;
    }
    return tu_result_value(c);
}

static void test_nonblock(void)
{
    PGconn *a, *b;

    tu_connect_pair(&a, &b, &shared_pid, "nonblock");
    CHECK(PQsetnonblocking(a, 1) == 0, "nonblock: PQsetnonblocking(A, 1)");
    CHECK(PQisnonblocking(a) == 1 && PQisnonblocking(b) == 0, "nonblock: A 1, B 0 (A unbound)");
    for (int round = 0; round < 3; round++) {
        char *v = query_polling(a, "SELECT pg_backend_pid()");

        CHECK(v != NULL && atoi(v) == shared_pid, "nonblock: A's polled query ran on %s, expected %d",
              v ? v : "(none)", shared_pid);
        free(v);
        CHECK(PQisnonblocking(a) == 1 && PQisnonblocking(b) == 0, "nonblock: A 1, B 0 (A bound)");
        run_moved(b, "B", "SELECT 1");
        CHECK(PQisnonblocking(b) == 0 && PQisnonblocking(a) == 1, "nonblock: B 0, A 1 (B bound)");
    }
    PQfinish(a);
    PQfinish(b);
}

/* The contents of f, malloc'd. */
static char *file_text(FILE *f)
{
    long len;
    char *text;

    fflush(f);
    len = ftell(f);
    text = calloc(1, (size_t) len + 1);
    REQUIRE(text != NULL && pread(fileno(f), text, (size_t) len, 0) == len, "reading a trace file");
    return text;
}

static void test_trace(void)
{
    PGconn *a, *b;
    FILE *fa = tmpfile(), *fb = tmpfile();
    char *ta, *tb, sql[64];
    long a_len;

    REQUIRE(fa != NULL && fb != NULL, "tmpfile");
    tu_connect_pair(&a, &b, &shared_pid, "trace");
    PQtrace(a, fa); /* A is unbound */
    PQtrace(b, fb);
    for (int round = 0; round < 3; round++) {
        snprintf(sql, sizeof sql, "SELECT 'a-trace-%d'", round);
        run_moved(a, "A", sql);
        snprintf(sql, sizeof sql, "SELECT 'b-trace-%d'", round);
        run_moved(b, "B", sql);
    }
    ta = file_text(fa);
    tb = file_text(fb);
    CHECK(strstr(ta, "a-trace-0") && strstr(ta, "a-trace-2") && !strstr(ta, "b-trace"),
          "trace: A's file holds A's queries only:\n%s", ta);
    CHECK(strstr(tb, "b-trace-0") && strstr(tb, "b-trace-2") && !strstr(tb, "a-trace"),
          "trace: B's file holds B's queries only:\n%s", tb);
    CHECK(!strstr(ta, "DISCARD") && !strstr(tb, "DISCARD"), "trace: pqdedup's reset is in a trace file");
    free(ta);
    free(tb);
    PQuntrace(b);
    run_moved(b, "B", "SELECT 'b-untraced'");
    tb = file_text(fb);
    CHECK(!strstr(tb, "b-untraced"), "trace: B's query after PQuntrace was traced");
    free(tb);
    PQfinish(a);
    fflush(fa);
    a_len = ftell(fa);
    run_moved(b, "B", "SELECT 'b-after-a'");
    fflush(fa);
    CHECK(ftell(fa) == a_len, "trace: A's file grew from %ld to %ld bytes after A's PQfinish", a_len,
          ftell(fa));
    PQfinish(b);
    fclose(fa);
    fclose(fb);
}

int main(void)
{
    PGconn *obs = tu_observer();

    tu_quiet_notices(obs);
    tu_exec_check(obs, functions);
    test_notices();
    test_errors();
    test_nonblock();
    test_trace();
    return tu_finish();
}
