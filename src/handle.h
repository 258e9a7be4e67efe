/* handle.h: the PGconn * pqdedup hands the app: one per connect, bound to a server connection
 * only while it needs one. */
#ifndef PQDEDUP_HANDLE_H
#define PQDEDUP_HANDLE_H

#include "carried_sets.h"
#include "handle_states.h"
#include "session.h"
#include "wake.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct server_conn;
struct pool_bucket;
struct queued_command;

/* What every clean session of a key reports to the app (the same on any of its server
 * connections), remembered for handles that are unbound: immutable once made, shared by
 * reference count (the key's bucket keeps the newest one). The strings point inside it. */
struct session_view {
    _Atomic int refs;
    char *db, *user, *pass, *host, *hostaddr, *port, *tty, *options;
    int protocol_version, server_version, client_encoding, used_password;
    int ssl_in_use, gss_in_use;
    int nparameters;
    const char *parameter_names[16];
    char *parameter_values[16];
};

struct handle {
    pthread_mutex_t lock;         /* recursive; held by a thread while it is inside a libpq call
                                     on this handle; the pool only ever tries it */
    _Atomic uint32_t generation;  /* bumped each time the slot is reused (cancel objects check it) */
    _Atomic int cancelling;       /* PQcancel calls through this handle under way (cancel.c) */
    /* Everything from here on starts from zero in a new handle. */
    pthread_t owner;              /* the thread holding `lock` (valid while depth > 0) */
    int depth;                    /* nesting of the owner's calls (a notice callback may call in) */
    enum handle_state state;
    PGconn *conn;                 /* where calls go: BOUND/STARTED the server connection's,
                                     CONNECTING/DIRECT the handle's own; NULL otherwise */
    struct server_conn *server;   /* BOUND/STARTED: the pooled connection bound to it */
    struct pool_bucket *bucket;   /* its key's bucket (the handle holds a reference) */
    bool sticky;                  /* it left state on its server connection that pqdedup cannot
                                     vouch for (SQL, events, encoding, ...): it keeps the connection */
    char **statements;            /* the named prepared statements it has (PREPARE, PQprepare, not
                                     yet DEALLOCATEd): while it has any it keeps its connection */
    int nstatements, statements_size;
    struct carried_sets sets;     /* its plain SETs of session parameters: run again on each server
                                     connection it is bound to after another (pool.c) */
    uint64_t sets_fingerprint;    /* the reported parameters its SETs leave (with none: its key's
                                     baseline applies) */
    bool events;                  /* the app registered event procedures: sticky, and its server
                                     connection is closed when it finishes */
    bool inherited;               /* DIRECT on a connection inherited from the parent process */
    _Atomic int64_t idle_since_ns;/* when its last call left it idle and clean, on the coarse clock
                                     (clock.h: up to a tick early; 0: busy, sticky or not
                                     bound); written by the owner, read by the pool */
    struct client_state client;
    struct session_view *view;    /* UNBOUND: what it answers, with these two: */
    char *last_error;             /* the error message of its last command (NULL: none) */
    struct queued_command *queued;/* QUEUED: the command it sent, kept until sent (queued.c) */
    char *failure;                /* DIRECT after a failed connect or rebind: why (NULL: none) */
    char *failure_shown;          /* what PQerrorMessage last answered with it (status.c) */
    int last_backend_pid;         /* the backend it last ran on */
    int fd;                       /* its own descriptor for PQsocket, from the first time it is
                                     asked for to PQfinish (-1 before): socket.c */
    int fd_copies;                /* the descriptor `fd` was last made a copy of, -1 when that
                                     failed or it has none: socket.c */
    bool queued_failed;           /* its kept command could not be sent: PQgetResult answers
                                     one error result for it (queued.c) */
    bool stand_in;                /* `conn` is a failed connection pqdedup made to say `failure`
                                     (handle_fail): what libpq says of it is never shown */
    struct wake wait;             /* WAITING: turns readable when a server connection may be had,
                                     at the back-off's end or at the deadline (closed otherwise) */
    int64_t wait_deadline_ns;     /* an asynchronous connect's PQDEDUP_MAX_WAIT deadline (0: none yet) */
    struct handle *wait_prev, *wait_next; /* WAITING: on its bucket's list of waiting connects */
    _Atomic(PGcancel *) cancel_target; /* the bound server connection's cancel object, for
                                     PQcancel from any thread or a signal handler; NULL unbound */
    int64_t opened_ns;
    struct handle *prev, *next;   /* on its bucket's list of bound handles (pool.c) */
};

/* The handle behind an app's PGconn *, or NULL when the pointer is not one of pqdedup's (a
 * connection libpq made for a call pqdedup passed through, libpq's own inner calls, NULL).
 * A range check: no lock, no lookup. */
struct handle *handle_of(const PGconn *conn);

/* True while an asynchronous connect is answered by the pool rather than by libpq's own
 * connection: STARTED, PREPARING or WAITING (they read CONNECTION_STARTED). */
static inline bool handle_is_pooled_connect(const struct handle *h)
{
    return h->state == HANDLE_STARTED || h->state == HANDLE_PREPARING || h->state == HANDLE_WAITING;
}

/* The app's PGconn * for a handle. */
static inline PGconn *handle_as_conn(struct handle *h)
{
    return (PGconn *) (void *) h;
}

