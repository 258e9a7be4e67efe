/* shim.c: the libpq functions pqdedup intercepts; everything else goes to libpq. */
#define _GNU_SOURCE
#include "gotsweep.h" /* loaders (issue 4) */
#include "key.h"
#include "log.h"
#include "pool.h"
#include "real.h"
#include "session.h"
#include "settings.h"
#include "sql_class.h"
#include "stats.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <stdint.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define EXPORT __attribute__((visibility("default")))

/* Non-zero while a pqdedup wrapper runs on this thread: libpq's own inner calls
 * (PQconnectdb -> PQconnectStart, PQping -> PQfinish) then pass straight through. */
static __thread int inside_wrapper;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static bool pooling_on;

/* Where libpq's own code is mapped: a PQconnectStart* called from there is libpq's
 * inner call of a connect pqdedup did not see (a DEEPBIND module or a dlsym'd
 * PQconnectdb without the auditor), whose PQfinish it will not see either. */
static uintptr_t libpq_text_start, libpq_text_end;

/* dl_iterate_phdr callback: records the executable segment of the object whose
 * base is *data. Returns 1 to stop once found. */
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

/* Reads the settings, finds libpq, arms fork and exit handling. On any problem
 * pqdedup stays a pure pass-through. */
static void shim_init(void)
{
    settings_load();
    if (real_resolve() != 0) {
        log_msg(LOG_ERROR, "cannot find libpq's own functions; passing every call through");
        return;
    }
    if (settings.disabled) {
        log_msg(LOG_INFO, "PQDEDUP_DISABLE is set; passing every call through");
        return;
    }
    locate_libpq();
    pool_init();
    pooling_on = true;
    log_msg(LOG_INFO, "pooling on: keep_per_key=%d share_after=%d max_per_key=%d reset_query=%s",
            settings.keep_per_key, settings.share_after, settings.max_per_key,
            settings.reset_query[0] ? settings.reset_query : "(none)");
}

/* Reads the settings when the library is loaded, so a worker forked by a program that
 * empties its environment (PHP-FPM's clear_env) keeps them. (Expected from the lead's
 * handle-model change; kept minimal here so it can be dropped on merge.) */
__attribute__((constructor)) static void shim_load(void)
{
    pthread_once(&init_once, shim_init);
}

/* True when this call should go through the pool. */
static bool intercepting(void)
{
    pthread_once(&init_once, shim_init);
    return pooling_on && inside_wrapper == 0;
}

/* One connect call of the app, as it was made. */
enum call_shape { CALL_CONNINFO, CALL_ARRAYS, CALL_SETDB };

struct connect_call {
    enum call_shape shape;
    bool blocking; /* PQconnectdb*, PQsetdbLogin; false for PQconnectStart* */
    const char *conninfo;
    const char *const *keywords, *const *values;
    int expand_dbname;
    const char *host, *port, *options, *tty, *dbname, *user, *password;
};

/* Makes the app's call with libpq's own function. Returns what libpq returns. */
static PGconn *call_libpq(const struct connect_call *c)
{
    switch (c->shape) {
    case CALL_CONNINFO:
        return c->blocking ? real.PQconnectdb(c->conninfo) : real.PQconnectStart(c->conninfo);
    case CALL_ARRAYS:
        return c->blocking ? real.PQconnectdbParams(c->keywords, c->values, c->expand_dbname)
                           : real.PQconnectStartParams(c->keywords, c->values, c->expand_dbname);
    case CALL_SETDB:
        return real.PQsetdbLogin(c->host, c->port, c->options, c->tty, c->dbname, c->user, c->password);
    }
    return NULL;
}

static char *key_for_call(const struct connect_call *c)
{
    switch (c->shape) {
    case CALL_CONNINFO:
        return key_from_conninfo(c->conninfo);
    case CALL_ARRAYS:
        return key_from_arrays(c->keywords, c->values, c->expand_dbname);
    case CALL_SETDB:
        return key_from_setdb(c->host, c->port, c->options, c->dbname, c->user, c->password);
    }
    return NULL;
}

/* A failed connection, made by libpq itself, whose PQerrorMessage says why
 * pqdedup refused: libpq reports the unknown keyword, which is the sentence. */
static PGconn *refused_at_cap(void)
{
    char reason[400];
    snprintf(reason, sizeof reason,
             "pqdedup: PQDEDUP_MAX_PER_KEY=%d connections with these parameters are already open in "
             "this process and none was finished within PQDEDUP_MAX_WAIT=%lldms; raise "
             "PQDEDUP_MAX_PER_KEY or PQDEDUP_MAX_WAIT, or finish connections sooner",
             settings.max_per_key, (long long) (settings.max_wait_ns / 1000000));
    const char *const keywords[] = { reason, NULL };
    const char *const values[] = { "refused", NULL };
    log_msg(LOG_WARN, "%s", reason);
    return real.PQconnectStartParams(keywords, values, 0);
}

