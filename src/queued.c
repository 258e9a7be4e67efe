/* queued.c: a nonblocking handle's command that must wait for a server connection: kept, sent
 * once one is had, and PQgetResult, which answers for it. */
#define _GNU_SOURCE
#include "queued.h"
#include "pool.h"
#include "real.h"
#include "socket.h"

#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

/* Which PQsend* call the command came from. */
enum queued_kind {
    QUEUED_QUERY,           /* PQsendQuery(text) */
    QUEUED_QUERY_PARAMS,    /* PQsendQueryParams(text, params...) */
    QUEUED_PREPARE,         /* PQsendPrepare(name, text, types) */
    QUEUED_QUERY_PREPARED,  /* PQsendQueryPrepared(name, params...) */
    QUEUED_DESCRIBE_STATEMENT,
    QUEUED_DESCRIBE_PORTAL,
};

/* A copy of every argument of the call; owned by the handle until sent or forgotten. */
struct queued_command {
    enum queued_kind kind;
    char *text, *name;
    int nparams, result_format;
    Oid *types;
    char **values;
    int *lengths, *formats;
};

static void free_command(struct queued_command *c)
{
    if (c == NULL)
        return;
    for (int i = 0; c->values != NULL && i < c->nparams; i++)
        free(c->values[i]);
    free(c->values);
    free(c->lengths);
    free(c->formats);
    free(c->types);
    free(c->text);
    free(c->name);
    free(c);
}

void queued_forget(struct handle *h)
{
    free_command(h->queued);
    h->queued = NULL;
    h->queued_failed = false;
}

/* A copy of n elements of `size` bytes (NULL for NULL or none). Sets *ok false when out of
 * memory. */
static void *copy_array(const void *from, int n, size_t size, bool *ok)
{
    if (from == NULL || n <= 0)
        return NULL;
    void *to = malloc((size_t) n * size);
    if (to == NULL)
        *ok = false;
    else
        memcpy(to, from, (size_t) n * size);
    return to;
}

static char *copy_string(const char *from, bool *ok)
{
    if (from == NULL)
        return NULL;
    char *to = strdup(from);
    if (to == NULL)
        *ok = false;
    return to;
}

/* Keeps a command for h; its parameters as libpq reads them (a binary one by its length, a
 * text one up to its NUL). Returns 1, or 0 when out of memory. */
static int keep(struct handle *h, enum queued_kind kind, const char *text, const char *name, int nparams,
                const Oid *types, const char *const *values, const int *lengths, const int *formats,
                int result_format)
{
    bool ok = true;
    struct queued_command *c = calloc(1, sizeof *c);
    if (c == NULL)
        goto out_of_memory;
    c->kind = kind;
    c->nparams = nparams > 0 ? nparams : 0;
    c->result_format = result_format;
    c->text = copy_string(text, &ok);
    c->name = copy_string(name, &ok);
    c->types = copy_array(types, c->nparams, sizeof *types, &ok);
    c->lengths = copy_array(lengths, c->nparams, sizeof *lengths, &ok);
    c->formats = copy_array(formats, c->nparams, sizeof *formats, &ok);
    if (values != NULL && c->nparams > 0) {
        c->values = calloc((size_t) c->nparams, sizeof *c->values);
        ok = ok && c->values != NULL;
        for (int i = 0; ok && i < c->nparams; i++) {
            if (values[i] == NULL)
                continue;
            bool binary = formats != NULL && formats[i] != 0;
            size_t len = binary ? (size_t) (lengths != NULL && lengths[i] > 0 ? lengths[i] : 0)
                                : strlen(values[i]) + 1;
            c->values[i] = malloc(len > 0 ? len : 1);
            if (c->values[i] == NULL)
                ok = false;
            else
                memcpy(c->values[i], values[i], len);
        }
    }
    if (!ok)
        goto out_of_memory;
    free_command(h->queued);
    h->queued = c;
    return 1;

out_of_memory:
    free_command(c);
    free(h->last_error);
    h->last_error = strdup("out of memory\n");
    return 0;
}

int queue_query(struct handle *h, const char *query)
{
    return keep(h, QUEUED_QUERY, query, NULL, 0, NULL, NULL, NULL, NULL, 0);
}

int queue_query_params(struct handle *h, const char *command, int nparams, const Oid *types,
                       const char *const *values, const int *lengths, const int *formats, int result_format)
{
    return keep(h, QUEUED_QUERY_PARAMS, command, NULL, nparams, types, values, lengths, formats, result_format);
}

int queue_prepare(struct handle *h, const char *name, const char *query, int nparams, const Oid *types)
{
    return keep(h, QUEUED_PREPARE, query, name, nparams, types, NULL, NULL, NULL, 0);
}

