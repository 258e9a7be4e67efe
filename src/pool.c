/* pool.c: the pool of server connections by key: free, bound to a handle, moved between them. */
#define _GNU_SOURCE
#include "pool.h"
#include "clock.h"
#include "key.h"
#include "log.h"
#include "real.h"
#include "session.h"
#include "settings.h"
#include "socket.h"
#include "stats.h"
#include "stats_file.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define HASH_NONFATAL_OOM 1
#include <uthash.h>
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
    bool reset_needed;            /* the reset query runs before the next handle gets it */
    bool idle_limit_known;        /* server_idle_limit_ns has been read */
    bool reset_keeps_parameters;  /* its reset was seen to leave the reported parameters as a new
                                     connection has them */
    int64_t server_idle_limit_ns; /* the session's idle_session_timeout (0 = none) */
    int64_t opened_ns, freed_ns;
    PGcancel *cancel;             /* made when a handle bound to it asked for one */
    struct server_conn *prev, *next;         /* FREE: its bucket's free stack */
    struct server_conn *all_prev, *all_next; /* every record of this process */
};

struct pool_bucket {
    char *key;                    /* owned; hash key */
    char *conninfo;               /* owned; opens a new connection of the key (key_conninfo) */
    int open;                     /* server connections of this key, plus connects under way */
    int nfree, nbound;
    int nhandles;                 /* handles of this key (each holds a reference) */
    _Atomic int waiters;          /* connects waiting for a server connection */
    int64_t refused_until_ns;     /* no new connection is tried before this (after a refusal) */
    int64_t backoff_ns;           /* the back-off after the next refusal (0: the first one) */
    _Atomic uint64_t baseline;    /* the reported parameters of its newest new connection: what a
                                     clean session of the key reports (session_parameters_fingerprint) */
    char target[16];              /* target_session_attrs of the key ("" = any) */
    pthread_cond_t changed;       /* a connection was freed or closed, or a handle went idle */
    struct server_conn *free;     /* LIFO: head is the most recently freed */
    struct handle *bound;         /* handles bound to one of its connections */
    struct handle *waiting;       /* asynchronous connects waiting (their timerfds fire on a change) */
    struct session_view *view;    /* what its clean sessions report (handle.h), shared by the
                                     unbound handles of the key */
    struct stats_file_key *stats; /* its record in the live stats file (NULL: none) */
    UT_hash_handle hh;
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pool_bucket *buckets;   /* by key */
static struct server_conn *all_conns; /* every server connection record */
static int64_t last_sweep_ns;
static bool shutting_down;
static bool exit_hook_after_ssl;
static volatile pid_t current_pid;    /* set at init and in the child after fork */
static pid_t pool_pid;                /* the process the pool's lists belong to */

#undef uthash_nonfatal_oom
#define uthash_nonfatal_oom(elt) (hash_oom = true)
static bool hash_oom;

/* ---- fork ------------------------------------------------------------------ */

/* No lock of pqdedup is held across fork: all are taken before it (none is ever taken while
 * another of these is held, so their order is free) and released after. */
static void fork_prepare(void)
{
    key_lock_for_fork();
    handle_lock_for_fork();
    pthread_mutex_lock(&pool_lock);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&pool_lock);
    handle_unlock_after_fork(false);
    key_unlock_after_fork();
}

_Atomic bool pool_forked;

static void fork_child(void)
{
    atomic_store_explicit(&pool_forked, true, memory_order_relaxed);
    current_pid = getpid();
    stats_file_after_fork_child(); /* never the parent's stats file again */
    pthread_mutex_unlock(&pool_lock);
    handle_unlock_after_fork(true);
    key_unlock_after_fork();
}

static void init_bucket_cond(struct pool_bucket *b)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&b->changed, &attr);
    pthread_condattr_destroy(&attr);
}

/* After a fork, nothing the parent opened may be reused, reset or written to by this
 * process: free connections are closed silently, bound ones become INHERITED (their handle
 * decides at its next call: pool_leave_inherited). Only the forking thread lives on in the
 * child. Buckets stay (handles refer to them) but start empty. Caller holds pool_lock;
 * returns the records to free silently after unlocking. */
static struct server_conn *forget_parent_pool(void)
{
    struct server_conn *to_free = NULL, *s, *tmp;
    DL_FOREACH_SAFE2(all_conns, s, tmp, all_next) {
        if (s->state == SERVER_BOUND) {
            s->state = SERVER_INHERITED;
            s->bucket = NULL;
        } else if (s->state != SERVER_INHERITED) {
            /* free, or mid-reset by a thread the child does not have: no handle has it */
            DL_DELETE2(all_conns, s, all_prev, all_next);
            s->next = to_free;
            to_free = s;
        }
    }
    struct pool_bucket *b, *btmp;
    HASH_ITER(hh, buckets, b, btmp) {
        /* The parent's waiters do not exist here: a fresh condition variable. */
        init_bucket_cond(b);
        b->open = b->nfree = b->nbound = 0;
        atomic_store(&b->waiters, 0);
        b->free = NULL;
        b->bound = NULL;
        b->waiting = NULL;
    }
    pool_pid = current_pid;
    return to_free;
}

static void free_inherited(struct server_conn *list)
{
    while (list != NULL) {
        struct server_conn *next = list->next;
        session_close_inherited(list->conn);
        free(list->cancel);
        free(list);
        list = next;
    }
}

/* Locks the pool, first forgetting a parent's pool if this is a new process.
 * Every public entry point goes through here. */
static void lock_pool(void)
{
    pthread_mutex_lock(&pool_lock);
    if (pool_pid != current_pid) {
        struct server_conn *inherited = forget_parent_pool();
        pthread_mutex_unlock(&pool_lock);
        free_inherited(inherited);
        pthread_mutex_lock(&pool_lock);
    }
}

static void unlock_pool(void)
{
    pthread_mutex_unlock(&pool_lock);
}

/* ---- buckets (caller holds pool_lock) ---------------------------------------- */

/* Returns the bucket for `key`, created on first use; NULL when out of memory. */
static struct pool_bucket *bucket_for(const char *key)
{
    struct pool_bucket *b;
    HASH_FIND_STR(buckets, key, b);
    if (b != NULL)
        return b;
    b = calloc(1, sizeof *b);
    if (b == NULL || (b->key = strdup(key)) == NULL || (b->conninfo = key_conninfo(key)) == NULL) {
        if (b != NULL)
            free(b->key);
        free(b);
        return NULL;
    }
    init_bucket_cond(b);
    key_get(key, "target_session_attrs", b->target, sizeof b->target);
    hash_oom = false;
    HASH_ADD_KEYPTR(hh, buckets, b->key, strlen(b->key), b);
    if (hash_oom) {
        pthread_cond_destroy(&b->changed);
        free(b->conninfo);
        free(b->key);
        free(b);
        return NULL;
    }
    b->stats = stats_file_key(key);
    return b;
}

