/* test_fault_ssl.c: SSL connections kept, reused, reset, never touched by a forked child, and closed cleanly at exit. */
#define _GNU_SOURCE
#include "faults/faultutil.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * Usage: test_fault_ssl CASE
 *   reuse  an SSL connection (TCP 127.0.0.1, sslmode=require, pqd_alice with a password) is
 *          kept and reused: same backend, still SSL, none of the last holder's state left
 *   fork   forked children finish (or not) the parent's inherited held and kept SSL
 *          connections, make their own, and exit in several ways: the parent's sessions work
 *   exit   forked children make their first SSL connections, keep them (resets in flight) and
 *          exit (exit() from main, exit() from another thread), 5 times (2 under valgrind): each exits 0 (also
 *          under valgrind and ASan, which check each child) and the server logs no SSL error
 *          for them; then this process does the same and returns from main
 * reuse and exit run themselves again with PQDEDUP_DISABLE=1 and compare what the app saw.
 */

#define USER "pqd_alice"

static struct fu_ledger *ledger;
static const char *app, *key;
static int next_id;

static bool ssl_on_server(PGconn *c)
{
    char *v = tu_query_value(c, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
    bool on = v && !strcmp(v, "t");

    free(v);
    return on;
}

/* ---- reuse ------------------------------------------------------------------------------- */

/* What the last holder may have left: "clean" when nothing. */
static const char *leftover_state(PGconn *c)
{
    static char buf[200];
    char sql[1024];
    snprintf(sql, sizeof sql,
        "SELECT concat_ws(',', "
        " CASE WHEN current_setting('work_mem') <> '4MB' THEN 'work_mem' END,"
        " CASE WHEN current_setting('application_name') <> '%s' THEN 'application_name' END,"
        " CASE WHEN (SELECT count(*) FROM pg_prepared_statements) > 0 THEN 'prepared' END,"
        " CASE WHEN (SELECT count(*) FROM pg_listening_channels()) > 0 THEN 'listen' END,"
        " CASE WHEN (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory') > 0"
        "  THEN 'advisory lock' END,"
        " CASE WHEN to_regclass('pg_temp.pqdt_ssl_tmp') IS NOT NULL THEN 'temp table' END,"
        " CASE WHEN (SELECT count(*) FROM pg_cursors) > 0 THEN 'cursor' END)", app);
    char *v = tu_query_value(c, sql);

    snprintf(buf, sizeof buf, "%s", !v ? "(error)" : v[0] ? v : "clean");
    free(v);
    return buf;
}

/* Kept, reused (same backend, pg_stat_ssl still true), reset (work_mem, application_name,
 * prepared statement, LISTEN, advisory lock, temp table, WITH HOLD cursor all gone), and a
 * churn of SSL connects settles on at most 2 backends. */
static void test_reuse(void)
{
    PGconn *c;
    int pid1, pids[8], npids = 0, ok = 0;
    long churn = tu_scaled(100);

    ledger = fu_ledger_create((int)churn + 10);
    c = PQconnectdb(key);
    pid1 = fu_check_connect(c, USER, app, "first SSL connection");
    REQUIRE(pid1 > 0, "connect: %s", PQerrorMessage(c));
    fu_note("first SSL connection: ssl %s, server ssl %s", PQsslInUse(c) ? "on" : "off",
            ssl_on_server(c) ? "on" : "off");
    CHECK(PQsslInUse(c) && ssl_on_server(c), "the connection does not use SSL");
    CHECK(fu_write(ledger, c, next_id++, USER, app) == FU_OK, "write: %s", PQerrorMessage(c));
    const char *dirty[] = {
        "SET work_mem = '7MB'", "SET application_name = 'pqdt_changed'", "PREPARE pqdt_p AS SELECT 1",
        "LISTEN pqdt_ch", "SELECT pg_advisory_lock(7)", "CREATE TEMP TABLE pqdt_ssl_tmp (x int)",
        "BEGIN", "DECLARE pqdt_cur CURSOR WITH HOLD FOR SELECT 1", "COMMIT",
    };
    for (size_t i = 0; i < sizeof dirty / sizeof dirty[0]; i++)
        CHECK(!strcmp(fu_exec(c, dirty[i]), "ok"), "%s: %s", dirty[i], PQerrorMessage(c));
    fu_note("before finish: %s", leftover_state(c));
    PQfinish(c);
    if (!fu_is_reference()) /* its reset is answered */
        CHECK(tu_wait_reset(pid1), "the kept SSL connection's reset did not complete");

    c = PQconnectdb(key);
    int pid2 = fu_check_connect(c, USER, app, "second SSL connection");
    if (!fu_is_reference())
        CHECK(pid2 == pid1, "the kept SSL connection was not reused (%d, kept %d)", pid2, pid1);
    fu_note("second SSL connection: ssl %s, server ssl %s, state %s", PQsslInUse(c) ? "on" : "off",
            ssl_on_server(c) ? "on" : "off", leftover_state(c));
    CHECK(!strcmp(leftover_state(c), "clean"), "the reused SSL session still has: %s", leftover_state(c));
    CHECK(fu_write(ledger, c, next_id++, USER, app) == FU_OK, "write: %s", PQerrorMessage(c));
    PQfinish(c);

    for (long i = 0; i < churn; i++) {
        c = PQconnectdb(key);
        if (PQstatus(c) == CONNECTION_OK && PQsslInUse(c) &&
            fu_write(ledger, c, next_id++, USER, app) == FU_OK) {
            ok++;
            bool known = false;
            for (int k = 0; k < npids; k++)
                known |= pids[k] == PQbackendPID(c);
            if (!known && npids < 8)
                pids[npids++] = PQbackendPID(c);
        }
        PQfinish(c);
    }
    fu_note("SSL churn: %s", ok == churn ? "every cycle worked" : "SOME FAILED");
    CHECK(ok == churn, "SSL churn: %d of %ld cycles worked", ok, churn);
    if (!fu_is_reference())
        CHECK(npids <= 2, "SSL churn used %d backends", npids);
    fu_ledger_verify(ledger, 0, "ssl reuse");
    fu_ledger_drop(ledger);
}

/* ---- fork ---------------------------------------------------------------------------------- */

#define CHILD_WRITES 3
struct child_shared {
    signed char state[64][CHILD_WRITES];
    int pid[64][CHILD_WRITES];
};
static struct child_shared *cshm;

/* A child's own SSL connection: CHILD_WRITES writes, reported in shared memory. Returns the
 * number of failures. libpq only: no testutil in a child. */
static int child_work(int slot)
{
    PGconn *c = PQconnectdb(key);
    char sql[160];
    int failures = 0;

    if (PQstatus(c) != CONNECTION_OK || !PQsslInUse(c)) {
        fprintf(stderr, "child %d: SSL connect: %s", slot, PQerrorMessage(c));
        PQfinish(c);
        return 1;
    }
    for (int i = 0; i < CHILD_WRITES; i++) {
        snprintf(sql, sizeof sql, "INSERT INTO %s (id) VALUES (%d)", fu_ledger_table(ledger),
                 1000 + slot * CHILD_WRITES + i);
        PGresult *r = PQexec(c, sql);
        cshm->state[slot][i] = PQresultStatus(r) == PGRES_COMMAND_OK ? FU_OK : FU_AMBIGUOUS;
        cshm->pid[slot][i] = PQbackendPID(c);
        failures += PQresultStatus(r) != PGRES_COMMAND_OK;
        PQclear(r);
    }
    PQfinish(c);
    return failures;
}

enum child_way { FINISH_HELD_EXIT, OWN_ONLY__EXIT, EXIT_AT_ONCE, FINISH_HELD__EXIT, FINISH_BOTH_EXIT };
static const char *const way_names[] = {
    "finishes the inherited held connection, works, exit()",
    "works on its own, _exit() without finishing anything",
    "exit() at once",
    "finishes the inherited held connection, _exit()",
    "finishes the inherited held and a second inherited one, works, exit()",
};

static pid_t spawn_child(int slot, enum child_way way, PGconn *held, PGconn *held2)
{
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork: %s", strerror(errno));
    if (pid != 0)
        return pid;
    int failures = 0;
    switch (way) {
    case FINISH_HELD_EXIT:
        PQfinish(held);
        failures = child_work(slot);
        exit(failures ? 1 : 0);
    case OWN_ONLY__EXIT:
        failures = child_work(slot);
        _exit(failures ? 1 : 0);
    case EXIT_AT_ONCE:
        exit(0);
    case FINISH_HELD__EXIT:
        PQfinish(held);
        _exit(0);
    case FINISH_BOTH_EXIT:
        PQfinish(held);
        PQfinish(held2);
        failures = child_work(slot);
        exit(failures ? 1 : 0);
    }
    _exit(2);
}

static int wait_child(pid_t pid)
{
    int status;
    pid_t r;

    do
        r = waitpid(pid, &status, 0);
    while (r < 0 && errno == EINTR);
    if (r != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* After a child: the parent's held SSL connection (inside a transaction: it keeps its
 * backend) answers as the same backend over SSL, and the parent's next connect works (under
 * pqdedup: on its kept backend, which is always free when it connects: held2, idle, is never
 * asked for its server connection). */
static void check_parent(PGconn *held, int held_pid, int *kept_pid, const char *after)
{
    char *v = tu_query_value(held, "SELECT pg_backend_pid()");
    bool works = v && atoi(v) == held_pid && ssl_on_server(held);

    free(v);
    fu_note("after a child that %s: parent's held SSL connection %s", after,
            works ? "works, same backend" : "BROKEN");
    CHECK(works, "after a child that %s: the parent's held SSL connection: %s", after,
          PQerrorMessage(held));
    PGconn *c = PQconnectdb(key);
    fu_note("after a child that %s: parent's connect: %s", after, fu_conn_outcome(c));
    if (!fu_is_reference())
        CHECK(PQbackendPID(c) == *kept_pid, "after a child that %s: the parent's kept SSL connection "
              "was not reused (%d, kept %d)", after, PQbackendPID(c), *kept_pid);
    CHECK(fu_write(ledger, c, next_id++, USER, app) == FU_OK, "write: %s", PQerrorMessage(c));
    *kept_pid = PQbackendPID(c);
    PQfinish(c); /* kept again, its reset in flight at the next fork */
}

/* The parent holds two SSL connections (one inside a transaction, one idle) and keeps a third
 * (reset in flight); children inherit
 * them and finish the held ones (pqdedup must not send anything on them: no Terminate, no
 * close_notify), leave them, or exit at once, one after another and then 4 at once: every
 * child exits 0, the parent's sessions keep working, all writes are there once. */
static void test_fork(void)
{
    PGconn *held, *held2, *c;
    int held_pid, kept_pid, slot = 0;

    cshm = mmap(NULL, sizeof *cshm, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(cshm != MAP_FAILED, "mmap: %s", strerror(errno));
    ledger = fu_ledger_create(1000 + 64 * CHILD_WRITES);
    /* held stays inside a transaction, held2 is idle: the children finish inherited handles of
     * both kinds. Both are busy while the others connect (an idle one's server connection
     * could go to a connect), so the kept one is a backend of its own. */
    held = PQconnectdb(key);
    REQUIRE(PQstatus(held) == CONNECTION_OK && PQsslInUse(held), "SSL connect: %s", PQerrorMessage(held));
    REQUIRE(tu_exec_ok(held, "BEGIN"), "BEGIN: %s", PQerrorMessage(held));
    held2 = PQconnectdb(key);
    REQUIRE(PQstatus(held2) == CONNECTION_OK, "SSL connect: %s", PQerrorMessage(held2));
    REQUIRE(tu_exec_ok(held2, "BEGIN"), "BEGIN: %s", PQerrorMessage(held2));
    held_pid = PQbackendPID(held);
    c = PQconnectdb(key);
    REQUIRE(PQstatus(c) == CONNECTION_OK, "SSL connect: %s", PQerrorMessage(c));
    kept_pid = PQbackendPID(c);
    PQfinish(c);
    REQUIRE(tu_exec_ok(held2, "COMMIT"), "COMMIT: %s", PQerrorMessage(held2));

    for (int way = FINISH_HELD_EXIT; way <= FINISH_BOTH_EXIT; way++) {
        int st = wait_child(spawn_child(slot++, (enum child_way)way, held, held2));
        fu_note("child that %s: exit status %d", way_names[way], st);
        CHECK(st == 0, "the child that %s exited with %d", way_names[way], st);
        check_parent(held, held_pid, &kept_pid, way_names[way]);
    }
    pid_t pids[4];
    for (int i = 0; i < 4; i++)
        pids[i] = spawn_child(slot++, FINISH_HELD_EXIT, held, held2);
    int bad = 0;
    for (int i = 0; i < 4; i++)
        bad += wait_child(pids[i]) != 0;
    fu_note("4 children at once: %s", bad ? "SOME FAILED" : "all exited 0");
    CHECK(bad == 0, "%d of 4 concurrent children failed", bad);
    check_parent(held, held_pid, &kept_pid, "ran 4 at once");

    for (int s = 0; s < slot; s++)
        for (int i = 0; i < CHILD_WRITES; i++)
            if (cshm->state[s][i] != FU_UNTRIED)
                fu_record(ledger, 1000 + s * CHILD_WRITES + i, (enum fu_state)cshm->state[s][i],
                          cshm->pid[s][i], USER, app);
    PQfinish(held);
    PQfinish(held2);
    fu_ledger_verify(ledger, 0, "ssl fork");
    fu_ledger_drop(ledger);
    munmap(cshm, sizeof *cshm);
}

/* ---- exit ---------------------------------------------------------------------------------- */

static void *exit_from_thread(void *arg)
{
    (void)arg;
    exit(0);
}

/* Not static: a store to a static variable nobody reads may be optimized away. */
PGconn *never_finished;
PGconn *get_never_finished(void);
PGconn *get_never_finished(void)
{
    return never_finished;
}

/* Under pqdedup, waits (5 s at most) until backend pid shows its reset done. Uses a
 * connection of its own (a forked child must not use the parent's observer). */
static void wait_reset_own(int pid)
{
    if (fu_is_reference())
        return;
    PGconn *o = PQconnectdb("application_name=pqd_observer");
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND state = 'idle' "
             "AND query = 'DISCARD ALL'", pid);
    for (double give_up = fu_now() + 5; fu_now() < give_up;) {
        PGresult *r = PQexec(o, sql);
        bool done = PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "1");
        PQclear(r);
        if (done)
            break;
        tu_sleep_ms(10);
    }
    PQfinish(o);
}

