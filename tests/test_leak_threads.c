/* test_leak_threads.c: issue 9's acceptance test: 8 threads leak connections past max_connections with default settings, each keeping 4 live, independent sessions. */
#include "test_leak_common.h"

#include <pthread.h>

/*
 * Usage: test_leak_threads [plain]
 *
 * "A C program that leaks connections from 8 threads (connect, query, never finish) runs
 * past max_connections with default settings; 4 live handles per thread stay independent."
 *
 * Each of 8 threads connects LEAKS times (8 * LEAKS well past the server's max_connections),
 * runs a query on each connection whose answer must be that query's, and never finishes it.
 * Meanwhile it uses 4 live handles of the same key, and checks after every leaked connect
 * that they are 4 independent sessions:
 *   h[0] goes through transactions (BEGIN, an INSERT, then COMMIT or ROLLBACK 4 leaks later):
 *        while inside one it keeps its backend, and its uncommitted row is seen by it only;
 *   h[1] holds a temporary table (so it keeps its session) that no other handle sees, with
 *        exactly the rows it inserted;
 *   h[2] commits a row with each 4th leak;
 *   h[3] inserts a row in a transaction it rolls back, which must not cost h[2] or h[0] a
 *        committed row.
 * The rows each thread committed are counted after every step. This program's backends
 * never exceed max_connections (the server enforces that; what is checked is that no query
 * fails).
 *
 * First, as a negative control, the same program runs its leak with PQDEDUP_DISABLE=1 (plain
 * libpq): there the connects fail once the server is full ("too many clients already").
 * `plain` is that run (internal).
 */

#define THREADS 8
#define LIVE 4

static char table[64];
static long leaks, max_conn;
static int plain_mode;

struct worker {
    int index;
    long leaked_ok, failures;
    char first_error[256];
    PGconn **leaked;
};

/* Counts a failure of thread w; keeps the first message. */
static void failed(struct worker *w, const char *what, PGconn *c)
{
    if (w->failures++ == 0)
        snprintf(w->first_error, sizeof w->first_error, "%s: %s", what,
                 c ? PQerrorMessage(c) : "(no connection)");
}

/* The first value of sql on c as a long; LONG_MIN on error. */
static long value_of(PGconn *c, const char *sql)
{
    char *v = tu_query_value(c, sql);
    long n = v ? strtol(v, NULL, 10) : LONG_MIN;

    free(v);
    return n;
}

/* What thread w expects of its live handles. */
struct live {
    PGconn *h[LIVE];
    int txn_pid;       /* h[0]'s backend while inside a transaction (0: not in one) */
    int temp_pid;      /* h[1]'s backend (it holds a temporary table) */
    long committed;    /* rows of this thread committed so far */
    long uncommitted;  /* rows h[0] inserted in its open transaction */
    long temp_rows;
    char temp[32];
};

/* The thread's committed rows as h sees them (its own uncommitted ones included). */
static long rows_on(struct live *l, int i, int thread)
{
    char sql[160];

    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE thread = %d", table, thread);
    return value_of(l->h[i], sql);
}

/* One step of the live handles after leaked connect number i of thread t; CHECKs that the 4
 * sessions are independent. */
