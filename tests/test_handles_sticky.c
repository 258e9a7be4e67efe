/* test_handles_sticky.c: a handle with session state pqdedup cannot vouch for keeps its backend, even under pressure, and its state persists. */
#define _GNU_SOURCE
#include "testutil.h"

#include <libpq-events.h>
#include <libpq/libpq-fs.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Usage: test_handles_sticky cap|new
 *   cap  run with PQDEDUP_MAX_PER_KEY=1 and a short PQDEDUP_MAX_WAIT: the other connect
 *        finds the key at its cap and the sticky handle's connection not movable, waits and
 *        fails with the cap's message.
 *   new  run with PQDEDUP_UNBIND_AFTER=0: the other connect gets a new backend (never the
 *        sticky handle's), and sees none of the sticky handle's state.
 *
 * For each kind of sticky state (SET inside a transaction block, SET ROLE, PREPARE, PQprepare, LISTEN, CREATE TEMP
 * TABLE, pg_advisory_lock, DECLARE ... WITH HOLD, set_config, PQsetClientEncoding,
 * PQregisterEventProc, a large object, a transaction open or aborted, COPY in progress,
 * pipeline mode), handle A on backend P is left in that state, then another connect of the
 * same key is made; afterwards A still runs on P and its state is still there (a LISTEN still
 * gets a NOTIFY sent afterwards; an event procedure hears CONNDESTROY at PQfinish and nothing
 * pqdedup caused; the COPY and the pipeline complete). A control first shows that without
 * sticky state the other connect does take A's backend. In cap mode, a handle that lost its
 * connection to one that turned sticky fails its next query with the cap's message, and
 * PQreset brings it back once that handle finished.
 */

enum mode { MODE_CAP, MODE_NEW };
static enum mode mode;

struct event_counts {
    int n[PGEVT_RESULTDESTROY + 1];
};

/* What a kind's functions share with the scenario. */
struct ctx {
    PGconn *a;
    int pid;
    Oid lo;
    struct event_counts events;
};

struct kind {
    const char *name;
    void (*make)(struct ctx *x);
    /* True when c shows x's state (for A: it persisted; for the other handle: it leaked). */
    bool (*present)(struct ctx *x, PGconn *c);
    /* After the other connect: what completes or cleans up the state (may be NULL). */
    void (*after)(struct ctx *x);
    bool no_query; /* A cannot run a query in this state (pid is read with PQbackendPID) */
};

static bool value_is(PGconn *c, const char *sql, const char *want)
{
    char *v = tu_query_value(c, sql);
    bool same = v != NULL && strcmp(v, want) == 0;

    free(v);
    return same;
}

/* (A plain SET outside a transaction block is carried instead: test_handles_sets.c.) */
static void make_set(struct ctx *x) { tu_exec_check(x->a, "BEGIN; SET work_mem = '7MB'; COMMIT"); }
static bool has_set(struct ctx *x, PGconn *c) { (void) x; return value_is(c, "SHOW work_mem", "7MB"); }

static void make_role(struct ctx *x) { tu_exec_check(x->a, "SET ROLE pqd_alice"); }
static bool has_role(struct ctx *x, PGconn *c) { (void) x; return value_is(c, "SELECT current_user", "pqd_alice"); }

static void make_prepare(struct ctx *x) { tu_exec_check(x->a, "PREPARE pqdt_s AS SELECT 41 + 1"); }
static bool has_prepare(struct ctx *x, PGconn *c)
{
    (void) x;
    return value_is(c, "SELECT count(*) FROM pg_prepared_statements WHERE name = 'pqdt_s'", "1");
}
static void after_prepare(struct ctx *x) { CHECK(value_is(x->a, "EXECUTE pqdt_s", "42"), "PREPARE: EXECUTE works"); }

static void make_pqprepare(struct ctx *x)
{
    PGresult *r = PQprepare(x->a, "pqdt_p", "SELECT $1::int + 1", 1, NULL);

    CHECK(PQresultStatus(r) == PGRES_COMMAND_OK, "PQprepare: %s", PQerrorMessage(x->a));
    PQclear(r);
}
static bool has_pqprepare(struct ctx *x, PGconn *c)
{
    (void) x;
    return value_is(c, "SELECT count(*) FROM pg_prepared_statements WHERE name = 'pqdt_p'", "1");
}
static void after_pqprepare(struct ctx *x)
{
    const char *v[1] = {"41"};
    PGresult *r = PQexecPrepared(x->a, "pqdt_p", 1, v, NULL, NULL, 0);

    CHECK(PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "42") == 0,
          "PQprepare: PQexecPrepared works: %s", PQerrorMessage(x->a));
    PQclear(r);
}

