/* session.h: what pqdedup does to one connection between two holders. */
#ifndef PQDEDUP_SESSION_H
#define PQDEDUP_SESSION_H

#include <libpq-fe.h>
#include <stdbool.h>

/* Remembers libpq's default notice hooks from a connection libpq just made.
 * Callers serialize it (the pool calls it under its lock). */
void session_capture_default_hooks(PGconn *fresh);

/* Puts the notice receiver and processor back to libpq's defaults, dropping any
 * pointer into the app. */
void session_restore_default_hooks(PGconn *conn);

/* True when the connection may be kept at all: CONNECTION_OK, no query or COPY in
 * flight, not in pipeline mode. Reads state only. */
bool session_can_keep(PGconn *conn);

/* First half of making a finished connection fit for the next holder: client-side
 * state back to libpq's defaults (notice hooks, blocking mode, error verbosity,
 * context visibility, tracing), then ROLLBACK of an open or aborted transaction,
 * then `reset_query` is sent (none when empty) without waiting for its result.
 * No app callback runs from here on. Returns false when the connection must be
 * closed instead; true means session_reset_done() must be called before reuse. */
bool session_start_reset(PGconn *conn, const char *reset_query);

/* True when the reset query's result has arrived (or the connection broke), so
 * session_reset_done() will not wait. Reads what the socket has; never blocks. */
bool session_reset_arrived(PGconn *conn);

/* Second half: collects the reset query's result (waiting if needed), drops
 * queued notifications and puts libpq's default notice hooks back. Returns true
 * when the connection ended idle and OK; false means it must be closed. */
bool session_reset_done(PGconn *conn);

/* True when a kept connection may be handed out without a round trip: status OK
 * and nothing readable on its socket (an idle server says nothing unless it is
 * going away). */
bool session_looks_alive(PGconn *conn);

/* True when another handle of the same thread may share this held connection:
 * status OK, idle outside a transaction, blocking, no pipeline. */
bool session_is_shareable(PGconn *conn);

/* True when a failed connect was refused for lack of server connection slots. */
bool session_refused_for_slots(PGconn *failed);

/* Closes a connection of this process (Terminate is sent) without calling any app
 * notice hook. Frees conn. */
void session_close_quietly(PGconn *conn);

/* Frees a connection inherited from a parent process without sending anything on
 * its socket: the socket is first pointed at /dev/null. If that cannot be done,
 * the connection is left allocated rather than risk the parent's session. */
void session_close_inherited(PGconn *conn);

#endif
