/* pool_async.c: asynchronous connects: the states the app's PQconnectPoll loop drives, never blocking. */
#define _GNU_SOURCE
#include "pool_internal.h"
#include "clock.h"
#include "log.h"
#include "real.h"
#include "settings.h"
#include "socket.h"
#include "stats.h"


/* ---- asynchronous connects ---------------------------------------------------------
 * PQconnectStart* must never block the app's event loop, so its handle goes through states
 * the app's PQconnectPoll loop drives: STARTED (a ready free connection: OK at the first poll),
 * PREPARING (a pooled connection whose reset or check is in flight: poll its socket),
 * CONNECTING (libpq's new connection), WAITING (none can be had now: poll h->wait, a socket). A
 * refusal for lack of slots during the poll is handled as for a blocking connect: another
 * handle's idle connection, a wait, and only after PQDEDUP_MAX_WAIT the server's error. */

bool start_waiting(struct handle *h, struct pool_bucket *b, int64_t now)
{
    if (!wake_open(&h->wait))
        return false;
    DL_APPEND2(b->waiting, h, wait_prev, wait_next);
    atomic_fetch_add(&b->waiters, 1);
    int64_t when = h->wait_deadline_ns;
    if (b->refused_until_ns > now && b->refused_until_ns < when)
        when = b->refused_until_ns;
    wake_at(&h->wait, when);
    return true;
}

