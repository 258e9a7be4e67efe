/* test_state_session.c: server-side session state of one holder never reaches the next holder of the same backend. */
#define _GNU_SOURCE
#include "testutil.h"

#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*
 * Usage: test_state_session --reset-query default|none|resetall
 *   Says which PQDEDUP_RESET_QUERY the test runs under, and so what it expects:
 *   default   (unset: DISCARD ALL) no session state survives;
 *   none      (PQDEDUP_RESET_QUERY=""): the negative control: SET, search_path, PREPARE,
 *             LISTEN, temp tables, advisory locks, SET ROLE, SET SESSION AUTHORIZATION,
 *             WITH HOLD cursors and client_encoding DO survive, which proves each check
 *             can fail; transactions are still rolled back;
 *   resetall  (PQDEDUP_RESET_QUERY="RESET ALL"): settings (SET, search_path,
 *             client_encoding) do not survive, transactions are rolled back; the rest is
 *             not checked (RESET ALL is documented not to clear it).
 * Every scenario opens a connection, changes the session, finishes it, connects again
 * with the same parameters and REQUIREs the same backend pid (else it proves nothing),
 * then looks for the change. Each scenario ends by cleaning the session itself
 * (ROLLBACK if needed, DISCARD ALL) so a leak in the "none" mode does not spill over.
 */

enum mode { MODE_DEFAULT, MODE_NONE, MODE_RESETALL };
enum expect { GONE, KEPT, ANY };

static enum mode mode = MODE_DEFAULT;
static char table[64];    /* a table of ours, made by the observer */
static char role[64];     /* a NOLOGIN role of ours, made by the observer */

/* What this mode expects of a setting (SET, search_path, client_encoding). */
static enum expect expect_setting(void)
{
    return mode == MODE_NONE ? KEPT : GONE;
}

/* What this mode expects of other session state (prepared statements, LISTEN, temp
 * tables, advisory locks, roles, cursors): only DISCARD ALL clears it. */
static enum expect expect_session(void)
{
    return mode == MODE_DEFAULT ? GONE : mode == MODE_NONE ? KEPT : ANY;
}

/* Checks that `present` (the state is visible to the next holder) matches `e`. */
static void check_expect(const char *what, enum expect e, bool present)
{
    if (e == GONE)
        CHECK(!present, "%s survived to the next holder of the same backend", what);
    else if (e == KEPT)
        CHECK(present, "negative control: %s was expected to survive with "
                       "PQDEDUP_RESET_QUERY=\"\" but did not (is the check blind?)", what);
}

/* tu_query_value that REQUIREs an answer. Caller frees. */
static char *value_of(PGconn *conn, const char *sql)
{
    char *v = tu_query_value(conn, sql);

    REQUIRE(v != NULL, "%s: %s", sql, PQerrorMessage(conn));
    return v;
}

/* Ends a scenario: undoes whatever may have leaked, then finishes the holder. */
static void end_scenario(PGconn *c)
{
    if (PQtransactionStatus(c) != PQTRANS_IDLE)
        tu_exec_ok(c, "ROLLBACK");
    tu_exec_check(c, "DISCARD ALL");
    PQfinish(c);
}

/* Rows in our table, as the observer sees them (lock_timeout set: a lock left behind
 * by the previous holder makes this an error rather than a hang). -1 on error. */
static long observer_rows(void)
{
    char sql[128];
    char *v;
    long n;

    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    v = tu_query_value(tu_observer(), sql);
    CHECK(v != NULL, "observer %s: %s", sql, PQerrorMessage(tu_observer()));
    n = v ? atol(v) : -1;
    free(v);
    return n;
}

/* Finishing inside an open transaction (rows inserted, table locked) commits nothing and
 * releases the lock; the next holder of the same backend is idle and sees no rows. */
static void test_open_transaction(void)
{
    char sql[160];
    int pid;
    PGconn *c = tu_first_holder(&pid);
    char *v;

    tu_exec_check(c, "BEGIN");
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (1), (2)", table);
    tu_exec_check(c, sql);
    snprintf(sql, sizeof sql, "LOCK TABLE %s IN ACCESS EXCLUSIVE MODE", table);
    tu_exec_check(c, sql);
    REQUIRE(PQtransactionStatus(c) == PQTRANS_INTRANS, "first holder is in a transaction");
    PQfinish(c);

    CHECK(observer_rows() == 0, "rows of a transaction finished without COMMIT were committed");
    c = tu_next_holder("open transaction", pid, NULL);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    v = value_of(c, sql);
    CHECK(strcmp(v, "0") == 0, "next holder sees %s uncommitted rows of the previous holder", v);
    free(v);
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (3)", table);
    tu_exec_check(c, sql); /* autocommit works on the reused session */
    CHECK(observer_rows() == 1, "next holder's autocommit insert is visible to others");
    snprintf(sql, sizeof sql, "DELETE FROM %s", table);
    tu_exec_check(c, sql);
    end_scenario(c);
}

