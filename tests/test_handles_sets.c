/* test_handles_sets.c: a handle's plain SETs go with it: its server connection may move, and the SETs run again on the next one it is bound to. */
#define _GNU_SOURCE
#include "testutil.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Usage: test_handles_sets move|leak|noreset. Run each with PQDEDUP_UNBIND_AFTER=0 and
 * PQDEDUP_KEEP_PER_KEY=0 (a connect takes an idle, clean handle's backend at once); "leak"
 * with PQDEDUP_MAX_PER_KEY=2 as well, "noreset" with PQDEDUP_RESET_QUERY=''.
 *
 *   move    carried: A runs psqlODBC's connect-time string and more SETs (DateStyle, TIME ZONE,
 *           search_path, a custom parameter); B takes A's backend and sees none of them; A,
 *           unbound, answers its own DateStyle and TimeZone; A's next query runs with every
 *           one of them, and B, which lost the backend to A, sees none.
 *           reset: RESET name, RESET ALL and PQreset drop what A carries.
 *           sticky: a SET inside a transaction block, one whose string failed (rolled back), SET
 *           client_encoding and SET SESSION AUTHORIZATION keep A on its backend.
 *           replay fails: a SET alice could make (GRANT SET ON PARAMETER) and no longer can:
 *           A's next query fails as on a broken connection, saying why; PQreset recovers it.
 *           unseen: a SET whose results were not all read before the next PQexec (libpq drops
 *           them), one whose error result was read before an escape call cleared libpq's error
 *           text, and one after a function changed TimeZone unseen keep A on its backend, with
 *           the session plain libpq would have.
 *   noreset (PQDEDUP_RESET_QUERY=''): nothing cleans a connection between handles, so a SET
 *           keeps A on its backend, and B never sees it.
 *   leak    six handles, each with its own SETs, never finished, at PQDEDUP_MAX_PER_KEY=2: every
 *           connect succeeds, each handle always sees its own settings, and the key never has
 *           more than two backends.
 */

/* SHOW name on c, compared with want. */
static bool shows(PGconn *c, const char *name, const char *want)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SHOW %s", name);
    char *v = tu_query_value(c, sql);
    bool same = v != NULL && strcmp(v, want) == 0;
    if (!same)
        fprintf(stderr, "  SHOW %s: %s, expected %s (%s)\n", name, v ? v : "(null)", want, PQerrorMessage(c));
    free(v);
    return same;
}

static bool reports(PGconn *c, const char *name, const char *want)
{
    const char *v = PQparameterStatus(c, name);
    return v != NULL && strcmp(v, want) == 0;
}

/* What A sets, and what a fresh session shows instead. */
static const struct {
    const char *name, *set, *defaults;
} carried[] = {
    {"DateStyle", NULL, "ISO, MDY"},
    {"extra_float_digits", NULL, "1"},
    {"TimeZone", "SET TIME ZONE 'Pacific/Auckland'", NULL},
    {"search_path", "SET search_path = pqdt_nowhere, public", "\"$user\", public"},
    {"pqdt.tenant", "set Pqdt.Tenant to '42' -- a comment at the end", NULL},
    {"work_mem", "SET SESSION work_mem = '7MB'", "4MB"},
};
static const char *const carried_values[] = {"German, DMY", "2", "Pacific/Auckland", "pqdt_nowhere, public",
                                             "42", "7MB"};

static void check_carried(PGconn *c, const char *who)
{
    for (size_t i = 0; i < sizeof carried / sizeof carried[0]; i++)
        CHECK(shows(c, carried[i].name, carried_values[i]), "carried: %s does not show A's %s", who, carried[i].name);
}

static void check_defaults(PGconn *c, const char *who, const char *timezone)
{
    for (size_t i = 0; i < sizeof carried / sizeof carried[0]; i++) {
        const char *want = carried[i].defaults != NULL ? carried[i].defaults
                           : strcmp(carried[i].name, "TimeZone") == 0 ? timezone : NULL;
        if (want != NULL)
            CHECK(shows(c, carried[i].name, want), "carried: %s sees A's %s", who, carried[i].name);
        else
            CHECK(!shows(c, carried[i].name, carried_values[i]), "carried: %s sees A's %s", who, carried[i].name);
    }
}

