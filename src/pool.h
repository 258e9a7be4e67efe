/* pool.h: the server connections pqdedup owns, grouped by key, and who holds them. */
#ifndef PQDEDUP_POOL_H
#define PQDEDUP_POOL_H

#include <libpq-fe.h>
#include <stdbool.h>

struct pool_bucket;

/* What pool_acquire decided for one connect. */
enum grant_kind {
    GRANT_REUSED,      /* conn: a kept connection, checked and handed out */
    GRANT_SHARED,      /* conn: a connection this thread already holds, one more holder */
    GRANT_OPEN,        /* open a new connection, then call pool_opened */
    GRANT_REFUSED,     /* PQDEDUP_MAX_PER_KEY reached and nothing was finished in time */
    GRANT_PASSTHROUGH, /* not pooled (exit under way, out of memory): plain libpq */
};

struct grant {
    enum grant_kind kind;
    PGconn *conn;               /* REUSED, SHARED */
    struct pool_bucket *bucket; /* OPEN: the reservation pool_opened settles */
};

/* Sets up fork handling and the exit hook; called once before any other call. */
void pool_init(void);

/* Decides how to answer a connect for `key` (borrowed). May wait up to
 * PQDEDUP_MAX_WAIT at the cap. Never fails: out of memory gives PASSTHROUGH. */
void pool_acquire(const char *key, struct grant *grant);

/* Settles a GRANT_OPEN after libpq returned `conn` (NULL allowed). `completed` is
 * true for a blocking connect, false for PQconnectStart*. Returns the connection
 * the app gets: usually `conn`, now owned by the pool; for a blocking connect the
 * server refused for lack of slots, a connection this thread holds (and `conn` is
 * freed); a failed `conn` is returned untracked. */
PGconn *pool_opened(struct grant *grant, PGconn *conn, bool completed);

/* Handles the app's PQfinish. Returns false when `conn` is not pqdedup's, so the
 * caller must give it to libpq's PQfinish; true when the pool took care of it. */
bool pool_finish(PGconn *conn);

/* Closes every kept (idle) connection of this process, of any key, so the server
 * has their slots back. Returns how many were closed. */
int pool_close_all_kept(void);

/* Marks a pooled connection as having run SQL that may change session state: with
 * PQDEDUP_RESET=dirty, its next finish runs the reset query. */
void pool_mark_dirty(PGconn *conn);

/* Marks a pooled connection as having libpq event procedures: it is never kept. */
void pool_mark_events(PGconn *conn);

#endif
