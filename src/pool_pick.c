/* pool_pick.c: which server connection a handle gets: the free ones, idle handles', and what makes one fit to hand out. */
#define _GNU_SOURCE
#include "pool_internal.h"
#include "clock.h"
#include "log.h"
#include "real.h"
#include "settings.h"
#include "socket.h"
#include "stats.h"

#include <stdio.h>
#include <string.h>


/* A nonblocking connect, which has no deadline of its own to wait for a reset with, may open
 * one connection more than its key's handles need while the last freed one still resets. */
static bool may_open_spare(const struct pool_bucket *b)
{
    return b->open < b->nbound + 2 && b->open < settings.keep_per_key &&
           (settings.max_per_key == 0 || b->open < settings.max_per_key);
}

bool at_cap(const struct pool_bucket *b)
{
    return settings.max_per_key > 0 && b->open >= settings.max_per_key;
}

/* How long a peak of bound handles counts for the hot window: the busiest moment of the last
 * one to two of these spans. */
#define PEAK_SPAN_NS NS_PER_SEC

/* Starts a new span of b's peak of bound handles when the current one is over. */
static void roll_peak(struct pool_bucket *b, int64_t now)
{
    if (now - b->peak_since_ns < PEAK_SPAN_NS)
        return;
    b->peak_bound_before = now - b->peak_since_ns < 2 * PEAK_SPAN_NS ? b->peak_bound : 0;
    b->peak_bound = b->nbound;
    b->peak_since_ns = now;
}

/* How many of the most recently freed connections of b a connect considers: the key's
 * working set, as many as its handles were bound at once lately (roll_peak), less those bound
 * now, and at least one; one more for a `nonblocking` connect, whose spare (may_open_spare)
 * must stay in view. In a steady state that is every free connection. The older ones (what
 * a burst left) are never taken while these are there, so they stay unused and age out
 * (PQDEDUP_IDLE_TIMEOUT), however fast a program churns: a single-threaded program that once
 * held two connections at once does not alternate between them for good, but goes back to
 * one, as under plain libpq (tests: churn_after_burst, also with a connection held open
 * throughout). Counting the handles bound now instead would widen the window by one for each
 * held connection. */
static int hot_free(const struct pool_bucket *b, bool nonblocking)
{
    int peak = b->peak_bound > b->peak_bound_before ? b->peak_bound : b->peak_bound_before;
    int working_free = peak - b->nbound;
    return (working_free > 1 ? working_free : 1) + (nonblocking ? 1 : 0);
}

/* Among the first `window` free connections (hot_free; stalled ones, still waited for by no
 * one, are looked at but not counted) that `self` served last (mine) or
 * other threads did (!mine), the most recently freed one whose reset has completed or was
 * never sent; NULL when none has. Newest first: the warmest backend. May read sockets (one
 * per connection whose reset is in flight, until one is done). */
static struct server_conn *find_ready(struct pool_bucket *b, int window, pthread_t self, bool mine)
{
    struct server_conn *s;
    int considered = 0;
    DL_FOREACH(b->free, s) {
        if (considered == window)
            break;
        considered += !s->stalled;
        if (pthread_equal(s->last_thread, self) == mine &&
            (s->pending == PENDING_NONE || session_reset_arrived(s->conn)))
            return s;
    }
    return NULL;
}

/* Picks the free connection to bind, among the hot ones (hot_free): a ready one this thread's
 * handles used last (a backend that keeps talking to one thread stays on its CPU:
 * bench/README.md), else a ready one of another thread, else the oldest hot one that is not
 * stalled (its reset was sent first, so it is waited for the shortest). A blocking connect
 * never opens a spare beside a resetting one: the spare would stay with the process for good,
 * and a fleet of processes that each held one more connection than under plain libpq would
 * take the slots of a process the server would have served (tests: fork_prefork_tight). A
 * `nonblocking` one (PQconnectStart), which cannot wait without a deadline of its own, still
 * opens a spare while may_open_spare allows and the key is not under `pressure`. Expired ones
 * go to *to_close. Returns NULL when there is none to take; the pick is BUSY. */
struct server_conn *pick_free(struct pool_bucket *b, int64_t now, bool nonblocking, bool pressure,
                              struct server_conn **to_close)
{
    struct server_conn *s, *tmp;
    DL_FOREACH_SAFE(b->free, s, tmp)
        if (is_expired(s, now))
            push_to_close(to_close, s);
    pthread_t self = pthread_self();
    roll_peak(b, now);
    int window = hot_free(b, nonblocking);
    if ((s = find_ready(b, window, self, true)) == NULL && (s = find_ready(b, window, self, false)) == NULL) {
        if (nonblocking && may_open_spare(b) && !pressure)
            return NULL;
        struct server_conn *oldest = NULL;
        int considered = 0;
        for (s = b->free; s != NULL && considered < window; s = s->next)
            if (!s->stalled) {
                oldest = s;
                considered++;
            }
        if ((s = oldest) == NULL)
            return NULL;
    }
    take_free(s);
    return s;
}

