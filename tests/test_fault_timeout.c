/* test_fault_timeout.c: the server's idle_session_timeout and idle_in_transaction_session_timeout firing on kept and held connections. */
#define _GNU_SOURCE
#include "faults/faultutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * Usage: test_fault_timeout CASE
 *   idle-session        a role of its own with ALTER ROLE ... SET idle_session_timeout =
 *                       '500ms' (2s under valgrind): kept and held connections outlive it
 *   idle-session-race [ROUNDS]  a role with idle_session_timeout = '200ms'; connect/write/finish,
 *                       then sleep just around the server's timeout (190..210 ms), many times:
 *                       every write must work, as with plain libpq (each plain connect is
 *                       new, so no plain-libpq run is made). Register it with
 *                       PQDEDUP_CHECK_AFTER below the timeout.
 *   idle-session-late-query  idle_session_timeout = '200ms'; the app connects, works 100 ms,
 *                       then writes (the kept connection had been idle 150 ms): must work, as
 *                       with plain libpq
 *   idle-in-transaction idle_in_transaction_session_timeout=500ms (in the connection's
 *                       options) fires on held connections in a transaction
 * Each runs itself again with PQDEDUP_DISABLE=1 and compares what the app saw.
 */

/* idle-session: 500 ms, 2 s under valgrind (PQD_TEST_SCALE < 1), where the test's own
 * connects take longer than 500 ms while its held connections wait. */
#define TIMEOUT_MS (tu_scale() < 1 ? 2000 : 500)
#define RACE_TIMEOUT_MS 200 /* idle-session-race */

static struct fu_ledger *ledger;
static const char *app;
static int next_id;
static char role[64], password[64];

/* A login role of this process, whose sessions time out after TIMEOUT_MS idle. */
static void create_role(int timeout_ms)
{
    snprintf(role, sizeof role, "pqdt_role_%ld", (long)getpid());
    snprintf(password, sizeof password, "pw_%ld", (long)getpid());
    fu_sql("DROP ROLE IF EXISTS %s", role);
    fu_sql("CREATE ROLE %s LOGIN PASSWORD '%s'", role, password);
    fu_sql("ALTER ROLE %s SET idle_session_timeout = '%dms'", role, timeout_ms);
}

/* Drops the role; its sessions (kept ones included) are ended first. */
static void drop_role(void)
{
    fu_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '%s'", role);
    for (int i = 0; i < 250; i++) {
        char *n = fu_sql_value("SELECT count(*) FROM pg_stat_activity WHERE usename = '%s'", role);
        bool gone = n && !strcmp(n, "0");
        free(n);
        if (gone)
            break;
        tu_sleep_ms(20);
    }
    fu_sql("DROP ROLE IF EXISTS %s", role);
}

static const char *role_conninfo(void)
{
    char extra[256];

    snprintf(extra, sizeof extra, "user=%s password=%s %s", role, password, FU_SYNC_COMMIT);
    return tu_conninfo(extra);
}

static bool in_list(int pid, const int *pids, int n)
{
    for (int i = 0; i < n; i++)
        if (pids[i] == pid)
            return true;
    return false;
}

/* Kept connections (idle, reset done) and held ones all outlive idle_session_timeout: the
 * server ends them (FATAL 57P05). The next connects get working new backends and nothing is
 * printed; a held one reports the error on next use, as with plain libpq; one the app
 * finishes without using it again is not handed out. */
