/* real.h: libpq's own entry points, found behind pqdedup's wrappers. */
#ifndef PQDEDUP_REAL_H
#define PQDEDUP_REAL_H

#include <libpq-fe.h>
#include <libpq-events.h>

/* One pointer per libpq function that pqdedup intercepts. */
struct real_libpq {
    PGconn *(*PQconnectdb)(const char *conninfo);
    PGconn *(*PQconnectdbParams)(const char *const *keywords, const char *const *values, int expand_dbname);
    PGconn *(*PQsetdbLogin)(const char *pghost, const char *pgport, const char *pgoptions,
                            const char *pgtty, const char *dbName, const char *login, const char *pwd);
    PGconn *(*PQconnectStart)(const char *conninfo);
    PGconn *(*PQconnectStartParams)(const char *const *keywords, const char *const *values, int expand_dbname);
    void (*PQfinish)(PGconn *conn);
    PGPing (*PQping)(const char *conninfo);
    PGPing (*PQpingParams)(const char *const *keywords, const char *const *values, int expand_dbname);
    int (*PQregisterEventProc)(PGconn *conn, PGEventProc proc, const char *name, void *passThrough);
    int (*PQsendQuery)(PGconn *conn, const char *query);
    int (*PQsendQueryParams)(PGconn *conn, const char *command, int nParams, const Oid *paramTypes,
                             const char *const *paramValues, const int *paramLengths,
                             const int *paramFormats, int resultFormat);
    int (*PQsendPrepare)(PGconn *conn, const char *stmtName, const char *query, int nParams,
                         const Oid *paramTypes);
    int (*PQsendQueryPrepared)(PGconn *conn, const char *stmtName, int nParams,
                               const char *const *paramValues, const int *paramLengths,
                               const int *paramFormats, int resultFormat);
    PGresult *(*PQfn)(PGconn *conn, int fnid, int *result_buf, int *result_len, int result_is_int,
                      const PQArgBlock *args, int nargs);
};

extern struct real_libpq real;

/* Fills `real` from the next object in lookup order (libpq itself).
 * Returns 0 when every pointer was found, -1 otherwise (the missing ones stay NULL). */
int real_resolve(void);

#endif
