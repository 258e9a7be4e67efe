/* pool.c: the pool of server connections by key: kept, held and shared, with limits. */
#define _GNU_SOURCE
#include "pool.h"
#include "clock.h"
#include "key.h"
#include "log.h"
#include "real.h"
#include "session.h"
#include "settings.h"
#include "stats.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HASH_NONFATAL_OOM 1
#include <uthash.h>
#include <utlist.h>

/* Every connection the pool owns is in exactly one state. */
enum pooled_state {
    POOLED_HELD,      /* handed to the app: holders >= 1, on its bucket's held list */
    POOLED_KEPT,      /* idle on its bucket's kept stack; its reset may still be in flight */
    POOLED_BUSY,      /* taken by one pqdedup call (resetting, checking, closing): on no list */
    POOLED_INHERITED, /* opened by the parent before fork: only ever freed, silently */
};

struct pooled_conn {
    PGconn *conn;                 /* hash key of the pool's table */
    struct pool_bucket *bucket;   /* NULL once inherited */
    enum pooled_state state;
    int holders;                  /* app handles that have not finished it yet */
    pthread_t holder_thread;      /* the thread it was last handed to */
    bool has_events;              /* the app registered libpq event procedures */
    enum reset_pending pending;   /* kept with this still in flight */
    bool server_closing;          /* the server said FATAL while pqdedup owned it */
    bool reset_needed;            /* the reset query runs before the next holder gets it */
    bool dirty;                   /* PQDEDUP_RESET=dirty: a holder sent SQL that can change
                                     session state */
    uint64_t parameters_at_hand_out; /* session_parameters_fingerprint() when handed out */
    bool idle_limit_known;        /* server_idle_limit_ns has been read */
    int64_t server_idle_limit_ns; /* the session's idle_session_timeout (0 = none) */
    int64_t opened_ns, kept_ns;
    uint64_t handed_seq;          /* when it was last handed out */
    struct pooled_conn *prev, *next; /* on held or kept list */
    UT_hash_handle hh;
};

struct pool_bucket {
    char *key;                    /* owned; hash key */
    int open;                     /* server connections of this key in this process,
                                     plus reservations being opened */
    int nkept, nheld;
    int waiters;                  /* threads waiting at the cap */
    char target[16];              /* target_session_attrs of the key ("" = any) */
    pthread_cond_t changed;       /* a connection was kept or closed */
    struct pooled_conn *kept;     /* LIFO: head is the most recently kept */
    struct pooled_conn *held;
    UT_hash_handle hh;
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pooled_conn *conns;     /* by PGconn pointer */
static struct pool_bucket *buckets;   /* by key */
static uint64_t handed_counter;
static int64_t last_sweep_ns;
static bool shutting_down;
static bool exit_hook_after_ssl;
static volatile pid_t current_pid;    /* set at init and in the child after fork */
static pid_t pool_pid;                /* the process the pool's lists belong to */

#undef uthash_nonfatal_oom
#define uthash_nonfatal_oom(elt) (hash_oom = true)
static bool hash_oom;


/* ---- fork ------------------------------------------------------------------ */

/* No lock of pqdedup is held across fork: both are taken before it (key_lock
 * and pool_lock are never nested, so their order is free) and released after. */
static void fork_prepare(void)
{
    key_lock_for_fork();
    pthread_mutex_lock(&pool_lock);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&pool_lock);
    key_unlock_after_fork();
}

static void fork_child(void)
{
    current_pid = getpid();
    pthread_mutex_unlock(&pool_lock);
    key_unlock_after_fork();
}

/* After a fork, nothing the parent opened may be reused, reset or written to by
 * this process: kept connections are freed silently, held ones are marked so
 * that the app's PQfinish frees them silently too. Only the forking thread lives
 * on in the child, so no other call of this file is half done here. Buckets start again empty.
 * Caller holds pool_lock; returns the kept connections to free after unlocking. */
