/* connect_call.c: makes the app's connect call with libpq, and finds its key. */
#include "connect_call.h"
#include "key.h"
#include "real.h"

#include <stddef.h>

PGconn *connect_call_open(const struct connect_call *c)
{
    switch (c->shape) {
    case CALL_CONNINFO:
        return c->blocking ? real.PQconnectdb(c->conninfo) : real.PQconnectStart(c->conninfo);
    case CALL_ARRAYS:
        return c->blocking ? real.PQconnectdbParams(c->keywords, c->values, c->expand_dbname)
                           : real.PQconnectStartParams(c->keywords, c->values, c->expand_dbname);
    case CALL_SETDB:
        return real.PQsetdbLogin(c->host, c->port, c->options, c->tty, c->dbname, c->user, c->password);
    }
    return NULL;
}

char *connect_call_key(const struct connect_call *c)
{
    switch (c->shape) {
    case CALL_CONNINFO:
        return key_from_conninfo(c->conninfo);
    case CALL_ARRAYS:
        return key_from_arrays(c->keywords, c->values, c->expand_dbname);
    case CALL_SETDB:
        return key_from_setdb(c->host, c->port, c->options, c->dbname, c->user, c->password);
    }
    return NULL;
}

struct connect_call connect_call_from_key(const char *conninfo)
{
    return (struct connect_call) { .shape = CALL_CONNINFO, .blocking = true, .conninfo = conninfo };
}