/* Frees a bucket no handle, connection or waiter uses any more. */
static void bucket_drop_if_unused(struct pool_bucket *b)
{
    if (b->open > 0 || b->nhandles > 0 || atomic_load(&b->waiters) > 0 || b->free != NULL || b->bound != NULL ||
        b->waiting != NULL)
        return;
    HASH_DEL(buckets, b);
    pthread_cond_destroy(&b->changed);
    session_view_release(b->view);
    free(b->conninfo);
    free(b->key);
    free(b);
}

/* Fires h's timerfd at `when` (monotonic ns; 0: at once). */
static void arm_wait_fd(struct handle *h, int64_t when)
{
    struct itimerspec at = { .it_value = { .tv_sec = when / NS_PER_SEC, .tv_nsec = when % NS_PER_SEC } };
    if (when <= 0)
        at.it_value = (struct timespec) { .tv_nsec = 1 }; /* zero would disarm it */
    timerfd_settime(h->wait_fd, when <= 0 ? 0 : TFD_TIMER_ABSTIME, &at, NULL);
}

/* Something changed in b: connects waiting for a server connection look again (blocking ones
 * wake up, asynchronous ones find their descriptor readable). Caller holds pool_lock. */
static void wake_waiters(struct pool_bucket *b)
{
    pthread_cond_broadcast(&b->changed);
    struct handle *h;
    DL_FOREACH2(b->waiting, h, wait_next)
        arm_wait_fd(h, 0);
}

/* ---- server connection records (caller holds pool_lock) -------------------------- */

/* A record for a connection libpq just made for bucket b; counted in b->open already.
 * Returns NULL when out of memory. */
static struct server_conn *new_server(struct pool_bucket *b, PGconn *conn)
{
    struct server_conn *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->conn = conn;
    s->bucket = b;
    s->state = SERVER_BUSY;
    s->opened_ns = monotonic_ns();
    DL_APPEND2(all_conns, s, all_prev, all_next);
    stats_add_key(stats_key_counters(b->stats), opened);
    return s;
}

/* Takes s off the free stack; it is then BUSY. */
static void take_free(struct server_conn *s)
{
    DL_DELETE(s->bucket->free, s);
    s->bucket->nfree--;
    stats_file_key_free(s->bucket->stats, s->bucket->nfree);
    s->state = SERVER_BUSY;
}

/* Takes s out of the pool for closing (its slot counts no more) and onto *list; the caller
 * closes the list with close_list() without the lock. */
static void push_to_close(struct server_conn **list, struct server_conn *s)
{
    if (s->state == SERVER_FREE)
        take_free(s);
    s->state = SERVER_BUSY;
    DL_DELETE2(all_conns, s, all_prev, all_next);
    s->bucket->open--;
    stats_add_key(stats_key_counters(s->bucket->stats), closed);
    wake_waiters(s->bucket);
    s->next = *list;
    *list = s;
}

/* Closes detached connections (Terminate is sent) and frees their records. Called without
 * pool_lock. */
static void close_list(struct server_conn *list)
{
    while (list != NULL) {
        struct server_conn *next = list->next;
        session_close_quietly(list->conn);
        real.PQfreeCancel(list->cancel);
        free(list);
        list = next;
    }
}

static bool is_expired(const struct server_conn *s, int64_t now)
{
    if (settings.max_lifetime_ns > 0 && now - s->opened_ns >= settings.max_lifetime_ns)
        return true;
    return s->state == SERVER_FREE && settings.idle_timeout_ns > 0 &&
           now - s->freed_ns >= settings.idle_timeout_ns;
}

/* At most once a second, detaches free connections past their idle time or lifetime,
 * oldest first, onto *to_close. */
static void sweep_expired(int64_t now, struct server_conn **to_close)
{
    if (now - last_sweep_ns < NS_PER_SEC)
        return;
    last_sweep_ns = now;
    struct pool_bucket *b, *btmp;
    HASH_ITER(hh, buckets, b, btmp) {
        while (b->free != NULL && is_expired(b->free->prev, now))
            push_to_close(to_close, b->free->prev);
        bucket_drop_if_unused(b);
    }
}

/* Detaches every free connection of the other keys onto *to_close, so the server has their
 * slots back. Returns how many. */
static int free_other_keys(const struct pool_bucket *except, struct server_conn **to_close)
{
    int n = 0;
    struct pool_bucket *b, *btmp;
    HASH_ITER(hh, buckets, b, btmp) {
        if (b == except)
            continue;
        while (b->free != NULL) {
            push_to_close(to_close, b->free->prev);
            n++;
        }
        bucket_drop_if_unused(b);
    }
    return n;
}

/* ---- exit ------------------------------------------------------------------- */

/* Closes every free connection of this process with a proper Terminate, so the server logs
 * a normal disconnection. Runs from atexit; safe to run twice. Connections bound to handles
 * the app never finished are left to the end of the process, as plain libpq leaves them. */
static void pool_shutdown(void)
{
    lock_pool();
    bool first = !shutting_down;
    shutting_down = true;
    struct server_conn *to_close = NULL;
    struct pool_bucket *b, *btmp;
    HASH_ITER(hh, buckets, b, btmp) {
        while (b->free != NULL)
            push_to_close(&to_close, b->free);
    }
    unlock_pool();
    /* Collect what is still in flight first: a server still sending a reset's result to a
     * closed socket logs a broken connection. */
    int64_t timeout = settings.check_timeout_ns < NS_PER_SEC ? settings.check_timeout_ns : NS_PER_SEC;
    int64_t deadline = monotonic_ns() + timeout;
    for (struct server_conn *s = to_close; s != NULL; s = s->next)
        if (s->pending != PENDING_NONE)
            session_finish_reset(s->conn, &s->pending, "", false, deadline, &s->server_closing);
    close_list(to_close);
    if (first)
        stats_print_if_asked();
}

void pool_init(void)
{
    current_pid = pool_pid = getpid();
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    atexit(pool_shutdown);
}

/* OpenSSL registers its own cleanup with atexit when the first SSL connection is made; exit
 * handlers run in reverse, so pool_shutdown is registered once more after that, to close
 * free SSL connections before OpenSSL is torn down. Caller holds pool_lock. */
static void exit_hook_after_first_ssl(PGconn *conn)
{
    if (!exit_hook_after_ssl && real.PQsslInUse(conn)) {
        exit_hook_after_ssl = true;
        atexit(pool_shutdown);
    }
}

/* ---- binding a handle ----------------------------------------------------------- */

/* Makes s serve h: s BOUND, h in `state` (BOUND, or STARTED / PREPARING for an asynchronous
 * connect) and on the bucket's bound list. Caller holds pool_lock and h's lock; bind_finish()
 * then does the work that needs no lock. */
static void bind(struct handle *h, struct server_conn *s, enum handle_state state)
{
    struct pool_bucket *b = s->bucket;
    s->state = SERVER_BOUND;
    s->handle = h;
    s->last_thread = pthread_self();
    h->server = s;
    h->conn = s->conn;
    handle_set_state(h, state);
    DL_APPEND(b->bound, h);
    b->nbound++;
}

/* The rest of binding, in h's thread without pool_lock: the handle's client state, its
 * descriptor and its cancel object follow it to s. Returns false when the client state
 * cannot be applied (nonblocking mode refused): then h must not use s. */
