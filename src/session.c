/* session.c: cleans, checks and closes one connection between two holders. */
#define _GNU_SOURCE
#include "session.h"
#include "log.h"
#include "clock.h"
#include "real.h"
#include "settings.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

/* Written once by session_init, before any connection is pooled. */
static bool hooks_captured;
static PQnoticeReceiver default_receiver;
static PQnoticeProcessor default_processor;

/* Swallows what the server says while pqdedup owns the connection, noting in
 * *arg (a bool, may be NULL) when it says it is going away: an idle libpq treats a
 * FATAL as a notice, and the socket's EOF may only come a moment later. */
static void silent_receiver(void *arg, const PGresult *res)
{
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (arg != NULL && severity != NULL && (strcmp(severity, "FATAL") == 0 || strcmp(severity, "PANIC") == 0))
        *(bool *) arg = true;
}

bool session_init(void)
{
    /* An unknown keyword fails the connection object before it touches the network (with a
     * value: libpq ignores keywords whose value is empty). */
    static const char *const keywords[] = { "pqdedup_probe", NULL };
    static const char *const values[] = { "probe", NULL };
    PGconn *probe = real.PQconnectStartParams(keywords, values, 0);
    if (probe == NULL)
        return false;
    /* A NULL function changes nothing and returns the current one. */
    default_receiver = real.PQsetNoticeReceiver(probe, NULL, NULL);
    default_processor = real.PQsetNoticeProcessor(probe, NULL, NULL);
    real.PQfinish(probe);
    hooks_captured = default_receiver != NULL && default_processor != NULL;
    return hooks_captured;
}

void session_default_client_state(struct client_state *state)
{
    *state = (struct client_state) {
        .receiver = default_receiver,
        .processor = default_processor,
        .verbosity = PQERRORS_DEFAULT,
        .context = PQSHOW_CONTEXT_ERRORS,
    };
}

bool session_apply_client_state(PGconn *conn, const struct client_state *state)
{
    if (!state->changed)
        return true;
    real.PQsetNoticeReceiver(conn, state->receiver, state->receiver_arg);
    real.PQsetNoticeProcessor(conn, state->processor, state->processor_arg);
    real.PQsetErrorVerbosity(conn, state->verbosity);
    real.PQsetErrorContextVisibility(conn, state->context);
    if (state->trace != NULL) {
        real.PQtrace(conn, state->trace);
        real.PQsetTraceFlags(conn, state->trace_flags);
    }
    return real.PQsetnonblocking(conn, state->nonblocking) == 0;
}

bool session_clear_client_state(PGconn *conn)
{
    real.PQsetNoticeReceiver(conn, default_receiver, NULL);
    real.PQsetNoticeProcessor(conn, default_processor, NULL);
    real.PQuntrace(conn);
    real.PQsetErrorVerbosity(conn, PQERRORS_DEFAULT);
    real.PQsetErrorContextVisibility(conn, PQSHOW_CONTEXT_ERRORS);
    return real.PQsetnonblocking(conn, 0) == 0;
}

bool session_is_idle(PGconn *conn)
{
    return real.PQtransactionStatus(conn) == PQTRANS_IDLE && real.PQpipelineStatus(conn) == PQ_PIPELINE_OFF;
}

bool session_can_keep(PGconn *conn)
{
    return real.PQstatus(conn) == CONNECTION_OK && real.PQtransactionStatus(conn) != PQTRANS_ACTIVE &&
           real.PQtransactionStatus(conn) != PQTRANS_UNKNOWN && real.PQpipelineStatus(conn) == PQ_PIPELINE_OFF;
}

/* How waiting for an answer ended. */
enum waited { WAITED_DONE, WAITED_TIMEOUT, WAITED_BROKEN };

