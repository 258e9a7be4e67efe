/* connect.c: the app's connects, polls, resets and pings; and pqdedup's start-up. */
#define _GNU_SOURCE
#include "connect_call.h"
#include "gotsweep.h" /* loaders (issue 4) */
#include "handle.h"
#include "key.h"
#include "log.h"
#include "pool.h"
#include "queued.h"
#include "real.h"
#include "session.h"
#include "settings.h"
#include "socket.h"
#include "stats.h"
#include "stats_file.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#define EXPORT __attribute__((visibility("default")))

/* Non-zero while a pqdedup connect or ping runs on this thread: libpq's own inner calls
 * (PQconnectdb -> PQconnectStart, PQping -> PQconnectStart) then pass straight through. */
static __thread int inside_wrapper;

static pthread_once_t init_once = PTHREAD_ONCE_INIT; /* announce() */
static bool pooling_on;

/* Where libpq's own code is mapped: a PQconnectStart* called from there is libpq's inner
 * call of a connect pqdedup did not see (a DEEPBIND module or a dlsym'd PQconnectdb without
 * the auditor), whose later calls pqdedup will not see either. */
static uintptr_t libpq_text_start, libpq_text_end;

/* dl_iterate_phdr callback: records the executable segment of the object whose base is
 * *data. Returns 1 to stop once found. */
static int find_libpq_text(struct dl_phdr_info *info, size_t size, void *data)
{
    (void) size;
    if ((uintptr_t) info->dlpi_addr != *(uintptr_t *) data)
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            libpq_text_start = info->dlpi_addr + ph->p_vaddr;
            libpq_text_end = libpq_text_start + ph->p_memsz;
        }
    }
    return 1;
}

static void locate_libpq(void)
{
    Dl_info info;
    if (dladdr((void *) real.PQconnectStart, &info) != 0 && info.dli_fbase != NULL) {
        uintptr_t base = (uintptr_t) info.dli_fbase;
        dl_iterate_phdr(find_libpq_text, &base);
    }
}

/* True when `caller` (a return address) is inside libpq. */
static bool called_from_libpq(const void *caller)
{
    return (uintptr_t) caller >= libpq_text_start && (uintptr_t) caller < libpq_text_end;
}

/* Reads the settings, finds libpq and checks it knows every function libpq exports, arms
 * fork and exit handling. On any problem pqdedup stays a pure pass-through. Runs when the
 * library is loaded, before the program, so that a forked worker whose environment is
 * emptied (PHP-FPM's clear_env) keeps the settings. Says nothing: see announce(). */
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static enum { OFF_NO_LIBPQ, OFF_DISABLED, OFF_UNKNOWN_LIBPQ, OFF_NO_MEMORY, ON } start_state;
static char unknown_export[128];

static void start_up(void)
{
    int saved_errno = errno;
    settings_load();
    if (real_resolve() != 0) {
        start_state = OFF_NO_LIBPQ;
    } else if (settings.disabled) {
        start_state = OFF_DISABLED;
    } else if (!real_libpq_is_known(unknown_export, sizeof unknown_export)) {
        start_state = OFF_UNKNOWN_LIBPQ;
    } else if (!session_init()) {
        start_state = OFF_NO_MEMORY;
    } else {
        locate_libpq();
        pool_init();
        start_state = ON;
        pooling_on = true;
    }
    errno = saved_errno;
}

__attribute__((constructor)) static void start_up_at_load(void)
{
    pthread_once(&load_once, start_up);
}

/* At the first libpq call of the process: the log is opened, bad settings reported, and what
 * start_up found said, so programs that never use libpq print nothing. */
static void announce(void)
{
    pthread_once(&load_once, start_up);
    settings_report();
    stats_mark_used();
    switch (start_state) {
    case OFF_NO_LIBPQ:
        log_msg(LOG_ERROR, "cannot find libpq's own functions; passing every call through");
        break;
    case OFF_DISABLED:
        log_msg(LOG_INFO, "PQDEDUP_DISABLE is set; passing every call through");
        break;
    case OFF_UNKNOWN_LIBPQ:
        log_msg(LOG_INFO, "this libpq exports %s, which pqdedup does not know (a newer libpq?); "
                          "passing every call through", unknown_export);
        break;
    case OFF_NO_MEMORY:
        log_msg(LOG_ERROR, "libpq cannot make a connection object; passing every call through");
        break;
    case ON:
        stats_file_start(); /* the live stats file: at the first connect, before any handle */
        log_msg(LOG_INFO, "pooling on: keep_per_key=%d max_per_key=%d unbind_after=%lldms reset_query=%s",
                settings.keep_per_key, settings.max_per_key, (long long) (settings.unbind_after_ns / 1000000),
                settings.reset_query[0] ? settings.reset_query : "(none)");
        break;
    }
}

/* True when this connect should go through the pool. */
static bool intercepting(void)
{
    pthread_once(&init_once, announce);
    return pooling_on && inside_wrapper == 0;
}