/* The whole connect path: find the key, ask the pool, open a connection when it
 * says so. The app's errno is kept when no connect was made. */
static PGconn *connect_through_pool(const struct connect_call *c)
{
    int saved_errno = errno;
    inside_wrapper++;
    /* Loaders (issue 4, gotsweep.h): slots of modules loaded since the last connect must reach
     * these wrappers before a connection is handed out; when that failed, plain libpq. */
    if (!gotsweep_if_needed()) {
        stats_add(passthrough);
        PGconn *plain = call_libpq(c);
        inside_wrapper--;
        return plain;
    }
    char *key = key_for_call(c);
    PGconn *conn = NULL;
    struct grant grant = { .kind = GRANT_PASSTHROUGH };
    if (key != NULL)
        pool_acquire(key, &grant);
    else
        log_msg(LOG_DEBUG, "connection parameters not understood; passing the connect to libpq");
    if (key != NULL && log_enabled(LOG_DEBUG)) {
        static const char *const decisions[] = {
            [GRANT_REUSED] = "reusing a kept connection", [GRANT_SHARED] = "sharing a held connection",
            [GRANT_OPEN] = "opening a connection", [GRANT_REFUSED] = "refusing at PQDEDUP_MAX_PER_KEY",
            [GRANT_PASSTHROUGH] = "passing to libpq",
        };
        char described[256];
        log_msg(LOG_DEBUG, "connect %s: %s", key_describe(key, described, sizeof described),
                decisions[grant.kind]);
    }
    free(key);
    errno = saved_errno;

    switch (grant.kind) {
    case GRANT_REUSED:
    case GRANT_SHARED:
        conn = grant.conn;
        break;
    case GRANT_REFUSED:
        conn = refused_at_cap();
        errno = saved_errno;
        break;
    case GRANT_PASSTHROUGH:
        stats_add(passthrough);
        conn = call_libpq(c);
        break;
    case GRANT_OPEN:
        conn = call_libpq(c);
        /* Idle kept connections must never cost the app a connection plain libpq
         * would have had: on a refusal for lack of slots, give theirs back and
         * retry while the closed backends exit. */
        if (c->blocking && conn != NULL && PQstatus(conn) == CONNECTION_BAD &&
            session_refused_for_slots(conn) && pool_close_all_kept() > 0) {
            for (int attempt = 0; attempt < 10 && PQstatus(conn) == CONNECTION_BAD &&
                                  session_refused_for_slots(conn); attempt++) {
                real.PQfinish(conn);
                if (attempt > 0)
                    nanosleep(&(struct timespec) { .tv_nsec = 20 * 1000 * 1000 }, NULL);
                conn = call_libpq(c);
            }
        }
        saved_errno = errno;
        conn = pool_opened(&grant, conn, c->blocking);
        errno = saved_errno;
        break;
    }
    inside_wrapper--;
    return conn;
}

EXPORT PGconn *PQconnectdb(const char *conninfo)
{
    struct connect_call c = { .shape = CALL_CONNINFO, .blocking = true, .conninfo = conninfo };
    return intercepting() ? connect_through_pool(&c) : real.PQconnectdb(conninfo);
}

EXPORT PGconn *PQconnectStart(const char *conninfo)
{
    struct connect_call c = { .shape = CALL_CONNINFO, .blocking = false, .conninfo = conninfo };
    bool inner = called_from_libpq(__builtin_return_address(0));
    return intercepting() && !inner ? connect_through_pool(&c) : real.PQconnectStart(conninfo);
}

EXPORT PGconn *PQconnectdbParams(const char *const *keywords, const char *const *values, int expand_dbname)
{
    struct connect_call c = { .shape = CALL_ARRAYS, .blocking = true, .keywords = keywords,
                              .values = values, .expand_dbname = expand_dbname };
    return intercepting() ? connect_through_pool(&c) : real.PQconnectdbParams(keywords, values, expand_dbname);
}

EXPORT PGconn *PQconnectStartParams(const char *const *keywords, const char *const *values, int expand_dbname)
{
    struct connect_call c = { .shape = CALL_ARRAYS, .blocking = false, .keywords = keywords,
                              .values = values, .expand_dbname = expand_dbname };
    bool inner = called_from_libpq(__builtin_return_address(0));
    return intercepting() && !inner ? connect_through_pool(&c)
                                    : real.PQconnectStartParams(keywords, values, expand_dbname);
}