/* Waits until a result can be read without blocking, or the deadline passes. */
static enum waited wait_for_result(PGconn *conn, int64_t deadline_ns)
{
    while (real.PQisBusy(conn)) {
        int64_t left_ms = (deadline_ns - monotonic_ns() + NS_PER_MS - 1) / NS_PER_MS;
        if (left_ms <= 0)
            return WAITED_TIMEOUT;
        struct pollfd pfd = { .fd = real.PQsocket(conn), .events = POLLIN };
        int ready = poll(&pfd, 1, left_ms > INT32_MAX ? INT32_MAX : (int) left_ms);
        if (ready < 0 && errno != EINTR)
            return WAITED_BROKEN;
        if (ready > 0 && real.PQconsumeInput(conn) == 0)
            return WAITED_BROKEN;
    }
    return WAITED_DONE;
}

/* Collects every result of the command in flight before the deadline. WAITED_DONE when all of
 * them arrived and succeeded; WAITED_BROKEN when one failed or the connection broke. */
static enum waited collect_until(PGconn *conn, int64_t deadline_ns)
{
    bool ok = true;
    for (;;) {
        enum waited w = wait_for_result(conn, deadline_ns);
        if (w != WAITED_DONE)
            return w;
        PGresult *res = real.PQgetResult(conn);
        if (res == NULL)
            return ok ? WAITED_DONE : WAITED_BROKEN;
        ExecStatusType status = PQresultStatus(res);
        ok = ok && (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK ||
                    status == PGRES_EMPTY_QUERY);
        PQclear(res);
    }
}

bool session_start_reset(PGconn *conn, const char *reset_query, enum reset_pending *pending,
                         bool *server_closing)
{
    *pending = PENDING_NONE;
    *server_closing = false;
    if (!hooks_captured || !session_can_keep(conn))
        return false;

    /* Client side first: nothing of the app may run from here on. */
    if (!session_clear_client_state(conn))
        return false;
    real.PQsetNoticeReceiver(conn, silent_receiver, server_closing);

    PGTransactionStatusType txn = real.PQtransactionStatus(conn);
    if (txn == PQTRANS_INTRANS || txn == PQTRANS_INERROR) {
        *pending = PENDING_ROLLBACK;
        return real.PQsendQuery(conn, "ROLLBACK") == 1;
    }
    /* Without a reset query, an empty one still clears the last holder's error text. */
    const char *query = reset_query[0] != '\0' ? reset_query : real.PQerrorMessage(conn)[0] != '\0' ? "" : NULL;
    if (query != NULL) {
        *pending = PENDING_RESET;
        return real.PQsendQuery(conn, query) == 1;
    }
    return true;
}

bool session_reset_arrived(PGconn *conn)
{
    /* What an earlier look already read answers without a syscall. */
    return real.PQisBusy(conn) == 0 || real.PQconsumeInput(conn) == 0 || real.PQisBusy(conn) == 0;
}

enum session_step session_finish_reset(PGconn *conn, enum reset_pending *pending, const char *reset_query,
                                       bool check, int64_t deadline_ns, const bool *server_closing)
{
    enum waited w = WAITED_DONE;
    if (*pending != PENDING_NONE && (w = collect_until(conn, deadline_ns)) == WAITED_DONE) {
        if (*pending == PENDING_ROLLBACK && reset_query[0] != '\0') {
            *pending = PENDING_RESET;
            w = real.PQsendQuery(conn, reset_query) == 1 ? collect_until(conn, deadline_ns) : WAITED_BROKEN;
            check = false; /* that round trip, made now, was the check */
        }
    }
    if (w == WAITED_DONE && check) {
        *pending = PENDING_RESET;
        w = real.PQsendQuery(conn, "") == 1 ? collect_until(conn, deadline_ns) : WAITED_BROKEN;
    }
    if (w == WAITED_TIMEOUT)
        return real.PQstatus(conn) == CONNECTION_OK && !*server_closing ? SESSION_STEP_WAIT : SESSION_STEP_FAILED;
    *pending = PENDING_NONE;
    PGnotify *notify;
    while ((notify = real.PQnotifies(conn)) != NULL)
        PQfreemem(notify);
    real.PQsetNoticeReceiver(conn, default_receiver, NULL);
    return w == WAITED_DONE && !*server_closing && real.PQstatus(conn) == CONNECTION_OK &&
                   real.PQtransactionStatus(conn) == PQTRANS_IDLE
               ? SESSION_STEP_DONE
               : SESSION_STEP_FAILED;
}