/* Finishing inside an aborted transaction (an error after BEGIN) commits nothing; the
 * next holder of the same backend is idle and can run queries. */
static void test_aborted_transaction(void)
{
    char sql[160];
    int pid;
    PGconn *c = tu_first_holder(&pid);
    PGresult *res;
    char *v;

    tu_exec_check(c, "BEGIN");
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (1)", table);
    tu_exec_check(c, sql);
    res = PQexec(c, "SELECT 1/0");
    CHECK(PQresultStatus(res) == PGRES_FATAL_ERROR, "SELECT 1/0 fails");
    PQclear(res);
    REQUIRE(PQtransactionStatus(c) == PQTRANS_INERROR, "first holder's transaction is aborted");
    PQfinish(c);

    CHECK(observer_rows() == 0, "rows of an aborted transaction were committed");
    c = tu_next_holder("aborted transaction", pid, NULL);
    v = value_of(c, "SELECT 40 + 2");
    CHECK(strcmp(v, "42") == 0, "next holder's query answers %s", v);
    free(v);
    CHECK(PQtransactionStatus(c) == PQTRANS_IDLE, "next holder stays idle after a query");
    end_scenario(c);
}

/* SET work_mem, SET statement_timeout and search_path do not survive (default,
 * RESET ALL); they do with an empty reset query. */
static void test_settings(void)
{
    int pid;
    PGconn *c = tu_first_holder(&pid);
    char *wm0 = value_of(c, "SHOW work_mem");
    char *st0 = value_of(c, "SHOW statement_timeout");
    char *sp0 = value_of(c, "SHOW search_path");
    char *wm, *st, *sp;

    REQUIRE(strcmp(wm0, "7MB") != 0 && strcmp(st0, "12345ms") != 0, "defaults differ from ours");
    tu_exec_check(c, "SET work_mem = '7MB'");
    tu_exec_check(c, "SET statement_timeout = 12345");
    tu_exec_check(c, "SET search_path = pg_catalog, pqd_state_nowhere");
    wm = value_of(c, "SHOW work_mem");
    REQUIRE(strcmp(wm, "7MB") == 0, "SET work_mem took effect (%s)", wm);
    free(wm);
    PQfinish(c);

    c = tu_next_holder("SET", pid, NULL);
    wm = value_of(c, "SHOW work_mem");
    st = value_of(c, "SHOW statement_timeout");
    sp = value_of(c, "SHOW search_path");
    check_expect("SET work_mem", expect_setting(), strcmp(wm, wm0) != 0);
    check_expect("SET statement_timeout", expect_setting(), strcmp(st, st0) != 0);
    check_expect("SET search_path", expect_setting(), strcmp(sp, sp0) != 0);
    if (expect_setting() == GONE)
        CHECK(strcmp(wm, wm0) == 0 && strcmp(st, st0) == 0 && strcmp(sp, sp0) == 0,
              "next holder: work_mem=%s statement_timeout=%s search_path=%s, expected %s %s %s",
              wm, st, sp, wm0, st0, sp0);
    free(wm), free(st), free(sp), free(wm0), free(st0), free(sp0);
    end_scenario(c);
}

/* The client encoding set with PQsetClientEncoding goes back, both as libpq reports it
 * and as the server has it. */
