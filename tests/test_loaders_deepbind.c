/* test_loaders_deepbind.c: connects and finishes through a module loaded with RTLD_DEEPBIND, as PHP loads pgsql.so. */
#include "testutil.h"
#include "loaders/loaders_util.h"

#include <dlfcn.h>

/*
 * Usage: test_loaders_deepbind --module PATH [--lazy] [--connect-first] [--symbols]
 *                              [--cycles N] [--leak N] [--expect-max-pids N]
 *                              [--expect-min-pids N] [--expect-redirect yes|no]
 *   --module PATH   tests/loaders/deep_module.c as built (lazy, -z now or -fno-plt),
 *                   dlopen()ed RTLD_DEEPBIND | RTLD_NOW (RTLD_LAZY with --lazy).
 *   --connect-first the program itself connects and finishes once after loading it, so
 *                   pqdedup sweeps the module's slots before the module's first connect.
 *   --symbols       bindings that are not pqdedup's stay as they were: the module's calls
 *                   to loaders_probe(), which this program defines too, reach the module's
 *                   own definition (RTLD_DEEPBIND), and its PQresultStatus is libpq's.
 *   --cycles N      N times through the module: connect (odd cycles: PQconnectStart from a
 *                   constant table and a PQconnectPoll loop), SELECT pg_backend_pid(),
 *                   PQfinish through a pointer taken at run time.
 *   --leak N        then N connects through the module that answer SELECT 1 and are never
 *                   finished; --expect-max-pids bounds the backends they use; then each
 *                   answers SELECT 1 again.
 *   --expect-redirect yes|no  the module's PQfinish and PQstatus slots hold pqdedup's
 *                   wrappers (or not).
 * Sanitizer runtimes abort any dlopen with RTLD_DEEPBIND (github.com/google/sanitizers
 * issue 611), so in ASan and TSan builds the program reports itself skipped (exit 77).
 */

/* The module defines its own; under RTLD_DEEPBIND its calls must never come here. */
int loaders_probe(void);
int loaders_probe(void)
{
    return 1;
}

struct module_fns {
    PGconn *(*connect)(const char *);
    PGconn *(*connect_async)(const char *);
    void (*finish)(PGconn *);
    long (*query_number)(PGconn *, const char *);
    int (*probe_call)(void);
    void *(*probe_address)(void);
    void *(*address_of)(int);
};

static void *must_dlsym(void *handle, const char *name)
{
    void *f = dlsym(handle, name);
    REQUIRE(f != NULL, "dlsym(module, %s): %s", name, dlerror());
    return f;
}