static void test_carried(void)
{
    const char *app = tu_app_name();
    int p;
    PGconn *a = tu_first_holder(&p), *b;
    char *timezone = tu_query_value(a, "SHOW TimeZone");
    REQUIRE(timezone != NULL, "carried: SHOW TimeZone: %s", PQerrorMessage(a));

    /* psqlODBC's connect-time string (with DateStyle German, which differs from the default). */
    char *isolation = tu_query_value(a, "SET DateStyle = 'German';SET extra_float_digits = 2;show transaction_isolation");
    CHECK(isolation != NULL && strcmp(isolation, "read committed") == 0, "carried: the psqlODBC string: %s",
          PQerrorMessage(a));
    free(isolation);
    for (size_t i = 0; i < sizeof carried / sizeof carried[0]; i++)
        if (carried[i].set != NULL)
            tu_exec_check(a, carried[i].set);
    check_carried(a, "A");

    b = tu_connect_taking(p, "carried (a handle with plain SETs lends its backend)");
    CHECK(tu_wait_backends(app, 1, 5000) == 1, "carried: one backend for A and B (A holds none)");
    check_defaults(b, "B, on A's old backend,", timezone);
    CHECK(reports(a, "DateStyle", "German, DMY") && reports(a, "TimeZone", "Pacific/Auckland"),
          "carried: unbound A reports DateStyle %s, TimeZone %s", PQparameterStatus(a, "DateStyle"),
          PQparameterStatus(a, "TimeZone"));

    /* A's next query: bound again (to B's backend, idle), its SETs run first. */
    check_carried(a, "A, bound again,");
    CHECK(tu_backend_pid(a) == p, "carried: A runs on P=%d again (B's, idle)", p);
    CHECK(reports(a, "DateStyle", "German, DMY"), "carried: A reports DateStyle %s", PQparameterStatus(a, "DateStyle"));
    /* B lost the backend to A, and gets one back without A's settings. */
    check_defaults(b, "B, bound again,", timezone);
    /* And once more the other way: each move runs A's SETs again. */
    check_carried(a, "A, bound a third time,");

    PQfinish(b);
    PQfinish(a);
    free(timezone);
    CHECK(tu_wait_backends(app, 0, 10000) == 0, "carried: no backend left");
}

/* A carries `set`, then `undo` (a string, or NULL for PQreset); after a move it shows work_mem
 * at the default. */
static void check_undone(const char *scenario, const char *undo)
{
    int p;
    PGconn *a = tu_first_holder(&p), *b;
    tu_exec_check(a, "SET work_mem = '7MB'; SET maintenance_work_mem = '77MB'");
    if (undo != NULL) {
        tu_exec_check(a, undo);
    } else {
        PQreset(a);
        REQUIRE(PQstatus(a) == CONNECTION_OK, "%s: PQreset: %s", scenario, PQerrorMessage(a));
        p = tu_backend_pid(a);
    }
    b = tu_connect_taking(p, scenario);
    CHECK(shows(a, "work_mem", "4MB"), "%s: A still carries its SET work_mem", scenario);
    if (undo == NULL || strstr(undo, "ALL") != NULL)
        CHECK(shows(a, "maintenance_work_mem", "64MB"), "%s: A still carries its SET maintenance_work_mem", scenario);
    else
        CHECK(shows(a, "maintenance_work_mem", "77MB"), "%s: A lost its SET maintenance_work_mem", scenario);
    PQfinish(b);
    PQfinish(a);
}

static void test_reset(void)
{
    check_undone("RESET work_mem", "RESET work_mem");
    check_undone("RESET ALL", "RESET ALL");
    check_undone("PQreset", NULL);
}

