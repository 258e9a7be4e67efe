/* deep_module.c: a module like PHP's pgsql.so, linked with libpq and dlopen()ed with RTLD_DEEPBIND.
 *
 * It calls libpq three ways, so each kind of slot is exercised: PQconnectdb and the query
 * functions through the PLT (JUMP_SLOT; GLOB_DAT when built -fno-plt), PQconnectStart
 * through a constant table (R_X86_64_64), PQfinish through an address taken at run time
 * (GLOB_DAT). It also defines loaders_probe(), which the test program defines too: under
 * RTLD_DEEPBIND the module's own calls must keep reaching its own definition. */
#include <libpq-fe.h>
#include <poll.h>
#include <stdlib.h>

typedef PGconn *(*start_fn)(const char *);
static start_fn const start_table[] = { PQconnectStart };
void (*volatile mod_finish_ptr)(PGconn *);

int loaders_probe(void);
int loaders_probe(void)
{
    return 2; /* the test program's returns 1 */
}

PGconn *mod_connect(const char *conninfo);
PGconn *mod_connect(const char *conninfo)
{
    return PQconnectdb(conninfo);
}

PGconn *mod_connect_async(const char *conninfo);
PGconn *mod_connect_async(const char *conninfo)
{
    PGconn *c = start_table[0](conninfo);
    if (c == NULL || PQstatus(c) == CONNECTION_BAD)
        return c;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        struct pollfd p = { PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0 };
        if (poll(&p, 1, 10000) <= 0)
            break;
        st = PQconnectPoll(c);
    }
    return c;
}

void mod_finish(PGconn *c);
void mod_finish(PGconn *c)
{
    mod_finish_ptr = PQfinish;
    mod_finish_ptr(c);
}

/* The first value of sql's result as a number; -1 on error. */
long mod_query_number(PGconn *c, const char *sql);
long mod_query_number(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    long v = PQresultStatus(r) == PGRES_TUPLES_OK ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    return v;
}

int mod_probe_call(void);
int mod_probe_call(void)
{
    return loaders_probe();
}

void *mod_probe_address(void);
void *mod_probe_address(void)
{
    return (void *) loaders_probe;
}

/* The addresses the module holds for wrapped names (0: PQfinish, 2: PQstatus) and an unwrapped
 * one (1: PQresultStatus, which takes no connection). */
void *mod_address_of(int which);
void *mod_address_of(int which)
{
    return which == 0 ? (void *) PQfinish : which == 1 ? (void *) PQresultStatus : (void *) PQstatus;
}
