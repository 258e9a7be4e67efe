/* test_churn.c: connect, query, finish many times and count the distinct backends that served it. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Usage: test_churn [--hold N] [--burst N] [--cycles N] [--settle-to N] [--expect-max-pids N]
 *                   [--expect-min-pids N]
 *   --hold N             opens N connections first and keeps them open to the end, each inside
 *                        a transaction (so it keeps its server connection).
 *   --burst N            then holds N more at once (each runs a query), then finishes them:
 *                        the pool has N free server connections when the churn starts.
 *   --cycles N           PQconnectdb + SELECT pg_backend_pid() + PQfinish N times (default
 *                        1000); N is multiplied by PQD_TEST_SCALE.
 *   --settle-to N        then goes on churning, with no pause, until at most N backends of
 *                        ours are open; fails if that takes more than 30 s (register with a
 *                        short PQDEDUP_IDLE_TIMEOUT: connections the churn leaves unused must
 *                        age out although the program never stops connecting).
 *   --expect-max-pids N  at most N distinct backend pids (not scaled: it is a pool size).
 *   --expect-min-pids N  at least N distinct backend pids; scaled like --cycles, since it
 *                        counts per-cycle backends.
 * At the end, with max-pids given, at most that many backends of ours stay open (the pool);
 * with min-pids given, none do once every backend has had time to exit.
 */

/* One connect + SELECT pg_backend_pid(); returns the pid, or -1 after a CHECK failed. The
 * caller finishes *out. */
static int connect_and_ask(long cycle, PGconn **out)
{
    PGconn *c = *out = PQconnectdb(tu_conninfo(""));
    int pid = -1;

    if (CHECK(PQstatus(c) == CONNECTION_OK, "cycle %ld: connect: %s", cycle, PQerrorMessage(c))) {
        pid = tu_backend_pid(c);
        CHECK(pid > 0, "cycle %ld: SELECT pg_backend_pid(): %s", cycle, PQerrorMessage(c));
    }
    return pid;
}

/* Holds n connections at once, then finishes them all. */
static void burst(long n)
{
    PGconn *held[16];

    REQUIRE(n >= 1 && n <= 16, "--burst: 1 to 16");
    for (long i = 0; i < n; i++)
        connect_and_ask(-1 - i, &held[i]);
    for (long i = 0; i < n; i++)
        PQfinish(held[i]);
    printf("test_churn: held %ld connections at once, then finished them\n", n);
}

/* Churns until at most `want` backends of ours are open (looked at every 20 cycles), for up
 * to 30 s; returns how many were open last. Gives up after 10 failed cycles. */
static long churn_until(long want)
{
    long open = -1, cycles = 0, failed = 0, deadline = tu_now_ms() + 30000;

    do {
        for (int i = 0; i < 20; i++, cycles++) {
            PGconn *c;
            failed += connect_and_ask(cycles, &c) <= 0;
            PQfinish(c);
            REQUIRE(failed < 10, "giving up after 10 failed cycles");
        }
        open = tu_count_backends(tu_app_name());
    } while ((open < 0 || open > want) && tu_now_ms() < deadline);
    printf("test_churn: %ld backends open after %ld more cycles\n", open, cycles);
    return open;
}

/* qsort comparator for ints. */
static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;

    return (x > y) - (x < y);
}

/* Parse a non-negative count from argv; exits 1 on a bad one. */
static long parse_count(const char *opt, const char *s)
{
    char *end;
    long v = s ? strtol(s, &end, 10) : -1;

    if (!s || *end || v < 0) {
        fprintf(stderr, "test_churn: %s needs a non-negative number\n", opt);
        exit(1);
    }
    return v;
}

int main(int argc, char **argv)
{
    long cycles = 1000, max_pids = -1, min_pids = -1, hold = 0, burst_size = 0, settle_to = -1,
         distinct, ok_cycles = 0, left, i;
    PGconn *held[16];
    int *pids;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cycles"))
            cycles = parse_count(argv[i], argv[i + 1]), i++;
        else if (!strcmp(argv[i], "--expect-max-pids"))
            max_pids = parse_count(argv[i], argv[i + 1]), i++;
        else if (!strcmp(argv[i], "--hold"))
            hold = parse_count(argv[i], argv[i + 1]), i++;
        else if (!strcmp(argv[i], "--burst"))
            burst_size = parse_count(argv[i], argv[i + 1]), i++;
        else if (!strcmp(argv[i], "--settle-to"))
            settle_to = parse_count(argv[i], argv[i + 1]), i++;
        else if (!strcmp(argv[i], "--expect-min-pids"))
            min_pids = parse_count(argv[i], argv[i + 1]), i++;
        else {
            fprintf(stderr, "test_churn: unknown argument %s\n", argv[i]);
            return 1;
        }
    }
    cycles = tu_scaled(cycles);
    if (min_pids > 0)
        min_pids = tu_scaled(min_pids);
    printf("test_churn: %ld cycles as %s (scale %g)\n", cycles, tu_app_name(), tu_scale());

    tu_observer(); /* fails the test now if the server is not there */
    pids = calloc((size_t)cycles, sizeof *pids);
    REQUIRE(pids != NULL, "out of memory");
    REQUIRE(hold <= 16, "--hold: at most 16");
    for (i = 0; i < hold; i++) {
        connect_and_ask(-100 - i, &held[i]);
        PQclear(PQexec(held[i], "BEGIN"));
    }
    if (burst_size > 0)
        burst(burst_size);

    for (i = 0; i < cycles; i++) {
        PGconn *c;
        int pid = connect_and_ask(i, &c);

        ok_cycles += pid > 0;
        pids[i] = pid;
        PQfinish(c);
        REQUIRE(i + 1 - ok_cycles < 10, "giving up after 10 failed cycles");
    }

    qsort(pids, (size_t)cycles, sizeof *pids, cmp_int);
    distinct = 0;
    for (i = 0; i < cycles; i++)
        if (pids[i] > 0 && (i == 0 || pids[i] != pids[i - 1]))
            distinct++;
    free(pids);
    printf("test_churn: %ld/%ld cycles worked, %ld distinct backend pids\n", ok_cycles, cycles,
           distinct);
    CHECK(ok_cycles == cycles, "%ld of %ld cycles failed", cycles - ok_cycles, cycles);
    if (settle_to >= 0) {
        left = churn_until(settle_to);
        CHECK(left >= 0 && left <= settle_to, "%ld backends still open after 30 s of churn, expected "
              "at most %ld: the churn keeps using (or opening) more than it needs", left, settle_to);
    }

    if (max_pids >= 0) {
        CHECK(distinct <= max_pids, "%ld distinct backends, expected at most %ld", distinct,
              max_pids);
        left = tu_count_backends(tu_app_name());
        CHECK(left >= 0 && left <= max_pids, "%ld backends left open, expected at most %ld", left,
              max_pids);
    }
    for (i = 0; i < hold; i++) {
        CHECK(PQtransactionStatus(held[i]) == PQTRANS_INTRANS && tu_backend_pid(held[i]) > 0,
              "held connection %ld: %s", i, PQerrorMessage(held[i]));
        PQclear(PQexec(held[i], "COMMIT"));
        PQfinish(held[i]);
    }
    if (min_pids >= 0) {
        CHECK(distinct >= min_pids, "%ld distinct backends, expected at least %ld", distinct,
              min_pids);
        left = tu_wait_backends(tu_app_name(), 0, 5000);
        CHECK(left == 0, "%ld backends still open after every PQfinish, expected 0", left);
    }
    return tu_finish();
}