int main(int argc, char **argv)
{
    struct loaders_options o;
    loaders_parse("test_loaders_deepbind", argc, argv, &o);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    printf("test_loaders_deepbind: skipped: sanitizer runtimes abort dlopen with RTLD_DEEPBIND\n");
    return 77;
#endif
    REQUIRE(o.module != NULL, "--module PATH is required");
    tu_observer(); /* fails the test now if the server is not there */

    void *h = dlopen(o.module, (o.lazy ? RTLD_LAZY : RTLD_NOW) | RTLD_LOCAL | RTLD_DEEPBIND);
    REQUIRE(h != NULL, "dlopen(%s, RTLD_DEEPBIND): %s", o.module, dlerror());
    struct module_fns m;
    *(void **) &m.connect = must_dlsym(h, "mod_connect");
    *(void **) &m.connect_async = must_dlsym(h, "mod_connect_async");
    *(void **) &m.finish = must_dlsym(h, "mod_finish");
    *(void **) &m.query_number = must_dlsym(h, "mod_query_number");
    *(void **) &m.probe_call = must_dlsym(h, "mod_probe_call");
    *(void **) &m.probe_address = must_dlsym(h, "mod_probe_address");
    *(void **) &m.address_of = must_dlsym(h, "mod_address_of");

    if (o.connect_first) {
        PGconn *c = PQconnectdb(tu_conninfo(""));
        CHECK(PQstatus(c) == CONNECTION_OK, "the program's own connect: %s", PQerrorMessage(c));
        PQfinish(c);
    }

    if (o.symbols) {
        CHECK(m.probe_call() == 2, "the module's call to loaders_probe() reaches its own definition");
        int (*probe)(void) = (int (*)(void)) m.probe_address();
        CHECK(probe() == 2, "the module's address of loaders_probe() is its own definition");
        CHECK(loaders_probe() == 1, "the program's call reaches the program's definition");
        CHECK(m.address_of(1) == dlsym(RTLD_DEFAULT, "PQresultStatus"),
              "the module's PQresultStatus (no connection: not wrapped) is libpq's own");
        CHECK(dlsym(h, "loaders_probe") == (void *) m.probe_address(), "dlsym on the module finds the module's definition");
    }

    if (o.cycles >= 0) {
        long cycles = tu_scaled(o.cycles);
        int *pids = calloc((size_t) cycles + 1, sizeof *pids);
        REQUIRE(pids != NULL, "out of memory");
        long failed = 0;
        for (long i = 0; i < cycles; i++) {
            PGconn *c = i % 2 ? m.connect_async(tu_conninfo("")) : m.connect(tu_conninfo(""));
            if (CHECK(PQstatus(c) == CONNECTION_OK, "cycle %ld: connect through the module: %s", i, PQerrorMessage(c)))
                pids[i] = (int) m.query_number(c, "SELECT pg_backend_pid()");
            failed += pids[i] <= 0;
            m.finish(c);
            REQUIRE(failed < 10, "giving up after 10 failed cycles");
        }
        loaders_check_pids(&o, pids, cycles);
        free(pids);
    }

    void *wrapper = dlsym(RTLD_DEFAULT, "PQfinish"), *status_wrapper = dlsym(RTLD_DEFAULT, "PQstatus");
    if (o.expect_redirect == 1) {
        CHECK(m.address_of(0) == wrapper, "the module's PQfinish slot holds pqdedup's wrapper");
        CHECK(m.address_of(2) == status_wrapper, "the module's PQstatus slot holds pqdedup's wrapper");
    }
    if (o.expect_redirect == 0) {
        CHECK(m.address_of(0) != wrapper, "the module's PQfinish slot holds libpq's own function");
        CHECK(m.address_of(2) != status_wrapper, "the module's PQstatus slot holds libpq's own function");
    }

    if (o.leak >= 0) {
        long answered = 0;
        PGconn **leaked = calloc((size_t) o.leak + 1, sizeof *leaked);
        REQUIRE(leaked != NULL, "out of memory");
        for (long i = 0; i < o.leak; i++) {
            PGconn *c = leaked[i] = m.connect(tu_conninfo(""));
            if (CHECK(PQstatus(c) == CONNECTION_OK, "leak %ld: connect through the module: %s", i, PQerrorMessage(c)))
                answered += m.query_number(c, "SELECT 1") == 1;
            /* never finished */
        }
        CHECK(answered == o.leak, "every leaked connection answered (%ld of %ld)", answered, o.leak);
        long backends = tu_count_backends(tu_app_name());
        printf("%ld leaked connections on %ld backends\n", o.leak, backends);
        if (o.max_pids >= 0)
            CHECK(backends >= 1 && backends <= o.max_pids, "%ld leaked connections use %ld backends, expected at most %ld",
                  o.leak, backends, o.max_pids);
        /* Each leaked connection still works, through the module (one whose server connection
         * went to a later connect binds another). */
        answered = 0;
        for (long i = 0; i < o.leak; i++)
            answered += m.query_number(leaked[i], "SELECT 1") == 1;
        CHECK(answered == o.leak, "every leaked connection answered again (%ld of %ld)", answered, o.leak);
        free(leaked);
    }
    return tu_finish();
}
