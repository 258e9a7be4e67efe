/* pool_acquire.c: a blocking connect or rebind gets its server connection: free, an idle handle's, new, or after a wait. */
#define _GNU_SOURCE
#include "pool_internal.h"
#include "clock.h"
#include "log.h"
#include "real.h"
#include "settings.h"
#include "socket.h"
#include "stats.h"

#include <stdlib.h>
#include <string.h>

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
    pool_wait_changed(b, &ts);
    atomic_fetch_sub(&b->waiters, 1);
    return true;
}

/* How acquire() ended. */
enum acquired {
    ACQUIRED_BOUND, ACQUIRED_OPENING, ACQUIRED_QUEUED, ACQUIRED_RESETTING,
    ACQUIRED_FAILED,  /* *failed: libpq's failed connection (the server's refusal, say) */
    ACQUIRED_REFUSED, /* h is DIRECT on a stand-in saying why (handle_fail): nothing could be had
                         within PQDEDUP_MAX_WAIT, or its SETs could not be run again */
    ACQUIRED_PASSTHROUGH
};

/* Instead of waiting (step 4 of acquire), h, a nonblocking handle's command, is QUEUED on b's
 * waiting list, its wake firing on a change, at the back-off's end, or at its deadline
 * (PQDEDUP_MAX_WAIT from its first try). Returns false, changing nothing, once the deadline
 * has passed or no wake can be opened. Caller holds pool_lock. */
static bool queue_for_release(struct handle *h, struct pool_bucket *b, int64_t now)
{
    if (h->wait_deadline_ns == 0) {
        stats_add_key(stats_key_counters(b->stats), waits);
        h->wait_deadline_ns = now + settings.max_wait_ns;
    }
    if (now >= h->wait_deadline_ns || !start_waiting(h, b, now))
        return false;
    if (h->state != HANDLE_QUEUED)
        handle_set_state(h, HANDLE_QUEUED);
    return true;
}

/*
 * Finds h (locked by the caller, not bound, h->bucket set) a server connection and binds it:
 *   1. a free one of the key, ready (its reset done); when every free one is still resetting,
 *      the one whose reset ends first, unless it once failed to answer in time (stalled);
 *      never a spare opened instead (pool_pick.c);
 *   2. when none is free, an idle, clean handle's (idle PQDEDUP_UNBIND_AFTER; any, under
 *      pressure), reset;
 *   3. a new one from `call`, below PQDEDUP_MAX_PER_KEY and not during a refusal back-off;
 *      a refusal for lack of slots closes the other keys' free connections and puts the key
 *      under pressure;
 *   4. wait for one of the above, up to PQDEDUP_MAX_WAIT; then fail with the server's last
 *      refusal to this connect (ACQUIRED_FAILED), else saying why (ACQUIRED_REFUSED).
 * `started` binds as STARTED (PQconnectStart*). Returns ACQUIRED_FAILED with *failed a failed
 * PGconn for the app; ACQUIRED_OPENING with h CONNECTING (an asynchronous `call`). Unless
 * `may_wait` (a nonblocking handle's kept command), step 4 leaves h QUEUED instead
 * (ACQUIRED_QUEUED: queue_for_release), and a connection of steps 1 and 2 that needs a round
 * trip first is bound with its reset or check sent, not waited for (ACQUIRED_RESETTING).
 */