static bool bind_finish(struct handle *h)
{
    struct server_conn *s = h->server;
    /* What it answered while unbound goes, but for its last error, which stays what
     * PQerrorMessage says until its next command (handle_leave). */
    session_view_release(h->view);
    h->view = NULL;
    if (!session_apply_client_state(s->conn, &h->client))
        return false;
    socket_follow(h);
    /* Cancels through h (PQcancel, PQrequestCancel) reach this connection's backend from now. */
    if (s->cancel == NULL)
        s->cancel = real.PQgetCancel(s->conn);
    atomic_store(&h->cancel_target, s->cancel);
    return true;
}

/* Stops cancels through h from reaching its server connection. Returns false when one is
 * under way (the target is put back): h must then keep its connection for now. */
static bool detach_cancel(struct handle *h)
{
    PGcancel *target = atomic_exchange(&h->cancel_target, NULL);
    if (atomic_load(&h->cancelling) == 0)
        return true;
    atomic_store(&h->cancel_target, target);
    return false;
}

/* Takes s away from h (both locked by the caller, with pool_lock): h becomes UNBOUND,
 * answering from a copy of the view it had; s is BUSY, its client state back to libpq's
 * defaults. Returns false, changing nothing, when h cannot let go now (out of memory, a
 * cancel under way). */
static bool unbind(struct handle *h)
{
    struct server_conn *s = h->server;
    if (!handle_remember_view(h, &s->bucket->view))
        return false;
    if (!detach_cancel(h)) {
        handle_forget_view(h);
        return false;
    }
    session_clear_client_state(s->conn);
    DL_DELETE(s->bucket->bound, h);
    s->bucket->nbound--;
    h->server = NULL;
    h->conn = NULL;
    handle_set_state(h, HANDLE_UNBOUND);
    socket_follow(h);
    s->state = SERVER_BUSY;
    s->handle = NULL;
    return true;
}

/* ---- what a connect may take ---------------------------------------------------- */

/* A connect may open one connection more than its key's handles need while the last freed
 * one still resets, so it need not wait for that reset. */
static bool may_open_spare(const struct pool_bucket *b)
{
    return b->open < b->nbound + 2 && b->open < settings.keep_per_key &&
           (settings.max_per_key == 0 || b->open < settings.max_per_key);
}

static bool at_cap(const struct pool_bucket *b)
{
    return settings.max_per_key > 0 && b->open >= settings.max_per_key;
}

/* How many of the most recently freed connections of b a connect considers: as many as its
 * key's bound handles, and two more. The older ones (what a burst left) are never taken while
 * these are there, so they stay unused and age out (PQDEDUP_IDLE_TIMEOUT), however fast a
 * program churns. */
static int hot_free(const struct pool_bucket *b)
{
    return b->nbound + 2;
}

/* Among the hot free connections that `self` served last (mine) or other threads did
 * (!mine), the most recently freed one whose reset has completed or was never sent; NULL when
 * none has. Newest first: the warmest backend. May read sockets (one per connection whose
 * reset is in flight, until one is done). */
static struct server_conn *find_ready(struct pool_bucket *b, pthread_t self, bool mine)
{
    struct server_conn *s;
    int considered = 0;
    DL_FOREACH(b->free, s) {
        if (considered++ == hot_free(b))
            break;
        if (pthread_equal(s->last_thread, self) == mine &&
            (s->pending == PENDING_NONE || session_reset_arrived(s->conn)))
            return s;
    }
    return NULL;
}

/* Picks the free connection to bind, among the hot ones (hot_free): a ready one this thread's
 * handles used last (a backend that keeps talking to one thread stays on its CPU:
 * bench/README.md), else a ready one of another thread; failing that, when no spare may be
 * opened (or none at all, under `pressure`), the oldest hot one (its reset was sent first,
 * so it is waited for the shortest). Expired ones go to *to_close. Returns NULL when there is
 * none to take; the pick is BUSY. */
static struct server_conn *pick_free(struct pool_bucket *b, int64_t now, bool pressure,
                                     struct server_conn **to_close)
{
    struct server_conn *s, *tmp;
    DL_FOREACH_SAFE(b->free, s, tmp)
        if (is_expired(s, now))
            push_to_close(to_close, s);
    pthread_t self = pthread_self();
    if ((s = find_ready(b, self, true)) == NULL && (s = find_ready(b, self, false)) == NULL) {
        if (b->free == NULL || (may_open_spare(b) && !pressure))
            return NULL;
        int considered = 1;
        for (s = b->free; s->next != NULL && considered < hot_free(b); s = s->next)
            considered++;
    }
    take_free(s);
    return s;
}

/* A handle of bucket b whose server connection may move to another handle: bound, idle and
 * clean since its last call, for at least PQDEDUP_UNBIND_AFTER (any time at all under
 * `pressure`), the longest idle first, and reporting the parameters a clean session of its
 * key reports (one that does not changed its session in ways the SQL did not show, such as
 * a function's set_config: it becomes sticky). Returned locked (its lock is only tried: one
 * in use is not idle); NULL when there is none. */
static struct handle *pick_idle_handle(struct pool_bucket *b, int64_t now, bool pressure)
{
    for (;;) {
        struct handle *best = NULL, *h;
        int64_t best_since = 0;
        DL_FOREACH(b->bound, h) {
            int64_t since = atomic_load_explicit(&h->idle_since_ns, memory_order_relaxed);
            if (since == 0 || (!pressure && now - since < settings.unbind_after_ns) ||
                (best != NULL && since >= best_since))
                continue;
            if (pthread_mutex_trylock(&h->lock) != 0)
                continue;
            if (h->depth == 0 && h->state == HANDLE_BOUND &&
                atomic_load_explicit(&h->idle_since_ns, memory_order_relaxed) == since) {
                if (best != NULL)
                    pthread_mutex_unlock(&best->lock);
                best = h;
                best_since = since;
            } else {
                pthread_mutex_unlock(&h->lock);
            }
        }
        if (best == NULL || session_parameters_fingerprint(best->conn) == atomic_load(&b->baseline))
            return best;
        handle_make_sticky(best);
        pthread_mutex_unlock(&best->lock);
    }
}

/* The key's reference fingerprint of reported parameters: a new connection's. (After a server
 * configuration reload, sessions report the new values: connections that no longer match are
 * closed at their next reset, and the next new one sets the reference again.) Caller holds
 * pool_lock. */
static void note_baseline(struct pool_bucket *b, uint64_t fingerprint)
{
    atomic_store(&b->baseline, fingerprint);
}

/* After s's first reset: true when its reported parameters are still what a new connection of
 * the key reports. A reset that changes them (a pooler such as PgBouncer in front, which sets
 * the client's parameters with SET, so that RESET ALL reverts them) would hand the next handle
 * a session other than the one it asked for: such a connection is closed instead, and the
 * first time it happens this is logged with what to do. Called without pool_lock. */
