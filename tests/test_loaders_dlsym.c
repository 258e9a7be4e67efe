/* test_loaders_dlsym.c: a program that dlopen()s libpq and calls it only through dlsym, as ctypes (psycopg 3) does. */
#define _GNU_SOURCE
#include "testutil.h"
#include "loaders/loaders_util.h"

#include <dlfcn.h>
#include <poll.h>

/*
 * Usage: test_loaders_dlsym [--cycles N] [--leak N] [--expect-max-pids N] [--expect-min-pids N]
 *                           [--expect-redirect yes|no]
 *   --cycles N    N times: connect, SELECT pg_backend_pid(), finish, every call through
 *                 pointers from dlsym(dlopen("libpq.so.5"), ...); odd cycles connect
 *                 asynchronously (PQconnectStart and a PQconnectPoll loop, as psycopg 3).
 *   --leak N      then N connects that each answer SELECT 1 and are never finished;
 *                 --expect-max-pids bounds the server backends they use; then each answers
 *                 SELECT 1 again.
 *   --expect-redirect yes  dlsym returned pqdedup's wrapper for the wrapped names (the
 *                 loader auditor is active); no: libpq's own functions (plain LD_PRELOAD).
 *                 Either way an unwrapped name (PQresultStatus) is libpq's own.
 */

struct libpq_fns {
    PGconn *(*connectdb)(const char *);
    PGconn *(*connect_start)(const char *);
    PostgresPollingStatusType (*connect_poll)(PGconn *);
    void (*finish)(PGconn *);
    ConnStatusType (*status)(const PGconn *);
    char *(*error_message)(const PGconn *);
    int (*socket)(const PGconn *);
    PGresult *(*exec)(PGconn *, const char *);
    ExecStatusType (*result_status)(const PGresult *);
    char *(*getvalue)(const PGresult *, int, int);
    void (*clear)(PGresult *);
};

static void *must_dlsym(void *handle, const char *name)
{
    void *f = dlsym(handle, name);
    REQUIRE(f != NULL, "dlsym(libpq, %s): %s", name, dlerror());
    return f;
}

static void load(void *h, struct libpq_fns *f)
{
    *(void **) &f->connectdb = must_dlsym(h, "PQconnectdb");
    *(void **) &f->connect_start = must_dlsym(h, "PQconnectStart");
    *(void **) &f->connect_poll = must_dlsym(h, "PQconnectPoll");
    *(void **) &f->finish = must_dlsym(h, "PQfinish");
    *(void **) &f->status = must_dlsym(h, "PQstatus");
    *(void **) &f->error_message = must_dlsym(h, "PQerrorMessage");
    *(void **) &f->socket = must_dlsym(h, "PQsocket");
    *(void **) &f->exec = must_dlsym(h, "PQexec");
    *(void **) &f->result_status = must_dlsym(h, "PQresultStatus");
    *(void **) &f->getvalue = must_dlsym(h, "PQgetvalue");
    *(void **) &f->clear = must_dlsym(h, "PQclear");
}

/* PQconnectStart and a PQconnectPoll loop, as psycopg 3 connects. */
static PGconn *connect_async(const struct libpq_fns *f, const char *conninfo)
{
    PGconn *c = f->connect_start(conninfo);
    if (c == NULL || f->status(c) == CONNECTION_BAD)
        return c;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        struct pollfd p = { f->socket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0 };
        if (poll(&p, 1, 10000) <= 0)
            break;
        st = f->connect_poll(c);
    }
    return c;
}

/* The first value of sql's result as a number, -1 on error. */
static long query_number(const struct libpq_fns *f, PGconn *c, const char *sql)
{
    PGresult *r = f->exec(c, sql);
    long v = f->result_status(r) == PGRES_TUPLES_OK ? strtol(f->getvalue(r, 0, 0), NULL, 10) : -1;
    f->clear(r);
    return v;
}

