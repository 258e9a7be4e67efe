/* test_fault_restart.c: server restarts, crashes, stops and pg_terminate_backend with kept, held, mid-transaction and several live handles: nothing lost, duplicated or crossed, errors as plain libpq. */
#define _GNU_SOURCE
#include "faults/faultutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Usage: test_fault_restart CASE [MODE]
 *   restart immediate|fast  pg_ctl restart (a crash with -m immediate) while connections of
 *                           two keys are kept, held idle, held mid-transaction, finished
 *                           mid-transaction, and while a writer thread inserts non-stop
 *   handles immediate|fast  the same fault with six live handles of one thread and one key:
 *                           one inside a transaction, one sticky (set_config), four idle and clean
 *                           taking turns on the server connections left (register with
 *                           PQDEDUP_MAX_PER_KEY=3: six handles, three backends)
 *   down                    the server stopped while connections are kept: connects fail as
 *                           with plain libpq, and work again once it is started
 *   terminate               pg_terminate_backend of kept, held idle and held mid-transaction
 *                           connections
 *   terminate-handles       pg_terminate_backend of the backend four live handles of one key
 *                           take turns on, one of them last (register with
 *                           PQDEDUP_MAX_PER_KEY=2, a fifth handle in a transaction holding
 *                           the other backend)
 * Every case runs itself again with PQDEDUP_DISABLE=1 and compares what the app saw (see
 * faults/faultutil.h): each handle must behave as a plain libpq connection would, but that a
 * clean, idle held one whose backend died may go on under pqdedup on a new backend.
 * restart, handles and down must be registered SERIAL.
 */

/* Key A: the unix socket as the harness's superuser; key B: TCP with a password as pqd_alice. */
static const char *key_a, *key_b;
static const char *app;
static struct fu_ledger *ledger;
static int next_id;

#define USER_A "postgres"
#define USER_B "pqd_alice"

static void setup_keys(void)
{
    app = tu_app_name();
    key_a = tu_conninfo(FU_SYNC_COMMIT);
    key_b = tu_conninfo("host=127.0.0.1 user=" USER_B " password=alice_pw sslmode=disable " FU_SYNC_COMMIT);
}

/* Connects and REQUIREs success (used where the server is known to be up). */
static PGconn *must_connect(const char *conninfo, const char *what)
{
    PGconn *c = PQconnectdb(conninfo);

    REQUIRE(PQstatus(c) == CONNECTION_OK, "%s: connect: %s", what, PQerrorMessage(c));
    return c;
}

/* A write the app expects to work. */
static void write_ok(PGconn *c, const char *user, const char *what)
{
    int id = next_id++;
    enum fu_state st = fu_write(ledger, c, id, user, app);

    CHECK(st == FU_OK, "%s: write %d failed: %s", what, id, PQerrorMessage(c));
}

/* A write on a connection whose backend is known to be gone: the app must see it fail, and
 * it cannot have been committed (nothing was there to commit it). */
static void write_on_dead(PGconn *c, const char *user, const char *what)
{
    int id = next_id++;
    enum fu_state st = fu_write(ledger, c, id, user, app);

    fu_note("%s: write: %s", what, st == FU_OK ? "ok" : st == FU_AMBIGUOUS ? "lost" : "error");
    CHECK(st != FU_OK, "%s: a write on a connection whose backend is gone succeeded", what);
    fu_mark(ledger, id, FU_FAILED);
}

/* BEGIN + one INSERT on c, left open. Returns the id. */
static int open_txn(PGconn *c, const char *user, const char *what)
{
    int id = next_id++;

    CHECK(!strcmp(fu_exec(c, "BEGIN"), "ok"), "%s: BEGIN: %s", what, PQerrorMessage(c));
    CHECK(!strcmp(fu_write_in_txn(ledger, c, id, user, app), "ok"), "%s: INSERT: %s", what,
          PQerrorMessage(c));
    return id;
}