static struct pooled_conn *forget_parent_pool(void)
{
    struct pooled_conn *to_free = NULL, *pc, *tmp;
    HASH_ITER(hh, conns, pc, tmp) {
        if (pc->state == POOLED_KEPT || pc->state == POOLED_BUSY) {
            /* kept, or mid-reset by a thread the child does not have: no app holds it */
            HASH_DEL(conns, pc);
            pc->next = to_free;
            to_free = pc;
        } else {
            /* held by the app (here, or already inherited by the parent) */
            pc->state = POOLED_INHERITED;
            pc->bucket = NULL;
        }
    }
    struct pool_bucket *b, *btmp;
    HASH_ITER(hh, buckets, b, btmp) {
        /* No pthread_cond_destroy: a parent thread waiting at fork time would make
         * it wait forever for a waiter that does not exist here. */
        HASH_DEL(buckets, b);
        free(b->key);
        free(b);
    }
    pool_pid = current_pid;
    return to_free;
}

static void free_inherited(struct pooled_conn *list)
{
    while (list != NULL) {
        struct pooled_conn *next = list->next;
        session_close_inherited(list->conn);
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
        struct pooled_conn *inherited = forget_parent_pool();
        pthread_mutex_unlock(&pool_lock);
        free_inherited(inherited);
        pthread_mutex_lock(&pool_lock);
    }
}

/* ---- buckets and lists (caller holds pool_lock) ---------------------------- */

/* Returns the bucket for `key`, created on first use; NULL when out of memory. */
static struct pool_bucket *bucket_for(const char *key)
{
    struct pool_bucket *b;
    HASH_FIND_STR(buckets, key, b);
    if (b != NULL)
        return b;
    b = calloc(1, sizeof *b);
    if (b == NULL || (b->key = strdup(key)) == NULL) {
        free(b);
        return NULL;
    }
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&b->changed, &attr);
    pthread_condattr_destroy(&attr);
    key_get(key, "target_session_attrs", b->target, sizeof b->target);
    hash_oom = false;
    HASH_ADD_KEYPTR(hh, buckets, b->key, strlen(b->key), b);
    if (hash_oom) {
        pthread_cond_destroy(&b->changed);
        free(b->key);
        free(b);
        return NULL;
    }
    return b;
}

/* Frees a bucket nobody uses or waits on any more. */
static void bucket_drop_if_unused(struct pool_bucket *b)
{
    if (b->open > 0 || b->waiters > 0 || b->kept != NULL || b->held != NULL)
        return;
    HASH_DEL(buckets, b);
    pthread_cond_destroy(&b->changed);
    free(b->key);
    free(b);
}

/* Records what PQDEDUP_RESET=dirty compares at finish. Called without pool_lock
 * by the thread that owns pc (BUSY, or just opened and not yet handed out). */
static void note_hand_out_state(struct pooled_conn *pc)
{
    if (settings.reset_only_dirty) {
        pc->dirty = false;
        pc->parameters_at_hand_out = session_parameters_fingerprint(pc->conn);
    }
}

static void hand_to_this_thread(struct pool_bucket *b, struct pooled_conn *pc)
{
    pc->state = POOLED_HELD;
    pc->holders = 1;
    pc->holder_thread = pthread_self();
    pc->handed_seq = ++handed_counter;
    DL_APPEND(b->held, pc);
    b->nheld++;
}

/* Takes pc off whatever list its state puts it on; it is then BUSY. */
static void unlink_from_list(struct pooled_conn *pc)
{
    struct pool_bucket *b = pc->bucket;
    if (pc->state == POOLED_KEPT) {
        DL_DELETE(b->kept, pc);
        b->nkept--;
    } else if (pc->state == POOLED_HELD) {
        DL_DELETE(b->held, pc);
        b->nheld--;
    }
    pc->state = POOLED_BUSY;
}

/* Takes pc out of the pool for closing: off its list and out of the table (so
 * libpq may reuse its address once freed), its slot released at once. The caller
 * then calls close_detached() without the lock. The bucket may become unused:
 * the caller drops it when it no longer needs it. */
static void detach(struct pooled_conn *pc)
{
    unlink_from_list(pc);
    HASH_DEL(conns, pc);
    pc->bucket->open--;
    pthread_cond_broadcast(&pc->bucket->changed);
}

/* Closes a detached connection and frees its record. Called without pool_lock. */
static void close_detached(struct pooled_conn *pc)
{
    session_close_quietly(pc->conn);
    stats_add(closed);
    free(pc);
}