int queue_query_prepared(struct handle *h, const char *name, int nparams, const char *const *values,
                         const int *lengths, const int *formats, int result_format)
{
    return keep(h, QUEUED_QUERY_PREPARED, NULL, name, nparams, NULL, values, lengths, formats, result_format);
}

int queue_describe(struct handle *h, bool portal, const char *name)
{
    return keep(h, portal ? QUEUED_DESCRIBE_PORTAL : QUEUED_DESCRIBE_STATEMENT, NULL, name, 0, NULL, NULL,
                NULL, NULL, 0);
}

/* Sends c on conn, as the app's call would have. Returns what that call returns. */
static int send_command(PGconn *conn, const struct queued_command *c)
{
    const char *const *values = (const char *const *) c->values;
    switch (c->kind) {
    case QUEUED_QUERY:
        return real.PQsendQuery(conn, c->text);
    case QUEUED_QUERY_PARAMS:
        return real.PQsendQueryParams(conn, c->text, c->nparams, c->types, values, c->lengths, c->formats,
                                      c->result_format);
    case QUEUED_PREPARE:
        return real.PQsendPrepare(conn, c->name, c->text, c->nparams, c->types);
    case QUEUED_QUERY_PREPARED:
        return real.PQsendQueryPrepared(conn, c->name, c->nparams, values, c->lengths, c->formats,
                                        c->result_format);
    case QUEUED_DESCRIBE_STATEMENT:
        return real.PQsendDescribePrepared(conn, c->name);
    case QUEUED_DESCRIBE_PORTAL:
        return real.PQsendDescribePortal(conn, c->name);
    }
    return 0;
}

/* h is BOUND, or DIRECT on a failure: its kept command is sent, or answers the error. */
static void send_kept(struct handle *h)
{
    if (h->queued != NULL && (h->state != HANDLE_BOUND || send_command(h->conn, h->queued) != 1))
        h->queued_failed = true;
    free_command(h->queued);
    h->queued = NULL;
}

void queued_advance(struct handle *h, bool wait)
{
    for (;;) {
        if (h->state == HANDLE_RESETTING) {
            enum session_step step = pool_resetting_step(h, wait);
            if (step == SESSION_STEP_WAIT)
                return;
            if (step == SESSION_STEP_DONE) {
                send_kept(h);
                return;
            }
            /* the connection failed its reset: h is UNBOUND again, and looks for another */
        } else if (h->state == HANDLE_QUEUED) {
            if (!wait && !atomic_load(&h->wait.fired))
                return; /* nothing changed since it was queued */
            wake_drain(&h->wait);
        } else {
            return;
        }
        switch (pool_rebind_or_queue(h, wait)) {
        case REBIND_QUEUED:
            socket_follow(h); /* (a new wake) */
            return;
        case REBIND_RESETTING:
            if (!wait)
                return;
            break; /* (only when it was not waiting) */
        case REBIND_BOUND:
        case REBIND_FAILED:
            send_kept(h);
            return;
        }
    }
}

PGconn *queued_enter_send(struct handle *h)
{
    PGconn *server = handle_enter(h, false);
    if (queued_is_kept(h)) {
        queued_advance(h, true); /* one command at a time: libpq refuses this one */
        return h->conn;
    }
    if (h->state != HANDLE_UNBOUND)
        return server;
    if (!h->client.nonblocking) {
        pool_rebind(h); /* BOUND, or DIRECT on a failed connection */
        return h->conn;
    }
    enum rebind_outcome outcome = pool_rebind_or_queue(h, false);
    if (outcome == REBIND_QUEUED)
        socket_follow(h); /* PQsocket: its wake */
    return outcome == REBIND_QUEUED || outcome == REBIND_RESETTING ? NULL : h->conn;
}

/* libpq's PQgetResult waits for the answer of the command under way: a QUEUED handle's first
 * waits for a server connection (at most PQDEDUP_MAX_WAIT). A kept command that could not be
 * sent answers one error result, saying why, then NULL, as a command libpq failed to send. */
EXPORT PGresult *PQgetResult(PGconn *conn)
{
    struct handle *h = handle_of(conn);
    if (h == NULL)
        return real.PQgetResult(conn);
    PGconn *server = handle_enter(h, false);
    if (queued_is_kept(h)) {
        queued_advance(h, true);
        server = h->conn;
    }
    PGresult *result;
    if (h->queued_failed) {
        h->queued_failed = false;
        result = real.PQmakeEmptyPGresult(server, PGRES_FATAL_ERROR);
    } else {
        result = server != NULL ? real.PQgetResult(server) : NULL;
        if (result != NULL)
            handle_note_result(h, result);
    }
    handle_leave(h, false);
    return result;
}