/* Makes 3 SSL connections with application_name `kept_app` and keeps them (the first one's
 * reset done, 2 with resets in flight), holds one more (another application_name) without
 * ever finishing it. */
static void keep_some(const char *kept_app, const char *held_app)
{
    char ci[512];
    PGconn *c[3], *h;

    snprintf(ci, sizeof ci, "%s application_name=%s", key, kept_app);
    for (int i = 0; i < 3; i++)
        c[i] = PQconnectdb(ci);
    for (int i = 0; i < 3; i++)
        if (PQstatus(c[i]) != CONNECTION_OK || !PQsslInUse(c[i]))
            fprintf(stderr, "%s: SSL connect: %s", kept_app, PQerrorMessage(c[i]));
    int pid0 = PQbackendPID(c[0]);
    PQfinish(c[0]);
    wait_reset_own(pid0);
    PQfinish(c[1]);
    PQfinish(c[2]);
    snprintf(ci, sizeof ci, "%s application_name=%s", key, held_app);
    h = PQconnectdb(ci);
    never_finished = h; /* as a leaky program would; reachable, so that LSan and valgrind
                           do not report it in the plain-libpq run */
}

/* Lines of the server log naming `name` that report a broken SSL session or connection. */
static int log_errors_for(const char *name)
{
    const char *path = getenv("PQD_TEST_PGLOG");
    FILE *f = path ? fopen(path, "r") : NULL;
    char line[4096];
    int n = 0;

    REQUIRE(f != NULL, "cannot read the server log (PQD_TEST_PGLOG=%s)", path ? path : "(unset)");
    while (fgets(line, sizeof line, f))
        if (strstr(line, name) && (strstr(line, "SSL error") || strstr(line, "could not receive") ||
                                   strstr(line, "could not send") || strstr(line, "unexpected EOF") ||
                                   strstr(line, "connection to client lost"))) {
            fprintf(stderr, "server log: %s", line);
            n++;
        }
    fclose(f);
    return n;
}