/* A handle of bucket b whose server connection may move to another handle: bound, idle and
 * clean since its last call, for at least PQDEDUP_UNBIND_AFTER (any time at all under
 * `pressure`), the longest idle first, and reporting the parameters a clean session of its
 * key reports (one that does not changed its session in ways the SQL did not show, such as
 * a function's set_config: it becomes sticky; a handle's own SETs are what it reported after
 * them). Returned locked (its lock is only tried: one
 * in use is not idle); NULL when there is none. */
struct handle *pick_idle_handle(struct pool_bucket *b, int64_t now, bool pressure)
{
    /* idle_since_ns is a coarse clock's, up to a tick before the call ended: one tick more
     * makes sure the handle has been idle the whole PQDEDUP_UNBIND_AFTER. */
    int64_t unbind_after =
        settings.unbind_after_ns > 0 ? settings.unbind_after_ns + monotonic_coarse_tick_ns() : 0;
    for (;;) {
        struct handle *best = NULL, *h;
        int64_t best_since = 0;
        DL_FOREACH(b->bound, h) {
            int64_t since = atomic_load_explicit(&h->idle_since_ns, memory_order_relaxed);
            if (since == 0 || (!pressure && now - since < unbind_after) ||
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
        if (best == NULL || session_parameters_fingerprint(best->conn) == pool_expected_fingerprint(best))
            return best;
        handle_make_sticky(best);
        pthread_mutex_unlock(&best->lock);
    }
}

uint64_t pool_expected_fingerprint(const struct handle *h)
{
    if (h->sets.count > 0)
        return h->sets_fingerprint;
    return h->bucket != NULL ? atomic_load(&h->bucket->baseline) : 0;
}

/* The key's reference fingerprint of reported parameters: a new connection's. (After a server
 * configuration reload, sessions report the new values: connections that no longer match are
 * closed at their next reset, and the next new one sets the reference again.) Caller holds
 * pool_lock. */
void note_baseline(struct pool_bucket *b, uint64_t fingerprint)
{
    atomic_store(&b->baseline, fingerprint);
}

/* After s's first reset: true when its reported parameters are still what a new connection of
 * the key reports. A reset that changes them (a pooler such as PgBouncer in front, which sets
 * the client's parameters with SET, so that RESET ALL reverts them) would hand the next handle
 * a session other than the one it asked for: such a connection is closed instead, and the
 * first time it happens this is logged with what to do. Called without pool_lock. */
bool reset_kept_parameters(struct server_conn *s, uint64_t baseline)
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
bool needs_check(const struct server_conn *s, const char *target, int64_t now)
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
enum session_step make_ready(struct server_conn *s, const char *target, bool from_handle,
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
void learn_new(struct server_conn *s)
{
    s->idle_limit_known = session_read_idle_timeout(s->conn, settings.check_timeout_ns, &s->server_idle_limit_ns);
}


void refusal_reason(const struct pool_bucket *b, bool final, char *out, size_t size)
{
    long long wait_ms = (long long) (settings.max_wait_ns / NS_PER_MS);
    if (at_cap(b)) {
        snprintf(out, size,
                 "pqdedup: PQDEDUP_MAX_PER_KEY=%d connections with these parameters are already open in "
                 "this process and none was freed within PQDEDUP_MAX_WAIT=%lldms; raise "
                 "PQDEDUP_MAX_PER_KEY or PQDEDUP_MAX_WAIT, or finish connections sooner",
                 settings.max_per_key, wait_ms);
        if (final)
            log_msg(LOG_WARN, "%s", out);
        return;
    }
    /* The server's own words first, as plain libpq would have reported them. */
    snprintf(out, size, "%spqdedup: the server refused new connections for lack of slots and no connection "
                        "with these parameters was freed within PQDEDUP_MAX_WAIT=%lldms",
             b->refusal_said, wait_ms);
}

void note_refusal(struct pool_bucket *b, int64_t now, const PGconn *refused)
{
    b->backoff_ns = b->backoff_ns == 0 ? REFUSAL_BACKOFF_NS
                    : b->backoff_ns * 2 > REFUSAL_BACKOFF_MAX_NS ? REFUSAL_BACKOFF_MAX_NS
                                                                  : b->backoff_ns * 2;
    b->refused_until_ns = now + b->backoff_ns;
    snprintf(b->refusal_said, sizeof b->refusal_said, "%s", real.PQerrorMessage(refused));
}
