/* test_fault_netfreeze.c: a TCP path that stops answering (a loopback proxy frozen with SIGSTOP) never hangs a connect longer than PQDEDUP_CHECK_TIMEOUT plus the app's connect_timeout. */
#define _GNU_SOURCE
#include "faults/faultutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Usage: test_fault_netfreeze [IDLE_MS] | recent | held N
 * Connections go through tests/faults/freeze_proxy.py to the server's TCP port, as pqd_alice
 * with connect_timeout=2 (libpq's smallest). Register with PQDEDUP_CHECK_TIMEOUT=2s and a
 * PQDEDUP_CHECK_AFTER below IDLE_MS (default 400): after freezing the path the test waits
 * IDLE_MS before connecting, so the kept connection is due for its round trip.
 * libpq times connect_timeout in whole seconds of time(): a wait of 2 s may end after only
 * 1 s and a little when the process is delayed across a second's boundary (seen on a loaded
 * machine, plain libpq too). Every bound here allows for that: a connect that waited for a
 * kept connection takes at least CHECK_TIMEOUT + CONNECT_TIMEOUT - 1 (3 s), one that did not
 * at most CONNECT_TIMEOUT (2 s), so the two never overlap.
 * Runs itself again with PQDEDUP_DISABLE=1 and compares what the app saw.
 * "recent" shows the documented gap with the default PQDEDUP_CHECK_AFTER (see
 * test_freeze_recent). "held N": N held idle connections and no kept one when the path
 * freezes (see test_freeze_held).
 */

#define CONNECT_TIMEOUT 2.0 /* seconds, in the conninfo */
#define CHECK_TIMEOUT 2.0   /* PQDEDUP_CHECK_TIMEOUT given at registration */
#define LIBPQ_EARLY 1.0     /* how much sooner libpq's connect_timeout may end (whole seconds) */

static struct fu_ledger *ledger;
static const char *app, *key;
static int next_id;
static long idle_ms = 400;

/* The longest a connect may take on the frozen path: pqdedup's bounded check of the kept
 * connection, then libpq's own connect_timeout for a new one; plus slack for a loaded machine
 * (more under valgrind). */
static double bound(void)
{
    double slack = tu_scale() < 1 ? 3.0 : 1.5;

    return (fu_is_reference() ? 0 : CHECK_TIMEOUT) + CONNECT_TIMEOUT + slack;
}

/* Connects on the frozen path: fails with libpq's "timeout expired" like plain libpq, within
 * the bound. */
static double connect_frozen(const char *what)
{
    double t0 = fu_now(), elapsed;
    PGconn *c = PQconnectdb(key);

    elapsed = fu_now() - t0;
    fu_note("%s: connect: %s", what, fu_conn_outcome(c));
    printf("%s: connect took %.2fs (bound %.2fs)\n", what, elapsed, bound());
    CHECK(PQstatus(c) != CONNECTION_OK, "%s: a connect on a frozen path succeeded", what);
    CHECK(elapsed <= bound(), "%s: the connect took %.2fs, more than %.2fs", what, elapsed, bound());
    CHECK(elapsed >= CONNECT_TIMEOUT - LIBPQ_EARLY - 0.1, "%s: the connect failed after %.2fs, before "
          "libpq's connect_timeout", what, elapsed);
    PQfinish(c);
    return elapsed;
}

/* A second connect on the same freeze, after the first (which took first_elapsed) gave up on
 * a kept or idle handle's connection: that connection is marked stalled and not waited for
 * again, so this one costs libpq's connect_timeout only (at most 2 s). Waiting for it again
 * would cost what the first connect cost, both timeouts (at least 3 s: a floor however fast
 * the machine). */