static bool reset_kept_parameters(struct server_conn *s, uint64_t baseline)
{
    if (s->reset_keeps_parameters)
        return true;
    if (session_parameters_fingerprint(s->conn) != baseline) {
        static _Atomic bool said;
        if (!atomic_exchange(&said, true))
            log_msg(LOG_WARN, "the reset query changes the parameters the server reports for this key "
                              "(a pooler in front that sets them, such as PgBouncer?): its connections are "
                              "closed instead of reused; set PQDEDUP_RESET_QUERY='' in front of a transaction "
                              "pooler (README, Beyond one process)");
        return false;
    }
    s->reset_keeps_parameters = true;
    return true;
}

/* True when a free connection must answer a round trip before it is handed out: a server that
 * ends idle sessions gets one (which restarts its idle clock) once half its timeout has
 * passed; one idle PQDEDUP_CHECK_AFTER gets one; a key that asked for a kind of server
 * re-checks it every time. */
static bool needs_check(const struct server_conn *s, const char *target, int64_t now)
{
    int64_t idle = now - s->freed_ns;
    return idle >= settings.check_after_ns || target[0] != '\0' ||
           (s->server_idle_limit_ns > 0 && idle >= s->server_idle_limit_ns / 2);
}

/* Makes a connection taken from the free stack or from an idle handle fit for a new handle:
 * collects or runs its reset, checks it when it was idle long (or the key asks), learns the
 * server's idle_session_timeout once, all before `deadline` (the connect's: it waits at most
 * PQDEDUP_CHECK_TIMEOUT in all, whatever it tries). Called without pool_lock, s BUSY.
 * Returns SESSION_STEP_DONE when it may be handed out; SESSION_STEP_WAIT when the deadline
 * came first on a connection not known to be broken (a network path that stopped answering):
 * s->pending says what is in flight, and s goes back to the free stack rather than being
 * closed (its session was clean: nothing is lost, and it may answer later); FAILED when it
 * must be closed. */
static enum session_step make_ready(struct server_conn *s, const char *target, bool from_handle,
                                    bool handle_dirty, int64_t now, int64_t deadline, uint64_t baseline)
{
    bool check = needs_check(s, target, now);
    bool reset;
    enum session_step step;
    if (from_handle) {
        /* A handle's session: its reset runs now (PQDEDUP_RESET=dirty skips it for a clean one). */
        reset = !settings.reset_only_dirty || handle_dirty;
        s->reset_needed = false;
        step = session_start_reset(s->conn, reset ? settings.reset_query : "", &s->pending, &s->server_closing)
                   ? session_finish_reset(s->conn, &s->pending, "", check, deadline, &s->server_closing)
                   : SESSION_STEP_FAILED;
        if (reset && settings.reset_query[0] != '\0')
            stats_add_key(stats_key_counters(s->bucket->stats), resets);
        else
            stats_add_key(stats_key_counters(s->bucket->stats), resets_skipped);
    } else {
        reset = s->reset_needed;
        step = session_finish_reset(s->conn, &s->pending, reset ? settings.reset_query : "", check, deadline,
                                    &s->server_closing);
    }
    if (step != SESSION_STEP_DONE)
        return step;
    if (!session_looks_alive(s->conn) || !session_matches_target(s->conn, target) ||
        (reset && settings.reset_query[0] != '\0' && !reset_kept_parameters(s, baseline)))
        return SESSION_STEP_FAILED;
    if (!s->idle_limit_known) {
        int64_t left = deadline - monotonic_ns();
        s->idle_limit_known = left > 0 && session_read_idle_timeout(s->conn, left, &s->server_idle_limit_ns);
        if (!s->idle_limit_known)
            return SESSION_STEP_FAILED;
    }
    return SESSION_STEP_DONE;
}

/* A connection libpq just opened for b (counted in b->open): learns the server's
 * idle_session_timeout right away when the connect is complete, beside the connect's own
 * cost, so no reuse needs a round trip for it. Called without pool_lock. */
static void learn_new(struct server_conn *s)
{
    s->idle_limit_known = session_read_idle_timeout(s->conn, settings.check_timeout_ns, &s->server_idle_limit_ns);
}


/* Waits for a connection of b to be freed or closed or a handle to go idle, until the
 * deadline (set on first use, PQDEDUP_MAX_WAIT from now) or, during a refusal back-off, its
 * end. Returns false once the deadline has passed. Caller holds pool_lock. */
static bool wait_for_release(struct pool_bucket *b, int64_t now, int64_t *deadline)
{
    if (*deadline == 0) {
        stats_add_key(stats_key_counters(b->stats), waits);
        *deadline = now + settings.max_wait_ns;
    }
    if (now >= *deadline)
        return false;
    int64_t until = *deadline;
    if (b->refused_until_ns > now && b->refused_until_ns < until)
        until = b->refused_until_ns;
    struct timespec ts = { .tv_sec = until / NS_PER_SEC, .tv_nsec = until % NS_PER_SEC };
    atomic_fetch_add(&b->waiters, 1);
    pthread_cond_timedwait(&b->changed, &pool_lock, &ts);
    atomic_fetch_sub(&b->waiters, 1);
    return true;
}

/* A failed connection, made by libpq itself, whose PQerrorMessage says why pqdedup refused:
 * libpq reports the unknown keyword, which is the sentence. */
static PGconn *refused_at_cap(void)
{
    char reason[400];
    snprintf(reason, sizeof reason,
             "pqdedup: PQDEDUP_MAX_PER_KEY=%d connections with these parameters are already open in "
             "this process and none was freed within PQDEDUP_MAX_WAIT=%lldms; raise "
             "PQDEDUP_MAX_PER_KEY or PQDEDUP_MAX_WAIT, or finish connections sooner",
             settings.max_per_key, (long long) (settings.max_wait_ns / NS_PER_MS));
    const char *const keywords[] = { reason, NULL };
    const char *const values[] = { "refused", NULL };
    log_msg(LOG_WARN, "%s", reason);
    return real.PQconnectStartParams(keywords, values, 0);
}

/* How acquire() ended. */
enum acquired { ACQUIRED_BOUND, ACQUIRED_OPENING, ACQUIRED_FAILED, ACQUIRED_PASSTHROUGH };

/*
 * Finds h (locked by the caller, not bound, h->bucket set) a server connection and binds it:
 *   1. a free one of the key, ready (its reset done); when every free one is still resetting,
 *      a spare is opened (3) if one may be, else the one whose reset ends first is taken;
 *   2. when none is free, an idle, clean handle's (idle PQDEDUP_UNBIND_AFTER; any, under
 *      pressure), reset;
 *   3. a new one from `call`, below PQDEDUP_MAX_PER_KEY and not during a refusal back-off;
 *      a refusal for lack of slots closes the other keys' free connections and puts the key
 *      under pressure;
 *   4. wait for one of the above, up to PQDEDUP_MAX_WAIT; then fail with the server's last
 *      refusal, or the cap's message.
 * `started` binds as STARTED (PQconnectStart*). Returns ACQUIRED_FAILED with *failed a failed
 * PGconn for the app; ACQUIRED_OPENING with h CONNECTING (an asynchronous `call`).
 */