/* Strings after which A must keep its backend P: another connect gets a new one. */
static void test_sticky(void)
{
    static const struct {
        const char *sql;
        const char *work_mem; /* what A shows afterwards */
        bool fails;
    } cases[] = {
        {"BEGIN; SET work_mem = '7MB'; COMMIT", "7MB", false},
        {"SET work_mem = '7MB'; SELECT 1/0", "4MB", true},
        {"SET client_encoding = 'LATIN1'", "4MB", false},
        {"SET SESSION AUTHORIZATION pqd_alice", "4MB", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int p;
        PGconn *a = tu_first_holder(&p);
        CHECK(tu_exec_ok(a, cases[i].sql) != cases[i].fails, "sticky: %s: %s", cases[i].sql, PQerrorMessage(a));
        PGconn *b = tu_connect_ok();
        int pb = tu_backend_pid(b);
        CHECK(pb > 0 && pb != p, "sticky: after \"%s\" A's backend %d moved to another handle", cases[i].sql, p);
        CHECK(tu_backend_pid(a) == p, "sticky: after \"%s\" A left its backend", cases[i].sql);
        CHECK(shows(a, "work_mem", cases[i].work_mem), "sticky: after \"%s\"", cases[i].sql);
        PQfinish(b);
        PQfinish(a);
    }
    /* A SET sent inside a transaction block opened by an earlier command. */
    int p;
    PGconn *a = tu_first_holder(&p);
    tu_exec_check(a, "BEGIN");
    tu_exec_check(a, "SET work_mem = '7MB'");
    tu_exec_check(a, "COMMIT");
    PGconn *b = tu_connect_ok();
    CHECK(tu_backend_pid(b) != p, "sticky: a SET inside BEGIN ... COMMIT: A's backend moved");
    CHECK(shows(a, "work_mem", "7MB") && tu_backend_pid(a) == p, "sticky: BEGIN; SET; COMMIT: A kept it");
    PQfinish(b);
    PQfinish(a);
}

/* Another connect must not take A's backend p; A still runs on it afterwards. */
static void check_kept(PGconn *a, int p, const char *scenario)
{
    PGconn *b = tu_connect_ok();
    int pb = tu_backend_pid(b);
    CHECK(pb > 0 && pb != p, "%s: A's backend %d moved to another handle", scenario, p);
    CHECK(tu_backend_pid(a) == p, "%s: A left its backend %d", scenario, p);
    PQfinish(b);
}

static void test_unseen(void)
{
    int p;
    PGconn *a = tu_first_holder(&p);
    /* The string fails at its second SET: the first is rolled back with it, and PQexec drops
     * the unread results. */
    CHECK(PQsendQuery(a, "SET pqdt.x = '1'; SET work_mem = 'bogus'") == 1, "unseen: send: %s", PQerrorMessage(a));
    tu_exec_check(a, "SELECT 1");
    check_kept(a, p, "unseen: a failed SET's results dropped by PQexec");
    CHECK(shows(a, "pqdt.x", ""), "unseen: A shows the rolled-back SET");
    PQfinish(a);

    a = tu_first_holder(&p);
    CHECK(PQsendQueryParams(a, "SET work_mem = 'bogus'", 0, NULL, NULL, NULL, NULL, 0) == 1, "unseen: send: %s",
          PQerrorMessage(a));
    PGresult *r = PQgetResult(a);
    CHECK(PQresultStatus(r) == PGRES_FATAL_ERROR, "unseen: SET work_mem = 'bogus' must fail");
    PQclear(r);
    char *escaped = PQescapeLiteral(a, "x", 1); /* clears libpq's error text */
    PQfreemem(escaped);
    while ((r = PQgetResult(a)) != NULL)
        PQclear(r);
    check_kept(a, p, "unseen: a SET whose error result was read");
    CHECK(shows(a, "work_mem", "4MB"), "unseen: after the failed SET");
    PQfinish(a);

    tu_exec_check(tu_observer(), "CREATE OR REPLACE FUNCTION pqdt_sets_tz() RETURNS int LANGUAGE sql AS "
                                 "$$ SELECT 1 FROM set_config('TimeZone', 'Asia/Tokyo', false) $$");
    a = tu_first_holder(&p);
    tu_exec_check(a, "SELECT pqdt_sets_tz()");
    tu_exec_check(a, "SET search_path = public");
    check_kept(a, p, "unseen: a SET after a function changed TimeZone");
    CHECK(shows(a, "TimeZone", "Asia/Tokyo") && shows(a, "search_path", "public"), "unseen: A's session");
    PQfinish(a);
}

static void test_noreset(void)
{
    int p;
    PGconn *a = tu_first_holder(&p);
    tu_exec_check(a, "SET work_mem = '7MB'");
    PGconn *b = tu_connect_ok();
    int pb = tu_backend_pid(b);
    CHECK(pb > 0 && pb != p, "noreset: A's backend %d (with a SET) moved to another handle", p);
    CHECK(shows(b, "work_mem", "4MB"), "noreset: B sees A's SET");
    CHECK(shows(a, "work_mem", "7MB") && tu_backend_pid(a) == p, "noreset: A kept its backend and SET");
    PQfinish(b);
    PQfinish(a);
}

/* alice may set a superuser parameter only while granted: moved after the REVOKE, A's SET
 * cannot run again. */
static void test_replay_fails(void)
{
    PGconn *obs = tu_observer();
    const char *alice = tu_conninfo("user=pqd_alice password=alice_pw");
    tu_exec_check(obs, "GRANT SET ON PARAMETER log_min_duration_sample TO pqd_alice");
    PGconn *a = PQconnectdb(alice);
    REQUIRE(PQstatus(a) == CONNECTION_OK, "replay fails: connect as alice: %s", PQerrorMessage(a));
    int p = tu_backend_pid(a);
    tu_exec_check(a, "SET log_min_duration_sample = 1234");
    PGconn *b = PQconnectdb(alice);
    CHECK(PQstatus(b) == CONNECTION_OK && tu_backend_pid(b) == p, "replay fails: B takes A's backend %d", p);
    tu_exec_check(obs, "REVOKE SET ON PARAMETER log_min_duration_sample FROM pqd_alice");

    PGresult *r = PQexec(a, "SELECT 1");
    CHECK(PQresultStatus(r) != PGRES_TUPLES_OK, "replay fails: A's query ran without its setting");
    PQclear(r);
    CHECK(PQstatus(a) == CONNECTION_BAD, "replay fails: A's status is %d", (int) PQstatus(a));
    CHECK(strstr(PQerrorMessage(a), "SET statements") != NULL && strstr(PQerrorMessage(a), "permission denied") != NULL,
          "replay fails: A's error says why: %s", PQerrorMessage(a));
    PQreset(a);
    CHECK(PQstatus(a) == CONNECTION_OK && shows(a, "log_min_duration_sample", "-1"),
          "replay fails: after PQreset A works, on a new session: %s", PQerrorMessage(a));
    PQfinish(b);
    PQfinish(a);
}

static void test_leak(void)
{
    enum { N = 6 };
    const char *app = tu_app_name();
    PGconn *h[N];
    char sql[160], want[16];
    for (int i = 0; i < N; i++) {
        h[i] = tu_connect_ok();
        snprintf(sql, sizeof sql, "SET work_mem = '%dMB';SET pqdt.who = 'handle %d'", i + 5, i);
        tu_exec_check(h[i], sql);
        CHECK(tu_count_backends(app) <= 2, "leak: %ld backends after %d handles", tu_count_backends(app), i + 1);
    }
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            snprintf(want, sizeof want, "%dMB", i + 5);
            CHECK(shows(h[i], "work_mem", want), "leak: round %d: handle %d's work_mem", round, i);
            snprintf(want, sizeof want, "handle %d", i);
            CHECK(shows(h[i], "pqdt.who", want), "leak: round %d: handle %d's pqdt.who", round, i);
        }
    }
    CHECK(tu_count_backends(app) <= 2, "leak: %ld backends at the end", tu_count_backends(app));
    for (int i = 0; i < N; i++)
        PQfinish(h[i]);
}

int main(int argc, char **argv)
{
    if (argc != 2 || (strcmp(argv[1], "move") != 0 && strcmp(argv[1], "leak") != 0 &&
                      strcmp(argv[1], "noreset") != 0)) {
        fprintf(stderr, "usage: %s move|leak|noreset\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "move") == 0) {
        test_carried();
        test_reset();
        test_sticky();
        test_unseen();
        test_replay_fails();
    } else if (strcmp(argv[1], "noreset") == 0) {
        test_noreset();
    } else {
        test_leak();
    }
    return tu_finish();
}