static void close_detached_list(struct pooled_conn *list)
{
    while (list != NULL) {
        struct pooled_conn *next = list->next;
        close_detached(list);
        list = next;
    }
}

static void push_to_close(struct pooled_conn **list, struct pooled_conn *pc)
{
    detach(pc);
    pc->next = *list;
    *list = pc;
}

/* Among the connections this thread holds for the bucket, the least recently
 * handed out one that may be shared; NULL when there is none. */
static struct pooled_conn *find_shareable(struct pool_bucket *b)
{
    struct pooled_conn *best = NULL, *pc;
    pthread_t self = pthread_self();
    DL_FOREACH(b->held, pc) {
        if (!pthread_equal(pc->holder_thread, self) || pc->has_events)
            continue;
        if ((best == NULL || pc->handed_seq < best->handed_seq) && session_is_shareable(pc->conn))
            best = pc;
    }
    return best;
}

static int count_held_by_this_thread(struct pool_bucket *b)
{
    int n = 0;
    struct pooled_conn *pc;
    pthread_t self = pthread_self();
    DL_FOREACH(b->held, pc)
        n += pthread_equal(pc->holder_thread, self);
    return n;
}

static PGconn *share(struct pooled_conn *pc)
{
    pc->holders++;
    pc->handed_seq = ++handed_counter;
    stats_add(shared);
    return pc->conn;
}

static bool is_expired(const struct pooled_conn *pc, int64_t now)
{
    if (settings.max_lifetime_ns > 0 && now - pc->opened_ns >= settings.max_lifetime_ns)
        return true;
    return pc->state == POOLED_KEPT && settings.idle_timeout_ns > 0 &&
           now - pc->kept_ns >= settings.idle_timeout_ns;
}

/* At most once a second, detaches kept connections past their idle time or
 * lifetime, oldest first, onto *to_close. */
static void sweep_expired(int64_t now, struct pooled_conn **to_close)
{
    if (now - last_sweep_ns < NS_PER_SEC)
        return;
    last_sweep_ns = now;
    struct pool_bucket *b, *btmp;
    HASH_ITER(hh, buckets, b, btmp) {
        while (b->kept != NULL && is_expired(b->kept->prev, now))
            push_to_close(to_close, b->kept->prev);
        bucket_drop_if_unused(b);
    }
}

/* ---- exit ------------------------------------------------------------------- */

/* Closes every kept connection of this process with a proper Terminate, so the
 * server logs a normal disconnection. Runs from atexit; safe to run twice. */
static void pool_shutdown(void)
{
    lock_pool();
    bool first = !shutting_down;
    shutting_down = true;
    struct pooled_conn *to_close = NULL;
    struct pool_bucket *b, *btmp;
    HASH_ITER(hh, buckets, b, btmp) {
        while (b->kept != NULL)
            push_to_close(&to_close, b->kept);
    }
    pthread_mutex_unlock(&pool_lock);
    /* Collect what is still in flight first: a server still sending a reset's result
     * to a closed socket logs a broken connection. */
    int64_t timeout = settings.check_timeout_ns < NS_PER_SEC ? settings.check_timeout_ns : NS_PER_SEC;
    for (struct pooled_conn *pc = to_close; pc != NULL; pc = pc->next)
        if (pc->pending != PENDING_NONE)
            session_finish_reset(pc->conn, pc->pending, "", false, timeout, &pc->server_closing);
    close_detached_list(to_close);
    if (first)
        stats_print_if_asked();
}

void pool_init(void)
{
    current_pid = pool_pid = getpid();
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    atexit(pool_shutdown);
}

/* OpenSSL registers its own cleanup with atexit when the first SSL connection is
 * made; exit handlers run in reverse, so pool_shutdown is registered once more
 * after that, to close kept SSL connections before OpenSSL is torn down.
 * Caller holds pool_lock. */
static void exit_hook_after_first_ssl(PGconn *conn)
{
    if (!exit_hook_after_ssl && PQsslInUse(conn)) {
        exit_hook_after_ssl = true;
        atexit(pool_shutdown);
    }
}