static void connect_frozen_again(const char *what, double first_elapsed)
{
    double t0 = fu_now(), elapsed;
    PGconn *c = PQconnectdb(key);

    elapsed = fu_now() - t0;
    fu_note("%s: connect: %s", what, fu_conn_outcome(c));
    printf("%s: connect took %.2fs (the first %.2fs)\n", what, elapsed, first_elapsed);
    CHECK(PQstatus(c) != CONNECTION_OK, "%s: a connect on a frozen path succeeded", what);
    if (!fu_is_reference()) {
        double waited_floor = CHECK_TIMEOUT + CONNECT_TIMEOUT - LIBPQ_EARLY - 0.1;

        CHECK(first_elapsed >= waited_floor,
              "%s: the first connect took %.2fs: it did not wait for a kept connection, so this one "
              "shows nothing", what, first_elapsed);
        CHECK(elapsed < waited_floor,
              "%s: the connect took %.2fs, as long as the first (%.2fs): it waited PQDEDUP_CHECK_TIMEOUT "
              "again for the connection the first found not answering (not marked stalled?)", what,
              elapsed, first_elapsed);
    }
    PQfinish(c);
}

/* Connect + write that must work once the path answers again (retried for a few seconds:
 * the first attempts may still time out while the proxy catches up). */
static PGconn *connect_thawed(const char *what)
{
    PGconn *c = NULL;
    double give_up = fu_now() + 10;

    do {
        PQfinish(c);
        c = PQconnectdb(key);
    } while (PQstatus(c) != CONNECTION_OK && fu_now() < give_up);
    fu_check_connect(c, "pqd_alice", app, what);
    if (PQstatus(c) == CONNECTION_OK) {
        enum fu_state st = fu_write(ledger, c, next_id++, "pqd_alice", app);
        fu_note("%s: write: %s", what, st == FU_OK ? "ok" : "FAILED");
    }
    return c;
}

/* A kept connection (idle, reset done) whose path froze, then one whose reset was still in
 * flight when it froze (finished mid-transaction: the ROLLBACK is stuck in the path): each
 * next connect gives up on the kept connection within PQDEDUP_CHECK_TIMEOUT and fails with
 * libpq's own connect_timeout error, as plain libpq does, and the one after it does not wait
 * for the kept connection again (connect_frozen_again); PQfinish never blocks; after the
 * path answers again the app works, and the stuck transaction was never committed. */
