/* real.c: finds libpq's own functions behind pqdedup's wrappers. */
#define _GNU_SOURCE
#include "real.h"

#include <dlfcn.h>
#include <stddef.h>

struct real_libpq real;

/* Looks `name` up after this library (RTLD_NEXT), then in an already loaded libpq.so.5.
 * Returns NULL when neither has it. */
static void *find_symbol(const char *name)
{
    void *sym = dlsym(RTLD_NEXT, name);
    if (sym == NULL) {
        void *libpq = dlopen("libpq.so.5", RTLD_LAZY | RTLD_NOLOAD);
        if (libpq != NULL) {
            sym = dlsym(libpq, name);
            dlclose(libpq);
        }
    }
    return sym;
}

#define RESOLVE(fn) (*(void **) &real.fn = find_symbol(#fn), real.fn != NULL)

int real_resolve(void)
{
    int ok = 1;
    ok &= RESOLVE(PQconnectdb);
    ok &= RESOLVE(PQconnectdbParams);
    ok &= RESOLVE(PQsetdbLogin);
    ok &= RESOLVE(PQconnectStart);
    ok &= RESOLVE(PQconnectStartParams);
    ok &= RESOLVE(PQfinish);
    ok &= RESOLVE(PQping);
    ok &= RESOLVE(PQpingParams);
    ok &= RESOLVE(PQregisterEventProc);
    ok &= RESOLVE(PQsendQuery);
    ok &= RESOLVE(PQsendQueryParams);
    ok &= RESOLVE(PQsendPrepare);
    ok &= RESOLVE(PQsendQueryPrepared);
    ok &= RESOLVE(PQfn);
    return ok ? 0 : -1;
}