static bool in_list(int pid, const int *pids, int n)
{
    for (int i = 0; i < n; i++)
        if (pids[i] == pid)
            return true;
    return false;
}

/* After the fault: a new connection for a key works, is a backend that was not there before,
 * is outside any transaction, is the right user, and takes a write. Returns it (held). */
static PGconn *check_fresh(const char *conninfo, const char *user, const int *old, int nold,
                           const char *what)
{
    PGconn *c = PQconnectdb(conninfo);
    int pid = fu_check_connect(c, user, app, what);

    if (pid < 0)
        return c;
    CHECK(!in_list(pid, old, nold), "%s: got backend %d, which was there before the fault", what, pid);
    write_ok(c, user, what);
    return c;
}

/* ---- a writer thread that inserts non-stop and reconnects when its connection breaks ----- */

static atomic_int writer_stop, writer_phase; /* phase 1: after the fault */
static atomic_int writer_ok_before, writer_ok_after, writer_losses, writer_connect_failures;
static int writer_next_id; /* ids from WRITER_BASE, used by the writer thread only */
#define WRITER_BASE 10000
#define LEDGER_SIZE 40000

static void *writer_main(void *arg)
{
    (void)arg;
    PGconn *c = NULL;
    double give_up = 0;

    while (!atomic_load(&writer_stop)) {
        if (c == NULL) {
            c = PQconnectdb(key_a);
            if (PQstatus(c) != CONNECTION_OK) {
                /* The server is down or starting: plain libpq fails the same way. */
                atomic_fetch_add(&writer_connect_failures, 1);
                PQfinish(c);
                c = NULL;
                if (give_up == 0)
                    give_up = fu_now() + 30;
                if (fu_now() > give_up)
                    break;
                tu_sleep_ms(20);
                continue;
            }
            give_up = 0;
        }
        if (writer_next_id >= LEDGER_SIZE)
            break;
        enum fu_state st = fu_write(ledger, c, writer_next_id++, USER_A, app);
        if (st == FU_OK)
            atomic_fetch_add(atomic_load(&writer_phase) == 1 ? &writer_ok_after : &writer_ok_before, 1);
        if (st == FU_AMBIGUOUS || PQstatus(c) != CONNECTION_OK) {
            /* Lost (libpq may still say CONNECTION_OK after the first failure): an app
             * reconnects, as this one does. */
            atomic_fetch_add(&writer_losses, 1);
            PQfinish(c);
            c = NULL;
        }
        tu_sleep_ms(2);
    }
    PQfinish(c);
    return NULL;
}

/* Waits (30 s at most) until *counter reaches want; REQUIREs it. */
static void wait_count(atomic_int *counter, int want, const char *what)
{
    double give_up = fu_now() + 30;

    while (atomic_load(counter) < want && fu_now() < give_up)
        tu_sleep_ms(5);
    REQUIRE(atomic_load(counter) >= want, "%s: %d after 30 s, expected %d", what, atomic_load(counter), want);
}

/* ---- cases -------------------------------------------------------------------------------- */

/* pg_ctl restart -m MODE while connections are kept (2 keys), held idle, held mid-transaction,
 * finished mid-transaction (rollback in flight), and while a writer thread writes: held ones
 * fail on next use as with plain libpq and are not reused after PQfinish; kept ones are
 * replaced silently; no committed write is lost or doubled, no uncommitted one appears; every
 * row is written by the session the app asked for. */