static void test_freeze(void)
{
    char portbuf[16], extra[256];
    PGconn *c, *held;
    int pid1;
    double t0, elapsed;

    snprintf(portbuf, sizeof portbuf, "%d", fu_proxy_start("127.0.0.1", getenv("PGPORT")));
    snprintf(extra, sizeof extra, "host=127.0.0.1 port=%s user=pqd_alice password=alice_pw "
             "sslmode=disable connect_timeout=2 %s", portbuf, FU_SYNC_COMMIT);
    key = tu_conninfo(extra);
    ledger = fu_ledger_create(100);

    /* Kept, and reused once through the proxy. */
    c = connect_thawed("through the proxy");
    pid1 = PQbackendPID(c);
    PQfinish(c);
    if (!fu_is_reference()) /* its reset is answered: it is reused, not a spare opened */
        CHECK(tu_wait_reset(pid1), "the kept connection's reset did not complete");
    c = connect_thawed("through the proxy, again");
    if (!fu_is_reference())
        CHECK(PQbackendPID(c) == pid1, "the kept connection was not reused before the freeze");
    /* A held connection survives a short freeze, as any TCP connection does. Opened while c
     * is still open, so it has a server connection of its own and pid1 is the kept one at the
     * freeze (a connect after c's finish would wait for pid1's reset and take it). */
    held = connect_thawed("held");
    PQfinish(c);
    if (!fu_is_reference()) {
        CHECK(PQbackendPID(held) != pid1, "the held connection got the kept one's backend while it was open");
        CHECK(tu_wait_reset(pid1), "the kept connection's reset did not complete");
    }

    fu_proxy_freeze();
    tu_sleep_ms(idle_ms);
    double first = connect_frozen("frozen, kept connection idle");
    connect_frozen_again("frozen, kept connection stalled", first);
    fu_proxy_thaw();
    c = connect_thawed("thawed");
    /* The kept connection did not answer its check on the frozen path within
     * PQDEDUP_CHECK_TIMEOUT: the connect went on without it, but it was kept, not closed (its
     * session was clean, and the path may thaw): after the thaw it may be handed out again,
     * once its check has answered, and it works (connect_thawed checked the session). When
     * c got another backend instead (the answer was still on its way), pid1 is ended here, so
     * that at the next freeze c's connection, its ROLLBACK stuck, is the one the connect waits
     * for (a still-stalled pid1 whose answer has arrived would be taken first and sent a new
     * check into the frozen path). */
    if (!fu_is_reference() && PQbackendPID(c) != pid1)
        fu_terminate(pid1);

    /* Finished mid-transaction on the frozen path: the ROLLBACK cannot get through. */
    int id = next_id++;
    CHECK(!strcmp(fu_exec(c, "BEGIN"), "ok"), "BEGIN: %s", PQerrorMessage(c));
    CHECK(!strcmp(fu_write_in_txn(ledger, c, id, "pqd_alice", app), "ok"), "INSERT: %s", PQerrorMessage(c));
    fu_proxy_freeze();
    t0 = fu_now();
    PQfinish(c);
    elapsed = fu_now() - t0;
    CHECK(elapsed < 0.5, "PQfinish on a frozen path took %.2fs", elapsed);
    tu_sleep_ms(idle_ms);
    connect_frozen("frozen, kept connection's rollback in flight");
    fu_proxy_thaw();

    /* Plain libpq's held connection just goes on, and so does pqdedup's: no connect during
     * the freezes took its server connection, since each found a free one to try first
     * (fault_netfreeze_held_handles is the case where one does). */
    const char *held_outcome = fu_exec(held, "SELECT 1");
    fu_note("held across the freeze: %s", held_outcome);
    if (strcmp(held_outcome, "ok"))
        printf("held across the freeze: %s", PQerrorMessage(held));
    PQfinish(held);
    c = connect_thawed("thawed again");
    PQfinish(c);
    /* The stuck transaction reached the server only after the thaw, as ROLLBACK then
     * Terminate; give it a moment to end before reading the table. */
    for (int i = 0; i < 100; i++) {
        char *n = fu_sql_value("SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s' "
                               "AND state LIKE 'idle in transaction%%'", app);
        bool none = n && !strcmp(n, "0");
        free(n);
        if (none)
            break;
        tu_sleep_ms(50);
    }
    fu_ledger_verify(ledger, 0, "netfreeze");
    fu_ledger_drop(ledger);
    fu_proxy_stop();
}

/* The documented gap: with the default PQDEDUP_CHECK_AFTER (30s), a kept connection used a
 * moment before the path froze is handed out at once, without a round trip (plain libpq would
 * instead try a new connection and fail after connect_timeout). The app's first query then
 * waits as on any open connection whose path froze; when the path answers again, the write
 * completes, exactly once. No plain-libpq run: its connect fails here by design. */
static void test_freeze_recent(void)
{
    char portbuf[16], extra[256];
    PGconn *c;
    double t0, elapsed;

    snprintf(portbuf, sizeof portbuf, "%d", fu_proxy_start("127.0.0.1", getenv("PGPORT")));
    snprintf(extra, sizeof extra, "host=127.0.0.1 port=%s user=pqd_alice password=alice_pw "
             "sslmode=disable connect_timeout=2 %s", portbuf, FU_SYNC_COMMIT);
    key = tu_conninfo(extra);
    ledger = fu_ledger_create(10);
    c = connect_thawed("through the proxy");
    int pid = PQbackendPID(c);
    PQfinish(c);
    CHECK(tu_wait_reset(pid), "the kept connection's reset did not complete"); /* pqdedup only */

    fu_proxy_freeze();
    t0 = fu_now();
    c = PQconnectdb(key);
    elapsed = fu_now() - t0;
    CHECK(PQstatus(c) == CONNECTION_OK && PQbackendPID(c) == pid && elapsed < 0.5,
          "frozen 0s after the last use: expected the kept connection at once, got %s after %.2fs",
          fu_conn_outcome(c), elapsed);
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id) VALUES (%d)", fu_ledger_table(ledger), next_id);
    REQUIRE(PQsendQuery(c, sql) == 1, "PQsendQuery: %s", PQerrorMessage(c));
    /* No answer while frozen. */
    t0 = fu_now();
    while (fu_now() - t0 < 2.0 && PQconsumeInput(c) && PQisBusy(c))
        tu_sleep_ms(20);
    CHECK(PQisBusy(c), "a query on a frozen path was answered");
    fu_proxy_thaw();
    /* Once the path answers, the write completes exactly once. */
    PGresult *r;
    bool ok = false;
    while ((r = PQgetResult(c)) != NULL) {
        ok = ok || PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
    }
    fu_record(ledger, next_id++, ok ? FU_OK : FU_AMBIGUOUS, pid, "pqd_alice", app);
    CHECK(ok, "the write stuck on the frozen path failed after the thaw: %s", PQerrorMessage(c));
    PQfinish(c);
    fu_ledger_verify(ledger, 0, "netfreeze recent");
    fu_ledger_drop(ledger);
    fu_proxy_stop();
}

