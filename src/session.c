/* session.c: cleans, checks and closes one connection between two holders. */
#define _GNU_SOURCE
#include "session.h"
#include "log.h"
#include "real.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

/* Written once, under the pool's lock, before the first connection is pooled. */
static bool hooks_captured;
static PQnoticeReceiver default_receiver;
static PQnoticeProcessor default_processor;

static void silent_receiver(void *arg, const PGresult *res)
{
    (void) arg;
    (void) res;
}

void session_capture_default_hooks(PGconn *fresh)
{
    if (!hooks_captured && fresh != NULL) {
        /* A NULL function changes nothing and returns the current one. */
        default_receiver = PQsetNoticeReceiver(fresh, NULL, NULL);
        default_processor = PQsetNoticeProcessor(fresh, NULL, NULL);
        hooks_captured = default_receiver != NULL && default_processor != NULL;
    }
}

void session_restore_default_hooks(PGconn *conn)
{
    /* Captured before any connection was registered; the pool lock orders it. */
    if (!hooks_captured)
        return;
    PQsetNoticeReceiver(conn, default_receiver, NULL);
    PQsetNoticeProcessor(conn, default_processor, NULL);
}

bool session_can_keep(PGconn *conn)
{
    return PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) != PQTRANS_ACTIVE &&
           PQtransactionStatus(conn) != PQTRANS_UNKNOWN && PQpipelineStatus(conn) == PQ_PIPELINE_OFF;
}

/* Runs one command and says whether it succeeded. */
static bool run_command(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType status = PQresultStatus(res);
    PQclear(res);
    return status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
}

bool session_start_reset(PGconn *conn, const char *reset_query)
{
    if (!hooks_captured || !session_can_keep(conn))
        return false;

    /* Client side first: nothing of the app may run from here on. */
    PQsetNoticeReceiver(conn, silent_receiver, NULL);
    PQsetNoticeProcessor(conn, default_processor, NULL);
    PQuntrace(conn);
    PQsetErrorVerbosity(conn, PQERRORS_DEFAULT);
    PQsetErrorContextVisibility(conn, PQSHOW_CONTEXT_ERRORS);
    if (PQsetnonblocking(conn, 0) != 0)
        return false;

    PGTransactionStatusType txn = PQtransactionStatus(conn);
    if ((txn == PQTRANS_INTRANS || txn == PQTRANS_INERROR) && !run_command(conn, "ROLLBACK"))
        return false;
    return reset_query[0] == '\0' || PQsendQuery(conn, reset_query) == 1;
}

bool session_reset_arrived(PGconn *conn)
{
    return PQconsumeInput(conn) == 0 || PQisBusy(conn) == 0;
}

bool session_reset_done(PGconn *conn)
{
    bool ok = true;
    PGresult *res;
    while ((res = PQgetResult(conn)) != NULL) {
        ExecStatusType status = PQresultStatus(res);
        ok = ok && (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK);
        PQclear(res);
    }
    PGnotify *notify;
    while ((notify = PQnotifies(conn)) != NULL)
        PQfreemem(notify);
    PQsetNoticeReceiver(conn, default_receiver, NULL);
    return ok && PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) == PQTRANS_IDLE;
}

bool session_looks_alive(PGconn *conn)
{
    if (PQstatus(conn) != CONNECTION_OK || PQtransactionStatus(conn) != PQTRANS_IDLE)
        return false;
    struct pollfd pfd = { .fd = PQsocket(conn), .events = POLLIN };
    if (pfd.fd < 0)
        return false;
    int saved_errno = errno;
    int ready;
    do
        ready = poll(&pfd, 1, 0);
    while (ready < 0 && errno == EINTR);
    errno = saved_errno;
    return ready == 0;
}

bool session_is_shareable(PGconn *conn)
{
    return PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) == PQTRANS_IDLE &&
           !PQisnonblocking(conn) && PQpipelineStatus(conn) == PQ_PIPELINE_OFF;
}

bool session_refused_for_slots(PGconn *failed)
{
    const char *msg = PQerrorMessage(failed);
    return msg != NULL && (strstr(msg, "too many clients already") != NULL ||
                           strstr(msg, "remaining connection slots are reserved") != NULL);
}

void session_close_quietly(PGconn *conn)
{
    PQsetNoticeReceiver(conn, silent_receiver, NULL);
    real.PQfinish(conn);
}

void session_close_inherited(PGconn *conn)
{
    int saved_errno = errno;
    int sock = PQsocket(conn);
    if (sock >= 0) {
        int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull < 0 || dup2(devnull, sock) < 0) {
            log_msg(LOG_WARN, "cannot detach an inherited connection's socket (%s); leaving it open",
                    strerror(errno));
            if (devnull >= 0)
                close(devnull);
            errno = saved_errno;
            return;
        }
        close(devnull);
    }
    session_close_quietly(conn);
    errno = saved_errno;
}