static enum acquired acquire(struct handle *h, const struct connect_call *call, bool started, PGconn **failed)
{
    struct pool_bucket *b = h->bucket;
    struct server_conn *to_close = NULL;
    PGconn *refusal = NULL; /* the server's last refusal, reported if nothing else works */
    int64_t deadline = 0;
    enum acquired result;
    *failed = NULL;
    lock_pool();
    int64_t now = monotonic_ns();
    /* All the round trips this connect makes to check or reset connections wait
     * PQDEDUP_CHECK_TIMEOUT in all; after that it only opens a new one or waits. */
    int64_t check_deadline = now + settings.check_timeout_ns;
    sweep_expired(now, &to_close);
    for (;;) {
        if (shutting_down) {
            result = ACQUIRED_PASSTHROUGH;
            break;
        }
        bool pressure = at_cap(b) || now < b->refused_until_ns;
        bool may_check = now < check_deadline;
        struct server_conn *s = may_check ? pick_free(b, now, pressure, &to_close) : NULL;
        /* Free ones still resetting: a spare is opened rather than a handle's taken. */
        struct handle *victim =
            s == NULL && b->free == NULL && may_check ? pick_idle_handle(b, now, pressure) : NULL;
        bool victim_dirty = false;
        if (victim != NULL) {
            struct server_conn *taken = victim->server;
            victim_dirty = handle_is_sticky(victim);
            if (unbind(victim)) {
                s = taken;
                s->freed_ns = atomic_load_explicit(&victim->idle_since_ns, memory_order_relaxed);
                s->freed_ns = s->freed_ns != 0 ? s->freed_ns : now;
            }
            pthread_mutex_unlock(&victim->lock);
            if (s == NULL) {
                now = monotonic_ns();
                continue;
            }
        }
        if (s != NULL) {
            uint64_t baseline = atomic_load(&b->baseline);
            unlock_pool();
            enum session_step step =
                make_ready(s, b->target, victim != NULL, victim_dirty, now, check_deadline, baseline);
            lock_pool();
            now = monotonic_ns();
            if (step == SESSION_STEP_WAIT) {
                /* Not answering in time, not known to be broken: kept, free, its reset still in
                 * flight, last in line; this connect goes on without it. */
                s->state = SERVER_FREE;
                DL_APPEND(b->free, s);
                b->nfree++;
                continue;
            }
            if (step == SESSION_STEP_DONE) {
                bind(h, s, started ? HANDLE_STARTED : HANDLE_BOUND);
                if (victim != NULL)
                    stats_add_key(stats_key_counters(b->stats), moved);
                else
                    stats_add_key(stats_key_counters(b->stats), reused);
                result = ACQUIRED_BOUND;
                break;
            }
            stats_add_key(stats_key_counters(b->stats), dead);
            log_msg(LOG_INFO, "discarding a server connection that failed its reset or check, or was closed by the server");
            push_to_close(&to_close, s);
            continue;
        }
        if (!pressure) {
            /* After a refusal only one connect at a time asks the server again. */
            if (b->backoff_ns != 0)
                b->refused_until_ns = now + b->backoff_ns;
            b->open++;
            unlock_pool();
            PGconn *conn = connect_call_open(call);
            bool ok = conn != NULL && real.PQstatus(conn) != CONNECTION_BAD;
            bool complete = ok && real.PQstatus(conn) == CONNECTION_OK;
            struct server_conn *fresh = NULL;
            uint64_t fingerprint = 0;
            if (complete) {
                lock_pool();
                fresh = new_server(b, conn);
                unlock_pool();
                if (fresh != NULL) {
                    learn_new(fresh);
                    fingerprint = session_parameters_fingerprint(conn);
                }
            }
            lock_pool();
            now = monotonic_ns();
            if (ok && !complete) {
                /* PQconnectStart*: the handle polls it; b->open keeps counting it. */
                h->conn = conn;
                handle_set_state(h, HANDLE_CONNECTING);
                result = ACQUIRED_OPENING;
                break;
            }
            if (fresh != NULL) {
                b->backoff_ns = 0;
                b->refused_until_ns = 0;
                note_baseline(b, fingerprint);
                bind(h, fresh, HANDLE_BOUND);
                result = ACQUIRED_BOUND;
                break;
            }
            b->open--;
            wake_waiters(b);
            if (conn != NULL && !complete && session_refused_for_slots(conn)) {
                stats_add_key(stats_key_counters(b->stats), refusals);
                log_msg(LOG_INFO, "the server refused a new connection for lack of slots; taking an idle "
                                  "handle's connection or waiting for one");
                b->backoff_ns = b->backoff_ns == 0 ? REFUSAL_BACKOFF_NS
                                : b->backoff_ns * 2 > REFUSAL_BACKOFF_MAX_NS ? REFUSAL_BACKOFF_MAX_NS
                                                                              : b->backoff_ns * 2;
                b->refused_until_ns = now + b->backoff_ns;
                if (refusal != NULL) {
                    unlock_pool();
                    real.PQfinish(refusal);
                    lock_pool();
                }
                refusal = conn;
                /* Their slots go back to the server now, before anyone waits. */
                if (free_other_keys(b, &to_close) > 0) {
                    unlock_pool();
                    close_list(to_close);
                    to_close = NULL;
                    lock_pool();
                }
                now = monotonic_ns();
                continue;
            }
            if (complete)
                real.PQfinish(conn); /* out of memory for its record */
            *failed = complete ? NULL : conn;
            result = complete ? ACQUIRED_PASSTHROUGH : ACQUIRED_FAILED;
            break;
        }
        if (to_close != NULL) {
            /* Expired or dead ones give their slots back before the wait. */
            unlock_pool();
            close_list(to_close);
            to_close = NULL;
            lock_pool();
            now = monotonic_ns();
            continue;
        }
        if (deadline == 0)
            stats_file_wait_begins(handle_stats(h), now);
        if (!wait_for_release(b, now, &deadline)) {
            stats_add_key(stats_key_counters(b->stats), wait_failures);
            *failed = refusal != NULL ? refusal : refused_at_cap();
            refusal = NULL;
            result = ACQUIRED_FAILED;
            break;
        }
        now = monotonic_ns();
    }
    if (result == ACQUIRED_BOUND && atomic_load(&b->waiters) > 0)
        wake_waiters(b); /* a release may be enough for more than one */
    unlock_pool();
    if (refusal != NULL)
        real.PQfinish(refusal);
    close_list(to_close);
    if (result == ACQUIRED_BOUND && !bind_finish(h)) {
        /* The handle's nonblocking mode could not be set: it keeps the connection, DIRECT. */
        log_msg(LOG_WARN, "cannot apply a connection's client settings to another server connection");
    }
    return result;
}


/* ---- asynchronous connects ---------------------------------------------------------
 * PQconnectStart* must never block the app's event loop, so its handle goes through states
 * the app's PQconnectPoll loop drives: STARTED (a ready free connection: OK at the first poll),
 * PREPARING (a pooled connection whose reset or check is in flight: poll its socket),
 * CONNECTING (libpq's new connection), WAITING (none can be had now: poll h->wait_fd). A
 * refusal for lack of slots during the poll is handled as for a blocking connect: another
 * handle's idle connection, a wait, and only after PQDEDUP_MAX_WAIT the server's error. */

