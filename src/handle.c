/* handle.c: the table of handles the app holds, their states, and the entry to every call. */
#define _GNU_SOURCE
#include "handle.h"
#include "clock.h"
#include "log.h"
#include "pool.h"
#include "queued.h"
#include "real.h"
#include "settings.h"
#include "session.h"
#include "slots.h"
#include "sql_class.h"
#include "stats.h"
#include "stats_file.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* Handles live in one reserved address range, a slot each (slots.h), so that telling a handle
 * from libpq's own PGconn, the one question every wrapper asks, is a range check. A stale
 * pointer to a finished handle still reads a FREE slot: finished slots are reused only after
 * 64 others. */
#define SLOT_BYTES 384
#define MAX_HANDLES (16 << 20) /* alive at once: 6 GiB of address space, backed as used */
_Static_assert(sizeof(struct handle) <= SLOT_BYTES, "struct handle outgrew its slot");

static struct slots handle_slots = SLOTS_INIT(SLOT_BYTES, MAX_HANDLES, 64);
static _Atomic bool slots_full_logged;

struct handle *handle_of(const PGconn *conn)
{
    return slots_find_sized(&handle_slots, conn, SLOT_BYTES);
}

/* h's record in the live stats file: the same index as its slot (NULL without a region). */
static struct stats_file_handle *record_of(const struct handle *h)
{
    return stats_file_handle_record(slots_index_sized(&handle_slots, h, SLOT_BYTES));
}

struct stats_file_handle *handle_stats(const struct handle *h)
{
    return record_of(h);
}

/* A recursive lock: a notice callback that calls back into libpq on the same handle must not
 * deadlock its own thread. */
static void init_handle_lock(struct handle *h)
{
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&h->lock, &attr);
    pthread_mutexattr_destroy(&attr);
}

struct handle *handle_new(void)
{
    bool fresh;
    struct handle *h = slots_take(&handle_slots, &fresh);
    if (h == NULL) {
        if (!atomic_exchange(&slots_full_logged, true))
            log_msg(LOG_WARN, "no room for more connections (address space); further connects go to "
                              "libpq untouched");
        return NULL;
    }
    if (fresh)
        init_handle_lock(h);
    pthread_mutex_lock(&h->lock);
    /* The lock, the generation and the cancel count (which a late PQcancel of the slot's last
     * handle may still touch: cancel.c) survive; everything else starts from zero, after the
     * stand-in a use after PQfinish may have left in the slot. */
    atomic_fetch_add(&h->generation, 1);
    if (h->conn != NULL)
        real.PQfinish(h->conn);
    free(h->failure);
    free(h->failure_shown);
    memset((char *) h + offsetof(struct handle, owner), 0, sizeof *h - offsetof(struct handle, owner));
    h->owner = pthread_self();
    h->depth = 1;
    h->state = HANDLE_FREE;
    h->fd = -1;
    h->fd_copies = -1;
    wake_init(&h->wait);
    session_default_client_state(&h->client);
    h->opened_ns = monotonic_coarse_ns(); /* for the stats' ages: a tick's error is nothing there */
    stats_file_handle_opened(record_of(h), h->opened_ns);
    return h;
}

void handle_release(struct handle *h)
{
    stats_file_handle_state(record_of(h), HANDLE_FREE);
    h->depth = 0;
    pthread_mutex_unlock(&h->lock);
    slots_give_back(&handle_slots, h);
}