bool session_replay(PGconn *conn, const char *sql, int64_t deadline_ns, char *error, size_t size)
{
    bool closing = false;
    real.PQsetNoticeReceiver(conn, silent_receiver, &closing);
    enum waited w = real.PQsendQuery(conn, sql) == 1 ? collect_until(conn, deadline_ns) : WAITED_BROKEN;
    real.PQsetNoticeReceiver(conn, default_receiver, NULL);
    if (w == WAITED_DONE && !closing && real.PQstatus(conn) == CONNECTION_OK &&
        real.PQtransactionStatus(conn) == PQTRANS_IDLE)
        return true;
    const char *said = real.PQerrorMessage(conn);
    snprintf(error, size, "%s", w == WAITED_TIMEOUT ? "no answer within PQDEDUP_CHECK_TIMEOUT"
                                : said[0] != '\0' ? said : "the server is going away");
    error[strcspn(error, "\n")] = '\0';
    return false;
}

/* Reads every result that has arrived, without blocking. Returns 1 when the command is
 * complete and succeeded, 0 when more is to come, -1 when a result failed. */
static int collect_arrived(PGconn *conn)
{
    while (real.PQisBusy(conn) == 0) {
        PGresult *res = real.PQgetResult(conn);
        if (res == NULL)
            return 1;
        ExecStatusType status = PQresultStatus(res);
        PQclear(res);
        if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK && status != PGRES_EMPTY_QUERY)
            return -1;
    }
    return 0;
}

enum session_step session_reset_step(PGconn *conn, enum reset_pending *pending, const char *reset_query,
                                     const bool *server_closing)
{
    while (*pending != PENDING_NONE) {
        if (real.PQconsumeInput(conn) == 0)
            return SESSION_STEP_FAILED;
        int collected = collect_arrived(conn);
        if (collected < 0)
            return SESSION_STEP_FAILED;
        if (collected == 0)
            return SESSION_STEP_WAIT;
        if (*pending == PENDING_ROLLBACK && reset_query[0] != '\0') {
            if (real.PQsendQuery(conn, reset_query) != 1)
                return SESSION_STEP_FAILED;
            *pending = PENDING_RESET;
        } else {
            *pending = PENDING_NONE;
        }
    }
    PGnotify *notify;
    while ((notify = real.PQnotifies(conn)) != NULL)
        PQfreemem(notify);
    real.PQsetNoticeReceiver(conn, default_receiver, NULL);
    return !*server_closing && real.PQstatus(conn) == CONNECTION_OK && real.PQtransactionStatus(conn) == PQTRANS_IDLE
               ? SESSION_STEP_DONE
               : SESSION_STEP_FAILED;
}

