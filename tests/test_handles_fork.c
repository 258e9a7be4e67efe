/* test_handles_fork.c: a forked child's use of inherited handles: clean ones continue on backends of the child's, busy or sticky ones as plain libpq, and nothing the child does breaks the parent's sessions. */
#define _GNU_SOURCE
#include "testutil.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * Usage: test_handles_fork (no arguments); default settings.
 *
 * The child never uses testutil's observer or checks: it sends what it saw through a pipe and
 * the parent checks it.
 *
 *   clean     A idle and clean on backend P: in the child, A's query runs on a backend of
 *             the child's own (not P) and works; the parent's A still runs on P afterwards.
 *   finish    A idle on P, T inside a transaction (one row inserted) on R: the child finishes
 *             both and ends with exit() (once) or _exit() (once); the parent's A still works
 *             on P, T is still in its transaction on R, and its rows commit.
 *   carried   C with a plain SET work_mem on V (carried, not sticky): in the child, C's query
 *             runs on a backend of the child's own, with work_mem 7MB (its SET run again);
 *             the parent's C still runs on V with its setting.
 *   sticky    S with set_config('work_mem') on W (sticky): in the child, S keeps the parent's
 *             connection as plain libpq does (its query runs on W and sees work_mem 7MB);
 *             the child finishes S and exits; the parent's S still works on W with its
 *             setting (pqdedup's finish in the child sends nothing on the parent's socket,
 *             where plain libpq's Terminate would end the parent's session).
 */

struct child_report {
    int pid;          /* backend the child's query ran on (-1: failed) */
    char value[32];   /* a value the child's query read */
    char error[256];  /* its error, if any */
};

/* Forks; the child runs fn(arg, &report), sends the report and ends with exit() or _exit().
 * Returns the report; REQUIREs the child to end with status 0. */
static struct child_report in_child(void (*fn)(void *, struct child_report *), void *arg, bool use_exit)
{
    struct child_report report = {.pid = -1};
    int fds[2], status = -1;
    pid_t child;

    REQUIRE(pipe(fds) == 0, "pipe");
    fflush(NULL);
    child = fork();
    REQUIRE(child >= 0, "fork");
    if (child == 0) {
        close(fds[0]);
        fn(arg, &report);
        if (write(fds[1], &report, sizeof report) != (ssize_t) sizeof report)
            _exit(3);
        close(fds[1]);
        if (use_exit)
            exit(0);
        _exit(0);
    }
    close(fds[1]);
    CHECK(read(fds[0], &report, sizeof report) == (ssize_t) sizeof report, "no report from the child");
    close(fds[0]);
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the child ended with status %#x", status);
    return report;
}

/* In the child: the backend of conn and the value of sql on it. */
struct query_arg {
    PGconn *conn;
    const char *sql; /* may be NULL */
};

static void child_query(void *arg, struct child_report *report)
{
    struct query_arg *q = arg;
    char *v;

    report->pid = tu_backend_pid(q->conn);
    snprintf(report->error, sizeof report->error, "%s", PQerrorMessage(q->conn));
    if (q->sql != NULL && (v = tu_query_value(q->conn, q->sql)) != NULL) {
        snprintf(report->value, sizeof report->value, "%s", v);
        free(v);
    }
    PQfinish(q->conn);
}

/* In the child: finish every connection of the NULL-terminated array. */
static void child_finish(void *arg, struct child_report *report)
{
    for (PGconn **c = arg; *c != NULL; c++)
        PQfinish(*c);
    report->pid = 0;
}

static void test_clean(void)
{
    PGconn *a = tu_connect_ok();
    int p = tu_backend_pid(a);
    struct query_arg q = {a, "SELECT 6 * 7"};
    struct child_report r;

    REQUIRE(p > 0, "clean: pg_backend_pid: %s", PQerrorMessage(a));
    r = in_child(child_query, &q, true);
    CHECK(r.pid > 0 && r.pid != p, "clean: the child's query on inherited A ran on %d (the parent's is %d): %s",
          r.pid, p, r.error);
    CHECK(strcmp(r.value, "42") == 0, "clean: the child's query answered \"%s\"", r.value);
    CHECK(tu_backend_pid(a) == p, "clean: the parent's A runs on %d, expected %d: %s", PQbackendPID(a), p,
          PQerrorMessage(a));
    PQfinish(a);
}