static void test_restart(const char *mode)
{
    int old[16], nold = 0;
    PGconn *c[4], *held, *held_unused, *txn, *txn_unused, *fin, *fresh[5];
    pthread_t writer;
    char *err;

    ledger = fu_ledger_create(LEDGER_SIZE);
    writer_next_id = WRITER_BASE;

    /* Held: idle, idle and finished later without use, mid-transaction (both keys). They
     * are opened first, so that the kept ones below are other backends. */
    held = must_connect(key_a, "held");
    held_unused = must_connect(key_a, "held, finished unused");
    txn = must_connect(key_a, "held mid-transaction");
    txn_unused = must_connect(key_b, "held mid-transaction, finished unused");
    write_ok(held, USER_A, "held");
    write_ok(held_unused, USER_A, "held, finished unused");
    int txn_id = open_txn(txn, USER_A, "held mid-transaction");
    open_txn(txn_unused, USER_B, "held mid-transaction, finished unused");
    old[nold++] = PQbackendPID(held);
    old[nold++] = PQbackendPID(held_unused);
    old[nold++] = PQbackendPID(txn);
    old[nold++] = PQbackendPID(txn_unused);
    /* Kept: two per key, each wrote a row. */
    c[0] = must_connect(key_a, "kept A1");
    c[1] = must_connect(key_a, "kept A2");
    c[2] = must_connect(key_b, "kept B1");
    c[3] = must_connect(key_b, "kept B2");
    for (int i = 0; i < 4; i++) {
        write_ok(c[i], i < 2 ? USER_A : USER_B, "kept");
        old[nold++] = PQbackendPID(c[i]);
    }
    for (int i = 0; i < 4; i++)
        PQfinish(c[i]);
    /* Finished inside a transaction (on a kept backend): its rollback is sent without
     * waiting, and it is kept again. */
    fin = must_connect(key_a, "finished mid-transaction");
    old[nold++] = PQbackendPID(fin);
    open_txn(fin, USER_A, "finished mid-transaction");
    PQfinish(fin);

    REQUIRE(pthread_create(&writer, NULL, writer_main, NULL) == 0, "pthread_create");
    wait_count(&writer_ok_before, 3, "the writer thread's writes before the restart");
    printf("restart -m %s with %d kept/held backends and a writer thread\n", mode, nold);
    fu_restart(mode);
    atomic_store(&writer_phase, 1);

    /* Held connections: the error on next use, as plain libpq; a clean idle one may go on
     * under pqdedup on a new backend. */
    fu_write_idle_held(ledger, held, next_id++, USER_A, app, "held idle: write", old, nold);
    PQfinish(held);
    {
        int id = next_id++;
        fu_note("held mid-transaction: next INSERT: %s", fu_write_in_txn(ledger, txn, id, USER_A, app));
        int ids[] = { txn_id, id };
        fu_note("held mid-transaction: COMMIT: %s", fu_commit(ledger, txn, ids, 2));
        fu_mark(ledger, txn_id, FU_FAILED); /* the backend died before COMMIT was sent */
        fu_mark(ledger, id, FU_FAILED);
    }
    PQfinish(txn);
    /* Finished without ever noticing: pqdedup must not keep them. */
    PQfinish(held_unused);
    PQfinish(txn_unused);

    /* The app goes on: new connections work, silently, with the right sessions. */
    tu_capture_stderr();
    for (int i = 0; i < 3; i++)
        fresh[i] = check_fresh(key_a, USER_A, old, nold, "after restart, key A");
    for (int i = 3; i < 5; i++)
        fresh[i] = check_fresh(key_b, USER_B, old, nold, "after restart, key B");
    err = tu_release_stderr();
    CHECK(err[0] == '\0', "after the restart the program's stderr got: %s", err);
    free(err);
    for (int i = 0; i < 5; i++)
        PQfinish(fresh[i]);

    /* The pool works normally again: churn. */
    int churn = (int)tu_scaled(40), ok = 0, pids[64], npids = 0;
    for (int i = 0; i < churn; i++) {
        PGconn *k = PQconnectdb(key_a);
        if (PQstatus(k) == CONNECTION_OK && fu_write(ledger, k, next_id++, USER_A, app) == FU_OK) {
            ok++;
            if (!in_list(PQbackendPID(k), pids, npids) && npids < 64)
                pids[npids++] = PQbackendPID(k);
        }
        PQfinish(k);
    }
    fu_note("churn after restart: %s", ok == churn ? "every cycle worked" : "SOME FAILED");
    CHECK(ok == churn, "churn after the restart: %d of %d cycles worked", ok, churn);
    if (!fu_is_reference())
        CHECK(npids <= 3, "churn after the restart used %d backends, expected at most 3", npids);

    wait_count(&writer_ok_after, 3, "the writer thread's writes after the restart");
    atomic_store(&writer_stop, 1);
    pthread_join(writer, NULL);
    printf("writer: %d writes after the restart, %d lost connections, %d failed connects\n",
           writer_ok_after, writer_losses, writer_connect_failures);
    CHECK(writer_ok_after >= 3, "the writer thread made %d writes after the restart", writer_ok_after);
    CHECK(writer_losses >= 1 && writer_losses <= 2,
          "the writer thread lost its connection %d times (expected once, the restart)", writer_losses);

    fu_ledger_verify(ledger, writer_losses, "restart");
    fu_ledger_drop(ledger);
}

