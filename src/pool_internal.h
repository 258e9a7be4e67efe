/* pool_internal.h: the pool's own structures and helpers, shared by its files (pool.c, pool_pick.c,
 * pool_acquire.c, pool_async.c) and by nothing else. */
#ifndef PQDEDUP_POOL_INTERNAL_H
#define PQDEDUP_POOL_INTERNAL_H

#include "pool.h"
#include "session.h"
#include "stats_file.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "hashtable.h"
#include <utlist.h>

/* After the server refuses a connection for lack of slots, connects of the key take a free
 * or idle handle's connection or wait for one; one of them asks the server again after this
 * long, twice as long after each further refusal, up to the maximum. */
#define REFUSAL_BACKOFF_NS (50 * NS_PER_MS)
#define REFUSAL_BACKOFF_MAX_NS NS_PER_SEC

/* Every server connection the pool owns is in exactly one state. */
enum server_state {
    SERVER_BOUND,     /* serves `handle`; on no list (the handle is on its bucket's bound list) */
    SERVER_FREE,      /* on its bucket's free stack; its reset may still be in flight */
    SERVER_BUSY,      /* taken by one pqdedup call (resetting, checking, closing): on no list */
    SERVER_INHERITED, /* opened by the parent before fork: only ever freed, silently */
};

struct server_conn {
    PGconn *conn;
    struct pool_bucket *bucket;   /* NULL once inherited */
    enum server_state state;
    struct handle *handle;        /* BOUND (and INHERITED: the handle that had it at fork) */
    pthread_t last_thread;        /* the thread of the handle it served last */
    enum reset_pending pending;   /* FREE: what the last finish left in flight */
    bool server_closing;          /* the server said FATAL while pqdedup owned it */
    bool stalled;                 /* FREE: its reset or check did not answer within
                                     PQDEDUP_CHECK_TIMEOUT: taken again only once it has */
    bool reset_needed;            /* the reset query runs before the next handle gets it */
    bool idle_limit_known;        /* server_idle_limit_ns has been read */
    bool reset_keeps_parameters;  /* its reset was seen to leave the reported parameters as a new
                                     connection has them */
    int64_t server_idle_limit_ns; /* the session's idle_session_timeout (0 = none) */
    int64_t opened_ns, freed_ns;
    PGcancel *cancel;             /* made when a handle bound to it asked for one */
    int socket_copy;              /* a descriptor of its socket a finished handle gave the app
                                     (PQsocket's), kept for the next handle's PQsocket; -1: none.
                                     Closed with the connection, dropped when libpq resets it */
    struct server_conn *prev, *next;         /* FREE: its bucket's free stack */
    struct server_conn *all_prev, *all_next; /* every record of this process */
};

struct pool_bucket {
    char *key;                    /* owned; hash key */
    char *conninfo;               /* owned; opens a new connection of the key (key_conninfo) */
    int open;                     /* server connections of this key, plus connects under way */
    int nfree, nbound;
    int peak_bound, peak_bound_before; /* the most handles bound at once since peak_since_ns, and
                                          in the span before it (pool_pick.c: the hot window) */
    int64_t peak_since_ns;
    int nhandles;                 /* handles of this key (each holds a reference) */
    _Atomic int waiters;          /* connects waiting for a server connection */
    int64_t refused_until_ns;     /* no new connection is tried before this (after a refusal) */
    int64_t backoff_ns;           /* the back-off after the next refusal (0: the first one) */
    char refusal_said[320];       /* the server's words at its last refusal (for a connect that
                                     waited in vain and did not ask the server itself) */
    _Atomic uint64_t baseline;    /* the reported parameters of its newest new connection: what a
                                     clean session of the key reports (session_parameters_fingerprint) */
    char target[16];              /* target_session_attrs of the key ("" = any) */
    pthread_cond_t changed;       /* a connection was freed or closed, or a handle went idle */
    struct server_conn *free;     /* LIFO: head is the most recently freed */
    struct handle *bound;         /* handles bound to one of its connections */
    struct handle *waiting;       /* asynchronous connects waiting (their wakes fire on a change) */
    struct session_view *view;    /* what its clean sessions report (handle.h), shared by the
                                     unbound handles of the key */
    struct stats_file_key *stats; /* its record in the live stats file (NULL: none) */
    UT_hash_handle hh;
};

/* ---- pool.c: the pool's state; unless said otherwise, callers hold the pool's lock ---- */

/* Locks the pool, first forgetting a parent's pool if this is a forked child's first call. */
void lock_pool(void);
void unlock_pool(void);

/* True once the process is exiting: connects then go to libpq untouched. */
bool pool_is_shutting_down(void);

/* Waits for a change in b (wake_waiters) until `until` (CLOCK_MONOTONIC), or a spurious wake. */
void pool_wait_changed(struct pool_bucket *b, const struct timespec *until);

/* The bucket for `key`, created on first use; NULL when out of memory. */
struct pool_bucket *bucket_for(const char *key);

/* Frees a bucket no handle, connection or waiter uses any more. */
void bucket_drop_if_unused(struct pool_bucket *b);