static void test_finish(bool use_exit)
{
    const char *how = use_exit ? "exit" : "_exit";
    PGconn *t = tu_connect_ok(), *a;
    int p, r;
    char *v;

    tu_exec_check(t, "BEGIN"); /* busy first: A cannot take its connection */
    tu_exec_check(t, "INSERT INTO pqdt_handles_fork VALUES (1)");
    r = tu_backend_pid(t);
    a = tu_connect_ok();
    p = tu_backend_pid(a);
    PGconn *both[] = {a, t, NULL};
    REQUIRE(p > 0 && r > 0 && p != r, "finish: backends %d and %d", p, r);
    in_child(child_finish, both, use_exit);
    CHECK(tu_backend_pid(a) == p, "finish (%s): the parent's A runs on %d, expected %d: %s", how,
          PQbackendPID(a), p, PQerrorMessage(a));
    CHECK(PQtransactionStatus(t) == PQTRANS_INTRANS, "finish (%s): T left its transaction (%d)", how,
          (int) PQtransactionStatus(t));
    CHECK(tu_backend_pid(t) == r, "finish (%s): T runs on %d, expected %d: %s", how, PQbackendPID(t), r,
          PQerrorMessage(t));
    tu_exec_check(t, "INSERT INTO pqdt_handles_fork VALUES (2)");
    tu_exec_check(t, "COMMIT");
    v = tu_query_value(tu_observer(), "SELECT string_agg(x::text, ',' ORDER BY x) FROM pqdt_handles_fork");
    CHECK(v != NULL && strcmp(v, "1,2") == 0, "finish (%s): committed rows are %s, expected 1,2", how,
          v ? v : "(none)");
    free(v);
    tu_exec_check(tu_observer(), "DELETE FROM pqdt_handles_fork");
    PQfinish(t);
    PQfinish(a);
}

static void test_sticky(void)
{
    PGconn *s = tu_connect_ok();
    int w = tu_backend_pid(s);
    struct query_arg q = {s, "SHOW work_mem"};
    struct child_report r;
    char *v;

    tu_exec_check(s, "SELECT set_config('work_mem', '7MB', false)");
    r = in_child(child_query, &q, true);
    /* Observed and asserted: plain libpq's behaviour, the parent's backend and session. */
    CHECK(r.pid == w, "sticky: the child's query on inherited S ran on %d, expected the parent's %d "
          "(plain libpq): %s", r.pid, w, r.error);
    CHECK(strcmp(r.value, "7MB") == 0, "sticky: the child sees work_mem \"%s\"", r.value);
    CHECK(tu_backend_pid(s) == w, "sticky: after the child finished S, the parent's S runs on %d, "
          "expected %d: %s", PQbackendPID(s), w, PQerrorMessage(s));
    v = tu_query_value(s, "SHOW work_mem");
    CHECK(v != NULL && strcmp(v, "7MB") == 0, "sticky: the parent's S has work_mem %s", v ? v : "(none)");
    free(v);
    PQfinish(s);
}

static void test_carried(void)
{
    PGconn *c = tu_connect_ok();
    int v_pid = tu_backend_pid(c);
    struct query_arg q = {c, "SHOW work_mem"};
    struct child_report r;
    char *v;

    tu_exec_check(c, "SET work_mem = '7MB'");
    r = in_child(child_query, &q, true);
    CHECK(r.pid > 0 && r.pid != v_pid, "carried: the child's query on C ran on %d, expected a backend of "
          "its own, not the parent's %d: %s", r.pid, v_pid, r.error);
    CHECK(strcmp(r.value, "7MB") == 0, "carried: the child's C has work_mem \"%s\", expected its SET's 7MB",
          r.value);
    CHECK(tu_backend_pid(c) == v_pid, "carried: the parent's C runs on %d, expected %d: %s", PQbackendPID(c),
          v_pid, PQerrorMessage(c));
    v = tu_query_value(c, "SHOW work_mem");
    CHECK(v != NULL && strcmp(v, "7MB") == 0, "carried: the parent's C has work_mem %s", v ? v : "(none)");
    free(v);
    PQfinish(c);
}

int main(void)
{
    PGconn *obs = tu_observer();

    tu_quiet_notices(obs);
    tu_exec_check(obs, "DROP TABLE IF EXISTS pqdt_handles_fork");
    tu_exec_check(obs, "CREATE TABLE pqdt_handles_fork (x int)");
    test_clean();
    test_finish(true);
    test_finish(false);
    test_carried();
    test_sticky();
    tu_exec_check(obs, "DROP TABLE pqdt_handles_fork");
    return tu_finish();
}