/* The backends the server has for this process's key A now (postgres, this app). Returns
 * how many were put in pids (at most max). */
static int key_a_backends(int *pids, int max)
{
    char *v = fu_sql_value("SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE "
                           "application_name = '%s' AND usename = '" USER_A "'", app);
    int n = 0;

    for (char *p = v, *end; p && *p && n < max; p = end) {
        long pid = strtol(p, &end, 10);
        if (end == p)
            break;
        pids[n++] = (int)pid;
    }
    free(v);
    return n;
}

/* Six live handles of one key in one thread (PQDEDUP_MAX_PER_KEY=3 in the pqdedup run): T
 * inside a transaction and S sticky (a set_config) keep a backend each, four clean idle ones I0-I3 take
 * turns on the third; all are separate sessions (T's uncommitted row and S's setting are not
 * seen from the others). Then the server restarts: T's COMMIT and S's next write fail as with
 * plain libpq; each idle one either fails like plain libpq's (its backend is gone) or goes on
 * on a new backend, and then keeps that behaviour; I2 is finished unused; new connections work. */
static void test_handles(const char *mode)
{
    int old[32], nold, t_pid, s_pid;
    PGconn *t, *sh, *idle[4], *k, *n[4];
    enum fu_state first[4];
    char what[64], *v, *err;

    ledger = fu_ledger_create(1000);
    k = must_connect(key_b, "kept B");
    write_ok(k, USER_B, "kept B");
    PQfinish(k);
    t = must_connect(key_a, "T");
    sh = must_connect(key_a, "S");
    for (int i = 0; i < 4; i++) {
        snprintf(what, sizeof what, "I%d", i);
        idle[i] = must_connect(key_a, what);
    }
    int txn_id = open_txn(t, USER_A, "T, in a transaction");
    t_pid = PQbackendPID(t);
    fu_note("S: set_config work_mem: %s", fu_exec(sh, "SELECT set_config('work_mem', '7MB', false)"));
    write_ok(sh, USER_A, "S, sticky");
    s_pid = PQbackendPID(sh);
    for (int i = 0; i < 4; i++) {
        snprintf(what, sizeof what, "I%d", i);
        write_ok(idle[i], USER_A, what);
    }
    /* Six sessions, each its own, on as many backends as the cap allows. */
    PGconn *all[] = { t, sh, idle[0], idle[1], idle[2], idle[3] };
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < i; j++)
            CHECK(all[i] != all[j], "two connects returned the same PGconn *");
    v = tu_query_value(idle[0], "SHOW work_mem");
    fu_note("I0 sees S's work_mem: %s", v && !strcmp(v, "7MB") ? "yes" : "no");
    free(v);
    snprintf(what, sizeof what, "SELECT count(*) FROM %s WHERE id = %d", fu_ledger_table(ledger), txn_id);
    v = tu_query_value(idle[1], what);
    fu_note("I1 sees T's uncommitted row: %s", v && !strcmp(v, "0") ? "no" : "yes");
    free(v);
    CHECK(PQbackendPID(t) == t_pid && PQbackendPID(sh) == s_pid,
          "T (in a transaction) or S (sticky) changed backend while the idle ones took turns");
    nold = key_a_backends(old, 32);
    printf("restart -m %s with 6 handles on %d backends\n", mode, nold);
    if (!fu_is_reference())
        CHECK(nold <= 3, "six handles with PQDEDUP_MAX_PER_KEY=3 use %d backends", nold);
    for (int i = 0; i < 4 && nold < 32; i++)
        old[nold++] = PQbackendPID(idle[i]);

    fu_restart(mode);

    first[0] = fu_write_idle_held(ledger, idle[0], next_id++, USER_A, app, "I0: write", old, nold);
    {
        int id = next_id++;
        fu_note("T: next INSERT: %s", fu_write_in_txn(ledger, t, id, USER_A, app));
        int ids[] = { txn_id, id };
        fu_note("T: COMMIT: %s", fu_commit(ledger, t, ids, 2));
        fu_mark(ledger, txn_id, FU_FAILED); /* the backend died before COMMIT was sent */
        fu_mark(ledger, id, FU_FAILED);
    }
    write_on_dead(sh, USER_A, "S (sticky)");
    first[1] = fu_write_idle_held(ledger, idle[1], next_id++, USER_A, app, "I1: write", old, nold);
    PQfinish(idle[2]);
    first[3] = fu_write_idle_held(ledger, idle[3], next_id++, USER_A, app, "I3: write", old, nold);
    /* Each goes on as it started: working on its new backend, or failed for good as plain
     * libpq's connection (its PGconn is CONNECTION_BAD: nothing is sent). */
    for (int i = 0; i < 4; i++) {
        if (i == 2)
            continue;
        int id = next_id++;
        enum fu_state again = fu_write(ledger, idle[i], id, USER_A, app);
        if (first[i] != FU_OK)
            fu_mark(ledger, id, FU_FAILED);
        fu_note("I%d: second write: %s", i, (again == FU_OK) == (first[i] == FU_OK) ? "as the first" : "NOT as the first");
        CHECK((again == FU_OK) == (first[i] == FU_OK), "I%d: first write %s, second %s", i,
              first[i] == FU_OK ? "ok" : "failed", again == FU_OK ? "ok" : "failed");
    }
    PQfinish(t);
    PQfinish(sh);
    for (int i = 0; i < 4; i++)
        if (i != 2)
            PQfinish(idle[i]);

    tu_capture_stderr();
    n[0] = check_fresh(key_a, USER_A, old, nold, "after restart, key A 1");
    n[1] = check_fresh(key_a, USER_A, old, nold, "after restart, key A 2");
    n[2] = check_fresh(key_a, USER_A, old, nold, "after restart, key A 3");
    n[3] = check_fresh(key_b, USER_B, old, nold, "after restart, key B");
    err = tu_release_stderr();
    CHECK(err[0] == '\0', "after the restart the program's stderr got: %s", err);
    free(err);
    for (int i = 0; i < 4; i++)
        PQfinish(n[i]);
    fu_ledger_verify(ledger, 0, "handles");
    fu_ledger_drop(ledger);
}