/* A failed connection, made by libpq itself, whose PQerrorMessage says why a connect waits. */
static PGconn *explained(const char *why)
{
    const char *const keywords[] = { why, NULL };
    const char *const values[] = { "", NULL };
    return real.PQconnectStartParams(keywords, values, 0);
}

/* Takes h off its bucket's waiting list (it is WAITING). Caller holds pool_lock. */
static void stop_waiting(struct handle *h)
{
    struct pool_bucket *b = h->bucket;
    DL_DELETE2(b->waiting, h, wait_prev, wait_next);
    atomic_fetch_sub(&b->waiters, 1);
    close(h->wait_fd);
    h->wait_fd = -1;
}

/* What the app's PQconnectPoll reports for h's state now. */
static PostgresPollingStatusType poll_status(const struct handle *h)
{
    switch (h->state) {
    case HANDLE_BOUND:
    case HANDLE_STARTED:
        return PGRES_POLLING_OK;
    case HANDLE_CONNECTING:
        return PGRES_POLLING_WRITING; /* as after PQconnectStart: libpq's own first wait */
    case HANDLE_PREPARING:
    case HANDLE_WAITING:
        return PGRES_POLLING_READING;
    default:
        return PGRES_POLLING_FAILED;
    }
}

/*
 * Looks for a server connection for the asynchronous connect h (locked, not bound; h->bucket
 * set; h->conn is NULL or a failed connection saying why it waits) without blocking, in the
 * order acquire() uses, and leaves h:
 *   STARTED or, when `polled` (inside PQconnectPoll), BOUND: a ready free connection;
 *   PREPARING: a free one whose reset is still in flight, or an idle handle's, reset sent now,
 *     or one idle long enough to need a check (an empty query sent);
 *   CONNECTING: a new one from `call` (NULL: the key's);
 *   WAITING: none now (its timerfd fires at the back-off's end, the deadline, or a change);
 *   DIRECT: libpq's connect failed at once (not for lack of slots), or PQDEDUP_MAX_WAIT passed:
 *     h->conn says why (outside a poll the bucket is let go: the caller gives h back).
 */
static void acquire_async(struct handle *h, const struct connect_call *call, bool polled)
{
    struct pool_bucket *b = h->bucket;
    struct server_conn *to_close = NULL;
    lock_pool();
    if (h->state == HANDLE_WAITING)
        stop_waiting(h);
    int64_t now = monotonic_ns();
    if (h->wait_deadline_ns == 0)
        h->wait_deadline_ns = now + settings.max_wait_ns;
    sweep_expired(now, &to_close);
    bool pressure = at_cap(b) || now < b->refused_until_ns;
    struct server_conn *s = shutting_down ? NULL : pick_free(b, now, pressure, &to_close);
    struct handle *victim = s == NULL && b->free == NULL && !shutting_down ? pick_idle_handle(b, now, pressure) : NULL;
    PGconn *reason = h->conn; /* the last refusal, if any: no longer needed unless h waits */
    h->conn = NULL;
    const char *send = NULL;  /* what to send on s once unlocked */
    if (victim != NULL) {
        struct server_conn *taken = victim->server;
        bool dirty = handle_is_sticky(victim);
        if (unbind(victim)) {
            s = taken;
            s->freed_ns = now;
            send = !settings.reset_only_dirty || dirty ? settings.reset_query : "";
            stats_add_key(stats_key_counters(b->stats), moved);
            if (send[0] != '\0')
                stats_add_key(stats_key_counters(b->stats), resets);
            else
                stats_add_key(stats_key_counters(b->stats), resets_skipped);
        }
        pthread_mutex_unlock(&victim->lock);
    } else if (s != NULL) {
        int64_t idle = now - s->freed_ns;
        bool check = idle >= settings.check_after_ns || b->target[0] != '\0' ||
                     (s->server_idle_limit_ns > 0 && idle >= s->server_idle_limit_ns / 2);
        if (s->pending == PENDING_NONE && check)
            send = "check";
        stats_add_key(stats_key_counters(b->stats), reused);
    }
    if (s != NULL) {
        if (s->pending == PENDING_NONE && send == NULL) {
            bind(h, s, polled ? HANDLE_BOUND : HANDLE_STARTED);
        } else {
            if (send != NULL)
                s->reset_needed = false; /* what is sent now is the whole reset */
            bind(h, s, HANDLE_PREPARING); /* not idle until its reset is collected */
        }
    } else if (!pressure && !shutting_down) {
        if (b->backoff_ns != 0)
            b->refused_until_ns = now + b->backoff_ns;
        b->open++;
        unlock_pool();
        struct connect_call by_key = { .shape = CALL_CONNINFO, .blocking = false, .conninfo = b->conninfo };
        PGconn *conn = connect_call_open(call != NULL ? call : &by_key);
        lock_pool();
        if (conn != NULL && real.PQstatus(conn) != CONNECTION_BAD) {
            h->conn = conn;
            handle_set_state(h, HANDLE_CONNECTING);
        } else {
            b->open--;
            wake_waiters(b);
            h->conn = conn != NULL ? conn : explained("pqdedup: out of memory");
            handle_set_state(h, HANDLE_DIRECT);
        }
    } else if (now < h->wait_deadline_ns && !shutting_down) {
        h->wait_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (reason == NULL)
            reason = at_cap(b) ? refused_at_cap()
                               : explained("pqdedup: the server refused new connections for lack of slots "
                                           "and none was freed in time");
        h->conn = reason;
        reason = NULL;
        if (h->wait_fd >= 0) {
            DL_APPEND2(b->waiting, h, wait_prev, wait_next);
            atomic_fetch_add(&b->waiters, 1);
            int64_t when = h->wait_deadline_ns;
            if (b->refused_until_ns > now && b->refused_until_ns < when)
                when = b->refused_until_ns;
            arm_wait_fd(h, when);
            handle_set_state(h, HANDLE_WAITING);
            if (polled)
                stats_add_key(stats_key_counters(b->stats), waits);
        } else {
            handle_set_state(h, HANDLE_DIRECT);
        }
    } else {
        stats_add_key(stats_key_counters(b->stats), wait_failures);
        if (reason == NULL)
            reason = at_cap(b) ? refused_at_cap() : explained("pqdedup: exit under way");
        h->conn = reason;
        reason = NULL;
        handle_set_state(h, HANDLE_DIRECT);
    }
    /* Failed inside PQconnectStart*: the caller hands libpq's connection to the app and gives
     * the handle back. Failed in a poll: the handle stays, with its key (PQreset tries again). */
    bool released = h->state == HANDLE_DIRECT && !polled;
    if (released) {
        b->nhandles--;
        bucket_drop_if_unused(b);
    }
    unlock_pool();
    if (released)
        h->bucket = NULL;
    if (reason != NULL)
        real.PQfinish(reason);
    close_list(to_close);
    if (h->state == HANDLE_PREPARING && send != NULL) {
        /* An idle handle's session is reset; a free one idle long is checked (an empty query,
         * which also restarts the server's idle_session_timeout). A send that fails shows as a
         * failure at the next step. */
        struct server_conn *taken = h->server;
        bool sent = strcmp(send, "check") == 0
                        ? real.PQsendQuery(taken->conn, "") == 1
                        : session_start_reset(taken->conn, send, &taken->pending, &taken->server_closing);
        if (!sent || strcmp(send, "check") == 0)
            taken->pending = PENDING_RESET;
    } else if (h->state == HANDLE_BOUND || h->state == HANDLE_STARTED) {
        bind_finish(h);
    }
}

