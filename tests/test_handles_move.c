/* test_handles_move.c: an idle, clean handle's server connection moves to a handle that needs one; the moved-from handle answers without one, then binds again on a reset session. */
#define _GNU_SOURCE
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Usage: test_handles_move (no arguments). Run with PQDEDUP_UNBIND_AFTER=0 and
 * PQDEDUP_KEEP_PER_KEY=0: no finished connection is kept, so a connect that finds every
 * handle's connection taken either opens a new one or takes an idle, clean handle's at once.
 *
 *   moved     A idle on backend P; B connects and runs on P; A answers PQstatus,
 *             PQtransactionStatus, PQerrorMessage (its own last error), PQbackendPID,
 *             PQparameterStatus, PQdb/PQuser from what it remembered, while
 *             pg_stat_activity shows one backend for both; B leaves session state the SQL
 *             does not show (a function's set_config and temp table) and an error; A's next
 *             call takes P back, and sees none of it: work_mem is the default, no temp table,
 *             not B's error; B, now unbound, still answers its own error and backend.
 *   oldest    three handles idle in the order A, B, C: the next connect takes A's backend,
 *             the one after B's (the longest-idle handle goes first).
 *   busy      a handle inside a transaction never loses its backend: a connect opens a new
 *             one, and the transaction's row is still there, uncommitted, afterwards.
 */

/* A function whose session effects the SQL calling it does not show. */
static const char *hidden_fn =
    "CREATE OR REPLACE FUNCTION pqdt_handles_hidden() RETURNS int LANGUAGE plpgsql AS $$ "
    "BEGIN PERFORM set_config('work_mem', '9MB', false); "
    "CREATE TEMP TABLE IF NOT EXISTS pqdt_hidden_tmp(x int); RETURN 1; END $$";

static void test_moved(void)
{
    const char *app = tu_app_name();
    PGconn *a = tu_connect_ok(), *b;
    int p = tu_backend_pid(a);
    char *a_error, *default_work_mem, *v;
    PQconninfoOption *info;

    REQUIRE(p > 0, "moved: pg_backend_pid on A: %s", PQerrorMessage(a));
    default_work_mem = tu_query_value(a, "SHOW work_mem");
    REQUIRE(default_work_mem != NULL, "moved: SHOW work_mem: %s", PQerrorMessage(a));
    CHECK(!tu_exec_ok(a, "SELECT 1/0"), "moved: SELECT 1/0 must fail");
    a_error = strdup(PQerrorMessage(a));
    REQUIRE(a_error != NULL && strstr(a_error, "division by zero") != NULL,
            "moved: A's error: %s", a_error ? a_error : "(null)");

    b = tu_connect_taking(p, "moved");

    /* A has no server connection now: everything it answers comes from the handle. */
    CHECK(tu_wait_backends(app, 1, 5000) == 1,
          "moved: pg_stat_activity shows one backend for A and B (A holds none)");
    CHECK(PQstatus(a) == CONNECTION_OK, "moved: unbound A's PQstatus is %d", (int) PQstatus(a));
    CHECK(PQtransactionStatus(a) == PQTRANS_IDLE, "moved: unbound A's PQtransactionStatus is %d",
          (int) PQtransactionStatus(a));
    CHECK(strcmp(PQerrorMessage(a), a_error) == 0,
          "moved: unbound A's PQerrorMessage is \"%s\", expected its last error \"%s\"",
          PQerrorMessage(a), a_error);
    CHECK(PQbackendPID(a) == p, "moved: unbound A's PQbackendPID is %d, expected its last backend %d",
          PQbackendPID(a), p);
    v = (char *) PQparameterStatus(a, "application_name");
    CHECK(v != NULL && strcmp(v, app) == 0, "moved: unbound A's application_name is %s",
          v ? v : "(null)");
    v = (char *) PQparameterStatus(a, "server_version");
    CHECK(v != NULL && strcmp(v, PQparameterStatus(b, "server_version")) == 0,
          "moved: unbound A's server_version is %s", v ? v : "(null)");
    CHECK(PQparameterStatus(a, "no_such_parameter") == NULL, "moved: an unknown parameter is NULL");
    CHECK(strcmp(PQdb(a), PQdb(b)) == 0 && strcmp(PQuser(a), PQuser(b)) == 0,
          "moved: unbound A's PQdb/PQuser are %s/%s, B's %s/%s", PQdb(a), PQuser(a), PQdb(b), PQuser(b));
    CHECK(PQserverVersion(a) == PQserverVersion(b) && PQprotocolVersion(a) == 3,
          "moved: unbound A's versions %d/%d", PQserverVersion(a), PQprotocolVersion(a));
    CHECK(PQclientEncoding(a) == PQclientEncoding(b), "moved: unbound A's client encoding");
    CHECK(PQbackendPID(b) == p, "moved: B's PQbackendPID is %d, expected %d", PQbackendPID(b), p);

    /* B changes its session where pqdedup cannot see it, and ends with an error. */
    tu_exec_check(b, "SELECT pqdt_handles_hidden()");
    v = tu_query_value(b, "SHOW work_mem");
    CHECK(v != NULL && strcmp(v, "9MB") == 0, "moved: B's work_mem is %s", v ? v : "(null)");
    free(v);
    CHECK(!tu_exec_ok(b, "SELECT 'b-marker'::int"), "moved: B's bad cast must fail");
    CHECK(strstr(PQerrorMessage(b), "b-marker") != NULL, "moved: B's error: %s", PQerrorMessage(b));
    CHECK(PQtransactionStatus(b) == PQTRANS_IDLE, "moved: B is idle after its error");

    /* A's next call that needs the server takes P back from B (idle, clean in pqdedup's eyes). */
    info = PQconninfo(a);
    CHECK(info != NULL, "moved: PQconninfo on A (binds it): %s", PQerrorMessage(a));
    PQconninfoFree(info);
    CHECK(strstr(PQerrorMessage(a), "b-marker") == NULL,
          "moved: A shows B's last error after binding again: %s", PQerrorMessage(a));
    /* As on a plain connection, a call that sends nothing leaves the last error in place. */
    CHECK(strcmp(PQerrorMessage(a), a_error) == 0,
          "moved: after PQconninfo bound A again, its PQerrorMessage is \"%s\", expected its own "
          "last error \"%s\" (plain libpq keeps it)", PQerrorMessage(a), a_error);
    CHECK(PQbackendPID(a) == p, "moved: A bound again to backend %d, expected P=%d (B's, idle)",
          PQbackendPID(a), p);
    CHECK(tu_backend_pid(a) == p, "moved: A's query runs on P=%d", p);
    v = tu_query_value(a, "SHOW work_mem");
    CHECK(v != NULL && strcmp(v, default_work_mem) == 0,
          "moved: A sees work_mem %s, B's session setting; expected the default %s (reset on the move)",
          v ? v : "(null)", default_work_mem);
    free(v);
    v = tu_query_value(a, "SELECT to_regclass('pg_temp.pqdt_hidden_tmp') IS NULL");
    CHECK(v != NULL && strcmp(v, "t") == 0, "moved: A sees B's temp table (%s)", v ? v : "(null)");
    free(v);
    CHECK(PQstatus(a) == CONNECTION_OK && PQtransactionStatus(a) == PQTRANS_IDLE, "moved: A works");

    /* B lost P to A: it answers from what it remembered. */
    CHECK(tu_wait_backends(app, 1, 5000) == 1, "moved: still one backend for A and B");
    CHECK(strstr(PQerrorMessage(b), "b-marker") != NULL, "moved: unbound B's PQerrorMessage is \"%s\"",
          PQerrorMessage(b));
    CHECK(PQbackendPID(b) == p, "moved: unbound B's PQbackendPID is %d, expected %d", PQbackendPID(b), p);
    CHECK(PQstatus(b) == CONNECTION_OK && PQtransactionStatus(b) == PQTRANS_IDLE, "moved: unbound B reads OK, IDLE");

    PQfinish(b);
    PQfinish(a);
    free(a_error);
    free(default_work_mem);
    CHECK(tu_wait_backends(app, 0, 10000) == 0, "moved: no backend left after both finished");
}

static void test_oldest(void)
{
    const char *app = tu_app_name();
    PGconn *h[3], *d, *e;
    int pid[3];

    /* Busy while the others connect, so each opens a backend of its own. */
    for (int i = 0; i < 3; i++) {
        h[i] = tu_connect_ok();
        tu_exec_check(h[i], "BEGIN");
        pid[i] = tu_backend_pid(h[i]);
    }
    CHECK(pid[0] != pid[1] && pid[1] != pid[2] && pid[0] != pid[2],
          "oldest: three busy handles on three backends (%d %d %d)", pid[0], pid[1], pid[2]);
    for (int i = 0; i < 3; i++)
        tu_exec_check(h[i], "COMMIT");
    d = tu_connect_taking(pid[0], "oldest (first connect takes the longest-idle A)");
    tu_exec_check(d, "BEGIN");
    e = tu_connect_taking(pid[1], "oldest (second connect takes B)");
    CHECK(tu_count_backends(app) == 3, "oldest: still three backends");
    PQfinish(e);
    PQfinish(d);
    for (int i = 0; i < 3; i++)
        PQfinish(h[i]);
    CHECK(tu_wait_backends(app, 0, 10000) == 0, "oldest: no backend left");
}

static void test_busy(void)
{
    PGconn *a = tu_connect_ok(), *b;
    int p, pb;
    char *v;

    tu_exec_check(a, "BEGIN");
    tu_exec_check(a, "INSERT INTO pqdt_handles_move VALUES (1)");
    p = tu_backend_pid(a);
    b = tu_connect_ok();
    pb = tu_backend_pid(b);
    CHECK(pb > 0 && pb != p, "busy: a connect got backend %d of the handle in a transaction", pb);
    CHECK(PQtransactionStatus(a) == PQTRANS_INTRANS, "busy: A is still in its transaction");
    CHECK(tu_backend_pid(a) == p, "busy: A still runs on %d", p);
    v = tu_query_value(a, "SELECT count(*) FROM pqdt_handles_move");
    CHECK(v != NULL && strcmp(v, "1") == 0, "busy: A sees its own uncommitted row (%s)", v ? v : "(null)");
    free(v);
    v = tu_query_value(b, "SELECT count(*) FROM pqdt_handles_move");
    CHECK(v != NULL && strcmp(v, "0") == 0, "busy: B sees A's uncommitted row (%s)", v ? v : "(null)");
    free(v);
    tu_exec_check(a, "ROLLBACK");
    PQfinish(b);
    PQfinish(a);
}

int main(void)
{
    PGconn *obs = tu_observer();

    tu_quiet_notices(obs);
    tu_exec_check(obs, hidden_fn);
    tu_exec_check(obs, "DROP TABLE IF EXISTS pqdt_handles_move");
    tu_exec_check(obs, "CREATE TABLE pqdt_handles_move (x int)");
    test_moved();
    test_oldest();
    test_busy();
    tu_exec_check(obs, "DROP TABLE pqdt_handles_move");
    return tu_finish();
}