/* Waits (10 s at most) until no backend of apps[0..n) or of held_app is left; CHECKs it. */
static void wait_gone(char (*apps)[64], int n, const char *held_app)
{
    long left = 0;

    for (double give_up = fu_now() + 10;;) {
        left = tu_count_backends(held_app);
        for (int i = 0; i < n; i++)
            left += tu_count_backends(apps[i]);
        if (left == 0 || fu_now() > give_up)
            break;
        tu_sleep_ms(20);
    }
    CHECK(left == 0, "%ld backends of the children still there 10 s after they exited", left);
}

/* Children that make their first SSL connections, keep them and exit (from main or from
 * another thread), 5 times: each exits 0 (valgrind/ASan check each one), and the server sees
 * the kept sessions end cleanly (no SSL error, no lost connection) as plain libpq's finished
 * ones do. This process then does the same and returns from main. */
static void test_exit(void)
{
    char kept_app[8][64], held_app[64];

    int children = tu_scale() < 1 ? 2 : 5; /* each child runs under valgrind too */

    snprintf(held_app, sizeof held_app, "%.50s_held", app);
    for (int i = 0; i < children; i++) {
        snprintf(kept_app[i], sizeof kept_app[i], "%.50s_k%d", app, i);
        fflush(NULL);
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
            keep_some(kept_app[i], held_app);
            if (i % 2 == 0)
                exit(0);
            pthread_t t;
            if (pthread_create(&t, NULL, exit_from_thread, NULL) == 0)
                pthread_join(t, NULL);
            _exit(3);
        }
        int st = wait_child(pid);
        fu_note("child %d (exit() from %s): exit status %d", i, i % 2 ? "another thread" : "main", st);
        CHECK(st == 0, "child %d: exit status %d", i, st);
    }
    /* A backend logs what went wrong before it leaves pg_stat_activity: wait until every one
     * of the children's is gone. */
    wait_gone(kept_app, children, held_app);
    int errors = 0;
    for (int i = 0; i < children; i++)
        errors += log_errors_for(kept_app[i]);
    fu_note("server log: %s", errors ? "SSL OR CONNECTION ERRORS for kept connections" : "clean ends");
    CHECK(errors == 0, "the server logged %d errors for connections kept at exit", errors);
    if (!fu_is_reference()) {
        /* Control: a child that _exit()s skips the exit handlers, so its kept connections end
         * abruptly: the log check must see that. */
        snprintf(kept_app[5], sizeof kept_app[5], "%.50s_k5", app);
        fflush(NULL);
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
            keep_some(kept_app[5], held_app);
            _exit(0);
        }
        CHECK(wait_child(pid) == 0, "the control child failed");
        wait_gone(&kept_app[5], 1, held_app);
        CHECK(log_errors_for(kept_app[5]) > 0, "control: a child that _exit()ed with kept SSL "
              "connections left no error in the server log: the log check cannot fail");
    }
    /* This process too: it keeps SSL connections and returns from main (after the reference
     * run): the test wrapper (valgrind, ASan) checks that exit. */
    keep_some(app, held_app);
}

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "";

    fu_init(argc, argv);
    tu_observer();
    app = tu_app_name();
    key = tu_conninfo("host=127.0.0.1 sslmode=require user=" USER " password=alice_pw " FU_SYNC_COMMIT);
    printf("test_fault_ssl %s as %s\n", which, app);
    if (!strcmp(which, "reuse"))
        test_reuse();
    else if (!strcmp(which, "fork")) {
        /* No plain-libpq run: there, a child's PQfinish of an inherited SSL connection sends
         * close_notify and Terminate on the parent's socket and ends the parent's session
         * (LIBPQ-FACTS.md, fork), which pqdedup exists to prevent. */
        test_fork();
        return fu_finish(true);
    }
    else if (!strcmp(which, "exit"))
        test_exit();
    else {
        fprintf(stderr, "usage: test_fault_ssl reuse | fork | exit\n");
        return 1;
    }
    return fu_finish(false);
}