/* ---- connect ----------------------------------------------------------------- */

/* A connect may open one connection more than the thread's holders need while
 * the last finished one still resets, so it need not wait for that reset. */
static bool may_open_spare(const struct pool_bucket *b)
{
    return b->open < b->nheld + 2 && b->open < settings.keep_per_key &&
           (settings.max_per_key == 0 || b->open < settings.max_per_key);
}

/* Among the kept connections that `self` held last (mine) or that other threads
 * did (!mine), the most recently kept one whose reset has completed or was never
 * sent; NULL when none has. Newest first: the warmest backend, and the extra
 * connections of a burst stay unused and age out (PQDEDUP_IDLE_TIMEOUT). May read
 * sockets (one per connection whose reset is in flight, until one is done). */
static struct pooled_conn *find_ready(struct pool_bucket *b, pthread_t self, bool mine)
{
    struct pooled_conn *pc;
    DL_FOREACH(b->kept, pc)
        if (pthread_equal(pc->holder_thread, self) == mine &&
            (pc->pending == PENDING_NONE || session_reset_arrived(pc->conn)))
            return pc;
    return NULL;
}

/* Picks the kept connection to hand out: a ready one this thread held last, so
 * that a backend keeps talking to one thread (the scheduler then keeps the pair
 * on one CPU: with pgbench -j 2 that was worth about 20% of throughput,
 * bench/README.md); else a ready one of another thread; failing that, when no
 * spare may be opened, the oldest one (its reset was sent first, so it is waited
 * for the shortest). Expired ones go to *to_close. Returns NULL when a new
 * connection should be opened (or the cap decides). The pick is BUSY. Caller
 * holds pool_lock. */
static struct pooled_conn *pick_kept(struct pool_bucket *b, int64_t now, struct pooled_conn **to_close)
{
    struct pooled_conn *pc, *tmp;
    DL_FOREACH_SAFE(b->kept, pc, tmp)
        if (is_expired(pc, now))
            push_to_close(to_close, pc);
    pthread_t self = pthread_self();
    if ((pc = find_ready(b, self, true)) == NULL && (pc = find_ready(b, self, false)) == NULL) {
        if (b->kept == NULL || may_open_spare(b))
            return NULL;
        pc = b->kept->prev;
    }
    unlink_from_list(pc);
    return pc;
}

/* Waits for a finish or close in the bucket until `deadline`. Returns false on timeout. */
static bool wait_for_change(struct pool_bucket *b, const struct timespec *deadline)
{
    b->waiters++;
    int rc = pthread_cond_timedwait(&b->changed, &pool_lock, deadline);
    b->waiters--;
    return rc != ETIMEDOUT;
}

/* The cap is reached: shares what this thread holds, else waits for a change
 * until the deadline (set on first use). Returns true to look again, false
 * when `grant` is decided (shared or refused). Caller holds pool_lock. */
static bool wait_at_cap(struct pool_bucket *b, struct grant *grant, struct timespec *deadline)
{
    struct pooled_conn *pc = find_shareable(b);
    if (pc != NULL) {
        *grant = (struct grant) { .kind = GRANT_SHARED, .conn = share(pc) };
        return false;
    }
    if (deadline->tv_sec == 0 && deadline->tv_nsec == 0) {
        stats_add(cap_waits);
        int64_t until = monotonic_ns() + settings.max_wait_ns;
        deadline->tv_sec = until / NS_PER_SEC;
        deadline->tv_nsec = until % NS_PER_SEC;
    }
    if (wait_for_change(b, deadline) || b->kept != NULL || b->open < settings.max_per_key)
        return true;
    stats_add(cap_failures);
    grant->kind = GRANT_REFUSED;
    return false;
}

