/* client_state.c: what the app sets on its connection on the client side, kept per handle. */
#include "handle.h"
#include "real.h"

#define EXPORT __attribute__((visibility("default")))

/*
 * Each setter records the value in the handle (applied to any server connection it is bound
 * to later: pool.c) and, when the handle has a connection now, sets it there too. It returns
 * what plain libpq would: the handle's previous value (while bound, the connection's, which is
 * the same).
 */

EXPORT PGVerbosity PQsetErrorVerbosity(PGconn *conn, PGVerbosity verbosity)
{
    struct handle *h = handle_of(conn);
    if (h == NULL)
        return real.PQsetErrorVerbosity(conn, verbosity);
    PGconn *server = handle_enter(h, false);
    PGVerbosity previous = server != NULL ? real.PQsetErrorVerbosity(server, verbosity) : h->client.verbosity;
    h->client.verbosity = verbosity;
    h->client.changed = true;
    handle_leave(h, false);
    return previous;
}

EXPORT PGContextVisibility PQsetErrorContextVisibility(PGconn *conn, PGContextVisibility show_context)
{
    struct handle *h = handle_of(conn);
    if (h == NULL)
        return real.PQsetErrorContextVisibility(conn, show_context);
    PGconn *server = handle_enter(h, false);
    PGContextVisibility previous =
        server != NULL ? real.PQsetErrorContextVisibility(server, show_context) : h->client.context;
    h->client.context = show_context;
    h->client.changed = true;
    handle_leave(h, false);
    return previous;
}

/* A NULL function changes nothing and returns the current one, as in libpq. */
EXPORT PQnoticeReceiver PQsetNoticeReceiver(PGconn *conn, PQnoticeReceiver proc, void *arg)
{
    struct handle *h = handle_of(conn);
    if (h == NULL)
        return real.PQsetNoticeReceiver(conn, proc, arg);
    PGconn *server = handle_enter(h, false);
    PQnoticeReceiver previous = server != NULL ? real.PQsetNoticeReceiver(server, proc, arg) : h->client.receiver;
    if (proc != NULL) {
        h->client.receiver = proc;
        h->client.receiver_arg = arg;
        h->client.changed = true;
    }
    handle_leave(h, false);
    return previous;
}

EXPORT PQnoticeProcessor PQsetNoticeProcessor(PGconn *conn, PQnoticeProcessor proc, void *arg)
{
    struct handle *h = handle_of(conn);
    if (h == NULL)
        return real.PQsetNoticeProcessor(conn, proc, arg);
    PGconn *server = handle_enter(h, false);
    PQnoticeProcessor previous =
        server != NULL ? real.PQsetNoticeProcessor(server, proc, arg) : h->client.processor;
    if (proc != NULL) {
        h->client.processor = proc;
        h->client.processor_arg = arg;
        h->client.changed = true;
    }
    handle_leave(h, false);
    return previous;
}

EXPORT void PQtrace(PGconn *conn, FILE *debug_port)
{
    struct handle *h = handle_of(conn);
    if (h == NULL) {
        real.PQtrace(conn, debug_port);
        return;
    }
    PGconn *server = handle_enter(h, false);
    if (server != NULL)
        real.PQtrace(server, debug_port);
    h->client.trace = debug_port;
    h->client.changed = true;
    handle_leave(h, false);
}

EXPORT void PQuntrace(PGconn *conn)
{
    struct handle *h = handle_of(conn);
    if (h == NULL) {
        real.PQuntrace(conn);
        return;
    }
    PGconn *server = handle_enter(h, false);
    if (server != NULL)
        real.PQuntrace(server);
    h->client.trace = NULL;
    handle_leave(h, false);
}

EXPORT void PQsetTraceFlags(PGconn *conn, int flags)
{
    struct handle *h = handle_of(conn);
    if (h == NULL) {
        real.PQsetTraceFlags(conn, flags);
        return;
    }
    PGconn *server = handle_enter(h, false);
    if (server != NULL)
        real.PQsetTraceFlags(server, flags);
    h->client.trace_flags = flags;
    h->client.changed = true;
    handle_leave(h, false);
}

/* Returns 0 on success, -1 when libpq could not switch (output still unsent). */
EXPORT int PQsetnonblocking(PGconn *conn, int arg)
{
    struct handle *h = handle_of(conn);
    if (h == NULL)
        return real.PQsetnonblocking(conn, arg);
    PGconn *server = handle_enter(h, false);
    int result = server != NULL ? real.PQsetnonblocking(server, arg) : 0;
    if (result == 0) {
        h->client.nonblocking = arg != 0;
        h->client.changed = true;
    }
    handle_leave(h, false);
    return result;
}