/* Lets go of h's server connection after it failed to prepare (PREPARING): closed. */
static void drop_preparing(struct handle *h)
{
    struct server_conn *s = h->server, *to_close = NULL;
    lock_pool();
    DL_DELETE(s->bucket->bound, h);
    s->bucket->nbound--;
    h->server = NULL;
    h->conn = NULL;
    stats_add_key(stats_key_counters(s->bucket->stats), dead);
    push_to_close(&to_close, s);
    unlock_pool();
    close_list(to_close);
}

PostgresPollingStatusType pool_connect_poll(struct handle *h)
{
    struct pool_bucket *b = h->bucket;
    switch (h->state) {
    case HANDLE_STARTED:
        handle_set_state(h, HANDLE_BOUND);
        return PGRES_POLLING_OK;
    case HANDLE_PREPARING: {
        struct server_conn *s = h->server;
        enum session_step step = session_reset_step(s->conn, &s->pending,
                                                    s->reset_needed ? settings.reset_query : "", &s->server_closing);
        if (step == SESSION_STEP_WAIT)
            return PGRES_POLLING_READING;
        if (step == SESSION_STEP_DONE && session_matches_target(s->conn, b->target) &&
            (settings.reset_query[0] == '\0' || reset_kept_parameters(s, atomic_load(&b->baseline)))) {
            handle_set_state(h, HANDLE_BOUND);
            bind_finish(h);
            return PGRES_POLLING_OK;
        }
        drop_preparing(h);
        handle_set_state(h, HANDLE_FREE);
        acquire_async(h, NULL, true);
        return poll_status(h);
    }
    case HANDLE_CONNECTING: {
        PostgresPollingStatusType result = real.PQconnectPoll(h->conn);
        if (result != PGRES_POLLING_FAILED || !session_refused_for_slots(h->conn)) {
            if (result == PGRES_POLLING_OK || result == PGRES_POLLING_FAILED)
                pool_connect_finished(h);
            return result;
        }
        /* Refused for lack of slots: as a blocking connect, but without blocking. */
        lock_pool();
        stats_add_key(stats_key_counters(b->stats), refusals);
        b->open--;
        int64_t now = monotonic_ns();
        b->backoff_ns = b->backoff_ns == 0 ? REFUSAL_BACKOFF_NS
                        : b->backoff_ns * 2 > REFUSAL_BACKOFF_MAX_NS ? REFUSAL_BACKOFF_MAX_NS
                                                                      : b->backoff_ns * 2;
        b->refused_until_ns = now + b->backoff_ns;
        struct server_conn *to_close = NULL;
        free_other_keys(b, &to_close);
        wake_waiters(b);
        unlock_pool();
        close_list(to_close);
        handle_set_state(h, HANDLE_FREE); /* h->conn: the refusal, kept to report if need be */
        acquire_async(h, NULL, true);
        return poll_status(h);
    }
    case HANDLE_WAITING: {
        uint64_t fired;
        ssize_t ignored = read(h->wait_fd, &fired, sizeof fired);
        (void) ignored;
        acquire_async(h, NULL, true);
        return poll_status(h);
    }
    case HANDLE_BOUND:
    case HANDLE_UNBOUND:
        return PGRES_POLLING_OK;
    case HANDLE_DIRECT:
    case HANDLE_FREE:
        break;
    }
    return real.PQconnectPoll(h->conn);
}

/* ---- the public entry points ------------------------------------------------------ */

enum connect_outcome pool_connect(struct handle *h, const char *key, const struct connect_call *call,
                                  PGconn **failed)
{
    lock_pool();
    stats_add(connects);
    struct pool_bucket *b = shutting_down ? NULL : bucket_for(key);
    if (b != NULL) {
        b->nhandles++;
        if (b->stats != NULL)
            atomic_fetch_add_explicit(&b->stats->counters.connects, 1, memory_order_relaxed);
    }
    unlock_pool();
    if (b == NULL)
        return CONNECT_PASSTHROUGH;
    h->bucket = b;
    stats_file_handle_key(handle_stats(h), b->stats);
    if (!call->blocking) {
        acquire_async(h, call, false);
        if (h->state != HANDLE_DIRECT)
            return CONNECT_BOUND;
        /* libpq's own connect failed at once: the app gets libpq's connection, as plain. */
        *failed = h->conn;
        h->conn = NULL;
        handle_set_state(h, HANDLE_FREE);
        return CONNECT_FAILED; /* pool_connect_async already let go of the bucket */
    }
    switch (acquire(h, call, false, failed)) {
    case ACQUIRED_BOUND:
        return CONNECT_BOUND;
    case ACQUIRED_OPENING:
        return CONNECT_OPENING;
    case ACQUIRED_FAILED:
    case ACQUIRED_PASSTHROUGH:
        break;
    }
    lock_pool();
    b->nhandles--;
    bucket_drop_if_unused(b);
    unlock_pool();
    h->bucket = NULL;
    return *failed != NULL ? CONNECT_FAILED : CONNECT_PASSTHROUGH;
}

bool pool_rebind(struct handle *h)
{
    struct pool_bucket *b = h->bucket;
    struct connect_call call = connect_call_from_key(b->conninfo);
    PGconn *failed = NULL;
    switch (acquire(h, &call, false, &failed)) {
    case ACQUIRED_BOUND:
        return true;
    case ACQUIRED_OPENING: /* a blocking call never leaves one opening */
    case ACQUIRED_PASSTHROUGH:
        if (failed == NULL) /* exit under way: a plain connection of its own */
            failed = real.PQconnectdb(b->conninfo);
        break;
    case ACQUIRED_FAILED:
        break;
    }
    /* The app sees the failure on this handle, as on a plain connection that broke, and why.
     * The handle keeps its key: PQreset tries the pool again. */
    handle_forget_view(h);
    const char *why = failed != NULL ? real.PQerrorMessage(failed) : NULL;
    h->failure = why != NULL && why[0] != '\0' ? strdup(why) : NULL;
    h->conn = failed;
    if (h->state != HANDLE_DIRECT)
        handle_set_state(h, HANDLE_DIRECT);
    socket_follow(h);
    return false;
}

void pool_connect_finished(struct handle *h)
{
    struct pool_bucket *b = h->bucket;
    bool ok = real.PQstatus(h->conn) == CONNECTION_OK;
    struct server_conn *s = NULL;
    uint64_t fingerprint = ok ? session_parameters_fingerprint(h->conn) : 0;
    lock_pool();
    if (ok)
        s = new_server(b, h->conn);
    if (s != NULL) {
        note_baseline(b, fingerprint);
        bind(h, s, HANDLE_BOUND);
        unlock_pool();
        bind_finish(h);
        return;
    }
    /* Failed (or out of memory): the handle keeps libpq's connection, outside the pool, and its
     * key (PQreset tries the pool again). */
    b->open--;
    wake_waiters(b);
    unlock_pool();
    handle_set_state(h, HANDLE_DIRECT);
}