static void test_client_encoding(void)
{
    int pid;
    PGconn *c = tu_first_holder(&pid);
    int enc0 = PQclientEncoding(c);
    char *srv0 = value_of(c, "SHOW client_encoding");
    char *srv;
    int enc;

    REQUIRE(strcmp(pg_encoding_to_char(enc0), "LATIN1") != 0, "default encoding is not LATIN1");
    REQUIRE(PQsetClientEncoding(c, "LATIN1") == 0, "PQsetClientEncoding: %s", PQerrorMessage(c));
    REQUIRE(strcmp(pg_encoding_to_char(PQclientEncoding(c)), "LATIN1") == 0, "LATIN1 took effect");
    PQfinish(c);

    c = tu_next_holder("client_encoding", pid, NULL);
    enc = PQclientEncoding(c);
    srv = value_of(c, "SHOW client_encoding");
    check_expect("PQsetClientEncoding (libpq's PQclientEncoding)", expect_setting(), enc != enc0);
    check_expect("PQsetClientEncoding (server's client_encoding)", expect_setting(),
                 strcmp(srv, srv0) != 0);
    if (expect_setting() == GONE)
        CHECK(enc == enc0 && strcmp(srv, srv0) == 0, "next holder: encoding %s / server %s, "
              "expected %s / %s", pg_encoding_to_char(enc), srv, pg_encoding_to_char(enc0), srv0);
    free(srv), free(srv0);
    end_scenario(c);
}

/* Prepared statements (protocol-level PQprepare and SQL PREPARE) are gone: the next
 * holder can prepare the same names without "already exists". */
static void test_prepare(void)
{
    int pid;
    PGconn *c = tu_first_holder(&pid);
    PGresult *res;
    char *n;
    bool again_ok;

    res = PQprepare(c, "pqd_state_stmt", "SELECT 1", 0, NULL);
    CHECK(PQresultStatus(res) == PGRES_COMMAND_OK, "PQprepare: %s", PQerrorMessage(c));
    PQclear(res);
    tu_exec_check(c, "PREPARE pqd_state_sql AS SELECT 2");
    PQfinish(c);

    c = tu_next_holder("PREPARE", pid, NULL);
    n = value_of(c, "SELECT count(*) FROM pg_prepared_statements");
    check_expect("prepared statements (pg_prepared_statements)", expect_session(),
                 strcmp(n, "0") != 0);
    free(n);
    res = PQprepare(c, "pqd_state_stmt", "SELECT 1", 0, NULL);
    again_ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    check_expect("PQprepare'd statement (re-prepare fails: already exists)", expect_session(),
                 !again_ok);
    if (expect_session() == GONE && !again_ok)
        fprintf(stderr, "  PQprepare again: %s", PQerrorMessage(c));
    PQclear(res);
    check_expect("SQL PREPARE (re-prepare fails: already exists)", expect_session(),
                 !tu_exec_ok(c, "PREPARE pqd_state_sql AS SELECT 2"));
    end_scenario(c);
}

/* Waits up to ms for conn's socket to become readable. */
static bool wait_readable(PGconn *conn, int ms)
{
    struct pollfd p = { .fd = PQsocket(conn), .events = POLLIN };

    return poll(&p, 1, ms) == 1;
}

/* Counts the notifications queued on conn (after reading what the socket has),
 * freeing them. */
static int drain_notifies(PGconn *conn)
{
    PGnotify *n;
    int count = 0;

    PQconsumeInput(conn);
    while ((n = PQnotifies(conn)) != NULL) {
        count++;
        PQfreemem(n);
    }
    return count;
}

/* LISTEN does not survive: the next holder is listening on nothing, and a NOTIFY sent
 * on the channel after the reuse is not delivered to it. */
static void test_listen(void)
{
    int pid, got = 0, i;
    PGconn *c = tu_first_holder(&pid);
    char *n;

    tu_exec_check(c, "LISTEN pqd_state_chan");
    PQfinish(c);

    c = tu_next_holder("LISTEN", pid, NULL);
    n = value_of(c, "SELECT count(*) FROM pg_listening_channels()");
    check_expect("LISTEN (pg_listening_channels)", expect_session(), strcmp(n, "0") != 0);
    free(n);
    tu_exec_check(tu_observer(), "NOTIFY pqd_state_chan, 'after reuse'");
    tu_exec_check(c, "SELECT 1"); /* a round trip, then wait a little for a late delivery */
    got = drain_notifies(c);
    for (i = 0; i < 5 && got == 0; i++)
        if (wait_readable(c, 100))
            got += drain_notifies(c);
    check_expect("LISTEN (NOTIFY after reuse delivered)", expect_session(), got > 0);
    end_scenario(c);
}

/* A notification that reached the first holder's libpq queue (read, never fetched with
 * PQnotifies) is not handed to the next holder; this holds whatever the reset query. */