/* A new handle, still FREE until the caller moves it to STARTED, CONNECTING or BOUND (or gives
 * it back), locked by the caller's thread, with libpq's default client state. Returns NULL
 * when no slot is left (the caller then passes the connect to libpq). */
struct handle *handle_new(void);

/* h's record in the live stats file (stats_file.h), or NULL. */
struct stats_file_handle *handle_stats(const struct handle *h);

/* Gives the slot back (the handle must be FREE and locked by the caller; unlocks it). */
void handle_release(struct handle *h);

/* h registered libpq event procedures: sticky, and its connection is never reused. */
void handle_note_events(struct handle *h);

/* Moves h to `next`; logs and refuses (returns false) a transition the model does not have.
 * Caller holds h's lock (and the pool's when h is on a bucket list). */
bool handle_set_state(struct handle *h, enum handle_state next);

/* Begins one of the app's libpq calls on h: takes h's lock. Returns the connection the call
 * goes to: the bound server connection's (an UNBOUND handle is bound first when need_server;
 * if that fails, h becomes DIRECT on the failed connection, whose error the call then
 * reports), the handle's own (CONNECTING, DIRECT), a failed connection libpq made saying the
 * handle was finished (a use after PQfinish, logged once), or NULL when an UNBOUND handle
 * answers without a server connection.
 * Always pair with handle_leave. */
PGconn *handle_enter(struct handle *h, bool need_server);

/* Ends the call: when it was the outermost and could change the connection's state (not
 * `read_only`), notes whether h is now idle and clean (the pool may then move its server
 * connection to a handle that needs one); unlocks h. */
void handle_leave(struct handle *h, bool read_only);

/* The SQL a call is about to send on h: a statement the classifier cannot vouch for makes h
 * sticky; PREPARE and DEALLOCATE change its set of named prepared statements. */
void handle_note_sql(struct handle *h, const char *sql);

/* PQprepare / PQsendPrepare of `sql` as statement `name` ("" or NULL: the unnamed one). */
void handle_note_prepare(struct handle *h, const char *sql, const char *name);

/* True when h must keep its server connection whatever it does next: sticky, or it has named
 * prepared statements. */
static inline bool handle_is_sticky(const struct handle *h)
{
    return h->sticky || h->nstatements > 0;
}

/* True when h may have changed its session in any way: sticky, named statements, or SETs it
 * carries (its server connection must be reset before anyone else's use, whatever the reset
 * mode). */
static inline bool handle_changed_session(const struct handle *h)
{
    return handle_is_sticky(h) || h->sets.count > 0 || h->sets.npending > 0;
}

/* True while a command with SETs or RESETs h carries is under way: once it is done, they are
 * carried if it succeeded, else h turns sticky (handle_leave). */
static inline bool handle_sets_pending(const struct handle *h)
{
    return h->sets.npending > 0;
}

/* A PQsend* call on h returned `sent`: a command with SETs that was not sent (nor kept) makes
 * h sticky. */
void handle_note_sent(struct handle *h, int sent);

/* A result of one of h's commands, as the app gets it (PQgetResult's, not NULL; PQexec's and
 * the like, where NULL is a failure): one that failed while SETs are pending makes h sticky. */
void handle_note_result(struct handle *h, const PGresult *result);

/* Forgets the session state h followed: named prepared statements and carried SETs (at
 * finish, and at PQreset, which starts a new session). */
void handle_forget_session(struct handle *h);

/* h leaves state pqdedup cannot follow: it keeps its server connection until it finishes. */
void handle_make_sticky(struct handle *h);

/* What PQparameterStatus answers for an unbound handle. */
const char *handle_unbound_parameter(const struct handle *h, const char *name);

/* Remembers what h's bound connection reports, to answer from while h is unbound: the view
 * in *shared when it matches (a clean session's), else a new one that replaces *shared (unless
 * h carries SETs: then it is h's alone), plus
 * h's own last error and backend. Returns false when out of memory (then h must stay bound).
 * Caller holds h's lock, and whatever guards *shared (the pool's lock). */
bool handle_remember_view(struct handle *h, struct session_view **shared);

/* Drops what h remembered (when it is bound again, and when it finishes). */
void handle_forget_view(struct handle *h);

/* Makes `failed`, a connection libpq failed to open, h's own (h has no connection; the caller
 * sets h's state): its message is the reason PQerrorMessage gives first from now on, whatever
 * libpq says of the calls that fail on that account. */
void handle_take_failure(struct handle *h, PGconn *failed);

/* Makes h's connection (it has none) a failed one that pqdedup made to fail for `why` (the
 * caller sets h's state): PQerrorMessage says `why`, then what libpq says of later calls;
 * libpq's own words for the stand-in are never shown. Out of memory, h->conn may be NULL. */
void handle_fail(struct handle *h, const char *why);

/* Drops one reference to a view; frees it with the last. NULL is allowed. */
void session_view_release(struct session_view *view);

/* Fork handlers: the slot table's lock is held across fork(). In the child, the locks of
 * handles another parent thread was inside are made usable again (such a handle was busy, so
 * at its next call it keeps the parent's connection as DIRECT, inherited: pool.c). */
void handle_lock_for_fork(void);
void handle_unlock_after_fork(bool in_child);

#endif
