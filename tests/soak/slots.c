/* slots.c: idle connections pqdedup keeps for one key must not cost another key a server slot that plain libpq would have had. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * A program that opens n connections with parameters A, finishes them all, then opens n
 * connections with parameters B, never holds more than n at once: with plain libpq it fits any
 * server with n free slots. Under pqdedup the finished A connections stay kept (up to
 * PQDEDUP_KEEP_PER_KEY=16) and occupy slots; the B connects must still all succeed, as with
 * plain libpq, as n independent sessions (not handles sharing a session, which leak containment
 * would give), e.g. by closing kept idle connections when the server refuses for lack of slots.
 * n = the free slots the server has now, less 2 for safety.
 */

static long observe(const char *sql)
{
    char *v = tu_query_value(tu_observer(), sql);
    long n = v ? strtol(v, NULL, 10) : -1;

    free(v);
    return n;
}

/* Opens n connections with application_name app at once; returns how many worked. */
static long open_many(PGconn **c, long n, const char *app)
{
    char extra[128];
    long ok = 0;
    const char *first_error = NULL;

    snprintf(extra, sizeof extra, "application_name=%s", app);
    for (long i = 0; i < n; i++) {
        c[i] = PQconnectdb(extra);
        if (PQstatus(c[i]) == CONNECTION_OK)
            ok++;
        else if (!first_error)
            first_error = PQerrorMessage(c[i]);
    }
    if (first_error)
        fprintf(stderr, "slots: %s: %ld of %ld connects failed; first: %s", app, n - ok, n, first_error);
    return ok;
}

int main(void)
{
    long max = observe("SELECT setting::int FROM pg_settings WHERE name = 'max_connections'");
    long used = observe("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'");
    long n = max - used - 2, ok;
    char app_a[80], app_b[80];
    PGconn **c;

    REQUIRE(max > 0 && used > 0 && n >= 20, "max_connections %ld, %ld in use: too few free slots", max, used);
    c = calloc((size_t)n, sizeof *c);
    REQUIRE(c != NULL, "out of memory");
    snprintf(app_a, sizeof app_a, "%s_A", tu_app_name());
    snprintf(app_b, sizeof app_b, "%s_B", tu_app_name());
    printf("slots: %ld free slots; %ld connections A, all finished, then %ld connections B\n", n + 2, n, n);

    ok = open_many(c, n, app_a);
    CHECK(ok == n, "%ld of %ld A connects worked", ok, n);
    for (long i = 0; i < n; i++)
        PQfinish(c[i]);
    tu_wait_backends(app_a, n < 16 ? n : 16, 3000);
    printf("slots: %ld A backends kept after finishing all\n", tu_count_backends(app_a));

    ok = open_many(c, n, app_b);
    CHECK(ok == n, "only %ld of %ld B connects worked while %ld finished A connections were kept: plain "
          "libpq serves all %ld", ok, n, tu_count_backends(app_a), n);
    {   /* ... and as with plain libpq they are n independent sessions, not shared handles */
        long distinct = 0;

        for (long i = 0; i < n; i++) {
            long j;

            for (j = 0; j < i; j++)
                if (c[j] == c[i] || (PQbackendPID(c[j]) == PQbackendPID(c[i]) && PQbackendPID(c[i]) > 0))
                    break;
            distinct += j == i && PQstatus(c[i]) == CONNECTION_OK;
        }
        CHECK(distinct == n, "the %ld B connects got only %ld distinct sessions (the rest share them) while "
              "%ld finished A connections were kept idle: plain libpq gives %ld sessions", n, distinct,
              tu_count_backends(app_a), n);
    }
    for (long i = 0; i < n; i++)
        PQfinish(c[i]);
    free(c);
    return tu_finish();
}
