/* test_security_probe.c: a tiny libpq program for the setuid test: connects twice and says which library answered PQconnectdb. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <libpq-fe.h>
#include <stdio.h>

/*
 * Usage: test_security_probe CONNINFO
 * Prints "probe: PQconnectdb from <library path>" and "probe: ok" when two connect/query/finish
 * cycles worked. Exit status 0 only then. It is built without sanitizers so it can be made
 * setuid and run with LD_PRELOAD set (which the loader then ignores).
 */
int main(int argc, char **argv)
{
    Dl_info info;
    void *sym = dlsym(RTLD_DEFAULT, "PQconnectdb");
    int ok = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s CONNINFO\n", argv[0]);
        return 2;
    }
    if (sym && dladdr(sym, &info) && info.dli_fname)
        printf("probe: PQconnectdb from %s\n", info.dli_fname);
    for (int i = 0; i < 2; i++) {
        PGconn *c = PQconnectdb(argv[1]);
        PGresult *r = PQexec(c, "SELECT 1");

        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            ok++;
        else
            printf("probe: failed: %s", PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
    }
    if (ok == 2)
        printf("probe: ok\n");
    fflush(stdout);
    return ok == 2 ? 0 : 1;
}