static void live_step(struct live *l, int t, long i)
{
    char sql[200];
    long v;

    switch (i % 4) {
    case 0: /* h[0] opens a transaction with one row */
        snprintf(sql, sizeof sql, "BEGIN; INSERT INTO %s VALUES (%d, %ld)", table, t, i);
        CHECK(tu_exec_ok(l->h[0], sql), "thread %d: %s: %s", t, sql, PQerrorMessage(l->h[0]));
        l->txn_pid = tu_backend_pid(l->h[0]);
        l->uncommitted = 1;
        break;
    case 1: /* h[2] commits a row; h[3] rolls one back */
        snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (%d, %ld)", table, t, -i);
        if (CHECK(tu_exec_ok(l->h[2], sql), "thread %d: %s: %s", t, sql, PQerrorMessage(l->h[2])))
            l->committed++;
        snprintf(sql, sizeof sql, "BEGIN; INSERT INTO %s VALUES (%d, %ld)", table, t, 1000000 + i);
        CHECK(tu_exec_ok(l->h[3], sql) && tu_exec_ok(l->h[3], "ROLLBACK"),
              "thread %d: rolled-back insert on h[3]: %s", t, PQerrorMessage(l->h[3]));
        break;
    case 2: /* h[1]'s temporary table grows */
        snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (%ld)", l->temp, i);
        if (CHECK(tu_exec_ok(l->h[1], sql), "thread %d: %s: %s", t, sql, PQerrorMessage(l->h[1])))
            l->temp_rows++;
        break;
    case 3: /* h[0] ends its transaction: COMMIT every other time, else ROLLBACK */
        if ((i / 4) % 2 == 0) {
            if (CHECK(tu_exec_ok(l->h[0], "COMMIT"), "thread %d: COMMIT: %s", t,
                      PQerrorMessage(l->h[0])))
                l->committed += l->uncommitted;
        } else {
            CHECK(tu_exec_ok(l->h[0], "ROLLBACK"), "thread %d: ROLLBACK: %s", t,
                  PQerrorMessage(l->h[0]));
        }
        l->uncommitted = 0;
        l->txn_pid = 0;
        break;
    }

    /* h[0] inside its transaction: same backend, sees its own row on top of the committed. */
    if (l->txn_pid) {
        int pid = tu_backend_pid(l->h[0]);

        CHECK(pid == l->txn_pid && PQtransactionStatus(l->h[0]) == PQTRANS_INTRANS,
              "thread %d leak %ld: h[0] inside a transaction moved from backend %d to %d "
              "(transaction status %d)", t, i, l->txn_pid, pid, (int)PQtransactionStatus(l->h[0]));
    }
    v = rows_on(l, 0, t);
    CHECK(v == l->committed + l->uncommitted, "thread %d leak %ld: h[0] sees %ld rows, expected "
          "%ld committed + %ld of its own", t, i, v, l->committed, l->uncommitted);
    /* The others see exactly the committed rows: none of h[0]'s open transaction, none of
     * h[3]'s rolled back, every one h[2] and h[0] committed. */
    for (int k = 1; k < LIVE; k++) {
        v = rows_on(l, k, t);
        CHECK(v == l->committed, "thread %d leak %ld: h[%d] sees %ld rows, expected the %ld "
              "committed", t, i, k, v, l->committed);
        CHECK(PQtransactionStatus(l->h[k]) == PQTRANS_IDLE, "thread %d: h[%d] is in a "
              "transaction it never began", t, k);
    }
    /* The temporary table: h[1]'s alone, on h[1]'s one backend. */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", l->temp);
    v = value_of(l->h[1], sql);
    CHECK(v == l->temp_rows, "thread %d leak %ld: h[1]'s temporary table has %ld rows, expected "
          "%ld: %s", t, i, v, l->temp_rows, PQerrorMessage(l->h[1]));
    CHECK(PQbackendPID(l->h[1]) == l->temp_pid, "thread %d: h[1], which holds a temporary table, "
          "moved from backend %d to %d", t, l->temp_pid, PQbackendPID(l->h[1]));
    snprintf(sql, sizeof sql, "SELECT coalesce(to_regclass('pg_temp.%s')::text, 'none')", l->temp);
    for (int k = 0; k < LIVE; k++) {
        char *seen;

        if (k == 1)
            continue;
        seen = tu_query_value(l->h[k], sql);
        CHECK(seen && !strcmp(seen, "none"), "thread %d leak %ld: h[%d] sees h[1]'s temporary "
              "table (%s)", t, i, k, seen ? seen : PQerrorMessage(l->h[k]));
        free(seen);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct live l = {.committed = 0};
    char sql[128];

    if (!plain_mode) {
        for (int k = 0; k < LIVE; k++) {
            l.h[k] = PQconnectdb(tu_conninfo(""));
            REQUIRE(PQstatus(l.h[k]) == CONNECTION_OK, "thread %d: live handle %d: %s",
                    w->index, k, PQerrorMessage(l.h[k]));
        }
        snprintf(l.temp, sizeof l.temp, "pqd_tmp_%d", w->index);
        snprintf(sql, sizeof sql, "CREATE TEMP TABLE %s (x bigint)", l.temp);
        REQUIRE(tu_exec_ok(l.h[1], sql), "thread %d: %s: %s", w->index, sql,
                PQerrorMessage(l.h[1]));
        l.temp_pid = tu_backend_pid(l.h[1]);
    }
    for (long i = 0; i < leaks; i++) {
        PGconn *c = PQconnectdb(tu_conninfo(""));

        w->leaked[i] = c;
        if (PQstatus(c) != CONNECTION_OK) {
            failed(w, "connect", c);
        } else if (!tu_echo_ok(c, w->index * 1000000L + i)) {
            failed(w, "query", c);
        } else {
            w->leaked_ok++;
        }
        if (plain_mode) {
            if (w->failures > 0)
                break; /* plain libpq: the server is full, as expected */
            continue;
        }
        if (i % 16 == 15) {
            long n = tu_count_backends(tu_app_name());

            CHECK(n >= 0 && n <= max_conn, "thread %d: %ld backends, max_connections %ld",
                  w->index, n, max_conn);
        }
        live_step(&l, w->index, i);
    }
    if (!plain_mode) {
        for (int k = 0; k < LIVE; k++)
            PQfinish(l.h[k]);
        CHECK(w->failures == 0, "thread %d: %ld of %ld leaked connects failed; first: %s",
              w->index, w->failures, leaks, w->first_error);
    }
    return NULL;
}

/* Runs the 8 threads; returns the leaked connects that answered. */
static long run_threads(struct worker *w)
{
    pthread_t t[THREADS];
    long ok = 0;

    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.index = i};
        w[i].leaked = calloc((size_t)leaks, sizeof *w[i].leaked);
        REQUIRE(w[i].leaked != NULL, "out of memory");
        REQUIRE(pthread_create(&t[i], NULL, worker_main, &w[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        ok += w[i].leaked_ok;
    }
    return ok;
}

/* The negative control, in a child with PQDEDUP_DISABLE=1: the leak fails once the server
 * is full. */
static int plain_child(void)
{
    static struct worker w[THREADS]; /* reachable to the end: the program leaks on purpose */
    long ok = run_threads(w), failures = 0;
    const char *first = NULL;

    for (int i = 0; i < THREADS; i++) {
        failures += w[i].failures;
        if (!first && w[i].failures)
            first = w[i].first_error;
    }
    printf("test_leak_threads: plain libpq: %ld leaked connects answered, %ld failed; first "
           "error: %s", ok, failures, first ? first : "(none)\n");
    CHECK(failures > 0 && ok <= max_conn, "plain libpq leaked %ld connections past "
          "max_connections=%ld without a failure", ok, max_conn);
    CHECK(first && strstr(first, "too many clients already"), "plain libpq's first failure is "
          "not the server's refusal: %s", first ? first : "(none)");
    /* The leaked connections stay open until exit, as the program never finishes them. */
    return tu_finish();
}

int main(int argc, char **argv)
{
    static struct worker w[THREADS]; /* reachable to the end: the program leaks on purpose */
    char sql[160], app[80];
    long ok, n;

    max_conn = pqt_max_connections();
    REQUIRE(max_conn > 0, "cannot read max_connections");
    leaks = tu_scaled(40);
    if (leaks * THREADS < max_conn + 40)
        leaks = (max_conn + 40) / THREADS + 1;
    if (argc > 1 && !strcmp(argv[1], "plain")) {
        plain_mode = 1;
        return plain_child();
    }

    {   /* Negative control: plain libpq, same program, same server. */
        char *cargv[] = {NULL, "plain", NULL};
        const char *env[] = {"PQDEDUP_DISABLE=1", NULL};
        int status = 0;
        pid_t child = pqt_run_self(cargv, env, &status);

        REQUIRE(child > 0, "could not run the plain-libpq child: %s", strerror(errno));
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the plain-libpq run did not fail "
              "as expected (status %d)", status);
        snprintf(app, sizeof app, "pqdt_test_leak_threads_%ld", (long)child);
        n = tu_wait_backends(app, 0, 10000);
        REQUIRE(n == 0, "%ld backends of the plain-libpq child still open", n);
    }

    snprintf(table, sizeof table, "pqd_issue9_%ld", (long)getpid());
    snprintf(sql, sizeof sql, "CREATE TABLE %s (thread int, n bigint)", table);
    REQUIRE(tu_exec_ok(tu_observer(), sql), "%s: %s", sql, PQerrorMessage(tu_observer()));
    printf("test_leak_threads: %d threads leak %ld connects each (%ld in all, max_connections "
           "%ld), each with %d live handles\n", THREADS, leaks, THREADS * leaks, max_conn, LIVE);

    ok = run_threads(w);
    n = tu_count_backends(tu_app_name());
    printf("test_leak_threads: %ld leaked connects answered; %ld backends open at the end\n", ok,
           n);
    CHECK(ok == THREADS * leaks, "%ld of %ld leaked connects answered", ok, THREADS * leaks);
    CHECK(n <= max_conn, "%ld backends, max_connections %ld", n, max_conn);
    /* Every leaked handle is a distinct PGconn *, and every one still answers. */
    for (int t = 0; t < THREADS; t++)
        for (long i = 0; i < leaks; i += leaks / 4 + 1)
            CHECK(tu_echo_ok(w[t].leaked[i], 7 + i), "thread %d's leaked handle %ld no longer "
                  "answers: %s", t, i, PQerrorMessage(w[t].leaked[i]));
    {
        long same = 0;

        for (int t = 0; t < THREADS; t++)
            for (long i = 0; i < leaks; i++)
                for (int u = 0; u <= t; u++)
                    for (long j = 0; j < (u == t ? i : leaks); j++)
                        same += w[t].leaked[i] == w[u].leaked[j];
        CHECK(same == 0, "%ld leaked connects returned a PGconn * already handed out", same);
    }
    snprintf(sql, sizeof sql, "DROP TABLE %s", table);
    CHECK(tu_exec_ok(tu_observer(), sql), "%s: %s", sql, PQerrorMessage(tu_observer()));
    return tu_finish();
}