/* The whole connect path: find the key, get a handle, let the pool bind it. Connects pqdedup
 * cannot pool go to libpq as they were made, and the app gets libpq's own connection (so do
 * connects that fail: the app reads the failure from libpq's connection). The app's errno is
 * kept when no connect was made. `caller` is the app's return address: where the handle was
 * opened, for the leak report. */
static PGconn *connect_through_pool(const struct connect_call *c, const void *caller)
{
    int saved_errno = errno;
    inside_wrapper++;
    PGconn *answer = NULL;
    char *key = NULL;
    struct handle *h = NULL;
    /* Loaders (issue 4, gotsweep.h): slots of modules loaded since the last connect must
     * reach these wrappers before a handle is handed out; when that failed, plain libpq. */
    stats_file_connect_hook(); /* a forked child's first connect makes its own stats file */
    if (gotsweep_if_needed() && (key = connect_call_key(c)) != NULL)
        h = handle_new();
    if (h != NULL)
        stats_file_handle_site(handle_stats(h), stats_file_site(caller));
    else if (key == NULL)
        log_msg(LOG_DEBUG, "connection parameters not understood (or loaders unsafe); passing the connect to libpq");
    PGconn *failed = NULL;
    enum connect_outcome outcome = h != NULL ? pool_connect(h, key, c, &failed) : CONNECT_PASSTHROUGH;
    if (key != NULL && log_enabled(LOG_DEBUG)) {
        static const char *const what[] = {
            [CONNECT_BOUND] = "bound", [CONNECT_OPENING] = "opening a connection",
            [CONNECT_FAILED] = "failed", [CONNECT_REFUSED] = "refused by pqdedup",
            [CONNECT_PASSTHROUGH] = "passed to libpq",
        };
        char described[256];
        log_msg(LOG_DEBUG, "connect %s: %s", key_describe(key, described, sizeof described), what[outcome]);
    }
    free(key);
    errno = saved_errno;
    switch (outcome) {
    case CONNECT_BOUND:
    case CONNECT_OPENING:
    case CONNECT_REFUSED:
        answer = handle_as_conn(h);
        handle_leave(h, false);
        break;
    case CONNECT_FAILED:
        handle_release(h);
        answer = failed;
        break;
    case CONNECT_PASSTHROUGH:
        if (h != NULL)
            handle_release(h);
        stats_add(passthrough);
        answer = connect_call_open(c);
        break;
    }
    inside_wrapper--;
    return answer;
}

EXPORT PGconn *PQconnectdb(const char *conninfo)
{
    struct connect_call c = { .shape = CALL_CONNINFO, .blocking = true, .conninfo = conninfo };
    return intercepting() ? connect_through_pool(&c, __builtin_return_address(0)) : real.PQconnectdb(conninfo);
}

EXPORT PGconn *PQconnectStart(const char *conninfo)
{
    struct connect_call c = { .shape = CALL_CONNINFO, .blocking = false, .conninfo = conninfo };
    bool inner = called_from_libpq(__builtin_return_address(0));
    return intercepting() && !inner ? connect_through_pool(&c, __builtin_return_address(0))
                                    : real.PQconnectStart(conninfo);
}

EXPORT PGconn *PQconnectdbParams(const char *const *keywords, const char *const *values, int expand_dbname)
{
    struct connect_call c = { .shape = CALL_ARRAYS, .blocking = true, .keywords = keywords,
                              .values = values, .expand_dbname = expand_dbname };
    return intercepting() ? connect_through_pool(&c, __builtin_return_address(0))
                          : real.PQconnectdbParams(keywords, values, expand_dbname);
}

EXPORT PGconn *PQconnectStartParams(const char *const *keywords, const char *const *values, int expand_dbname)
{
    struct connect_call c = { .shape = CALL_ARRAYS, .blocking = false, .keywords = keywords,
                              .values = values, .expand_dbname = expand_dbname };
    bool inner = called_from_libpq(__builtin_return_address(0));
    return intercepting() && !inner ? connect_through_pool(&c, __builtin_return_address(0))
                                    : real.PQconnectStartParams(keywords, values, expand_dbname);
}

EXPORT PGconn *PQsetdbLogin(const char *pghost, const char *pgport, const char *pgoptions,
                            const char *pgtty, const char *dbName, const char *login, const char *pwd)
{
    struct connect_call c = { .shape = CALL_SETDB, .blocking = true, .host = pghost, .port = pgport,
                              .options = pgoptions, .tty = pgtty, .dbname = dbName, .user = login,
                              .password = pwd };
    return intercepting() ? connect_through_pool(&c, __builtin_return_address(0))
                          : real.PQsetdbLogin(pghost, pgport, pgoptions, pgtty, dbName, login, pwd);
}

