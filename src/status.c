/* status.c: a handle's status, transaction status and error message, as plain libpq would report them. */
#define _GNU_SOURCE
#include "handle.h"
#include "queued.h"
#include "real.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    PGTransactionStatusType status = handle_is_pooled_connect(h)   ? PQTRANS_UNKNOWN
                                     : queued_is_kept(h)         ? PQTRANS_ACTIVE /* its command */
                                     : server == NULL            ? PQTRANS_IDLE
                                                                 : real.PQtransactionStatus(server);
    handle_leave(h, true);
    return status;
}

/* An unbound handle's is its last command's, and stays so when it is bound again until it
 * sends a command (the reset of its new server connection cleared that one's). One whose
 * server connection could not be found again (DIRECT after a failed rebind), or that the
 * program already finished, says why first, then what libpq says of the call that failed on
 * that account ("no connection to the server"), as a plain connection that broke would say
 * why at its first failed call. */
EXPORT char *PQerrorMessage(const PGconn *conn)
{
    struct handle *h = handle_of(conn);
    if (h == NULL)
        return real.PQerrorMessage(conn);
    PGconn *server = handle_enter(h, false);
    char *message;
    if (server == NULL) {
        message = h->last_error != NULL ? h->last_error : (char *) "";
    } else {
        message = real.PQerrorMessage(server);
        if (message[0] == '\0' && h->last_error != NULL)
            message = h->last_error; /* bound again by a call that sent no command */
        if (h->stand_in && h->failure != NULL &&
            memmem(message, strlen(message), h->failure, strlen(h->failure) - 1) != NULL)
            message = (char *) ""; /* the stand-in's own words (they quote it): only the reason */
        if ((h->state == HANDLE_DIRECT || h->state == HANDLE_FREE) && h->failure != NULL &&
            strstr(message, h->failure) == NULL) {
            char *shown = NULL;
            if (asprintf(&shown, "%s%s", h->failure, message) >= 0) {
                free(h->failure_shown);
                h->failure_shown = shown;
                message = shown;
            }
        }
    }
    handle_leave(h, true);
    return message;
}