static void make_listen(struct ctx *x) { tu_exec_check(x->a, "LISTEN pqdt_ch"); }
static bool has_listen(struct ctx *x, PGconn *c)
{
    (void) x;
    return value_is(c, "SELECT count(*) FROM pg_listening_channels() AS c WHERE c = 'pqdt_ch'", "1");
}
/* A NOTIFY from the observer reaches A, waited for on A's socket with a deadline. */
static void after_listen(struct ctx *x)
{
    PGnotify *n = NULL;
    long deadline = tu_now_ms() + 5000;

    tu_exec_check(tu_observer(), "NOTIFY pqdt_ch, 'hello'");
    while (n == NULL && tu_now_ms() < deadline) {
        struct pollfd pfd = {.fd = PQsocket(x->a), .events = POLLIN};

        if (poll(&pfd, 1, (int) (deadline - tu_now_ms())) > 0 && !PQconsumeInput(x->a))
            break;
        n = PQnotifies(x->a);
    }
    CHECK(n != NULL && strcmp(n->relname, "pqdt_ch") == 0 && strcmp(n->extra, "hello") == 0,
          "LISTEN: the NOTIFY sent after the other connect arrives on A: %s", PQerrorMessage(x->a));
    if (n != NULL)
        PQfreemem(n);
}

static void make_temp(struct ctx *x)
{
    tu_exec_check(x->a, "CREATE TEMP TABLE pqdt_t (x int)");
    tu_exec_check(x->a, "INSERT INTO pqdt_t VALUES (5)");
}
static bool has_temp(struct ctx *x, PGconn *c)
{
    (void) x;
    return value_is(c, "SELECT to_regclass('pg_temp.pqdt_t') IS NOT NULL", "t");
}
static void after_temp(struct ctx *x) { CHECK(value_is(x->a, "SELECT x FROM pqdt_t", "5"), "TEMP: its row is there"); }

static void make_advisory(struct ctx *x) { tu_exec_check(x->a, "SELECT pg_advisory_lock(4242)"); }
static bool has_advisory(struct ctx *x, PGconn *c)
{
    (void) x;
    return value_is(c, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 "
                       "AND pid = pg_backend_pid() AND granted", "1");
}

static void make_cursor(struct ctx *x)
{
    tu_exec_check(x->a, "DECLARE pqdt_c CURSOR WITH HOLD FOR SELECT generate_series(1, 5)");
}
static bool has_cursor(struct ctx *x, PGconn *c)
{
    (void) x;
    return value_is(c, "SELECT count(*) FROM pg_cursors WHERE name = 'pqdt_c'", "1");
}
static void after_cursor(struct ctx *x) { CHECK(value_is(x->a, "FETCH 1 FROM pqdt_c", "1"), "WITH HOLD: FETCH works"); }

static void make_set_config(struct ctx *x) { tu_exec_check(x->a, "SELECT set_config('work_mem', '9MB', false)"); }
static bool has_set_config(struct ctx *x, PGconn *c) { (void) x; return value_is(c, "SHOW work_mem", "9MB"); }

static void make_encoding(struct ctx *x)
{
    CHECK(PQsetClientEncoding(x->a, "LATIN1") == 0, "PQsetClientEncoding: %s", PQerrorMessage(x->a));
}
static bool has_encoding(struct ctx *x, PGconn *c)
{
    (void) x;
    return PQclientEncoding(c) == pg_char_to_encoding("LATIN1") && value_is(c, "SHOW client_encoding", "LATIN1");
}

static int event_proc(PGEventId id, void *info, void *pass)
{
    struct event_counts *counts = pass;

    (void) info;
    if ((int) id >= 0 && id <= PGEVT_RESULTDESTROY)
        counts->n[id]++;
    return 1;
}
static void make_events(struct ctx *x)
{
    CHECK(PQregisterEventProc(x->a, event_proc, "pqdt_proc", &x->events) == 1, "PQregisterEventProc");
}
/* Registered once, and no reset or destroy since. */
static bool has_events(struct ctx *x, PGconn *c)
{
    return c == x->a && x->events.n[PGEVT_REGISTER] == 1 && x->events.n[PGEVT_CONNRESET] == 0 &&
           x->events.n[PGEVT_CONNDESTROY] == 0;
}