EXPORT PGconn *PQsetdbLogin(const char *pghost, const char *pgport, const char *pgoptions,
                            const char *pgtty, const char *dbName, const char *login, const char *pwd)
{
    struct connect_call c = { .shape = CALL_SETDB, .blocking = true, .host = pghost, .port = pgport,
                              .options = pgoptions, .tty = pgtty, .dbname = dbName, .user = login,
                              .password = pwd };
    return intercepting() ? connect_through_pool(&c)
                          : real.PQsetdbLogin(pghost, pgport, pgoptions, pgtty, dbName, login, pwd);
}

EXPORT void PQfinish(PGconn *conn)
{
    if (conn == NULL || !intercepting()) {
        real.PQfinish(conn);
        return;
    }
    int saved_errno = errno;
    inside_wrapper++;
    bool pooled = pool_finish(conn);
    errno = saved_errno;
    if (!pooled)
        real.PQfinish(conn);
    inside_wrapper--;
    errno = saved_errno;
}

/* PQping opens and finishes a private connection through PQconnectStart and
 * PQfinish: it must never touch the pool. */
EXPORT PGPing PQping(const char *conninfo)
{
    pthread_once(&init_once, shim_init);
    inside_wrapper++;
    PGPing result = real.PQping(conninfo);
    inside_wrapper--;
    return result;
}

EXPORT PGPing PQpingParams(const char *const *keywords, const char *const *values, int expand_dbname)
{
    pthread_once(&init_once, shim_init);
    inside_wrapper++;
    PGPing result = real.PQpingParams(keywords, values, expand_dbname);
    inside_wrapper--;
    return result;
}

/* ---- PQDEDUP_RESET=dirty: what the app sends ---------------------------------
 * libpq's PQexec, PQexecParams, PQprepare and PQexecPrepared call these through its
 * own exported symbols, so the app's SQL is seen here whichever it uses. Outside
 * dirty mode they only pass the call on. */

/* Marks conn dirty unless the statement is unnamed and its SQL provably leaves no
 * session state (sql_class.h). */
static void note_statement(PGconn *conn, const char *sql, const char *statement_name)
{
    if (conn == NULL || !intercepting() || !settings.reset_only_dirty)
        return;
    bool named = statement_name != NULL && statement_name[0] != '\0';
    if (named || !sql_is_session_clean(sql))
        pool_mark_dirty(conn);
}

EXPORT int PQsendQuery(PGconn *conn, const char *query)
{
    note_statement(conn, query, NULL);
    return real.PQsendQuery(conn, query);
}

EXPORT int PQsendQueryParams(PGconn *conn, const char *command, int nParams, const Oid *paramTypes,
                             const char *const *paramValues, const int *paramLengths,
                             const int *paramFormats, int resultFormat)
{
    note_statement(conn, command, NULL);
    return real.PQsendQueryParams(conn, command, nParams, paramTypes, paramValues, paramLengths,
                                  paramFormats, resultFormat);
}

EXPORT int PQsendPrepare(PGconn *conn, const char *stmtName, const char *query, int nParams,
                         const Oid *paramTypes)
{
    note_statement(conn, query, stmtName);
    return real.PQsendPrepare(conn, stmtName, query, nParams, paramTypes);
}

EXPORT int PQsendQueryPrepared(PGconn *conn, const char *stmtName, int nParams,
                               const char *const *paramValues, const int *paramLengths,
                               const int *paramFormats, int resultFormat)
{
    note_statement(conn, "", stmtName);
    return real.PQsendQueryPrepared(conn, stmtName, nParams, paramValues, paramLengths, paramFormats,
                                    resultFormat);
}

/* The fast-path interface (large objects use it) can call any function. */
EXPORT PGresult *PQfn(PGconn *conn, int fnid, int *result_buf, int *result_len, int result_is_int,
                      const PQArgBlock *args, int nargs)
{
    note_statement(conn, NULL, NULL);
    return real.PQfn(conn, fnid, result_buf, result_len, result_is_int, args, nargs);
}

/* Event procedures cannot be unregistered and only hear CONNDESTROY on a real
 * PQfinish, so a connection that has any is never kept. */
EXPORT int PQregisterEventProc(PGconn *conn, PGEventProc proc, const char *name, void *passThrough)
{
    bool track = intercepting();
    int ok = real.PQregisterEventProc(conn, proc, name, passThrough);
    if (ok && track && conn != NULL)
        pool_mark_events(conn);
    return ok;
}