bool handle_set_state(struct handle *h, enum handle_state next)
{
    static const char *const names[] = {
#define HANDLE_STATE_NAME(name, doc) [HANDLE_##name] = #name,
        HANDLE_STATES(HANDLE_STATE_NAME)
#undef HANDLE_STATE_NAME
    };
    /* An asynchronous connect may go from any of its states to any other while it is polled. */
    const unsigned connecting = 1u << HANDLE_STARTED | 1u << HANDLE_CONNECTING | 1u << HANDLE_PREPARING |
                                1u << HANDLE_WAITING;
    /* allowed[from] is the set of states `from` may move to */
    const unsigned allowed[] = {
        [HANDLE_FREE] = connecting | 1u << HANDLE_BOUND | 1u << HANDLE_DIRECT,
        [HANDLE_STARTED] = 1u << HANDLE_BOUND | 1u << HANDLE_FREE,
        [HANDLE_CONNECTING] = connecting | 1u << HANDLE_BOUND | 1u << HANDLE_DIRECT | 1u << HANDLE_FREE,
        [HANDLE_PREPARING] = connecting | 1u << HANDLE_BOUND | 1u << HANDLE_DIRECT | 1u << HANDLE_FREE,
        [HANDLE_WAITING] = connecting | 1u << HANDLE_BOUND | 1u << HANDLE_DIRECT | 1u << HANDLE_FREE,
        [HANDLE_BOUND] = 1u << HANDLE_UNBOUND | 1u << HANDLE_DIRECT | 1u << HANDLE_FREE,
        [HANDLE_UNBOUND] = 1u << HANDLE_BOUND | 1u << HANDLE_QUEUED | 1u << HANDLE_RESETTING | 1u << HANDLE_DIRECT |
                           1u << HANDLE_FREE,
        [HANDLE_QUEUED] = 1u << HANDLE_BOUND | 1u << HANDLE_RESETTING | 1u << HANDLE_DIRECT | 1u << HANDLE_FREE,
        [HANDLE_RESETTING] = 1u << HANDLE_BOUND | 1u << HANDLE_UNBOUND | 1u << HANDLE_DIRECT | 1u << HANDLE_FREE,
        [HANDLE_DIRECT] = 1u << HANDLE_BOUND | 1u << HANDLE_FREE,
    };
    if ((allowed[h->state] & (1u << next)) == 0) {
        log_msg(LOG_ERROR, "bug: a handle cannot go from %s to %s; left %s", names[h->state],
                names[next], names[h->state]);
        return false;
    }
    h->state = next;
    stats_file_handle_state(record_of(h), next);
    if (next != HANDLE_BOUND)
        atomic_store_explicit(&h->idle_since_ns, 0, memory_order_relaxed);
    return true;
}

/* ---- a finished handle ---- */

/* A failed PGconn for h's slot, whose PQerrorMessage says the program used a finished
 * connection. Made at the first such call, kept in the slot (under its lock, so threads
 * misusing one slot take turns) until the slot is reused. NULL when libpq is out of memory. */
static PGconn *finished_stand_in(struct handle *h)
{
    static const char why[] = "pqdedup: this connection was already finished with PQfinish; using it is a bug "
                              "in the program";
    if (h->conn == NULL) /* said first by PQerrorMessage, whatever libpq says of later calls */
        handle_fail(h, why);
    return h->conn;
}

/* ---- one call of the app ---- */

static void lock_handle(struct handle *h)
{
    pthread_mutex_lock(&h->lock);
    if (h->depth++ == 0)
        h->owner = pthread_self();
}

/* A call that needs the server on bound h before every result of its pending SETs was read:
 * libpq may drop those results unseen (PQexec does) or clear its error text (the escape
 * functions do), so whether the SETs took effect cannot be told: h keeps its connection. */
static void pin_if_sets_unread(struct handle *h)
{
    if (handle_sets_pending(h) && !h->sticky && !session_is_idle(h->conn))
        handle_make_sticky(h);
}