static void make_lo(struct ctx *x)
{
    x->lo = lo_creat(x->a, INV_READ | INV_WRITE);
    CHECK(x->lo != InvalidOid, "lo_creat: %s", PQerrorMessage(x->a));
}
static void after_lo(struct ctx *x) { CHECK(lo_unlink(x->a, x->lo) == 1, "lo_unlink: %s", PQerrorMessage(x->a)); }

static void make_intrans(struct ctx *x)
{
    tu_exec_check(x->a, "BEGIN");
    tu_exec_check(x->a, "INSERT INTO pqdt_sticky_rows VALUES (1)");
}
static bool has_intrans(struct ctx *x, PGconn *c)
{
    (void) x;
    return PQtransactionStatus(c) == PQTRANS_INTRANS && value_is(c, "SELECT count(*) FROM pqdt_sticky_rows", "1");
}
static void after_intrans(struct ctx *x)
{
    tu_exec_check(x->a, "ROLLBACK");
    CHECK(value_is(tu_observer(), "SELECT count(*) FROM pqdt_sticky_rows", "0"), "INTRANS: rolled back");
}

static void make_inerror(struct ctx *x)
{
    tu_exec_check(x->a, "BEGIN");
    CHECK(!tu_exec_ok(x->a, "SELECT 1/0"), "INERROR: SELECT 1/0 fails");
}
static bool has_inerror(struct ctx *x, PGconn *c)
{
    PGresult *r;
    bool aborted;

    (void) x;
    if (PQtransactionStatus(c) != PQTRANS_INERROR)
        return false;
    r = PQexec(c, "SELECT 1");
    aborted = strcmp(tu_sqlstate(r), "25P02") == 0; /* in_failed_sql_transaction */
    PQclear(r);
    return aborted && PQtransactionStatus(c) == PQTRANS_INERROR;
}
static void after_inerror(struct ctx *x) { tu_exec_check(x->a, "ROLLBACK"); }

static void make_copy(struct ctx *x)
{
    PGresult *r = PQexec(x->a, "COPY pqdt_sticky_rows FROM STDIN");

    CHECK(PQresultStatus(r) == PGRES_COPY_IN, "COPY: %s", PQerrorMessage(x->a));
    PQclear(r);
}
static bool has_copy(struct ctx *x, PGconn *c)
{
    (void) x;
    return PQtransactionStatus(c) == PQTRANS_ACTIVE;
}
static void after_copy(struct ctx *x)
{
    PGresult *r;

    CHECK(PQputCopyData(x->a, "7\n", 2) == 1 && PQputCopyEnd(x->a, NULL) == 1, "COPY: data: %s",
          PQerrorMessage(x->a));
    r = PQgetResult(x->a);
    CHECK(PQresultStatus(r) == PGRES_COMMAND_OK, "COPY: ends: %s", PQerrorMessage(x->a));
    PQclear(r);
    PQclear(PQgetResult(x->a));
    CHECK(value_is(tu_observer(), "SELECT count(*) FROM pqdt_sticky_rows WHERE x = 7", "1"), "COPY: row committed");
    tu_exec_check(tu_observer(), "DELETE FROM pqdt_sticky_rows");
}

static void make_pipeline(struct ctx *x) { CHECK(PQenterPipelineMode(x->a) == 1, "PQenterPipelineMode"); }
static bool has_pipeline(struct ctx *x, PGconn *c) { (void) x; return PQpipelineStatus(c) == PQ_PIPELINE_ON; }
/* The pipeline runs a query on P and leaves pipeline mode. */
static void after_pipeline(struct ctx *x)
{
    PGresult *r;
    int pid = -1;

    CHECK(PQsendQueryParams(x->a, "SELECT pg_backend_pid()", 0, NULL, NULL, NULL, NULL, 0) == 1 &&
          PQpipelineSync(x->a) == 1, "pipeline: send: %s", PQerrorMessage(x->a));
    r = PQgetResult(x->a);
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        pid = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQclear(PQgetResult(x->a)); /* NULL: end of the query */
    r = PQgetResult(x->a);
    CHECK(PQresultStatus(r) == PGRES_PIPELINE_SYNC, "pipeline: sync: %s", PQerrorMessage(x->a));
    PQclear(r);
    CHECK(pid == x->pid, "pipeline: the pipeline's query ran on %d, expected %d", pid, x->pid);
    CHECK(PQexitPipelineMode(x->a) == 1, "pipeline: exit: %s", PQerrorMessage(x->a));
}