static void test_idle_session(void)
{
    const char *key;
    PGconn *c[3], *held, *held_unused;
    int old[8], nold = 0;
    char *v, *err;

    create_role(TIMEOUT_MS);
    key = role_conninfo();
    ledger = fu_ledger_create(100);

    held = PQconnectdb(key);
    held_unused = PQconnectdb(key);
    REQUIRE(PQstatus(held) == CONNECTION_OK && PQstatus(held_unused) == CONNECTION_OK,
            "connect as %s: %s", role, PQerrorMessage(held));
    v = tu_query_value(held, "SHOW idle_session_timeout");
    char want[32];
    snprintf(want, sizeof want, "%dms", TIMEOUT_MS);
    if (TIMEOUT_MS % 1000 == 0)
        snprintf(want, sizeof want, "%ds", TIMEOUT_MS / 1000);
    REQUIRE(v && !strcmp(v, want), "the role's idle_session_timeout is %s", v ? v : "(error)");
    free(v);
    CHECK(fu_write(ledger, held, next_id++, role, app) == FU_OK, "held: write: %s", PQerrorMessage(held));
    old[nold++] = PQbackendPID(held);
    old[nold++] = PQbackendPID(held_unused);
    for (int i = 0; i < 3; i++) {
        c[i] = PQconnectdb(key);
        REQUIRE(PQstatus(c[i]) == CONNECTION_OK, "connect: %s", PQerrorMessage(c[i]));
        CHECK(fu_write(ledger, c[i], next_id++, role, app) == FU_OK, "write: %s", PQerrorMessage(c[i]));
        old[nold++] = PQbackendPID(c[i]);
    }
    for (int i = 0; i < 3; i++)
        PQfinish(c[i]);

    /* The server ends every one of them once idle for its timeout. */
    double give_up = fu_now() + 10 + TIMEOUT_MS / 1000.0;
    bool all_ended = false;
    while (!all_ended && fu_now() < give_up) {
        v = fu_sql_value("SELECT count(*) FROM pg_stat_activity WHERE usename = '%s'", role);
        all_ended = v && !strcmp(v, "0");
        free(v);
        if (!all_ended)
            tu_sleep_ms(20);
    }
    CHECK(all_ended, "sessions of %s still open 10 s after idle_session_timeout", role);

    PQfinish(held_unused);
    tu_capture_stderr();
    for (int i = 0; i < 3; i++) {
        c[i] = PQconnectdb(key);
        int pid = fu_check_connect(c[i], role, app, "after idle_session_timeout");
        CHECK(pid < 0 || !in_list(pid, old, nold), "got backend %d, ended by the server", pid);
        if (pid > 0) {
            enum fu_state st = fu_write(ledger, c[i], next_id++, role, app);
            fu_note("after idle_session_timeout: write: %s", st == FU_OK ? "ok" : "FAILED");
        }
    }
    err = tu_release_stderr();
    CHECK(err[0] == '\0', "after idle_session_timeout the program's stderr got: %s", err);
    free(err);

    /* The held one: the error on next use, as plain libpq; a clean idle one may go on under
     * pqdedup on a new backend (the connects above may have taken its server connection). */
    fu_write_idle_held(ledger, held, next_id++, role, app, "held past idle_session_timeout: write", old, nold);
    PQfinish(held);
    for (int i = 0; i < 3; i++)
        PQfinish(c[i]);
    fu_ledger_verify(ledger, 0, "idle-session");
    fu_ledger_drop(ledger);
    drop_role();
}

/* connect, write, finish, then idle for just about the server's idle_session_timeout
 * (RACE_TIMEOUT_MS - 10 .. RACE_TIMEOUT_MS + 10 ms): with plain libpq every connect is new, so every
 * write works; under pqdedup no connection the server is about to end may be handed out. */