PGconn *handle_enter(struct handle *h, bool need_server)
{
    lock_handle(h);
    if (h->depth == 1)
        stats_file_call_begins(record_of(h));
    switch (h->state) {
    case HANDLE_BOUND:
        if (h->depth == 1 && atomic_load_explicit(&pool_forked, memory_order_relaxed) &&
            pool_server_is_inherited(h))
            pool_leave_inherited(h); /* forked child: BOUND becomes UNBOUND or DIRECT */
        else if (need_server)
            pin_if_sets_unread(h);
        break;
    case HANDLE_UNBOUND:
        break;
    case HANDLE_QUEUED:
    case HANDLE_RESETTING:
        /* Its kept command is sent once a server connection is had and ready: a call that
         * needs the server waits for that, as libpq's own would wait for the command's answer. */
        queued_advance(h, need_server);
        if (need_server && h->state == HANDLE_BOUND)
            pin_if_sets_unread(h);
        return queued_is_kept(h) ? NULL : h->conn;
    case HANDLE_STARTED:
    case HANDLE_CONNECTING:
    case HANDLE_PREPARING:
    case HANDLE_WAITING:
    case HANDLE_DIRECT:
        return h->conn;
    case HANDLE_FREE: {
        static _Atomic bool said;
        if (!atomic_exchange(&said, true))
            log_msg(LOG_WARN, "a libpq call on a connection the program already finished (PQfinish); "
                              "it fails as on a failed connection");
        return finished_stand_in(h);
    }
    }
    if (h->state == HANDLE_UNBOUND) {
        if (!need_server)
            return NULL;
        pool_rebind(h); /* BOUND, or DIRECT on a failed connection */
    }
    return h->conn;
}

/* Once h's command with a SET is done (h idle) and no result of it failed (handle_note_result,
 * and libpq's error text, which a command starts empty, is still empty): its SETs are carried
 * from now on. A failure may have rolled back some of them and not others: h turns sticky. */
static void confirm_sets(struct handle *h)
{
    if (real.PQerrorMessage(h->conn)[0] != '\0' || !carried_sets_confirm(&h->sets))
        handle_make_sticky(h);
    else
        h->sets_fingerprint = session_parameters_fingerprint(h->conn);
}

void handle_note_sent(struct handle *h, int sent)
{
    if (sent == 0 && handle_sets_pending(h))
        handle_make_sticky(h); /* noted, never sent: only the error text would tell */
}

void handle_note_result(struct handle *h, const PGresult *result)
{
    if (!handle_sets_pending(h) || h->sticky)
        return;
    ExecStatusType status = PQresultStatus(result);
    if (result == NULL ||
        (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK && status != PGRES_SINGLE_TUPLE &&
         status != PGRES_EMPTY_QUERY))
        handle_make_sticky(h);
}

void handle_leave(struct handle *h, bool read_only)
{
    if (h->depth == 1) {
        /* One read of the coarse clock (a fraction of a precise one) serves both stamps. */
        struct stats_file_handle *rec = record_of(h);
        int64_t now = rec != NULL ? monotonic_coarse_ns() : 0;
        if (!read_only && h->state == HANDLE_BOUND) {
            if (handle_sets_pending(h) && !h->sticky && session_is_idle(h->conn))
                confirm_sets(h);
            /* Idle since this call: a handle in use every few ms is never the longest idle. */
            bool idle = !handle_is_sticky(h) && session_is_idle(h->conn);
            if (idle && now == 0)
                now = monotonic_coarse_ns();
            int64_t since = atomic_load_explicit(&h->idle_since_ns, memory_order_relaxed);
            atomic_store_explicit(&h->idle_since_ns, idle ? now : 0, memory_order_relaxed);
            if (idle && since == 0)
                pool_note_idle(h);
            if (h->last_error != NULL) { /* kept from before it was bound again: a command has run */
                free(h->last_error);
                h->last_error = NULL;
            }
        }
        stats_file_call_ends(rec, now);
    }
    h->depth--;
    pthread_mutex_unlock(&h->lock);
}

/* sql_class.c's callback: a named prepared statement created or dropped on h. Out of memory
 * to remember one, h becomes sticky. */