static bool server_stopped;

/* If the test dies while the server is down, start it again for the other tests. */
static void start_server_if_stopped(void)
{
    if (server_stopped) {
        fu_pg_ctl("start", "-w", "-t", "60", NULL);
        server_stopped = false;
    }
}

/* The server is stopped while connections are kept and held: a connect fails at once with
 * libpq's own error (no kept connection is handed out, nothing hangs), a held connection
 * fails on use; after the server starts, connects work again with new backends. */
static void test_down(void)
{
    int old[4], nold = 0;
    PGconn *c1, *c2, *held, *c;
    double t0, elapsed;

    ledger = fu_ledger_create(1000);
    c1 = must_connect(key_a, "kept 1");
    c2 = must_connect(key_a, "kept 2");
    write_ok(c1, USER_A, "kept 1");
    write_ok(c2, USER_A, "kept 2");
    old[nold++] = PQbackendPID(c1);
    old[nold++] = PQbackendPID(c2);
    PQfinish(c1);
    PQfinish(c2);
    held = must_connect(key_a, "held");
    write_ok(held, USER_A, "held");
    old[nold++] = PQbackendPID(held);

    atexit(start_server_if_stopped);
    server_stopped = true;
    REQUIRE(fu_pg_ctl("stop", "-m", "fast", "-w", "-t", "60", NULL) == 0, "pg-ctl.sh stop failed");

    for (int i = 0; i < 3; i++) {
        t0 = fu_now();
        c = PQconnectdb(key_a);
        elapsed = fu_now() - t0;
        fu_note("server down: connect %d: %s", i + 1, fu_conn_outcome(c));
        CHECK(elapsed < 2.0, "server down: connect %d took %.2fs", i + 1, elapsed);
        PQfinish(c);
    }
    write_on_dead(held, USER_A, "server down: held");
    PQfinish(held);

    REQUIRE(fu_pg_ctl("start", "-w", "-t", "60", NULL) == 0, "pg-ctl.sh start failed");
    server_stopped = false;
    c = check_fresh(key_a, USER_A, old, nold, "server up again");
    PQfinish(c);
    c = check_fresh(key_b, USER_B, old, nold, "server up again, key B");
    PQfinish(c);
    fu_ledger_verify(ledger, 0, "down");
    fu_ledger_drop(ledger);
}