/* Takes h off its bucket's waiting list (it is WAITING or QUEUED). Caller holds pool_lock. */
void stop_waiting(struct handle *h)
{
    struct pool_bucket *b = h->bucket;
    DL_DELETE2(b->waiting, h, wait_prev, wait_next);
    atomic_fetch_sub(&b->waiters, 1);
    wake_close(&h->wait);
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

const char *preparation_of(struct server_conn *s, bool from_handle, bool handle_dirty, int64_t now)
{
    struct pool_bucket *b = s->bucket;
    const char *send = NULL;
    if (from_handle) {
        send = !settings.reset_only_dirty || handle_dirty ? settings.reset_query : "";
        stats_add_key(stats_key_counters(b->stats), moved);
        if (send[0] != '\0')
            stats_add_key(stats_key_counters(b->stats), resets);
        else
            stats_add_key(stats_key_counters(b->stats), resets_skipped);
    } else {
        if (s->pending == PENDING_NONE && needs_check(s, b->target, now))
            send = "check";
        stats_add_key(stats_key_counters(b->stats), reused);
    }
    if (send != NULL)
        s->reset_needed = false; /* what is sent now is the whole reset */
    return send;
}

void send_preparation(struct server_conn *s, const char *send)
{
    /* An idle handle's session is reset; a free one idle long is checked (an empty query,
     * which also restarts the server's idle_session_timeout). A send that fails shows as a
     * failure at the next step. */
    bool check = strcmp(send, "check") == 0;
    bool sent = check ? real.PQsendQuery(s->conn, "") == 1
                      : session_start_reset(s->conn, send, &s->pending, &s->server_closing);
    if (!sent || check)
        s->pending = PENDING_RESET;
}

enum session_step pool_resetting_step(struct handle *h, bool wait)
{
    enum session_step step = preparation_step(h, wait);
    if (step == SESSION_STEP_FAILED) {
        handle_set_state(h, HANDLE_UNBOUND); /* it still has the view it answered from */
        socket_follow(h);
    }
    return step;
}

enum session_step preparation_step(struct handle *h, bool wait)
{
    struct server_conn *s = h->server;
    struct pool_bucket *b = s->bucket;
    const char *reset = s->reset_needed ? settings.reset_query : "";
    enum session_step step =
        wait ? session_finish_reset(s->conn, &s->pending, reset, false, monotonic_ns() + settings.check_timeout_ns,
                                    &s->server_closing)
             : session_reset_step(s->conn, &s->pending, reset, &s->server_closing);
    if (step == SESSION_STEP_WAIT && !wait)
        return step;
    if (step == SESSION_STEP_DONE && session_matches_target(s->conn, b->target) &&
        (settings.reset_query[0] == '\0' || reset_kept_parameters(s, atomic_load(&b->baseline)))) {
        handle_set_state(h, HANDLE_BOUND);
        bind_finish(h);
        return SESSION_STEP_DONE;
    }
    drop_preparing(h);
    return SESSION_STEP_FAILED;
}

/*
 * Looks for a server connection for the asynchronous connect h (locked, not bound; h->bucket
 * set; h->conn is NULL or a failed connection saying why it waits) without blocking, in the
 * order acquire() uses, and leaves h:
 *   STARTED or, when `polled` (inside PQconnectPoll), BOUND: a ready free connection;
 *   PREPARING: a free one whose reset is still in flight, or an idle handle's, reset sent now,
 *     or one idle long enough to need a check (an empty query sent);
 *   CONNECTING: a new one from `call` (NULL: the key's);
 *   WAITING: none now (h->wait fires at the back-off's end, the deadline, or a change);
 *   DIRECT: libpq's connect failed at once (not for lack of slots), or PQDEDUP_MAX_WAIT passed:
 *     h->conn says why (outside a poll the bucket is let go: the caller gives h back).
 */
void acquire_async(struct handle *h, const struct connect_call *call, bool polled)
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
    struct server_conn *s = pool_is_shutting_down() ? NULL : pick_free(b, now, true, pressure, &to_close);
    struct handle *victim = s == NULL && b->free == NULL && !pool_is_shutting_down() ? pick_idle_handle(b, now, pressure) : NULL;
    /* Why h waited, if it did: the server's refusal, or pqdedup's stand-in (h->stand_in). Kept
     * if h waits on (a wake does not make a new one), else closed below. */
    PGconn *reason = h->conn;
    bool reason_is_stand_in = h->stand_in;
    h->conn = NULL;
    char why[600];
    const char *send = NULL;  /* what to send on s once unlocked */
    if (victim != NULL) {
        struct server_conn *taken = victim->server;
        bool dirty = handle_changed_session(victim);
        if (unbind(victim)) {
            s = taken;
            s->freed_ns = now;
            send = preparation_of(s, true, dirty, now);
        }
        pthread_mutex_unlock(&victim->lock);
    } else if (s != NULL) {
        send = preparation_of(s, false, false, now);
    }
    if (s != NULL) {
        if (s->pending == PENDING_NONE && send == NULL)
            bind_server(h, s, polled ? HANDLE_BOUND : HANDLE_STARTED);
        else
            bind_server(h, s, HANDLE_PREPARING); /* not idle until its reset is collected */
    } else if (!pressure && !pool_is_shutting_down()) {
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
            if (conn != NULL)
                handle_take_failure(h, conn);
            else
                handle_fail(h, "pqdedup: out of memory");
            handle_set_state(h, HANDLE_DIRECT);
        }
    } else if (now < h->wait_deadline_ns && !pool_is_shutting_down()) {
        bool opened = start_waiting(h, b, now);
        if (reason == NULL) {
            refusal_reason(b, !opened, why, sizeof why);
            handle_fail(h, why);
        } else { /* the same reason, as it was */
            h->conn = reason;
            reason = NULL;
        }
        if (opened) {
            handle_set_state(h, HANDLE_WAITING);
            if (polled)
                stats_add_key(stats_key_counters(b->stats), waits);
        } else {
            handle_set_state(h, HANDLE_DIRECT);
        }
    } else {
        stats_add_key(stats_key_counters(b->stats), wait_failures);
        if (reason != NULL && !reason_is_stand_in && !at_cap(b)) { /* the server's, as plain libpq's */
            handle_take_failure(h, reason);
            reason = NULL;
        } else if (pool_is_shutting_down()) {
            handle_fail(h, "pqdedup: exit under way");
        } else { /* the reason again, now logged */
            refusal_reason(b, true, why, sizeof why);
            handle_fail(h, why);
        }
        handle_set_state(h, HANDLE_DIRECT);
    }
    if (reason_is_stand_in && reason != NULL && h->state != HANDLE_DIRECT)
        handle_forget_view(h); /* bound or connecting: the stand-in's reason goes with it */
    /* libpq's connect failed inside PQconnectStart*: the caller hands libpq's connection to the
     * app and gives the handle back. Failed in a poll, or for pqdedup's reason: the handle
     * stays, with its key (PQreset tries again). */
    bool released = h->state == HANDLE_DIRECT && !polled && !h->stand_in;
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
        send_preparation(h->server, send);
    } else if (h->state == HANDLE_BOUND || h->state == HANDLE_STARTED) {
        bind_finish(h);
    }
}

/* Lets go of h's server connection after it failed to prepare (PREPARING): closed. */
void drop_preparing(struct handle *h)
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
        enum session_step step = preparation_step(h, false);
        if (step == SESSION_STEP_WAIT)
            return PGRES_POLLING_READING;
        if (step == SESSION_STEP_DONE)
            return PGRES_POLLING_OK;
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
        note_refusal(b, now, h->conn);
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
        wake_drain(&h->wait);
        acquire_async(h, NULL, true);
        return poll_status(h);
    }
    case HANDLE_BOUND:
    case HANDLE_UNBOUND:
    case HANDLE_QUEUED:
    case HANDLE_RESETTING:
        return PGRES_POLLING_OK;
    case HANDLE_DIRECT:
    case HANDLE_FREE:
        break;
    }
    return real.PQconnectPoll(h->conn);
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
        bind_server(h, s, HANDLE_BOUND);
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

