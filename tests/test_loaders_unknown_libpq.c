/* test_loaders_unknown_libpq.c: under a libpq that exports a function pqdedup does not know, pqdedup passes every call through and says why. */
#define _GNU_SOURCE
#include "testutil.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Usage: test_loaders_unknown_libpq unknown|known
 *   unknown  run with LD_LIBRARY_PATH at the libpq.so.5 tests/loaders/future_libpq.sh built
 *            (libpq 15 plus PQfutureThing(PGconn *)) and PQDEDUP_LOG=info: that libpq is the
 *            one loaded; the first connect logs one info line naming PQfutureThing and saying
 *            every call is passed through, and nothing else; every connect is libpq's own (a
 *            new backend each time, connections libpq's own objects that PQfutureThing, a
 *            libpq function pqdedup cannot translate, reads correctly).
 *   known    the control, with the installed libpq and PQDEDUP_LOG=info: "pooling on", and
 *            the connects reuse backends (so the checks above can fail).
 */

#define CYCLES 6

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    bool unknown = !strcmp(mode, "unknown");
    if (!unknown && strcmp(mode, "known")) {
        fprintf(stderr, "usage: test_loaders_unknown_libpq unknown|known\n");
        return 2;
    }

    int (*future)(PGconn *) = (int (*)(PGconn *)) dlsym(RTLD_DEFAULT, "PQfutureThing");
    Dl_info where;
    REQUIRE(dladdr((void *) PQresultStatus, &where) != 0, "dladdr(PQresultStatus) failed");
    printf("libpq loaded from %s\n", where.dli_fname);
    if (unknown)
        REQUIRE(future != NULL, "the libpq loaded (%s) has no PQfutureThing: LD_LIBRARY_PATH does not "
                "point at the one future_libpq.sh built", where.dli_fname);
    else
        REQUIRE(future == NULL, "the control run loaded a libpq with PQfutureThing (%s)", where.dli_fname);

    /* pqdedup says what it found at the first connect of the process (the observer's). */
    tu_capture_stderr();
    tu_observer();
    int pids[CYCLES];
    for (int i = 0; i < CYCLES; i++) {
        PGconn *c = PQconnectdb(tu_conninfo(""));
        REQUIRE(PQstatus(c) == CONNECTION_OK, "connect %d: %s", i, PQerrorMessage(c));
        pids[i] = tu_backend_pid(c);
        if (unknown)
            CHECK(future(c) == 1, "connect %d: PQfutureThing (libpq's own code) does not read the "
                  "connection as an open libpq connection", i);
        PQfinish(c);
    }
    char *err = tu_release_stderr();
    printf("stderr of the connects:\n%s", err);

    int distinct = 0;
    for (int i = 0; i < CYCLES; i++) {
        bool seen = false;
        for (int j = 0; j < i; j++)
            seen = seen || pids[j] == pids[i];
        distinct += !seen;
    }
    printf("%d connects on %d distinct backends\n", CYCLES, distinct);

    int lines = 0;
    for (const char *p = err; *p; p++)
        lines += *p == '\n';
    if (unknown) {
        CHECK(distinct == CYCLES, "%d connects were served by %d backends: pqdedup pooled under a libpq "
              "it does not know", CYCLES, distinct);
        CHECK(strstr(err, "info: this libpq exports PQfutureThing, which pqdedup does not know") != NULL &&
                  strstr(err, "passing every call through") != NULL,
              "no info line naming PQfutureThing and saying every call is passed through: %s", err);
        CHECK(!strncmp(err, "pqdedup[", 8) && lines == 1, "expected that one prefixed line on stderr, got: %s", err);
        CHECK(strstr(err, "pooling on") == NULL, "pooling was turned on: %s", err);
    } else {
        CHECK(distinct <= 2, "control: %d connects were served by %d backends, expected reuse", CYCLES, distinct);
        CHECK(strstr(err, "info: pooling on") != NULL, "control: no \"pooling on\" line: %s", err);
        CHECK(strstr(err, "does not know") == NULL, "control: the installed libpq was found unknown: %s", err);
    }
    free(err);
    return tu_finish();
}