/* pg_terminate_backend of two kept connections, a held idle one, a held one mid-transaction
 * and a held one mid-transaction that the app finishes without using it again: the held ones
 * fail like plain libpq, nothing of the transactions is committed, the next connects get new
 * working backends, silently. */
static void test_terminate(void)
{
    int old[8], nold = 0;
    PGconn *k1, *k2, *held, *txn, *txn_unused, *n[3];
    char *err;

    ledger = fu_ledger_create(1000);
    /* Held ones first, so that the kept ones are other backends. */
    held = must_connect(key_a, "held");
    txn = must_connect(key_a, "held mid-transaction");
    txn_unused = must_connect(key_a, "held mid-transaction, finished unused");
    write_ok(held, USER_A, "held");
    int txn_id = open_txn(txn, USER_A, "held mid-transaction");
    open_txn(txn_unused, USER_A, "held mid-transaction, finished unused");
    k1 = must_connect(key_a, "kept 1");
    k2 = must_connect(key_a, "kept 2");
    write_ok(k1, USER_A, "kept 1");
    write_ok(k2, USER_A, "kept 2");
    old[nold++] = PQbackendPID(k1);
    old[nold++] = PQbackendPID(k2);
    old[nold++] = PQbackendPID(held);
    old[nold++] = PQbackendPID(txn);
    old[nold++] = PQbackendPID(txn_unused);
    PQfinish(k1);
    PQfinish(k2);
    if (!fu_is_reference()) { /* their resets complete (plain libpq: the backends exit) */
        CHECK(tu_wait_reset(old[0]), "kept 1: its reset did not complete");
        CHECK(tu_wait_reset(old[1]), "kept 2: its reset did not complete");
    }

    /* With plain libpq the finished ones are already gone; pqdedup keeps them open. (A kept
     * one may be the backend a held idle one had before: a connect may take an idle handle's
     * server connection. Each backend is ended once.) */
    for (int i = fu_is_reference() ? 2 : 0; i < nold; i++)
        if (!in_list(old[i], old, i))
            fu_terminate(old[i]);

    fu_write_idle_held(ledger, held, next_id++, USER_A, app, "terminated, held idle: write", old, nold);
    PQfinish(held);
    int ids[] = { txn_id };
    fu_note("terminated, held mid-transaction: COMMIT: %s", fu_commit(ledger, txn, ids, 1));
    fu_mark(ledger, txn_id, FU_FAILED);
    PQfinish(txn);
    PQfinish(txn_unused);

    tu_capture_stderr();
    for (int i = 0; i < 3; i++)
        n[i] = check_fresh(key_a, USER_A, old, nold, "after pg_terminate_backend");
    err = tu_release_stderr();
    CHECK(err[0] == '\0', "after pg_terminate_backend the program's stderr got: %s", err);
    free(err);
    for (int i = 0; i < 3; i++)
        PQfinish(n[i]);
    fu_ledger_verify(ledger, 0, "terminate");
    fu_ledger_drop(ledger);
}