static void test_queued_notification(void)
{
    int pid;
    PGconn *c = tu_first_holder(&pid);

    tu_exec_check(c, "LISTEN pqd_state_q");
    tu_exec_check(tu_observer(), "NOTIFY pqd_state_q, 'queued before finish'");
    REQUIRE(wait_readable(c, 5000), "the notification reached the first holder's socket");
    REQUIRE(PQconsumeInput(c) == 1, "PQconsumeInput: %s", PQerrorMessage(c));
    tu_exec_check(c, "SELECT 1"); /* everything sent before its answer is now parsed and queued */
    PQfinish(c);

    c = tu_next_holder("queued notification", pid, NULL);
    CHECK(drain_notifies(c) == 0, "next holder got the previous holder's notification");
    end_scenario(c);
}

/* A notification still unread on the socket at finish is not seen by the next holder
 * (with an empty reset query the pool may instead drop the readable connection; both
 * are fine, only a delivered notification is wrong). */
static void test_unread_notification(void)
{
    int pid, pid2;
    PGconn *c = tu_first_holder(&pid);

    tu_exec_check(c, "LISTEN pqd_state_u");
    tu_exec_check(tu_observer(), "NOTIFY pqd_state_u, 'unread at finish'");
    REQUIRE(wait_readable(c, 5000), "the notification reached the first holder's socket");
    PQfinish(c);

    if (mode == MODE_NONE) {
        c = tu_connect_ok();
        pid2 = tu_backend_pid(c);
    } else {
        c = tu_next_holder("unread notification", pid, NULL);
        pid2 = pid;
    }
    tu_exec_check(c, "SELECT 1");
    CHECK(drain_notifies(c) == 0, "next holder (backend %d, first was %d) got the previous "
          "holder's unread notification", pid2, pid);
    end_scenario(c);
}

/* Temp tables are gone: to_regclass finds none and the same name can be created. */
static void test_temp_table(void)
{
    int pid;
    PGconn *c = tu_first_holder(&pid);
    char *v;

    tu_exec_check(c, "CREATE TEMP TABLE pqd_state_tmp (x int)");
    tu_exec_check(c, "INSERT INTO pqd_state_tmp VALUES (1)");
    PQfinish(c);

    c = tu_next_holder("temp table", pid, NULL);
    v = value_of(c, "SELECT to_regclass('pg_temp.pqd_state_tmp') IS NOT NULL");
    check_expect("temp table (to_regclass)", expect_session(), strcmp(v, "t") == 0);
    free(v);
    check_expect("temp table (CREATE again fails)", expect_session(),
                 !tu_exec_ok(c, "CREATE TEMP TABLE pqd_state_tmp (x int)"));
    end_scenario(c);
}

/* Session advisory locks are released: another connection can take the lock while the
 * next holder has the backend. */
static void test_advisory_lock(void)
{
    long key = 770000 + (long) getpid();
    char sql[128];
    int pid;
    PGconn *c = tu_first_holder(&pid);
    char *v;

    snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%ld)", key);
    tu_exec_check(c, sql);
    PQfinish(c);

    c = tu_next_holder("advisory lock", pid, NULL);
    snprintf(sql, sizeof sql, "SELECT pg_try_advisory_lock(%ld)", key);
    v = value_of(tu_observer(), sql);
    check_expect("session advisory lock (another connection cannot take it)", expect_session(),
                 strcmp(v, "f") == 0);
    if (strcmp(v, "t") == 0) {
        snprintf(sql, sizeof sql, "SELECT pg_advisory_unlock(%ld)", key);
        tu_exec_check(tu_observer(), sql);
    }
    free(v);
    end_scenario(c);
}

/* `set` (SET ROLE, SET SESSION AUTHORIZATION) to our role does not survive: current_user
 * and session_user are the login user again. shows is what the first holder's statement
 * changes (current_user or session_user): it is REQUIREd to become the role and checked to
 * be the login user again for the next holder. */
