/* key.h: the normalized key that decides which connects may share a session. */
#ifndef PQDEDUP_KEY_H
#define PQDEDUP_KEY_H

#include <stdbool.h>

/* A key is a conninfo string listing every libpq parameter that would be in force
 * for the connect, in libpq's own order, each value single-quoted: explicit
 * parameters first, then the PG* environment variables and libpq's defaults as they
 * are at the time of the call (values equal to libpq's compiled-in default are left
 * out: that keeps keys short and changes no equality). Two connects share a key only when every input that
 * libpq resolves a session from is the same. Keys contain passwords: never log one
 * (use key_describe). */

/* Key for PQconnectdb/PQconnectStart(conninfo). Returns a malloc'd string the
 * caller frees, or NULL when libpq cannot parse `conninfo` (NULL included) or
 * memory ran out: the caller then passes the call to libpq untouched. */
char *key_from_conninfo(const char *conninfo);

/* Key for PQconnectdbParams/PQconnectStartParams, following libpq's rules for
 * empty values, unknown keywords and expand_dbname. Same ownership and NULL
 * result as key_from_conninfo. */
char *key_from_arrays(const char *const *keywords, const char *const *values, int expand_dbname);

/* Key for PQsetdbLogin (pgtty is ignored, as libpq does). Same contract. */
char *key_from_setdb(const char *pghost, const char *pgport, const char *pgoptions,
                     const char *dbname, const char *login, const char *pwd);

/* Finds parameter `name` in a key (explicit or defaulted) and copies its value into
 * value (cut to size). Returns false, with value "", when the key does not have it
 * (then it is libpq's compiled-in default). */
bool key_get(const char *key, const char *name, char *value, unsigned long size);

/* A conninfo string that opens a connection equivalent to the key's: its libpq parameters
 * without the environment inputs pqdedup also compares. Returns a malloc'd string the caller
 * frees, or NULL when out of memory. */
char *key_conninfo(const char *key);

/* A short description of a key for logs: "user@host:port/dbname", never the
 * password. Writes into buf (always NUL-terminated) and returns buf. */
char *key_describe(const char *key, char *buf, unsigned long size);

/* Fork handlers: hold the key cache's lock across fork(), release it after. */
void key_lock_for_fork(void);
void key_unlock_after_fork(void);

/* Drops the cached defaults and parsed keys (used by tests and after fork). */
void key_cache_clear(void);

#endif