/* Four live handles of one key (PQDEDUP_MAX_PER_KEY=2 in the pqdedup run): T inside a
 * transaction keeps one backend, three clean idle ones I0-I2 take turns on the other, I2 last.
 * pg_terminate_backend of I2's backend (under plain libpq its own, where I0 and I1 have theirs):
 * I0 and I1 go on working as plain libpq's do; I2 fails like plain libpq's or goes on on a new
 * backend; T's transaction is untouched and commits; the next connect gets a new backend. */
static void test_terminate_handles(void)
{
    PGconn *t, *idle[3], *n;
    int victim, old[1];
    char what[32];

    ledger = fu_ledger_create(100);
    t = must_connect(key_a, "T");
    for (int i = 0; i < 3; i++) {
        snprintf(what, sizeof what, "I%d", i);
        idle[i] = must_connect(key_a, what);
    }
    int txn_id = open_txn(t, USER_A, "T, in a transaction");
    int t_pid = PQbackendPID(t);
    for (int i = 0; i < 3; i++) {
        snprintf(what, sizeof what, "I%d", i);
        write_ok(idle[i], USER_A, what);
    }
    victim = old[0] = PQbackendPID(idle[2]);
    CHECK(victim != t_pid, "I2 ran on T's backend, which is inside a transaction");
    fu_terminate(victim);

    fu_note("I0: write: %s", fu_write(ledger, idle[0], next_id++, USER_A, app) == FU_OK ? "ok" : fu_last_outcome());
    fu_write_idle_held(ledger, idle[2], next_id++, USER_A, app, "I2 (terminated): write", old, 1);
    fu_note("I1: write: %s", fu_write(ledger, idle[1], next_id++, USER_A, app) == FU_OK ? "ok" : fu_last_outcome());
    {
        int id = next_id++;
        fu_note("T: INSERT: %s", fu_write_in_txn(ledger, t, id, USER_A, app));
        int ids[] = { txn_id, id };
        fu_note("T: COMMIT: %s", fu_commit(ledger, t, ids, 2));
        CHECK(PQbackendPID(t) == t_pid, "T changed backend inside its transaction");
    }
    for (int i = 0; i < 3; i++)
        PQfinish(idle[i]);
    PQfinish(t);
    n = check_fresh(key_a, USER_A, old, 1, "after pg_terminate_backend of the idle handles' backend");
    PQfinish(n);
    fu_ledger_verify(ledger, 0, "terminate-handles");
    fu_ledger_drop(ledger);
}

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "";
    const char *mode = argc > 2 ? argv[2] : "";
    bool mode_ok = !strcmp(mode, "immediate") || !strcmp(mode, "fast");

    fu_init(argc, argv);
    tu_observer(); /* fails now if the server is not there */
    setup_keys();
    printf("test_fault_restart %s %s as %s\n", which, mode, app);
    if (!strcmp(which, "restart") && mode_ok)
        test_restart(mode);
    else if (!strcmp(which, "handles") && mode_ok)
        test_handles(mode);
    else if (!strcmp(which, "down"))
        test_down();
    else if (!strcmp(which, "terminate"))
        test_terminate();
    else if (!strcmp(which, "terminate-handles"))
        test_terminate_handles();
    else {
        fprintf(stderr, "usage: test_fault_restart restart|handles immediate|fast | down | terminate | "
                        "terminate-handles\n");
        return 1;
    }
    return fu_finish(false);
}