void pool_acquire(const char *key, struct grant *grant)
{
    *grant = (struct grant) { .kind = GRANT_PASSTHROUGH };
    struct pooled_conn *to_close = NULL;
    lock_pool();
    stats_add(connects);
    int64_t now = monotonic_ns();
    sweep_expired(now, &to_close);
    struct pool_bucket *b = shutting_down ? NULL : bucket_for(key);
    if (b == NULL)
        goto out;

    struct pooled_conn *pc;
    if (settings.share_after > 0 && count_held_by_this_thread(b) >= settings.share_after &&
        (pc = find_shareable(b)) != NULL) {
        *grant = (struct grant) { .kind = GRANT_SHARED, .conn = share(pc) };
        goto out;
    }

    struct timespec deadline = { 0 };
    for (;;) {
        if ((pc = pick_kept(b, now, &to_close)) != NULL) {
            /* A key that asked for a kind of server re-checks it on every reuse. */
            /* A server that ends idle sessions gets a round trip (which restarts its
             * idle clock) once half its timeout has passed. */
            int64_t idle = now - pc->kept_ns;
            bool check = idle >= settings.check_after_ns || b->target[0] != '\0' ||
                         (pc->server_idle_limit_ns > 0 && idle >= pc->server_idle_limit_ns / 2);
            b->waiters++; /* keeps the bucket while unlocked */
            pthread_mutex_unlock(&pool_lock);
            const char *reset_query = pc->reset_needed ? settings.reset_query : "";
            bool usable = session_finish_reset(pc->conn, pc->pending, reset_query, check,
                                               settings.check_timeout_ns, &pc->server_closing) &&
                          session_looks_alive(pc->conn) && session_matches_target(pc->conn, b->target);
            if (usable && !pc->idle_limit_known)
                usable = pc->idle_limit_known = session_read_idle_timeout(
                    pc->conn, settings.check_timeout_ns, &pc->server_idle_limit_ns);
            if (usable)
                note_hand_out_state(pc);
            pthread_mutex_lock(&pool_lock);
            b->waiters--;
            if (usable) {
                pc->pending = PENDING_NONE;
                hand_to_this_thread(b, pc);
                stats_add(reused);
                *grant = (struct grant) { .kind = GRANT_REUSED, .conn = pc->conn };
                break;
            }
            stats_add(dead);
            log_msg(LOG_INFO, "discarding a kept connection that failed its reset or was closed by the server");
            push_to_close(&to_close, pc);
            now = monotonic_ns();
            continue;
        }
        if (settings.max_per_key > 0 && b->open >= settings.max_per_key) {
            if (wait_at_cap(b, grant, &deadline)) {
                now = monotonic_ns();
                continue;
            }
            break;
        }
        b->open++;
        *grant = (struct grant) { .kind = GRANT_OPEN, .bucket = b };
        break;
    }
    bucket_drop_if_unused(b);
out:
    pthread_mutex_unlock(&pool_lock);
    close_detached_list(to_close);
}

PGconn *pool_opened(struct grant *grant, PGconn *conn, bool completed)
{
    struct pool_bucket *b = grant->bucket;
    bool failed = conn == NULL || PQstatus(conn) == CONNECTION_BAD;
    bool refused_for_slots = failed && completed && conn != NULL && session_refused_for_slots(conn);
    struct pooled_conn *pc = failed ? NULL : calloc(1, sizeof *pc);
    /* A blocking connect is complete: learn the server's idle_session_timeout now,
     * beside the connect's own cost, so no reuse needs a round trip for it. */
    if (pc != NULL && completed)
        pc->idle_limit_known = session_read_idle_timeout(conn, settings.check_timeout_ns,
                                                         &pc->server_idle_limit_ns);
    if (pc != NULL) {
        pc->conn = conn;
        note_hand_out_state(pc);
    }

    lock_pool();
    if (pc != NULL) {
        session_capture_default_hooks(conn);
        pc->bucket = b;
        pc->opened_ns = monotonic_ns();
        hash_oom = false;
        HASH_ADD_PTR(conns, conn, pc);
        if (!hash_oom) {
            hand_to_this_thread(b, pc);
            stats_add(opened);
            pthread_mutex_unlock(&pool_lock);
            return conn;
        }
        free(pc);
    }
    /* Not pooled: failed, or out of memory. */
    struct pooled_conn *holder = refused_for_slots ? find_shareable(b) : NULL;
    PGconn *answer = holder != NULL ? share(holder) : conn;
    b->open--;
    pthread_cond_broadcast(&b->changed);
    bucket_drop_if_unused(b);
    pthread_mutex_unlock(&pool_lock);
    if (holder != NULL) {
        log_msg(LOG_INFO, "server refused a new connection for lack of slots; sharing one this thread holds");
        real.PQfinish(conn);
    }
    return answer;
}

