/* test_churn.c: connect, query, finish many times and count the distinct backends that served it. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Usage: test_churn [--cycles N] [--expect-max-pids N] [--expect-min-pids N]
 *   --cycles N           PQconnectdb + SELECT pg_backend_pid() + PQfinish N times (default
 *                        1000); N is multiplied by PQD_TEST_SCALE.
 *   --expect-max-pids N  at most N distinct backend pids (not scaled: it is a pool size).
 *   --expect-min-pids N  at least N distinct backend pids; scaled like --cycles, since it
 *                        counts per-cycle backends.
 * At the end, with max-pids given, at most that many backends of ours stay open (the pool);
 * with min-pids given, none do once every backend has had time to exit.
 */

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
    long cycles = 1000, max_pids = -1, min_pids = -1, distinct, ok_cycles = 0, left, i;
    int *pids;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cycles"))
            cycles = parse_count(argv[i], argv[i + 1]), i++;
        else if (!strcmp(argv[i], "--expect-max-pids"))
            max_pids = parse_count(argv[i], argv[i + 1]), i++;
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

    for (i = 0; i < cycles; i++) {
        PGconn *c = PQconnectdb(tu_conninfo(""));
        int pid = -1;

        if (CHECK(PQstatus(c) == CONNECTION_OK, "cycle %ld: connect: %s", i, PQerrorMessage(c))) {
            pid = tu_backend_pid(c);
            if (CHECK(pid > 0, "cycle %ld: SELECT pg_backend_pid(): %s", i, PQerrorMessage(c)))
                ok_cycles++;
        }
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

    if (max_pids >= 0) {
        CHECK(distinct <= max_pids, "%ld distinct backends, expected at most %ld", distinct,
              max_pids);
        left = tu_count_backends(tu_app_name());
        CHECK(left >= 0 && left <= max_pids, "%ld backends left open, expected at most %ld", left,
              max_pids);
    }
    if (min_pids >= 0) {
        CHECK(distinct >= min_pids, "%ld distinct backends, expected at least %ld", distinct,
              min_pids);
        left = tu_wait_backends(tu_app_name(), 0, 5000);
        CHECK(left == 0, "%ld backends still open after every PQfinish, expected 0", left);
    }
    return tu_finish();
}
