/* queued.h: a nonblocking handle's command that must wait for a server connection: kept, and
 * sent once one is had, so the app's event loop never blocks on the pool. */
#ifndef PQDEDUP_QUEUED_H
#define PQDEDUP_QUEUED_H

#include "handle.h"

#include <libpq-fe.h>
#include <stdbool.h>

/* Begins one of the app's PQsend* calls on h (wrappers.c, rows marked SEND): as
 * handle_enter(h, true), but an UNBOUND handle in nonblocking mode that would have to wait for
 * a server connection becomes QUEUED instead, or RESETTING when it got one whose reset is still
 * to be collected, and NULL is returned: the caller then keeps its
 * command with one of the queue_* functions below. (A QUEUED handle's new command first waits
 * for the kept one to be sent: libpq then refuses it, as one command is under way.) Pair with
 * handle_leave. */
PGconn *queued_enter_send(struct handle *h);

/* Keep the command of the call that found h QUEUED (copies of every argument), to send once
 * h is bound. Return 1, or 0 when out of memory (h's error message says so; h stays QUEUED
 * with nothing kept, and the next call that needs the server binds it). */
int queue_query(struct handle *h, const char *query);
int queue_query_params(struct handle *h, const char *command, int nparams, const Oid *types,
                       const char *const *values, const int *lengths, const int *formats, int result_format);
int queue_prepare(struct handle *h, const char *name, const char *query, int nparams, const Oid *types);
int queue_query_prepared(struct handle *h, const char *name, int nparams, const char *const *values,
                         const int *lengths, const int *formats, int result_format);
int queue_describe(struct handle *h, bool portal, const char *name);

/* One step for a QUEUED or RESETTING h (locked): when its wake fired or its reset's answer
 * arrived (or, with `wait`, waiting for them), takes a server connection and sends the kept
 * command on it: h is then BOUND with the command in flight, or DIRECT when none could be had
 * by PQDEDUP_MAX_WAIT (its kept command then answers an error result: PQgetResult), or still
 * QUEUED or RESETTING (only without `wait`). */
void queued_advance(struct handle *h, bool wait);

/* True while h has a command kept: QUEUED, or RESETTING. */
static inline bool queued_is_kept(const struct handle *h)
{
    return h->state == HANDLE_QUEUED || h->state == HANDLE_RESETTING;
}

/* Drops h's kept command (at finish). */
void queued_forget(struct handle *h);

#endif