/* ---- finish ------------------------------------------------------------------ */

/* Starts the reset of a connection whose last holder finished, then keeps or
 * closes it. Called without pool_lock, with pc BUSY (owned by this call). */
static void reset_and_keep(struct pooled_conn *pc, bool worth_keeping, int64_t now)
{
    struct pool_bucket *b = pc->bucket;
    enum reset_pending pending = PENDING_NONE;
    /* PQDEDUP_RESET=dirty skips the reset when nothing pqdedup saw could change the
     * session: no such SQL, and no reported parameter changed. */
    pc->reset_needed = !settings.reset_only_dirty || pc->dirty ||
                       session_parameters_fingerprint(pc->conn) != pc->parameters_at_hand_out;
    const char *reset_query = pc->reset_needed ? settings.reset_query : "";
    bool reset_started =
        worth_keeping && session_start_reset(pc->conn, reset_query, &pending, &pc->server_closing);

    lock_pool();
    if (reset_started && !shutting_down && b->nkept < settings.keep_per_key) {
        exit_hook_after_first_ssl(pc->conn);
        pc->state = POOLED_KEPT;
        pc->kept_ns = now;
        pc->pending = pending;
        DL_PREPEND(b->kept, pc);
        b->nkept++;
        stats_add(resets);
        pthread_cond_broadcast(&b->changed);
        pthread_mutex_unlock(&pool_lock);
        return;
    }
    struct pooled_conn *to_close = NULL;
    push_to_close(&to_close, pc);
    bucket_drop_if_unused(b);
    pthread_mutex_unlock(&pool_lock);
    close_detached_list(to_close);
}

bool pool_finish(PGconn *conn)
{
    lock_pool();
    struct pooled_conn *pc;
    HASH_FIND_PTR(conns, &conn, pc);
    if (pc == NULL) {
        pthread_mutex_unlock(&pool_lock);
        return false;
    }

    switch (pc->state) {
    case POOLED_INHERITED:
        HASH_DEL(conns, pc);
        pthread_mutex_unlock(&pool_lock);
        session_close_inherited(conn);
        free(pc);
        return true;
    case POOLED_KEPT:
    case POOLED_BUSY:
        pthread_mutex_unlock(&pool_lock);
        log_msg(LOG_WARN, "PQfinish of a connection that was already finished; ignored");
        return true;
    case POOLED_HELD:
        break;
    }

    if (--pc->holders > 0) {
        /* Another handle still uses it; which one set the hooks is unknown. */
        pthread_mutex_unlock(&pool_lock);
        session_restore_default_hooks(conn);
        return true;
    }
    unlink_from_list(pc);
    int64_t now = monotonic_ns();
    bool worth_keeping = !shutting_down && !pc->has_events && pc->bucket->nkept < settings.keep_per_key &&
                         !is_expired(pc, now);
    pthread_mutex_unlock(&pool_lock);
    reset_and_keep(pc, worth_keeping, now);
    return true;
}

int pool_close_all_kept(void)
{
    struct pooled_conn *to_close = NULL;
    int n = 0;
    lock_pool();
    struct pool_bucket *b, *btmp;
    HASH_ITER(hh, buckets, b, btmp) {
        while (b->kept != NULL) {
            push_to_close(&to_close, b->kept->prev);
            n++;
        }
        bucket_drop_if_unused(b);
    }
    pthread_mutex_unlock(&pool_lock);
    close_detached_list(to_close);
    return n;
}

void pool_mark_dirty(PGconn *conn)
{
    lock_pool();
    struct pooled_conn *pc;
    HASH_FIND_PTR(conns, &conn, pc);
    if (pc != NULL)
        pc->dirty = true;
    pthread_mutex_unlock(&pool_lock);
}

void pool_mark_events(PGconn *conn)
{
    lock_pool();
    struct pooled_conn *pc;
    HASH_FIND_PTR(conns, &conn, pc);
    if (pc != NULL)
        pc->has_events = true;
    pthread_mutex_unlock(&pool_lock);
}