bool session_looks_alive(PGconn *conn)
{
    if (real.PQstatus(conn) != CONNECTION_OK || real.PQtransactionStatus(conn) != PQTRANS_IDLE)
        return false;
    struct pollfd pfd = { .fd = real.PQsocket(conn), .events = POLLIN };
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

/* True when parameter `name` was reported with value `want`. */
static bool reported(PGconn *conn, const char *name, const char *want)
{
    const char *value = real.PQparameterStatus(conn, name);
    return value != NULL && strcmp(value, want) == 0;
}

bool session_matches_target(PGconn *conn, const char *target)
{
    if (target[0] == '\0' || strcmp(target, "any") == 0)
        return true;
    bool standby = reported(conn, "in_hot_standby", "on");
    bool primary = reported(conn, "in_hot_standby", "off");
    bool read_only = standby || reported(conn, "default_transaction_read_only", "on");
    bool read_write = primary && reported(conn, "default_transaction_read_only", "off");
    if (strcmp(target, "read-write") == 0)
        return read_write;
    if (strcmp(target, "read-only") == 0)
        return read_only;
    if (strcmp(target, "primary") == 0)
        return primary;
    if (strcmp(target, "standby") == 0 || strcmp(target, "prefer-standby") == 0)
        return standby; /* a kept primary would keep a prefer-standby client off a standby */
    return false;       /* a value this libpq did not have: let libpq choose again */
}

bool session_read_idle_timeout(PGconn *conn, int64_t timeout_ns, int64_t *out_ns)
{
    if (real.PQsendQuery(conn, "SHOW idle_session_timeout") != 1)
        return false;
    int64_t deadline = monotonic_ns() + timeout_ns;
    bool ok = true;
    *out_ns = 1;
    for (;;) {
        if (wait_for_result(conn, deadline) != WAITED_DONE)
            return false;
        PGresult *res = real.PQgetResult(conn);
        if (res == NULL)
            break;
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            if (settings_parse_duration(PQgetvalue(res, 0, 0), out_ns) != 0)
                *out_ns = 1;
        } else {
            ok = false;
        }
        PQclear(res);
    }
    return ok && real.PQstatus(conn) == CONNECTION_OK && real.PQtransactionStatus(conn) == PQTRANS_IDLE;
}

const char *const session_reported_parameters[SESSION_N_REPORTED] = {
    "application_name", "client_encoding", "DateStyle", "default_transaction_read_only",
    "in_hot_standby", "integer_datetimes", "IntervalStyle", "is_superuser", "server_encoding",
    "server_version", "session_authorization", "standard_conforming_strings", "TimeZone",
};

uint64_t session_parameters_fingerprint(PGconn *conn)
{
    uint64_t hash = UINT64_C(14695981039346656037); /* FNV-1a */
    for (size_t i = 0; i < SESSION_N_REPORTED; i++) {
        const char *value = real.PQparameterStatus(conn, session_reported_parameters[i]);
        for (const char *c = value ? value : "\x01"; ; c++) {
            hash = (hash ^ (unsigned char) *c) * UINT64_C(1099511628211);
            if (*c == '\0')
                break;
        }
    }
    return hash;
}

bool session_refused_for_slots(PGconn *failed)
{
    const char *msg = real.PQerrorMessage(failed);
    return msg != NULL && (strstr(msg, "too many clients already") != NULL ||
                           strstr(msg, "remaining connection slots are reserved") != NULL ||
                           strstr(msg, "too many connections for role") != NULL ||
                           strstr(msg, "too many connections for database") != NULL);
}

void session_close_quietly(PGconn *conn)
{
    real.PQsetNoticeReceiver(conn, silent_receiver, NULL);
    /* Read what has arrived: closing a socket with unread data resets it, and the
     * server would log an abnormal disconnection. Never blocks. */
    if (real.PQstatus(conn) == CONNECTION_OK)
        real.PQconsumeInput(conn);
    real.PQfinish(conn);
}

bool session_detach_inherited(PGconn *conn)
{
    int saved_errno = errno;
    int sock = real.PQsocket(conn);
    bool ok = true;
    if (sock >= 0) {
        int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        ok = devnull >= 0 && dup2(devnull, sock) >= 0;
        if (!ok)
            log_msg(LOG_WARN, "cannot detach an inherited connection's socket (%s); leaving it open",
                    strerror(errno));
        if (devnull >= 0)
            close(devnull);
    }
    errno = saved_errno;
    return ok;
}

void session_close_inherited(PGconn *conn)
{
    if (session_detach_inherited(conn))
        session_close_quietly(conn);
}