/* Something changed in b: waiting connects look again. */
void wake_waiters(struct pool_bucket *b);

/* A record for a connection libpq just made for b (counted in b->open). NULL: out of memory. */
struct server_conn *new_server(struct pool_bucket *b, PGconn *conn);

/* Takes s off the free stack; it is then BUSY. */
void take_free(struct server_conn *s);

/* Takes s out of the pool for closing onto *list; close_list() closes them without the lock. */
void push_to_close(struct server_conn **list, struct server_conn *s);
void close_list(struct server_conn *list);

/* Past PQDEDUP_MAX_LIFETIME, or free past PQDEDUP_IDLE_TIMEOUT. */
bool is_expired(const struct server_conn *s, int64_t now);

/* At most once a second, detaches expired free connections onto *to_close. */
void sweep_expired(int64_t now, struct server_conn **to_close);

/* Detaches every free connection of the other keys onto *to_close. Returns how many. */
int free_other_keys(const struct pool_bucket *except, struct server_conn **to_close);

/* Makes s serve h, h in `state`; bind_finish() (h's thread, no lock) applies h's settings. */
void bind_server(struct handle *h, struct server_conn *s, enum handle_state state);
bool bind_finish(struct handle *h);

/* Runs the SETs h carries on conn, a connection h is about to use (one round trip, at most
 * PQDEDUP_CHECK_TIMEOUT). Returns false, with why[size] saying why (logged), when they failed:
 * conn must then not serve h. */
bool pool_replay_sets(struct handle *h, PGconn *conn, char *why, size_t size);

/* Stops cancels through h from reaching its connection; false while one is under way. */
bool detach_cancel(struct handle *h);

/* Takes h's server connection away (h and the pool locked): h UNBOUND, the connection BUSY.
 * False, changing nothing, when h cannot let go now. */
bool unbind(struct handle *h);

/* ---- pool_pick.c: which server connection a handle gets ---- */

bool at_cap(const struct pool_bucket *b);
struct server_conn *pick_free(struct pool_bucket *b, int64_t now, bool nonblocking, bool pressure,
                              struct server_conn **to_close);
struct handle *pick_idle_handle(struct pool_bucket *b, int64_t now, bool pressure);
void note_baseline(struct pool_bucket *b, uint64_t fingerprint);
bool reset_kept_parameters(struct server_conn *s, uint64_t baseline);
bool needs_check(const struct server_conn *s, const char *target, int64_t now);
enum session_step make_ready(struct server_conn *s, const char *target, bool from_handle, bool handle_dirty,
                             int64_t now, int64_t deadline, uint64_t baseline);
void learn_new(struct server_conn *s);

/* Writes to out why a connect fails with no connection of b to be had: the cap, or the
 * server's last refusal for lack of slots and pqdedup's wait. Logged as a warning when `final`
 * (a connect that fails with it; not one that starts waiting). Caller holds pool_lock. */
void refusal_reason(const struct pool_bucket *b, bool final, char *out, size_t size);

/* The server refused `refused`, a connection of b, for lack of slots: the back-off grows, and
 * its words are kept for the connects that then fail without asking it (refusal_reason). */
void note_refusal(struct pool_bucket *b, int64_t now, const PGconn *refused);

/* ---- pool_async.c: asynchronous connects ---- */

/* Looks for a server connection for the asynchronous connect h without blocking (see there). */
void acquire_async(struct handle *h, const struct connect_call *call, bool polled);

/* Puts h (a connect or command that must wait; h->wait_deadline_ns set) on b's waiting list,
 * its wake (h->wait) firing on a change, at the refusal back-off's end, or at the deadline.
 * Returns false, changing nothing, when no wake can be opened (out of descriptors). */
bool start_waiting(struct handle *h, struct pool_bucket *b, int64_t now);

/* Takes h (WAITING or QUEUED) off its bucket's waiting list and closes its wake. */
void stop_waiting(struct handle *h);

/* Lets go of h's server connection after it failed to prepare (PREPARING, RESETTING):
 * closed. Takes the lock itself. */
void drop_preparing(struct handle *h);

/* What must be sent on s, about to serve another handle, before it is ready: an idle handle's
 * (`from_handle`) reset (or "" when PQDEDUP_RESET=dirty spares a clean one), "check" (an empty
 * query) for a free one idle long, or NULL: nothing (s->pending may still be in flight).
 * Counts it in the key's stats. Caller holds pool_lock. */
const char *preparation_of(struct server_conn *s, bool from_handle, bool handle_dirty, int64_t now);

/* Sends what preparation_of() said, without waiting (no pool_lock). */
void send_preparation(struct server_conn *s, const char *send);

/* One step of preparing the connection h (PREPARING or RESETTING, locked, no pool_lock) is
 * bound to: collects what is in flight, without waiting unless `wait` (then up to
 * PQDEDUP_CHECK_TIMEOUT, after which it fails). Returns DONE with h BOUND; WAIT (poll its
 * socket; only without `wait`); FAILED with the connection closed and h without one, its
 * state for the caller to set. */
enum session_step preparation_step(struct handle *h, bool wait);

#endif