static const struct kind kinds[] = {
    {"SET in a transaction block", make_set, has_set, NULL, false},
    {"SET ROLE", make_role, has_role, NULL, false},
    {"PREPARE", make_prepare, has_prepare, after_prepare, false},
    {"PQprepare", make_pqprepare, has_pqprepare, after_pqprepare, false},
    {"LISTEN", make_listen, has_listen, after_listen, false},
    {"CREATE TEMP TABLE", make_temp, has_temp, after_temp, false},
    {"pg_advisory_lock", make_advisory, has_advisory, NULL, false},
    {"DECLARE WITH HOLD", make_cursor, has_cursor, after_cursor, false},
    {"set_config", make_set_config, has_set_config, NULL, false},
    {"PQsetClientEncoding", make_encoding, has_encoding, NULL, false},
    {"PQregisterEventProc", make_events, has_events, NULL, false},
    {"large object", make_lo, NULL, after_lo, false},
    {"transaction (INTRANS)", make_intrans, has_intrans, after_intrans, false},
    {"transaction (INERROR)", make_inerror, has_inerror, after_inerror, true},
    {"COPY IN", make_copy, has_copy, after_copy, true},
    {"pipeline mode", make_pipeline, has_pipeline, after_pipeline, true},
};

/* A's backend is still P: by PQbackendPID, and by a query where A can run one. */
static void check_same_backend(const struct kind *k, struct ctx *x, const char *when)
{
    CHECK(PQbackendPID(x->a) == x->pid, "%s: %s, A's PQbackendPID is %d, expected %d", k->name, when,
          PQbackendPID(x->a), x->pid);
    if (!k->no_query)
        CHECK(tu_backend_pid(x->a) == x->pid, "%s: %s, A's query does not run on its backend %d: %s",
              k->name, when, x->pid, PQerrorMessage(x->a));
}

/* The other connect of the same key while A is sticky. */
static void other_connect(const struct kind *k, struct ctx *x)
{
    PGconn *b = PQconnectdb(tu_conninfo(""));

    if (mode == MODE_CAP) {
        CHECK(PQstatus(b) == CONNECTION_BAD && strstr(PQerrorMessage(b), "PQDEDUP_MAX_PER_KEY") != NULL,
              "%s: at the cap, the other connect must wait and fail with the cap's message; got "
              "status %d: %s", k->name, (int) PQstatus(b), PQerrorMessage(b));
    } else {
        int pb = PQstatus(b) == CONNECTION_OK ? tu_backend_pid(b) : -1;

        CHECK(pb > 0 && pb != x->pid, "%s: the other connect got backend %d (A's is %d): %s", k->name, pb,
              x->pid, PQerrorMessage(b));
        if (k->present != NULL && pb > 0)
            CHECK(!k->present(x, b), "%s: the other handle sees A's state", k->name);
    }
    PQfinish(b);
}

static void run_kind(const struct kind *k)
{
    struct ctx x = {0};
    struct event_counts before;

    x.a = tu_connect_ok();
    x.pid = tu_backend_pid(x.a);
    REQUIRE(x.pid > 0, "%s: pg_backend_pid: %s", k->name, PQerrorMessage(x.a));
    k->make(&x);
    if (k->present != NULL)
        CHECK(k->present(&x, x.a), "%s: A shows its state after making it", k->name);
    before = x.events;

    other_connect(k, &x);

    CHECK(memcmp(&before, &x.events, sizeof before) == 0, "%s: the other connect fired an event on A", k->name);
    check_same_backend(k, &x, "after the other connect");
    if (k->present != NULL)
        CHECK(k->present(&x, x.a), "%s: A's state did not persist", k->name);
    if (k->after != NULL)
        k->after(&x);
    if (!k->no_query || k->after != NULL)
        check_same_backend(k, &x, "at the end");
    before = x.events;
    PQfinish(x.a);
    if (k->make == make_events) {
        before.n[PGEVT_CONNDESTROY]++;
        CHECK(memcmp(&before, &x.events, sizeof before) == 0,
              "PQregisterEventProc: at PQfinish the procedure must hear CONNDESTROY once and nothing "
              "else; it heard register %d, reset %d, destroy %d, result create %d / copy %d / destroy %d",
              x.events.n[PGEVT_REGISTER], x.events.n[PGEVT_CONNRESET], x.events.n[PGEVT_CONNDESTROY],
              x.events.n[PGEVT_RESULTCREATE], x.events.n[PGEVT_RESULTCOPY], x.events.n[PGEVT_RESULTDESTROY]);
    }
}

