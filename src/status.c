/* status.c: PQstatus and PQtransactionStatus of a handle, as plain libpq would report them. */
#include "handle.h"
#include "real.h"

#define EXPORT __attribute__((visibility("default")))

/* A handle fresh from PQconnectStart* reads CONNECTION_STARTED until its first PQconnectPoll,
 * even when a pooled connection answered it, and while pqdedup prepares a pooled connection
 * for it or waits for one; an unbound one is OK (only an OK, idle handle is ever unbound). */
EXPORT ConnStatusType PQstatus(const PGconn *conn)
{
    struct handle *h = handle_of(conn);
    if (h == NULL)
        return real.PQstatus(conn);
    PGconn *server = handle_enter(h, false);
    ConnStatusType status = handle_is_pooled_connect(h) ? CONNECTION_STARTED
                            : server == NULL            ? CONNECTION_OK
                                                        : real.PQstatus(server);
    handle_leave(h, true);
    return status;
}

/* While connecting, PQTRANS_UNKNOWN, as libpq says for any connection not yet OK. */
EXPORT PGTransactionStatusType PQtransactionStatus(const PGconn *conn)
{
    struct handle *h = handle_of(conn);
    if (h == NULL)
        return real.PQtransactionStatus(conn);
    PGconn *server = handle_enter(h, false);
    PGTransactionStatusType status = handle_is_pooled_connect(h) ? PQTRANS_UNKNOWN
                                     : server == NULL            ? PQTRANS_IDLE
                                                                 : real.PQtransactionStatus(server);
    handle_leave(h, true);
    return status;
}
