/* pool.c: the pool of server connections by key: its state, binding and unbinding, finish, fork, exit. */
#define _GNU_SOURCE
#include "pool_internal.h"
#include "clock.h"
#include "key.h"
#include "log.h"
#include "real.h"
#include "settings.h"
#include "queued.h"
#include "socket.h"
#include "stats.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    wake_lock_for_fork();
}

static void fork_parent(void)
{
    wake_unlock_after_fork(false);
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
    wake_unlock_after_fork(true);
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
        b->peak_bound = b->peak_bound_before = 0;
        atomic_store(&b->waiters, 0);
        b->free = NULL;
        b->bound = NULL;
        b->waiting = NULL;
    }
    pool_pid = current_pid;
    return to_free;
}

/* Closes s's socket copy, if it has one (its owner: the caller holds s). */
static void drop_socket_copy(struct server_conn *s)
{
    socket_close_descriptor(&s->socket_copy);
}

static void free_inherited(struct server_conn *list)
{
    while (list != NULL) {
        struct server_conn *next = list->next;
        drop_socket_copy(list);
        session_close_inherited(list->conn);
        free(list->cancel);
        free(list);
        list = next;
    }
}

/* Locks the pool, first forgetting a parent's pool if this is a new process.
 * Every public entry point goes through here. */
void lock_pool(void)
{
    pthread_mutex_lock(&pool_lock);
    if (pool_pid != current_pid) {
        struct server_conn *inherited = forget_parent_pool();
        pthread_mutex_unlock(&pool_lock);
        free_inherited(inherited);
        pthread_mutex_lock(&pool_lock);
    }
}

void unlock_pool(void)
{
    pthread_mutex_unlock(&pool_lock);
}

bool pool_is_shutting_down(void)
{
    return shutting_down;
}

void pool_wait_changed(struct pool_bucket *b, const struct timespec *until)
{
    pthread_cond_timedwait(&b->changed, &pool_lock, until);
}

/* ---- buckets (caller holds pool_lock) ---------------------------------------- */

/* Returns the bucket for `key`, created on first use; NULL when out of memory. */
struct pool_bucket *bucket_for(const char *key)
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
void bucket_drop_if_unused(struct pool_bucket *b)
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

/* Something changed in b: connects waiting for a server connection look again (blocking ones
 * wake up, asynchronous ones find their descriptor readable). Caller holds pool_lock. */
void wake_waiters(struct pool_bucket *b)
{
    pthread_cond_broadcast(&b->changed);
    struct handle *h;
    DL_FOREACH2(b->waiting, h, wait_next)
        wake_fire(&h->wait);
}

/* ---- server connection records (caller holds pool_lock) -------------------------- */

/* A record for a connection libpq just made for bucket b; counted in b->open already.
 * Returns NULL when out of memory. */
struct server_conn *new_server(struct pool_bucket *b, PGconn *conn)
{
    struct server_conn *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->conn = conn;
    s->bucket = b;
    s->state = SERVER_BUSY;
    s->socket_copy = -1;
    s->opened_ns = monotonic_ns();
    DL_APPEND2(all_conns, s, all_prev, all_next);
    stats_add_key(stats_key_counters(b->stats), opened);
    return s;
}

/* Takes s off the free stack; it is then BUSY. */
void take_free(struct server_conn *s)
{
    DL_DELETE(s->bucket->free, s);
    s->bucket->nfree--;
    stats_file_key_free(s->bucket->stats, s->bucket->nfree);
    s->state = SERVER_BUSY;
    s->stalled = false;
}

/* Takes s out of the pool for closing (its slot counts no more) and onto *list; the caller
 * closes the list with close_list() without the lock. */
void push_to_close(struct server_conn **list, struct server_conn *s)
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
void close_list(struct server_conn *list)
{
    while (list != NULL) {
        struct server_conn *next = list->next;
        drop_socket_copy(list);
        session_close_quietly(list->conn);
        real.PQfreeCancel(list->cancel);
        free(list);
        list = next;
    }
}

bool is_expired(const struct server_conn *s, int64_t now)
{
    if (settings.max_lifetime_ns > 0 && now - s->opened_ns >= settings.max_lifetime_ns)
        return true;
    return s->state == SERVER_FREE && settings.idle_timeout_ns > 0 &&
           now - s->freed_ns >= settings.idle_timeout_ns;
}

/* At most once a second, detaches free connections past their idle time or lifetime,
 * oldest first, onto *to_close. */