static void test_idle_session_race(long rounds)
{
    const char *key;
    long failed = 0, reused = 0;
    int last_pid = -1;

    create_role(RACE_TIMEOUT_MS);
    key = role_conninfo();
    ledger = fu_ledger_create((int)rounds + 1);
    for (long i = 0; i < rounds; i++) {
        PGconn *c = PQconnectdb(key);
        enum fu_state st = FU_FAILED;

        if (PQstatus(c) == CONNECTION_OK) {
            reused += PQbackendPID(c) == last_pid;
            last_pid = PQbackendPID(c);
            st = fu_write(ledger, c, next_id++, role, app);
        }
        if (st != FU_OK) {
            failed++;
            fprintf(stderr, "round %ld: after %d ms idle: %s", i, RACE_TIMEOUT_MS - 10 + (int)((i - 1) % 21),
                    PQerrorMessage(c));
        }
        PQfinish(c);
        tu_sleep_ms(RACE_TIMEOUT_MS - 10 + (i % 21));
    }
    printf("idle-session-race: %ld rounds, %ld failed, %ld reused a kept connection\n", rounds,
           failed, reused);
    fu_note("idle-session-race: %s", failed == 0 ? "every write worked" : "SOME WRITES FAILED");
    CHECK(failed == 0, "%ld of %ld connect+write rounds failed after an idle time near the "
                       "server's idle_session_timeout", failed, rounds);
    fu_ledger_verify(ledger, (int)rounds, "idle-session-race");
    fu_ledger_drop(ledger);
    drop_role();
}

/* The app connects, works on its own for 100 ms, then writes: with plain libpq the new
 * session has been idle 100 ms, well under the server's idle_session_timeout (200 ms), so the
 * write works. Under pqdedup the connection handed out must give the app the same budget: one
 * kept for 150 ms and handed out as it is would be ended by the server 50 ms into the app's
 * work. */