/* A handle answered by a pooled connection is connected at its first poll; one the pool
 * prepares a connection for, or that waits for one, or that opens a new one, is polled by the
 * pool (pool_connect_poll), which never blocks. */
EXPORT PostgresPollingStatusType PQconnectPoll(PGconn *conn)
{
    struct handle *h = handle_of(conn);
    if (h == NULL)
        return real.PQconnectPoll(conn);
    handle_enter(h, false);
    PostgresPollingStatusType result = pool_connect_poll(h);
    socket_follow(h); /* what it waits on may have changed (a socket of libpq's own may) */
    handle_leave(h, false);
    return result;
}

/* PQping opens and finishes a private connection: it must never touch the pool. */
EXPORT PGPing PQping(const char *conninfo)
{
    pthread_once(&init_once, announce);
    inside_wrapper++;
    PGPing result = real.PQping(conninfo);
    inside_wrapper--;
    return result;
}

EXPORT PGPing PQpingParams(const char *const *keywords, const char *const *values, int expand_dbname)
{
    pthread_once(&init_once, announce);
    inside_wrapper++;
    PGPing result = real.PQpingParams(keywords, values, expand_dbname);
    inside_wrapper--;
    return result;
}

/* ---- resets -------------------------------------------------------------------------
 * A bound handle's server connection is reset by libpq (a new backend, as plain libpq); an
 * unbound handle is bound to a server connection instead, which gives it a fresh session
 * too. libpq's reset turns nonblocking mode off, and so does the handle's. A connection
 * inherited from the parent process is first detached from the parent's socket. */

/* Before libpq resets h's connection. Returns the connection to reset, NULL when none. */
static PGconn *before_reset(struct handle *h, PGconn *server)
{
    handle_forget_session(h); /* a reset is a new session: nothing of the old one is carried */
    pool_drop_socket_copy(h); /* libpq's reset opens a new socket */
    if (h->state == HANDLE_STARTED)
        pool_connect_seen(h);
    if (h->state == HANDLE_RESETTING)
        pool_abandon_resetting(h); /* UNBOUND, its command dropped */
    if (h->state == HANDLE_QUEUED)
        queued_forget(h); /* its command is dropped, as libpq's reset drops one in flight */
    if (h->state == HANDLE_UNBOUND || h->state == HANDLE_QUEUED) {
        h->sticky = h->events;
        pool_rebind(h);
        return NULL;
    }
    if (h->state == HANDLE_DIRECT && h->inherited) {
        session_detach_inherited(server);
        h->inherited = false;
    }
    if (h->state == HANDLE_DIRECT && h->bucket != NULL) {
        /* A connect or rebind that failed: the pool is asked again, as libpq would try again. */
        real.PQfinish(h->conn);
        h->conn = NULL;
        handle_forget_view(h); /* why it failed goes with its failed connection */
        h->sticky = h->events; /* a new session, from the pool */
        pool_rebind(h);
        return NULL;
    }
    return h->state == HANDLE_FREE ? NULL : server;
}

/* After libpq reset h's connection (or finished polling a reset). */
static void after_reset(struct handle *h)
{
    h->client.nonblocking = false;
    h->sticky = h->events;
    if (h->state == HANDLE_BOUND)
        pool_server_was_reset(h);
    else if (h->state == HANDLE_CONNECTING && real.PQstatus(h->conn) == CONNECTION_OK)
        pool_connect_finished(h);
}

EXPORT void PQreset(PGconn *conn)
{
    struct handle *h = handle_of(conn);
    if (h == NULL) {
        real.PQreset(conn);
        return;
    }
    PGconn *server = before_reset(h, handle_enter(h, false));
    if (server != NULL) {
        real.PQreset(server);
        after_reset(h);
    }
    socket_follow(h); /* libpq's reset opens a new socket */
    handle_leave(h, false);
}

EXPORT int PQresetStart(PGconn *conn)
{
    struct handle *h = handle_of(conn);
    if (h == NULL)
        return real.PQresetStart(conn);
    PGconn *server = before_reset(h, handle_enter(h, false));
    int result = server != NULL ? real.PQresetStart(server) : h->state == HANDLE_BOUND;
    /* (a handle the pool could not bind again fails its reset as a plain one would: 0) */
    if (server != NULL)
        h->client.nonblocking = false;
    socket_follow(h);
    handle_leave(h, false);
    return result;
}

EXPORT PostgresPollingStatusType PQresetPoll(PGconn *conn)
{
    struct handle *h = handle_of(conn);
    if (h == NULL)
        return real.PQresetPoll(conn);
    PGconn *server = handle_enter(h, false);
    PostgresPollingStatusType result;
    if (server == NULL) {
        result = PGRES_POLLING_OK; /* unbound: nothing under way */
    } else {
        result = real.PQresetPoll(server);
        if (result == PGRES_POLLING_OK)
            after_reset(h);
    }
    socket_follow(h);
    handle_leave(h, false);
    return result;
}