void sweep_expired(int64_t now, struct server_conn **to_close)
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
int free_other_keys(const struct pool_bucket *except, struct server_conn **to_close)
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
void bind_server(struct handle *h, struct server_conn *s, enum handle_state state)
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
    if (b->nbound > b->peak_bound)
        b->peak_bound = b->nbound;
}

bool pool_replay_sets(struct handle *h, PGconn *conn, char *why, size_t size)
{
    char error[256] = "out of memory";
    char *sql = carried_sets_sql(&h->sets);
    bool ok = sql != NULL && session_replay(conn, sql, monotonic_ns() + settings.check_timeout_ns, error, sizeof error);
    free(sql);
    if (ok) {
        h->sets_fingerprint = session_parameters_fingerprint(conn);
        return true;
    }
    snprintf(why, size, "pqdedup: could not run this connection's SET statements again on another server "
                        "connection: %s", error);
    log_msg(LOG_WARN, "%s", why);
    return false;
}

/* Runs the SETs h carries on the server connection it was just bound to, before anything of
 * its own (one round trip, blocking, at most PQDEDUP_CHECK_TIMEOUT). Returns false when they
 * failed: the connection is closed and h is DIRECT on a failed connection saying why, as a
 * connection that broke (PQreset starts it over, without them). */
static bool replay_sets(struct handle *h)
{
    char why[400];
    if (pool_replay_sets(h, h->conn, why, sizeof why))
        return true;
    drop_preparing(h);
    handle_fail(h, why);
    handle_set_state(h, HANDLE_DIRECT);
    socket_follow(h);
    return false;
}

/* The rest of binding, in h's thread without pool_lock: the SETs it carries are run again,
 * then the handle's client state, its descriptor and its cancel object follow it to s. Returns
 * false when the SETs failed (h is DIRECT then: replay_sets) or the client state cannot be
 * applied (nonblocking mode refused): then h must not use s. */
bool bind_finish(struct handle *h)
{
    struct server_conn *s = h->server;
    if (h->sets.count > 0 && !replay_sets(h))
        return false;
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
bool detach_cancel(struct handle *h)
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
bool unbind(struct handle *h)
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
        reset_and_keep(s, worth_keeping, handle_changed_session(h), now);
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
    case HANDLE_RESETTING:
        queued_forget(h);
        /* fall through */
    case HANDLE_PREPARING: /* its connection's reset is half done: closed */
        drop_preparing(h);
        lock_pool();
        b->nhandles--;
        bucket_drop_if_unused(b);
        unlock_pool();
        break;
    case HANDLE_QUEUED:
        queued_forget(h);
        lock_pool();
        stop_waiting(h);
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

void pool_abandon_resetting(struct handle *h)
{
    queued_forget(h);
    drop_preparing(h);
    handle_set_state(h, HANDLE_UNBOUND);
    socket_follow(h);
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

/* ---- PQsocket's copies of a server connection's socket ---------------------------------
 * A handle's PQsocket descriptor is a copy (dup) of its bound connection's socket (socket.c).
 * At the handle's finish the copy stays with the connection, still pointing at its socket, and
 * the next handle bound to it that asks PQsocket gets it: no dup and no close per connect for
 * programs that ask every time (pgbench, psycopg 3, Ruby's pg). The handle's lock guards the
 * copy while the connection is bound to it; the pool owns it otherwise. */

void pool_keep_socket_copy(struct handle *h)
{
    struct server_conn *s = h->server;
    /* Only a copy known to point at the connection's socket now (socket_follow's last dup3
     * onto it succeeded, as every binding makes one) goes on to another handle. */
    if (h->state != HANDLE_BOUND || h->fd < 0 || s == NULL || s->socket_copy >= 0 || pool_server_is_inherited(h) ||
        h->fd_copies < 0 || h->fd_copies != real.PQsocket(s->conn))
        return;
    s->socket_copy = h->fd;
    h->fd = -1;
}

int pool_take_socket_copy(struct handle *h)
{
    struct server_conn *s = h->server;
    if (h->state != HANDLE_BOUND || s == NULL || s->state != SERVER_BOUND)
        return -1;
    int fd = s->socket_copy;
    s->socket_copy = -1;
    return fd;
}

void pool_drop_socket_copy(struct handle *h)
{
    /* (whatever h's state: a handle still connecting to a pooled connection may be reset too) */
    if (h->server != NULL && h->server->state != SERVER_INHERITED)
        drop_socket_copy(h->server);
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
    drop_socket_copy(s);
    real.PQfreeCancel(s->cancel);
    free(s);
}