static enum acquired acquire(struct handle *h, const struct connect_call *call, bool started, bool may_wait,
                             PGconn **failed)
{
    struct pool_bucket *b = h->bucket;
    struct server_conn *to_close = NULL;
    PGconn *refusal = NULL; /* the server's last refusal, reported if nothing else works */
    int64_t deadline = 0;
    enum acquired result;
    const char *preparation = NULL; /* ACQUIRED_RESETTING: what to send once unlocked */
    char refused_why[600];          /* ACQUIRED_REFUSED: why */
    *failed = NULL;
    lock_pool();
    if (h->state == HANDLE_QUEUED)
        stop_waiting(h); /* on the list again below if it must wait on */
    int64_t now = monotonic_ns();
    /* All the round trips this connect makes to check or reset connections wait
     * PQDEDUP_CHECK_TIMEOUT in all; after that it only opens a new one or waits. */
    int64_t check_deadline = now + settings.check_timeout_ns;
    sweep_expired(now, &to_close);
    for (;;) {
        if (pool_is_shutting_down()) {
            result = ACQUIRED_PASSTHROUGH;
            break;
        }
        bool pressure = at_cap(b) || now < b->refused_until_ns;
        bool may_check = now < check_deadline;
        struct server_conn *s = may_check ? pick_free(b, now, false, pressure, &to_close) : NULL;
        /* Free ones still resetting past PQDEDUP_CHECK_TIMEOUT, or stalled: a new one is
         * opened (3) rather than a handle's taken. */
        struct handle *victim =
            s == NULL && b->free == NULL && may_check ? pick_idle_handle(b, now, pressure) : NULL;
        bool victim_dirty = false;
        if (victim != NULL) {
            struct server_conn *taken = victim->server;
            victim_dirty = handle_changed_session(victim);
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
        if (s != NULL && !may_wait) {
            if (victim == NULL && s->pending == PENDING_NONE && !session_looks_alive(s->conn)) {
                /* dead, as make_ready would find it without a round trip: closed */
                stats_add_key(stats_key_counters(b->stats), dead);
                push_to_close(&to_close, s);
                continue;
            }
            preparation = preparation_of(s, victim != NULL, victim_dirty, now);
            if (preparation != NULL || s->pending != PENDING_NONE || s->reset_needed) {
                bind_server(h, s, HANDLE_RESETTING);
                result = ACQUIRED_RESETTING;
                break;
            }
            bind_server(h, s, HANDLE_BOUND); /* ready as it is */
            result = ACQUIRED_BOUND;
            break;
        }
        if (s != NULL) {
            uint64_t baseline = atomic_load(&b->baseline);
            unlock_pool();
            enum session_step step =
                make_ready(s, b->target, victim != NULL, victim_dirty, now, check_deadline, baseline);
            lock_pool();
            if (step == SESSION_STEP_WAIT) {
                /* Not answering in time, not known to be broken: kept, free, its reset still in
                 * flight, last in line; this connect goes on without it. */
                s->state = SERVER_FREE;
                s->stalled = true;
                DL_APPEND(b->free, s);
                b->nfree++;
                now = monotonic_ns();
                continue;
            }
            if (step == SESSION_STEP_DONE) {
                bind_server(h, s, started ? HANDLE_STARTED : HANDLE_BOUND);
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
            now = monotonic_ns();
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
                bind_server(h, fresh, HANDLE_BOUND);
                result = ACQUIRED_BOUND;
                break;
            }
            b->open--;
            wake_waiters(b);
            if (conn != NULL && !complete && session_refused_for_slots(conn)) {
                stats_add_key(stats_key_counters(b->stats), refusals);
                log_msg(LOG_INFO, "the server refused a new connection for lack of slots; taking an idle "
                                  "handle's connection or waiting for one");
                note_refusal(b, now, conn);
                if (refusal != NULL) {
                    unlock_pool();
                    real.PQfinish(refusal);
                    lock_pool();
                }
                refusal = conn;
                free_other_keys(b, &to_close); /* closed before this connect waits (below) */
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
            /* Expired or dead ones, and other keys' after a refusal, give their slots back
             * to the server before the wait. */
            unlock_pool();
            close_list(to_close);
            to_close = NULL;
            lock_pool();
            now = monotonic_ns();
            continue;
        }
        if (!may_wait && queue_for_release(h, b, now)) {
            result = ACQUIRED_QUEUED;
            break;
        }
        if (deadline == 0)
            stats_file_wait_begins(handle_stats(h), now);
        if (!may_wait || !wait_for_release(b, now, &deadline)) {
            stats_add_key(stats_key_counters(b->stats), wait_failures);
            if (refusal != NULL) { /* this connect's own refusal, as plain libpq's */
                *failed = refusal;
                refusal = NULL;
                result = ACQUIRED_FAILED;
            } else {
                refusal_reason(b, true, refused_why, sizeof refused_why);
                result = ACQUIRED_REFUSED;
            }
            break;
        }
        now = monotonic_ns();
    }
    if ((result == ACQUIRED_BOUND || result == ACQUIRED_RESETTING) && atomic_load(&b->waiters) > 0)
        wake_waiters(b); /* a release may be enough for more than one */
    unlock_pool();
    if (result == ACQUIRED_RESETTING && preparation != NULL)
        send_preparation(h->server, preparation);
    if (refusal != NULL)
        real.PQfinish(refusal);
    close_list(to_close);
    if (result == ACQUIRED_REFUSED) {
        handle_fail(h, refused_why);
        if (h->state != HANDLE_DIRECT) /* (one whose PQreset asks the pool again is) */
            handle_set_state(h, HANDLE_DIRECT);
    }
    if (result == ACQUIRED_BOUND && !bind_finish(h)) {
        if (h->state == HANDLE_DIRECT) {
            /* Its SETs could not be run again: the failure is the app's, as a broken connection. */
            result = ACQUIRED_REFUSED;
        } else {
            /* The handle's nonblocking mode could not be set: it keeps the connection. */
            log_msg(LOG_WARN, "cannot apply a connection's client settings to another server connection");
        }
    }
    return result;
}


/* ---- the public entry points ------------------------------------------------------ */

enum connect_outcome pool_connect(struct handle *h, const char *key, const struct connect_call *call,
                                  PGconn **failed)
{
    lock_pool();
    stats_add(connects);
    struct pool_bucket *b = pool_is_shutting_down() ? NULL : bucket_for(key);
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
        if (h->stand_in)
            return CONNECT_REFUSED; /* pqdedup's reason: the app gets h, which keeps its key */
        /* libpq's own connect failed at once: the app gets libpq's connection, as plain. */
        *failed = h->conn;
        h->conn = NULL;
        handle_set_state(h, HANDLE_FREE);
        return CONNECT_FAILED; /* pool_connect_async already let go of the bucket */
    }
    switch (acquire(h, call, false, true, failed)) {
    case ACQUIRED_BOUND:
        return CONNECT_BOUND;
    case ACQUIRED_OPENING:
        return CONNECT_OPENING;
    case ACQUIRED_REFUSED:
        return CONNECT_REFUSED;
    case ACQUIRED_QUEUED: /* (these two only without may_wait) */
    case ACQUIRED_RESETTING:
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

enum rebind_outcome pool_rebind_or_queue(struct handle *h, bool may_wait)
{
    struct pool_bucket *b = h->bucket;
    struct connect_call call = connect_call_from_key(b->conninfo);
    PGconn *failed = NULL;
    switch (acquire(h, &call, false, may_wait, &failed)) {
    case ACQUIRED_BOUND:
        h->wait_deadline_ns = 0;
        return REBIND_BOUND;
    case ACQUIRED_QUEUED:
        return REBIND_QUEUED;
    case ACQUIRED_RESETTING:
        socket_follow(h); /* the app polls the connection's socket */
        return REBIND_RESETTING;
    case ACQUIRED_OPENING: /* a blocking call never leaves one opening */
    case ACQUIRED_PASSTHROUGH:
        if (failed == NULL) { /* exit under way: a plain connection of its own, with its SETs */
            char why[400];
            failed = real.PQconnectdb(b->conninfo);
            if (h->sets.count > 0 && real.PQstatus(failed) == CONNECTION_OK &&
                !pool_replay_sets(h, failed, why, sizeof why)) {
                real.PQfinish(failed);
                handle_fail(h, why);
                break;
            }
        }
        handle_take_failure(h, failed);
        break;
    case ACQUIRED_FAILED:
        handle_take_failure(h, failed);
        break;
    case ACQUIRED_REFUSED: /* (h is DIRECT, saying why) */
        break;
    }
    /* The app sees the failure on this handle, as on a plain connection that broke, and why.
     * The handle keeps its key: PQreset tries the pool again. */
    h->wait_deadline_ns = 0;
    if (h->state != HANDLE_DIRECT)
        handle_set_state(h, HANDLE_DIRECT);
    socket_follow(h);
    return REBIND_FAILED;
}

bool pool_rebind(struct handle *h)
{
    return pool_rebind_or_queue(h, true) == REBIND_BOUND;
}

