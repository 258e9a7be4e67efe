/* session.h: what pqdedup does to one server connection between two handles. */
#ifndef PQDEDUP_SESSION_H
#define PQDEDUP_SESSION_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* What an app sets on a connection that libpq keeps on the client side. A handle keeps its
 * own (handle.h); it is applied to a server connection while bound. */
struct client_state {
    PQnoticeReceiver receiver;
    void *receiver_arg;
    PQnoticeProcessor processor;
    void *processor_arg;
    PGVerbosity verbosity;
    PGContextVisibility context;
    FILE *trace;
    int trace_flags;
    bool nonblocking;
    bool changed; /* something differs from libpq's defaults (nothing to apply otherwise) */
};

/* Learns libpq's default notice hooks from a connection object that never connects.
 * Returns false when libpq could not make one (out of memory): nothing may be pooled then.
 * Called once, before any handle exists. */
bool session_init(void);

/* libpq's defaults, as a fresh connection has them. */
void session_default_client_state(struct client_state *state);

/* Applies a handle's client-side state to the connection it is being bound to (nothing when
 * it has only defaults). Returns false when nonblocking mode could not be set. */
bool session_apply_client_state(PGconn *conn, const struct client_state *state);

/* Puts the client-side state back to libpq's defaults (notice hooks, blocking mode, error
 * verbosity, context visibility, tracing), dropping every pointer into the app, so that no
 * app callback runs while pqdedup owns the connection. Returns false when blocking mode
 * could not be set (the connection must then be closed). */
bool session_clear_client_state(PGconn *conn);

/* True when the connection is OK, idle outside a transaction with nothing in flight, and not
 * in pipeline mode: what a handle must be for its server connection to move. */
bool session_is_idle(PGconn *conn);

/* True when the connection may be kept at all: CONNECTION_OK, no query or COPY in
 * flight, not in pipeline mode. Reads state only. */
bool session_can_keep(PGconn *conn);

/* What a kept connection still has in flight from session_start_reset. */
enum reset_pending {
    PENDING_NONE,     /* nothing: no reset query and no transaction to roll back */
    PENDING_RESET,    /* the reset query */
    PENDING_ROLLBACK, /* a ROLLBACK; the reset query follows when it is collected */
};

/* First half of making a finished connection fit for the next holder: client-side
 * state back to libpq's defaults (session_clear_client_state), then a ROLLBACK of an open or aborted transaction,
 * else `reset_query` (none when empty), is sent without waiting, as plain libpq's
 * PQfinish does not wait; with no reset query, an empty query is sent if the last
 * holder's error text must be cleared. No app callback runs from here on: what the
 * server says is swallowed, and *server_closing (owned by the caller, alive until
 * session_finish_reset) is set if it says FATAL or PANIC. Returns false when the
 * connection must be closed instead; *pending says what is in flight. */
bool session_start_reset(PGconn *conn, const char *reset_query, enum reset_pending *pending,
                         bool *server_closing);

/* True when what is in flight has been answered (or the connection broke), so
 * finishing the reset starts without waiting. Reads what the socket has; never
 * blocks. */
bool session_reset_arrived(PGconn *conn);

/* What session_reset_step found. */
enum session_step {
    SESSION_STEP_WAIT,   /* an answer is still to come: wait until the socket is readable */
    SESSION_STEP_DONE,   /* everything collected: the connection is idle, OK and clean */
    SESSION_STEP_FAILED, /* it must be closed */
};

/* The second half done without ever blocking, for asynchronous connects: reads what has
 * arrived for *pending; after a ROLLBACK sends `reset_query` and waits for that too. Call
 * again when the socket is readable until it returns DONE or FAILED. Once done, queued
 * notifications are dropped and libpq's default notice hooks are back. */
enum session_step session_reset_step(PGconn *conn, enum reset_pending *pending, const char *reset_query,
                                     const bool *server_closing);

/* Second half: collects what is in flight (*pending), then after a ROLLBACK runs the reset
 * query; with `check`, unless that reset ran now, one round trip (an empty query) proves the
 * server still answers. Waits until `deadline_ns` at most. Returns SESSION_STEP_DONE when
 * the connection ended idle and OK and the server never said it was going away (queued
 * notifications dropped, libpq's default notice hooks back); SESSION_STEP_WAIT when the
 * deadline came first on a connection not known to be broken (*pending then says what is
 * still in flight: the connection can be kept and finished later); SESSION_STEP_FAILED when
 * it must be closed. */
enum session_step session_finish_reset(PGconn *conn, enum reset_pending *pending, const char *reset_query,
                                       bool check, int64_t deadline_ns, const bool *server_closing);

/* Runs `sql` (the SETs a handle carries: carried_sets.h) on a connection pqdedup owns, in
 * blocking mode, waiting until deadline_ns at most; notices are swallowed. Returns true when
 * every statement succeeded and the connection is idle and OK; else false, with the server's
 * error (or what went wrong) in error[size]. */
bool session_replay(PGconn *conn, const char *sql, int64_t deadline_ns, char *error, size_t size);

/* True when a kept connection may be handed out without a round trip: status OK
 * and nothing readable on its socket (an idle server says nothing unless it is
 * going away). */
bool session_looks_alive(PGconn *conn);

/* True when the connection is still what target_session_attrs asked for ("" or
 * "any": always), judged as libpq does from what the server last reported
 * (default_transaction_read_only, in_hot_standby); call it right after a round
 * trip, which makes the server apply a pending configuration reload and report. */
bool session_matches_target(PGconn *conn, const char *target_session_attrs);

/* Reads the session's idle_session_timeout with one round trip (at most
 * timeout_ns) into *out_ns (0 = none). Returns false when the round trip failed:
 * the connection must then be closed. A value it cannot parse reads as 1 ns, so
 * the connection is checked before every reuse. */
bool session_read_idle_timeout(PGconn *conn, int64_t timeout_ns, int64_t *out_ns);

/* Every parameter the server reports when it changes (GUC_REPORT in PostgreSQL 15), in a
 * fixed order: what a session's fingerprint hashes and what a handle's view keeps. */
#define SESSION_N_REPORTED 13
extern const char *const session_reported_parameters[SESSION_N_REPORTED];

/* A fingerprint of every parameter the server reports when it changes (client
 * encoding, DateStyle, TimeZone, session_authorization, is_superuser, ...): a
 * different value at finish means the session was changed in ways pqdedup did not
 * see in the SQL. */
uint64_t session_parameters_fingerprint(PGconn *conn);

/* True when a failed connect was refused for lack of server connection slots (the server's
 * max_connections, or a role's or database's connection limit). */
bool session_refused_for_slots(PGconn *failed);

/* Closes a connection of this process (Terminate is sent) without calling any app
 * notice hook, after reading whatever the server already sent. Frees conn. */
void session_close_quietly(PGconn *conn);

/* Points the socket of a connection inherited from a parent process at /dev/null, so that
 * nothing this process does with the connection (a close, a reset) reaches the parent's
 * session. Returns false, logged, when that cannot be done. Preserves errno. */
bool session_detach_inherited(PGconn *conn);

/* Frees a connection inherited from a parent process without sending anything on
 * its socket: the socket is first pointed at /dev/null. If that cannot be done,
 * the connection is left allocated rather than risk the parent's session. */
void session_close_inherited(PGconn *conn);

#endif