void pool_connect_seen(struct handle *h)
{
    lock_pool();
    handle_set_state(h, HANDLE_BOUND);
    unlock_pool();
}

void pool_note_idle(struct handle *h)
{
    struct pool_bucket *b = h->bucket;
    if (atomic_load_explicit(&b->waiters, memory_order_relaxed) == 0)
        return;
    lock_pool();
    wake_waiters(b);
    unlock_pool();
}

/* ---- finish ------------------------------------------------------------------------ */

/* Starts the reset of a connection whose handle finished, then keeps it free or closes it.
 * Called without pool_lock, s BUSY (owned by this call). */
static void reset_and_keep(struct server_conn *s, bool worth_keeping, bool dirty, int64_t now)
{
    struct pool_bucket *b = s->bucket;
    enum reset_pending pending = PENDING_NONE;
    /* PQDEDUP_RESET=dirty skips the reset when nothing pqdedup saw could change the session:
     * no such SQL, and no reported parameter changed. */
    s->reset_needed = !settings.reset_only_dirty || dirty ||
                      (worth_keeping && session_parameters_fingerprint(s->conn) != atomic_load(&b->baseline));
    const char *reset_query = s->reset_needed ? settings.reset_query : "";
    bool reset_started =
        worth_keeping && session_start_reset(s->conn, reset_query, &pending, &s->server_closing);

    lock_pool();
    if (reset_started && !shutting_down && b->nfree < settings.keep_per_key) {
        exit_hook_after_first_ssl(s->conn);
        s->state = SERVER_FREE;
        s->freed_ns = now;
        s->pending = pending;
        DL_PREPEND(b->free, s);
        b->nfree++;
        stats_file_key_free(b->stats, b->nfree);
        if (s->reset_needed && settings.reset_query[0] != '\0')
            stats_add_key(stats_key_counters(b->stats), resets);
        else
            stats_add_key(stats_key_counters(b->stats), resets_skipped);
        wake_waiters(b);
        bucket_drop_if_unused(b);
        unlock_pool();
        return;
    }
    struct server_conn *to_close = NULL;
    push_to_close(&to_close, s);
    bucket_drop_if_unused(b);
    unlock_pool();
    close_list(to_close);
}

void pool_finish(struct handle *h)
{
    if (h->state == HANDLE_BOUND && pool_server_is_inherited(h))
        pool_leave_inherited(h); /* a forked child's: UNBOUND or DIRECT, never reset here */
    struct pool_bucket *b = h->bucket;
    struct server_conn *s = h->server;
    /* No cancel through this handle may reach the connection once it moves on. */
    while (!detach_cancel(h))
        sched_yield();
    switch (h->state) {
    case HANDLE_BOUND:
    case HANDLE_STARTED: {
        int64_t now = monotonic_ns();
        lock_pool();
        DL_DELETE(b->bound, h);
        b->nbound--;
        b->nhandles--;
        s->state = SERVER_BUSY;
        s->handle = NULL;
        h->server = NULL;
        h->conn = NULL;
        handle_set_state(h, HANDLE_FREE);
        bool worth_keeping = !shutting_down && !h->events && b->nfree < settings.keep_per_key &&
                             !is_expired(s, now);
        unlock_pool();
        reset_and_keep(s, worth_keeping, handle_is_sticky(h), now);
        return;
    }
    case HANDLE_CONNECTING:
        real.PQfinish(h->conn);
        h->conn = NULL;
        lock_pool();
        b->open--;
        b->nhandles--;
        wake_waiters(b);
        bucket_drop_if_unused(b);
        unlock_pool();
        break;
    case HANDLE_PREPARING: /* its connection's reset is half done: closed */
        drop_preparing(h);
        lock_pool();
        b->nhandles--;
        bucket_drop_if_unused(b);
        unlock_pool();
        break;
    case HANDLE_WAITING:
        lock_pool();
        stop_waiting(h);
        b->nhandles--;
        bucket_drop_if_unused(b);
        unlock_pool();
        real.PQfinish(h->conn);
        h->conn = NULL;
        break;
    case HANDLE_UNBOUND:
        lock_pool();
        b->nhandles--;
        bucket_drop_if_unused(b);
        unlock_pool();
        break;
    case HANDLE_DIRECT:
        if (h->inherited)
            session_close_inherited(h->conn);
        else
            real.PQfinish(h->conn);
        h->conn = NULL;
        if (b != NULL) { /* a connect or rebind that failed: the handle kept its key */
            lock_pool();
            b->nhandles--;
            bucket_drop_if_unused(b);
            unlock_pool();
        }
        break;
    case HANDLE_FREE:
        return;
    }
    handle_set_state(h, HANDLE_FREE);
}

void pool_make_cancel_target(struct handle *h)
{
    struct server_conn *s = h->server;
    if (s == NULL)
        return;
    if (s->cancel == NULL)
        s->cancel = real.PQgetCancel(s->conn);
    atomic_store(&h->cancel_target, s->cancel);
}

void pool_server_was_reset(struct handle *h)
{
    struct server_conn *s = h->server;
    while (!detach_cancel(h))
        sched_yield();
    if (s->cancel != NULL) {
        real.PQfreeCancel(s->cancel);
        s->cancel = NULL;
    }
    pool_make_cancel_target(h);
    s->idle_limit_known = false;
    s->server_idle_limit_ns = 0;
    socket_follow(h);
}

/* ---- fork ------------------------------------------------------------------------- */

bool pool_server_is_inherited(const struct handle *h)
{
    if (pool_pid != current_pid) {
        /* A forked child's first call: the parent's pool is forgotten first. */
        lock_pool();
        unlock_pool();
    }
    return h->server != NULL && h->server->state == SERVER_INHERITED;
}

void pool_leave_inherited(struct handle *h)
{
    struct server_conn *s = h->server;
    bool idle = atomic_load_explicit(&h->idle_since_ns, memory_order_relaxed) != 0;
    lock_pool(); /* forgets the parent's pool first, if this is the child's first call */
    DL_DELETE2(all_conns, s, all_prev, all_next);
    unlock_pool();
    h->server = NULL;
    atomic_store(&h->cancel_target, NULL);
    struct session_view *none = NULL;
    if (idle && handle_remember_view(h, &none)) {
        session_view_release(none);
        /* Its session stays the parent's; this handle continues on one of its own. */
        PGconn *conn = h->conn;
        h->conn = NULL;
        handle_set_state(h, HANDLE_UNBOUND); /* the child's lists never had it */
        socket_follow(h);
        session_close_inherited(conn);
    } else {
        /* Busy at fork (or out of memory): it goes on with the parent's connection, as
         * plain libpq would; only ever freed quietly. */
        h->inherited = true;
        handle_set_state(h, HANDLE_DIRECT);
        lock_pool();
        h->bucket->nhandles--;
        bucket_drop_if_unused(h->bucket);
        unlock_pool();
        h->bucket = NULL;
    }
    real.PQfreeCancel(s->cancel);
    free(s);
}