/* N held connections, each with a server connection of its own (each opened while the
 * others were inside a transaction), then idle and clean; no kept one. The path freezes: a
 * connect must fail within the same bound as with one kept connection (PQDEDUP_CHECK_TIMEOUT,
 * then connect_timeout: a network path that stopped answering costs a connect at most one
 * PQDEDUP_CHECK_TIMEOUT, README), with libpq's own error; after the thaw each held connection
 * works, as plain libpq's do. */
static void test_freeze_held(int n)
{
    char portbuf[16], extra[256], what[32];
    PGconn *held[8];

    REQUIRE(n >= 1 && n <= 8, "held N: N from 1 to 8");
    snprintf(portbuf, sizeof portbuf, "%d", fu_proxy_start("127.0.0.1", getenv("PGPORT")));
    snprintf(extra, sizeof extra, "host=127.0.0.1 port=%s user=pqd_alice password=alice_pw "
             "sslmode=disable connect_timeout=2 %s", portbuf, FU_SYNC_COMMIT);
    key = tu_conninfo(extra);
    ledger = fu_ledger_create(100);
    for (int i = 0; i < n; i++) {
        snprintf(what, sizeof what, "held %d", i);
        held[i] = connect_thawed(what);
        CHECK(!strcmp(fu_exec(held[i], "BEGIN"), "ok"), "%s: BEGIN: %s", what, PQerrorMessage(held[i]));
    }
    for (int i = 0; i < n; i++)
        CHECK(!strcmp(fu_exec(held[i], "COMMIT"), "ok"), "held %d: COMMIT: %s", i, PQerrorMessage(held[i]));
    tu_sleep_ms(200); /* the scenario: idle longer than PQDEDUP_UNBIND_AFTER (100ms) */

    fu_proxy_freeze();
    snprintf(what, sizeof what, "frozen, %d held idle", n);
    double first = connect_frozen(what);
    snprintf(what, sizeof what, "frozen, %d held, again", n);
    connect_frozen_again(what, first);
    fu_proxy_thaw();
    for (int i = 0; i < n; i++) {
        const char *outcome = fu_exec(held[i], "SELECT 1");
        fu_note("held %d across the freeze: %s", i, outcome);
        if (strcmp(outcome, "ok"))
            printf("held %d across the freeze: %s", i, PQerrorMessage(held[i]));
        PQfinish(held[i]);
    }
    fu_ledger_verify(ledger, 0, "netfreeze held");
    fu_ledger_drop(ledger);
    fu_proxy_stop();
}

int main(int argc, char **argv)
{
    fu_init(argc, argv);
    tu_observer();
    app = tu_app_name();
    if (argc > 1 && !strcmp(argv[1], "recent")) {
        printf("test_fault_netfreeze recent as %s\n", app);
        test_freeze_recent();
        return fu_finish(true);
    }
    if (argc > 2 && !strcmp(argv[1], "held")) {
        printf("test_fault_netfreeze held %s as %s\n", argv[2], app);
        test_freeze_held(atoi(argv[2]));
        return fu_finish(false);
    }
    if (argc > 1)
        idle_ms = atol(argv[1]);
    printf("test_fault_netfreeze (idle %ld ms) as %s\n", idle_ms, app);
    test_freeze();
    return fu_finish(false);
}