/* At the cap, a handle whose connection moved to a handle that then turned sticky cannot
 * bind again: its query fails as on a connection that broke (CONNECTION_BAD, the cap's
 * message); once the sticky handle finished, PQreset brings it back, as it would a plain
 * connection whose server is reachable again. */
static void run_rebind_at_cap(void)
{
    PGconn *a = tu_connect_ok(), *b;
    int pid = tu_backend_pid(a);
    PGresult *r;

    REQUIRE(pid > 0, "rebind at the cap: pg_backend_pid: %s", PQerrorMessage(a));
    b = tu_connect_taking(pid, "rebind at the cap (a clean idle handle's backend moves)");
    tu_exec_check(b, "SELECT set_config('work_mem', '7MB', false)");
    r = PQexec(a, "SELECT 1");
    CHECK(PQresultStatus(r) != PGRES_TUPLES_OK, "rebind at the cap: A's query ran");
    PQclear(r);
    CHECK(PQstatus(a) == CONNECTION_BAD && strstr(PQerrorMessage(a), "PQDEDUP_MAX_PER_KEY") != NULL,
          "rebind at the cap: A must read CONNECTION_BAD with the cap's message; status %d: %s",
          (int) PQstatus(a), PQerrorMessage(a));
    CHECK(value_is(b, "SHOW work_mem", "7MB") && tu_backend_pid(b) == pid, "rebind at the cap: B unaffected");
    PQfinish(b);
    PQreset(a);
    CHECK(PQstatus(a) == CONNECTION_OK, "rebind at the cap: PQreset after the sticky handle finished "
          "leaves A with status %d: %s", (int) PQstatus(a), PQerrorMessage(a));
    CHECK(tu_backend_pid(a) > 0, "rebind at the cap: A works after PQreset: %s", PQerrorMessage(a));
    PQfinish(a);
}

/* Control: without sticky state, the other connect takes A's backend (so "kept its backend"
 * below means something) and A, needing one again, gets a backend back. */
static void run_control(void)
{
    PGconn *a = tu_connect_ok(), *b;
    int pid = tu_backend_pid(a);

    REQUIRE(pid > 0, "control: pg_backend_pid: %s", PQerrorMessage(a));
    b = tu_connect_taking(pid, "control (a clean idle handle's backend moves)");
    tu_exec_check(b, "SELECT set_config('work_mem', '7MB', false)"); /* sticky now: A must wait for B's finish */
    PQfinish(b);
    CHECK(tu_backend_pid(a) > 0, "control: A works again: %s", PQerrorMessage(a));
    CHECK(value_is(a, "SHOW work_mem", "4MB"), "control: A does not see B's SET");
    PQfinish(a);
}

int main(int argc, char **argv)
{
    PGconn *obs;

    if (argc != 2 || (strcmp(argv[1], "cap") != 0 && strcmp(argv[1], "new") != 0)) {
        fprintf(stderr, "usage: %s cap|new\n", argv[0]);
        return 2;
    }
    mode = strcmp(argv[1], "cap") == 0 ? MODE_CAP : MODE_NEW;
    obs = tu_observer();
    tu_quiet_notices(obs);
    tu_exec_check(obs, "DROP TABLE IF EXISTS pqdt_sticky_rows");
    tu_exec_check(obs, "CREATE TABLE pqdt_sticky_rows (x int)");
    tu_exec_check(obs, "GRANT ALL ON pqdt_sticky_rows TO PUBLIC");
    run_control();
    if (mode == MODE_CAP)
        run_rebind_at_cap();
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        run_kind(&kinds[i]);
    tu_exec_check(obs, "DROP TABLE pqdt_sticky_rows");
    return tu_finish();
}