static void note_statement_name(void *arg, bool prepared, const char *name, size_t len)
{
    struct handle *h = arg;
    if (!prepared && len == 0) { /* DEALLOCATE ALL */
        for (int i = 0; i < h->nstatements; i++)
            free(h->statements[i]);
        h->nstatements = 0;
        return;
    }
    for (int i = 0; i < h->nstatements; i++) {
        if (strlen(h->statements[i]) == len && memcmp(h->statements[i], name, len) == 0) {
            if (!prepared) {
                free(h->statements[i]);
                h->statements[i] = h->statements[--h->nstatements];
            }
            return;
        }
    }
    if (!prepared)
        return;
    if (h->nstatements == h->statements_size) {
        int size = h->statements_size ? 2 * h->statements_size : 4;
        char **grown = realloc(h->statements, (size_t) size * sizeof *grown);
        if (grown == NULL) {
            handle_make_sticky(h);
            return;
        }
        h->statements = grown;
        h->statements_size = size;
    }
    char *copy = strndup(name, len);
    if (copy == NULL)
        handle_make_sticky(h);
    else
        h->statements[h->nstatements++] = copy;
}

/* sql_class.c's callback: a SET or RESET of a session parameter on h, pending until its
 * command is confirmed (handle_leave). Out of memory, h becomes sticky. */
static void note_setting(void *arg, const char *name, size_t name_len, const char *statement, size_t len)
{
    struct handle *h = arg;
    if (!carried_sets_note(&h->sets, name, name_len, statement, len))
        handle_make_sticky(h);
}

/* Notes the SQL of a command h is about to send; SETs are carried only when `sets` (not for a
 * statement being prepared, which runs later, or never), only when the reset query resets
 * parameters between two handles (else a SET keeps the handle on its connection, as other
 * session state does), and not on a DIRECT handle (which never moves). */
static void note_sql(struct handle *h, const char *sql, bool sets)
{
    if (h->sticky)
        return;
    bool carry = sets && settings.reset_clears_parameters && h->state != HANDLE_DIRECT;
    struct sql_session_notes notes = { .statement = note_statement_name, .setting = carry ? note_setting : NULL,
                                       .arg = h };
    int pending_before = h->sets.npending;
    if (!sql_is_session_clean_but_noted(sql, &notes)) {
        handle_make_sticky(h);
        return;
    }
    if (h->sets.npending == pending_before)
        return; /* no SET or RESET in it */
    /* Carried only when the string holds nothing but SETs, RESETs and SHOWs (so its success
     * means each of them took effect, and they alone changed what the session reports), sent
     * outside a transaction block (where a SET lasts only if the block commits), after no
     * change pqdedup did not see (the session reports what its carried SETs left). A command
     * being kept (QUEUED, RESETTING) runs on a reset connection after the SETs run again. */
    if (notes.other_statements ||
        (h->state == HANDLE_BOUND && (!session_is_idle(h->conn) || session_parameters_fingerprint(h->conn) !=
                                                                      pool_expected_fingerprint(h))))
        handle_make_sticky(h);
}

void handle_note_sql(struct handle *h, const char *sql)
{
    note_sql(h, sql, true);
}

void handle_note_prepare(struct handle *h, const char *sql, const char *name)
{
    note_sql(h, sql, false);
    if (!h->sticky && name != NULL && name[0] != '\0')
        note_statement_name(h, true, name, strlen(name));
}

void handle_forget_session(struct handle *h)
{
    for (int i = 0; i < h->nstatements; i++)
        free(h->statements[i]);
    free(h->statements);
    h->statements = NULL;
    h->nstatements = h->statements_size = 0;
    carried_sets_clear(&h->sets);
}

void handle_note_events(struct handle *h)
{
    h->events = true;
    handle_make_sticky(h);
}

void handle_make_sticky(struct handle *h)
{
    h->sticky = true;
    atomic_store_explicit(&h->idle_since_ns, 0, memory_order_relaxed);
}

/* ---- the view of an unbound handle ---- */

_Static_assert(SESSION_N_REPORTED <= 16, "struct session_view holds 16 parameters");

