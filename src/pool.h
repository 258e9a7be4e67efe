/* pool.h: the server connections pqdedup owns, grouped by key, and which handle each serves. */
#ifndef PQDEDUP_POOL_H
#define PQDEDUP_POOL_H

#include "connect_call.h"
#include "handle.h"

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* True in a process forked from one where pqdedup ran: connections may be inherited
 * (pool_server_is_inherited is worth asking). */
extern _Atomic bool pool_forked;

/* Sets up fork handling and the exit hook; called once before any other call. */
void pool_init(void);

/* How pool_connect answered. */
enum connect_outcome {
    CONNECT_BOUND,       /* h is BOUND (or STARTED for PQconnectStart*) to a server connection */
    CONNECT_OPENING,     /* PQconnectStart*: h is CONNECTING on libpq's new connection */
    CONNECT_FAILED,      /* *failed is libpq's failed PGconn for the app (the server's error);
                            h is left FREE for the caller to give back */
    CONNECT_REFUSED,     /* pqdedup could not get h a server connection (the cap, or no slot
                            freed within PQDEDUP_MAX_WAIT): h is DIRECT on a failed connection
                            saying why, for the app; it keeps its key (PQreset tries again) */
    CONNECT_PASSTHROUGH, /* not pooled (exit under way, out of memory): the caller makes the
                            app's call with libpq and gives h back */
};

/* Answers the app's connect `call` for `key` (borrowed) with handle h (FREE, locked by the
 * caller). In order: a free server connection of the key (reset done); an idle, clean
 * handle's (PQDEDUP_UNBIND_AFTER; at once under pressure: the cap or a refusal), reset first;
 * a new one, made with the app's own call (below PQDEDUP_MAX_PER_KEY, and not right after the
 * server refused one for lack of slots); else waits up to PQDEDUP_MAX_WAIT for one to be
 * freed. May block for that long. */
enum connect_outcome pool_connect(struct handle *h, const char *key, const struct connect_call *call,
                                  PGconn **failed);

/* h is UNBOUND (locked by the caller) and a call needs its server, or DIRECT after a connect
 * or rebind that failed (with its key, h->conn closed by the caller) and the app resets it:
 * binds one as pool_connect does, a new one made from the key. Returns true when h is BOUND;
 * false when h is DIRECT on a failed connection (whose error, and why, the app then sees). */
bool pool_rebind(struct handle *h);

/* How pool_rebind_or_queue answered. */
enum rebind_outcome {
    REBIND_BOUND,  /* h is BOUND */
    REBIND_QUEUED, /* none could be had without waiting: h is QUEUED, its wake set to fire */
    REBIND_RESETTING, /* one that needs a round trip first: h is RESETTING, its reset sent */
    REBIND_FAILED, /* h is DIRECT on a failed connection, as for pool_rebind */
};

/* As pool_rebind for an UNBOUND or QUEUED h, but unless `may_wait`, where pool_rebind would
 * wait for a release it leaves h QUEUED (on its key's waiting list; h->wait fires when a
 * server connection may be had, at the back-off's end, and at PQDEDUP_MAX_WAIT from its first
 * try, after which it fails). Opening a new connection, or resetting another handle's, still
 * takes the round trips they take. */
enum rebind_outcome pool_rebind_or_queue(struct handle *h, bool may_wait);

/* One step of h's RESETTING (locked): collects its connection's reset without waiting unless
 * `wait`. Returns DONE with h BOUND, WAIT, or FAILED with h UNBOUND again (the connection
 * closed as broken). */
enum session_step pool_resetting_step(struct handle *h, bool wait);

/* h (CONNECTING, locked) finished connecting: on CONNECTION_OK its connection joins the pool
 * and h is BOUND; otherwise h becomes DIRECT on the failed connection (keeping its key). */
void pool_connect_finished(struct handle *h);

/* h (STARTED, locked) was polled for the first time: it is BOUND from now on. */
void pool_connect_seen(struct handle *h);

/* The app's PQconnectPoll of h (locked) while it connects asynchronously (STARTED, PREPARING,
 * CONNECTING, WAITING): one step, never blocking; a refusal for lack of slots is answered as a
 * blocking connect's would be. Returns what libpq's PQconnectPoll would: OK once h is bound,
 * READING or WRITING to wait on PQsocket, FAILED (h is then DIRECT on the failure). */
PostgresPollingStatusType pool_connect_poll(struct handle *h);

/* The app's PQfinish of h (locked): its server connection is reset and kept, or closed;
 * then h is FREE (the caller gives the slot back). */
void pool_finish(struct handle *h);

/* h (locked) was left idle and clean by the app's last call: wakes connects waiting for a
 * server connection of its key. Costs one atomic load when none waits. */
void pool_note_idle(struct handle *h);

/* A RESETTING handle's PQreset: its kept command is dropped, as libpq's reset drops one in
 * flight, its half-reset server connection closed, and it is UNBOUND again (with the view it
 * answered from). Caller holds h's lock. */
void pool_abandon_resetting(struct handle *h);

/* The fingerprint of reported parameters h's session should show (session.h): what its
 * carried SETs left, or with none a clean session's of its key. Caller holds h's lock. */
uint64_t pool_expected_fingerprint(const struct handle *h);

/* Makes sure the connection h (locked) is bound to, if any, has the libpq cancel object that
 * cancels through h use (every binding makes one too). */
void pool_make_cancel_target(struct handle *h);

/* At h's finish (h locked, before pool_finish): when h is BOUND and the app has its PQsocket
 * descriptor, a copy of the connection's socket, the copy goes with the server connection
 * instead of being closed (and h->fd is -1); otherwise nothing changes. */
void pool_keep_socket_copy(struct handle *h);

/* For PQsocket of h (locked, BOUND, no descriptor yet): the copy of its connection's socket a
 * finished handle left, now h's; -1 when there is none. */
int pool_take_socket_copy(struct handle *h);

/* Before libpq resets h's connection (h locked), whatever h's state: a copy kept with the
 * pooled connection h has would point at the old socket, so it is closed. */
void pool_drop_socket_copy(struct handle *h);

/* h (locked, BOUND) had its server connection reset by libpq (PQreset, PQresetPoll): a new
 * backend, so its cancel object, idle limit and the handle's descriptor are renewed. */
void pool_server_was_reset(struct handle *h);

/* True when h is BOUND to a connection inherited from the parent process (forked child). */
bool pool_server_is_inherited(const struct handle *h);

/* In a forked child, h (locked) was BOUND to its parent's connection: an idle, clean h lets
 * it go (closed without a word on its socket) and becomes UNBOUND; a busy one keeps it, as
 * plain libpq would, and becomes DIRECT (inherited: freed quietly at finish). */
void pool_leave_inherited(struct handle *h);

#endif