int main(int argc, char **argv)
{
    struct loaders_options o;
    loaders_parse("test_loaders_dlsym", argc, argv, &o);
    tu_observer(); /* fails the test now if the server is not there */

    void *h = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
    REQUIRE(h != NULL, "dlopen(libpq.so.5): %s", dlerror());
    struct libpq_fns f;
    load(h, &f);

    /* The global scope's PQfinish is pqdedup's wrapper (LD_PRELOAD comes first). */
    void *wrapper = dlsym(RTLD_DEFAULT, "PQfinish");
    if (o.expect_redirect == 1)
        CHECK((void *) f.finish == wrapper && (void *) f.connect_start == dlsym(RTLD_DEFAULT, "PQconnectStart"),
              "dlsym on the libpq handle returns pqdedup's wrappers");
    if (o.expect_redirect == 0)
        CHECK((void *) f.finish != wrapper, "dlsym on the libpq handle returns libpq's own PQfinish");
    /* PQstatus takes a PGconn *: wrapped, like every such function, so with the auditor the
     * handle must reach pqdedup's wrapper (libpq's own would read a handle as its PGconn). */
    if (o.expect_redirect == 1)
        CHECK((void *) f.status == dlsym(RTLD_DEFAULT, "PQstatus"), "dlsym returns pqdedup's PQstatus");
    if (o.expect_redirect == 0)
        CHECK((void *) f.status != dlsym(RTLD_DEFAULT, "PQstatus"), "dlsym returns libpq's own PQstatus");
    /* PQresultStatus takes no connection (PQDEDUP_NOT_INTERCEPTED): libpq's own either way. */
    Dl_info where;
    CHECK((void *) f.result_status == dlsym(RTLD_DEFAULT, "PQresultStatus") &&
              dladdr((void *) f.result_status, &where) != 0 && strstr(where.dli_fname, "libpq.so") != NULL,
          "an unwrapped name (PQresultStatus) is libpq's own function");

    if (o.cycles >= 0) {
        long cycles = tu_scaled(o.cycles);
        int *pids = calloc((size_t) cycles + 1, sizeof *pids);
        REQUIRE(pids != NULL, "out of memory");
        long failed = 0;
        for (long i = 0; i < cycles; i++) {
            PGconn *c = i % 2 ? connect_async(&f, tu_conninfo("")) : f.connectdb(tu_conninfo(""));
            if (CHECK(f.status(c) == CONNECTION_OK, "cycle %ld: connect: %s", i, f.error_message(c)))
                pids[i] = (int) query_number(&f, c, "SELECT pg_backend_pid()");
            failed += pids[i] <= 0;
            f.finish(c);
            REQUIRE(failed < 10, "giving up after 10 failed cycles");
        }
        loaders_check_pids(&o, pids, cycles);
        free(pids);
    }

    if (o.leak >= 0) {
        long answered = 0;
        PGconn **leaked = calloc((size_t) o.leak + 1, sizeof *leaked);
        REQUIRE(leaked != NULL, "out of memory");
        for (long i = 0; i < o.leak; i++) {
            PGconn *c = leaked[i] = f.connectdb(tu_conninfo(""));
            if (CHECK(f.status(c) == CONNECTION_OK, "leak %ld: connect: %s", i, f.error_message(c)))
                answered += query_number(&f, c, "SELECT 1") == 1;
            /* never finished */
        }
        CHECK(answered == o.leak, "every leaked connection answered (%ld of %ld)", answered, o.leak);
        long backends = tu_count_backends(tu_app_name());
        printf("%ld leaked connections on %ld backends\n", o.leak, backends);
        if (o.max_pids >= 0)
            CHECK(backends >= 1 && backends <= o.max_pids, "%ld leaked connections use %ld backends, expected at most %ld",
                  o.leak, backends, o.max_pids);
        /* Each leaked connection still works (one whose server connection went to a later
         * connect binds another). */
        answered = 0;
        for (long i = 0; i < o.leak; i++)
            answered += query_number(&f, leaked[i], "SELECT 1") == 1;
        CHECK(answered == o.leak, "every leaked connection answered again (%ld of %ld)", answered, o.leak);
        free(leaked);
    }
    return tu_finish();
}