/* The strings a view holds, read from a connection, in a fixed order. */
struct view_strings {
    const char *text[8 + SESSION_N_REPORTED];
};
enum { DB, USER, PASS, HOST, HOSTADDR, PORT, TTY, OPTIONS, PARAMETERS };

static void read_strings(PGconn *c, struct view_strings *v)
{
    v->text[DB] = real.PQdb(c);
    v->text[USER] = real.PQuser(c);
    v->text[PASS] = real.PQpass(c);
    v->text[HOST] = real.PQhost(c);
    v->text[HOSTADDR] = real.PQhostaddr(c);
    v->text[PORT] = real.PQport(c);
    v->text[TTY] = real.PQtty(c);
    v->text[OPTIONS] = real.PQoptions(c);
    for (size_t i = 0; i < SESSION_N_REPORTED; i++)
        v->text[PARAMETERS + i] = real.PQparameterStatus(c, session_reported_parameters[i]);
}

static bool same_text(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* True when `view` says what connection c says. */
static bool view_matches(const struct session_view *view, PGconn *c, const struct view_strings *now)
{
    const char *const held[] = { view->db, view->user, view->pass, view->host, view->hostaddr,
                                 view->port, view->tty, view->options };
    for (int i = 0; i < PARAMETERS; i++)
        if (!same_text(held[i], now->text[i]))
            return false;
    int n = 0;
    for (size_t i = 0; i < SESSION_N_REPORTED; i++) {
        const char *value = now->text[PARAMETERS + i];
        if (value == NULL)
            continue;
        if (n >= view->nparameters || view->parameter_names[n] != session_reported_parameters[i] ||
            strcmp(view->parameter_values[n], value) != 0)
            return false;
        n++;
    }
    return n == view->nparameters && view->protocol_version == real.PQprotocolVersion(c) &&
           view->server_version == real.PQserverVersion(c) &&
           view->client_encoding == real.PQclientEncoding(c) &&
           view->used_password == real.PQconnectionUsedPassword(c) &&
           view->ssl_in_use == real.PQsslInUse(c) && view->gss_in_use == real.PQgssEncInUse(c);
}

/* Appends a copy of `text` (NULL kept as NULL) at *cursor; returns the copy. */
static char *copy_into(char **cursor, const char *text)
{
    if (text == NULL)
        return NULL;
    size_t len = strlen(text) + 1;
    char *copy = memcpy(*cursor, text, len);
    *cursor += len;
    return copy;
}

/* A new view of connection c (one reference), or NULL when out of memory. */
static struct session_view *make_view(PGconn *c, const struct view_strings *now)
{
    size_t bytes = sizeof(struct session_view);
    for (size_t i = 0; i < sizeof now->text / sizeof now->text[0]; i++)
        bytes += now->text[i] != NULL ? strlen(now->text[i]) + 1 : 0;
    struct session_view *v = malloc(bytes);
    if (v == NULL)
        return NULL;
    char *cursor = (char *) (v + 1);
    atomic_init(&v->refs, 1);
    v->db = copy_into(&cursor, now->text[DB]);
    v->user = copy_into(&cursor, now->text[USER]);
    v->pass = copy_into(&cursor, now->text[PASS]);
    v->host = copy_into(&cursor, now->text[HOST]);
    v->hostaddr = copy_into(&cursor, now->text[HOSTADDR]);
    v->port = copy_into(&cursor, now->text[PORT]);
    v->tty = copy_into(&cursor, now->text[TTY]);
    v->options = copy_into(&cursor, now->text[OPTIONS]);
    v->nparameters = 0;
    for (size_t i = 0; i < SESSION_N_REPORTED; i++) {
        if (now->text[PARAMETERS + i] == NULL)
            continue;
        v->parameter_names[v->nparameters] = session_reported_parameters[i];
        v->parameter_values[v->nparameters++] = copy_into(&cursor, now->text[PARAMETERS + i]);
    }
    v->protocol_version = real.PQprotocolVersion(c);
    v->server_version = real.PQserverVersion(c);
    v->client_encoding = real.PQclientEncoding(c);
    v->used_password = real.PQconnectionUsedPassword(c);
    v->ssl_in_use = real.PQsslInUse(c);
    v->gss_in_use = real.PQgssEncInUse(c);
    return v;
}

void session_view_release(struct session_view *view)
{
    if (view != NULL && atomic_fetch_sub(&view->refs, 1) == 1)
        free(view);
}

bool handle_remember_view(struct handle *h, struct session_view **shared)
{
    PGconn *c = h->conn;
    struct view_strings now;
    read_strings(c, &now);
    struct session_view *view = *shared;
    if (view != NULL && view_matches(view, c, &now)) {
        atomic_fetch_add(&view->refs, 1);
    } else if ((view = make_view(c, &now)) != NULL) {
        if (h->sets.count == 0) { /* (one its own SETs changed is not a clean session's) */
            session_view_release(*shared);
            atomic_fetch_add(&view->refs, 1); /* one for *shared, one for h */
            *shared = view;
        }
    } else {
        return false;
    }
    const char *error = real.PQerrorMessage(c);
    char *last_error = NULL;
    if (error != NULL && error[0] != '\0' && (last_error = strdup(error)) == NULL) {
        session_view_release(view);
        return false;
    }
    handle_forget_view(h);
    h->view = view;
    h->last_error = last_error;
    h->last_backend_pid = real.PQbackendPID(c);
    return true;
}

void handle_forget_view(struct handle *h)
{
    session_view_release(h->view);
    h->view = NULL;
    free(h->last_error);
    h->last_error = NULL;
    free(h->failure);
    h->failure = NULL;
    free(h->failure_shown);
    h->failure_shown = NULL;
    h->stand_in = false;
}

static void set_failure(struct handle *h, const char *why)
{
    size_t len = why != NULL ? strlen(why) : 0;
    if (len > 0 && asprintf(&h->failure, "%s%s", why, why[len - 1] == '\n' ? "" : "\n") < 0)
        h->failure = NULL;
}

void handle_take_failure(struct handle *h, PGconn *failed)
{
    handle_forget_view(h);
    h->conn = failed;
    if (failed != NULL)
        set_failure(h, real.PQerrorMessage(failed));
}

void handle_fail(struct handle *h, const char *why)
{
    /* libpq reports an unknown keyword by its name (with a value: libpq ignores keywords whose
     * value is empty), so the name is the sentence, should the reason be lost. */
    const char *const keywords[] = { why, NULL };
    const char *const values[] = { "failed", NULL };
    handle_forget_view(h);
    h->conn = real.PQconnectStartParams(keywords, values, 0);
    set_failure(h, why);
    h->stand_in = h->conn != NULL && h->failure != NULL;
}

const char *handle_unbound_parameter(const struct handle *h, const char *name)
{
    if (name == NULL)
        return NULL;
    for (int i = 0; i < h->view->nparameters; i++)
        if (strcmp(h->view->parameter_names[i], name) == 0)
            return h->view->parameter_values[i];
    return NULL;
}

/* ---- fork ---- */

void handle_lock_for_fork(void)
{
    slots_lock_for_fork(&handle_slots);
}

/* A handle another parent thread was inside: its lock is made usable, the handle stays busy. */
static void reclaim_lock_of_lost_thread(void *slot)
{
    struct handle *h = slot;
    if (h->depth > 0 && !pthread_equal(h->owner, pthread_self())) {
        init_handle_lock(h);
        h->depth = 0;
        atomic_store_explicit(&h->idle_since_ns, 0, memory_order_relaxed);
    }
}

void handle_unlock_after_fork(bool in_child)
{
    if (in_child)
        slots_for_each(&handle_slots, reclaim_lock_of_lost_thread);
    slots_unlock_after_fork(&handle_slots);
}
