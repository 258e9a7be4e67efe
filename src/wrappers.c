/* wrappers.c: the libpq functions whose handling is a row of intercepted.h, generated from it. */
#include "handle.h"
#include "queued.h"
#include "real.h"

#define EXPORT __attribute__((visibility("default")))

/*
 * Each row becomes, for example (PQsendQuery: BIND, SQL(query)):
 *
 *     int PQsendQuery(PGconn *conn, const char *query)
 *     {
 *         struct handle *h = handle_of(conn);
 *         if (h == NULL)                          // libpq's own connection: pass through
 *             return real.PQsendQuery(conn, query);
 *         PGconn *server = handle_enter(h, true);  // binds an unbound handle first
 *         int result;
 *         if (server == NULL) {
 *             result = <the IDLE value>;           // only for IDLE rows
 *         } else {
 *             conn = server;
 *             handle_note_sql(h, query);            // the effect
 *             result = real.PQsendQuery(conn, query);
 *             (PQexec and the others that return a PGresult *: handle_note_result)
 *         }
 *         handle_leave(h, false);                // true for a call that only reads
 *         return result;
 *     }
 *
 * The `unbound` column expands to two arguments (needs a server?, value when unbound) and
 * the `effect` column to two more (a statement, whether the call only reads). Rows marked CUSTOM are written by hand elsewhere
 * (intercepted.h says where); here they only get checked to exist.
 */
#define BIND 1, 0
#define IDLE(value) 0, (value)
#define CUSTOM 2, 0
#define SEND(queue) 3, (queue)
/* effect: (what runs before the call, whether the call only reads) */
#define NONE (void) 0, false
#define READ (void) 0, true
#define SQL(sql) handle_note_sql(h, (sql)), false
#define PREPARE(sql, name) handle_note_prepare(h, (sql), (name)), false
#define STICKY handle_make_sticky(h), false
#define EVENTS handle_note_events(h), false

/* After a call that may change the connection: a PGresult * it returned is noted
 * (handle_note_result); any other value is not. */
static inline void note_no_result(struct handle *h, ...)
{
    (void) h;
}
#define NOTE_RESULT(result) _Generic((result), PGresult *: handle_note_result, default: note_no_result)(h, (result))

#define WRAPPER(name, ret, params, args, unbound, effect) WRAPPER_(name, ret, params, args, unbound, effect)
#define WRAPPER_(name, ret, params, args, kind, value, effect, reads) \
    WRAPPER_##kind(name, ret, params, args, value, effect, reads)
#define WRAPPER_0(name, ret, params, args, value, effect, reads) \
    GENERATED(name, ret, params, args, false, value, effect, reads)
#define WRAPPER_1(name, ret, params, args, value, effect, reads) \
    GENERATED(name, ret, params, args, true, value, effect, reads)
#define WRAPPER_2(name, ret, params, args, value, effect, reads) /* hand-written */
/* SEND rows: the effect runs for a kept command too (it is what the handle will have sent). */
#define WRAPPER_3(name, ret, params, args, value, effect, reads)       \
    EXPORT ret name params                                              \
    {                                                                   \
        struct handle *h = handle_of(conn);                             \
        if (h == NULL)                                                  \
            return real.name args;                                      \
        PGconn *server = queued_enter_send(h);                          \
        ret result;                                                     \
        effect;                                                         \
        if (server == NULL) {                                           \
            result = value;                                             \
        } else {                                                        \
            conn = server;                                              \
            result = real.name args;                                    \
        }                                                               \
        handle_note_sent(h, result);                                    \
        handle_leave(h, reads);                                         \
        return result;                                                  \
    }

#define GENERATED(name, ret, params, args, need_server, value, effect, reads) \
    EXPORT ret name params                                              \
    {                                                                   \
        struct handle *h = handle_of(conn);                             \
        if (h == NULL)                                                  \
            return real.name args;                                      \
        PGconn *server = handle_enter(h, need_server);                  \
        ret result;                                                     \
        if (server == NULL) {                                           \
            result = value;                                             \
        } else {                                                        \
            conn = server;                                              \
            effect;                                                     \
            result = real.name args;                                    \
            if (!reads)                                                 \
                NOTE_RESULT(result);                                    \
        }                                                               \
        handle_leave(h, reads);                                         \
        return result;                                                  \
    }

PQDEDUP_INTERCEPTED(WRAPPER)