static void check_identity_reset(const char *set, const char *shows)
{
    char sql[128], what[128];
    int pid;
    PGconn *c = tu_first_holder(&pid);
    char *login, *cu, *su, *v;

    snprintf(sql, sizeof sql, "SELECT %s", shows);
    login = value_of(c, sql);
    snprintf(sql, sizeof sql, "%s %s", set, role);
    tu_exec_check(c, sql);
    snprintf(sql, sizeof sql, "SELECT %s", shows);
    v = value_of(c, sql);
    REQUIRE(strcmp(v, role) == 0, "%s took effect (%s)", set, v);
    free(v);
    PQfinish(c);

    c = tu_next_holder(set, pid, NULL);
    cu = value_of(c, "SELECT current_user");
    su = value_of(c, "SELECT session_user");
    snprintf(what, sizeof what, "%s (%s)", set, shows);
    check_expect(what, expect_session(),
                 strcmp(strcmp(shows, "session_user") == 0 ? su : cu, login) != 0);
    if (expect_session() == GONE)
        CHECK(strcmp(cu, login) == 0 && strcmp(su, login) == 0,
              "next holder: current_user=%s session_user=%s, expected %s", cu, su, login);
    free(cu), free(su), free(login);
    end_scenario(c);
}

/* SET ROLE does not survive: current_user is the login user again. */
static void test_set_role(void)
{
    check_identity_reset("SET ROLE", "current_user");
}

/* SET SESSION AUTHORIZATION does not survive: session_user and current_user are the login
 * user again. */
static void test_session_authorization(void)
{
    check_identity_reset("SET SESSION AUTHORIZATION", "session_user");
}

/* A WITH HOLD cursor is gone: pg_cursors is empty and FETCH from it fails. */
static void test_hold_cursor(void)
{
    int pid;
    PGconn *c = tu_first_holder(&pid);
    char *v;

    tu_exec_check(c, "DECLARE pqd_state_cur CURSOR WITH HOLD FOR SELECT generate_series(1, 3)");
    tu_exec_check(c, "FETCH 1 FROM pqd_state_cur");
    PQfinish(c);

    c = tu_next_holder("WITH HOLD cursor", pid, NULL);
    v = value_of(c, "SELECT count(*) FROM pg_cursors");
    check_expect("WITH HOLD cursor (pg_cursors)", expect_session(), strcmp(v, "0") != 0);
    free(v);
    check_expect("WITH HOLD cursor (FETCH works)", expect_session(),
                 tu_exec_ok(c, "FETCH 1 FROM pqd_state_cur"));
    end_scenario(c);
}

/* The pool's basic promise, which every scenario relies on: a plain finish then connect
 * gets the same backend. */
static void test_reuse_happens(void)
{
    int pid;
    PGconn *c = tu_first_holder(&pid);

    PQfinish(c);
    c = tu_next_holder("plain reuse", pid, NULL);
    CHECK(1, "reuse");
    PQfinish(c);
}

int main(int argc, char **argv)
{
    char sql[200];

    if (argc == 3 && !strcmp(argv[1], "--reset-query") && !strcmp(argv[2], "default"))
        mode = MODE_DEFAULT;
    else if (argc == 3 && !strcmp(argv[1], "--reset-query") && !strcmp(argv[2], "none"))
        mode = MODE_NONE;
    else if (argc == 3 && !strcmp(argv[1], "--reset-query") && !strcmp(argv[2], "resetall"))
        mode = MODE_RESETALL;
    else {
        fprintf(stderr, "usage: test_state_session --reset-query default|none|resetall\n");
        return 1;
    }
    printf("test_state_session: mode %s as %s\n", argv[2], tu_app_name());

    snprintf(table, sizeof table, "pqd_state_rows_%ld", (long) getpid());
    snprintf(role, sizeof role, "pqd_state_role_%ld", (long) getpid());
    snprintf(sql, sizeof sql, "CREATE TABLE %s (x int)", table);
    REQUIRE(tu_exec_check(tu_observer(), sql), "observer creates %s", table);
    snprintf(sql, sizeof sql, "CREATE ROLE %s NOLOGIN", role);
    REQUIRE(tu_exec_check(tu_observer(), sql), "observer creates %s", role);
    tu_exec_check(tu_observer(), "SET lock_timeout = '5s'");

    test_reuse_happens();
    test_open_transaction();
    test_aborted_transaction();
    test_settings();
    test_client_encoding();
    test_prepare();
    test_listen();
    test_queued_notification();
    test_unread_notification();
    test_temp_table();
    test_advisory_lock();
    test_set_role();
    test_session_authorization();
    test_hold_cursor();

    snprintf(sql, sizeof sql, "DROP TABLE %s", table);
    tu_exec_check(tu_observer(), sql);
    snprintf(sql, sizeof sql, "DROP ROLE %s", role);
    tu_exec_check(tu_observer(), sql);
    return tu_finish();
}