static void test_idle_session_late_query(void)
{
    const char *key;
    int rounds = 3, failed = 0;

    create_role(RACE_TIMEOUT_MS);
    key = role_conninfo();
    ledger = fu_ledger_create(2 * rounds);
    for (int i = 0; i < rounds; i++) {
        PGconn *c = PQconnectdb(key);
        REQUIRE(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
        CHECK(fu_write(ledger, c, next_id++, role, app) == FU_OK, "write: %s", PQerrorMessage(c));
        PQfinish(c);
        tu_sleep_ms(RACE_TIMEOUT_MS * 3 / 4);
        c = PQconnectdb(key);
        fu_note("round %d: connect: %s", i, fu_conn_outcome(c));
        tu_sleep_ms(RACE_TIMEOUT_MS / 2); /* the app's own work before its first query */
        enum fu_state st = fu_write(ledger, c, next_id++, role, app);
        fu_note("round %d: write %d ms after connecting: %s", i, RACE_TIMEOUT_MS / 2, fu_last_outcome());
        if (!CHECK(st == FU_OK, "round %d: a write %d ms after connecting failed (the server's "
                   "idle_session_timeout is %d ms): %s", i, RACE_TIMEOUT_MS / 2, RACE_TIMEOUT_MS,
                   PQerrorMessage(c)))
            failed++;
        PQfinish(c);
    }
    printf("idle-session-late-query: %d of %d rounds failed\n", failed, rounds);
    fu_ledger_verify(ledger, rounds, "idle-session-late-query");
    fu_ledger_drop(ledger);
    drop_role();
}

/* idle_in_transaction_session_timeout ends held connections idle inside a transaction: the
 * app's COMMIT reports the loss (as plain libpq), nothing of the transaction is there; one
 * the app finishes without using it again is not handed out; a kept connection (outside any
 * transaction) is not affected and is reused. */
static void test_idle_in_transaction(void)
{
    const char *key = tu_conninfo("options='-c idle_in_transaction_session_timeout=500ms "
                                  "-c synchronous_commit=on'");
    const char *user = getenv("PGUSER") ? getenv("PGUSER") : "postgres";
    PGconn *txn, *txn_unused, *kept, *c[2];
    int old[3], kept_pid, txn_id, got_kept = 0;
    char *err;

    ledger = fu_ledger_create(100);
    /* Each inside its transaction before the next connect (an idle one's server connection
     * could go to that connect). */
    txn = PQconnectdb(key);
    REQUIRE(PQstatus(txn) == CONNECTION_OK, "connect: %s", PQerrorMessage(txn));
    CHECK(!strcmp(fu_exec(txn, "BEGIN"), "ok"), "BEGIN: %s", PQerrorMessage(txn));
    txn_unused = PQconnectdb(key);
    REQUIRE(PQstatus(txn_unused) == CONNECTION_OK, "connect: %s", PQerrorMessage(txn_unused));
    CHECK(!strcmp(fu_exec(txn_unused, "BEGIN"), "ok"), "BEGIN: %s", PQerrorMessage(txn_unused));
    kept = PQconnectdb(key);
    REQUIRE(PQstatus(kept) == CONNECTION_OK, "connect: %s", PQerrorMessage(kept));
    CHECK(fu_write(ledger, kept, next_id++, user, app) == FU_OK, "write: %s", PQerrorMessage(kept));
    old[0] = PQbackendPID(txn);
    old[1] = PQbackendPID(txn_unused);
    old[2] = kept_pid = PQbackendPID(kept);
    PQfinish(kept);
    txn_id = next_id++;
    CHECK(!strcmp(fu_write_in_txn(ledger, txn, txn_id, user, app), "ok"), "INSERT: %s", PQerrorMessage(txn));
    CHECK(!strcmp(fu_write_in_txn(ledger, txn_unused, next_id++, user, app), "ok"), "INSERT: %s",
          PQerrorMessage(txn_unused));

    /* The server ends both once idle in their transactions for its timeout. */
    double give_up = fu_now() + 10;
    bool ended = false;
    while (!ended && fu_now() < give_up) {
        char *n = fu_sql_value("SELECT count(*) FROM pg_stat_activity WHERE pid IN (%d, %d)", old[0], old[1]);
        ended = n && !strcmp(n, "0");
        free(n);
        if (!ended)
            tu_sleep_ms(20);
    }
    CHECK(ended, "the connections idle in a transaction are still there 10 s after their timeout");
    fu_note("idle in transaction past the timeout: COMMIT: %s", fu_commit(ledger, txn, &txn_id, 1));
    fu_mark(ledger, txn_id, FU_FAILED); /* the server ended it before COMMIT was sent */
    PQfinish(txn);
    PQfinish(txn_unused);

    tu_capture_stderr();
    for (int i = 0; i < 2; i++) {
        c[i] = PQconnectdb(key);
        int pid = fu_check_connect(c[i], user, app, "after idle_in_transaction_session_timeout");
        CHECK(pid != old[0] && pid != old[1], "got backend %d, ended by the server", pid);
        got_kept += pid == kept_pid;
        if (pid > 0) {
            enum fu_state st = fu_write(ledger, c[i], next_id++, user, app);
            fu_note("after idle_in_transaction_session_timeout: write: %s", st == FU_OK ? "ok" : "FAILED");
        }
    }
    err = tu_release_stderr();
    CHECK(err[0] == '\0', "after idle_in_transaction_session_timeout the program's stderr got: %s", err);
    free(err);
    if (!fu_is_reference())
        CHECK(got_kept == 1, "the kept connection (not in a transaction) was not reused");
    for (int i = 0; i < 2; i++)
        PQfinish(c[i]);
    fu_ledger_verify(ledger, 0, "idle-in-transaction");
    fu_ledger_drop(ledger);
}

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "";

    fu_init(argc, argv);
    tu_observer();
    app = tu_app_name();
    printf("test_fault_timeout %s as %s\n", which, app);
    if (!strcmp(which, "idle-session"))
        test_idle_session();
    else if (!strcmp(which, "idle-session-race")) {
        test_idle_session_race(tu_scaled(argc > 2 ? atol(argv[2]) : 42));
        return fu_finish(true);
    }
    else if (!strcmp(which, "idle-session-late-query"))
        test_idle_session_late_query();
    else if (!strcmp(which, "idle-in-transaction"))
        test_idle_in_transaction();
    else {
        fprintf(stderr, "usage: test_fault_timeout idle-session | idle-session-race [ROUNDS] | idle-session-late-query | idle-in-transaction\n");
        return 1;
    }
    return fu_finish(false);
}
