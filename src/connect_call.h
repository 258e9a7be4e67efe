/* connect_call.h: one connect call of the app, as it was made: its key, and making it with libpq. */
#ifndef PQDEDUP_CONNECT_CALL_H
#define PQDEDUP_CONNECT_CALL_H

#include <libpq-fe.h>
#include <stdbool.h>

enum call_shape { CALL_CONNINFO, CALL_ARRAYS, CALL_SETDB };

struct connect_call {
    enum call_shape shape;
    bool blocking; /* PQconnectdb*, PQsetdbLogin; false for PQconnectStart* */
    const char *conninfo;
    const char *const *keywords, *const *values;
    int expand_dbname;
    const char *host, *port, *options, *tty, *dbname, *user, *password;
};

/* Makes the call with libpq's own function. Returns what libpq returns (NULL only when libpq
 * is out of memory). */
PGconn *connect_call_open(const struct connect_call *c);

/* The call's key (key.h): a malloc'd string the caller frees, or NULL when libpq cannot
 * parse the parameters (the call then goes to libpq untouched). */
char *connect_call_key(const struct connect_call *c);

/* A blocking call that makes a new connection of a key (its key_conninfo string), for a
 * handle that needs one after its own connect. `conninfo` must outlive the call. */
struct connect_call connect_call_from_key(const char *conninfo);

#endif
