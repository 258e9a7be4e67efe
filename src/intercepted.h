/* intercepted.h: the one list of libpq functions libpqdedup.so wraps, and what each does.
 *
 * Every libpq function that takes a PGconn * (libpq-fe.h and libpq-events.h), the connect
 * functions that make one, and the PGcancel functions that take what PQgetCancel made, are
 * one row of PQDEDUP_INTERCEPTED(X):
 *
 *     X(name, return type, (parameters), (arguments), unbound, effect)
 *
 * The PGconn * parameter is always called `conn`. The last two columns say what the
 * generated wrapper (wrappers.c) does; rows whose `unbound` is CUSTOM have a wrapper written
 * by hand in the file that owns the behaviour (connect.c, finish.c, cancel.c,
 * client_state.c, socket.c, status.c, queued.c):
 *   unbound  BIND         the handle must be bound to a server connection first
 *            IDLE(value)  an unbound handle answers `value` (an expression that may use the
 *                         handle `h` and the parameters) without a server connection
 *            SEND(queue)  as BIND, but a nonblocking handle that would have to wait for a
 *                         server connection keeps the command with `queue` (queued.h), an
 *                         expression of `h` and the parameters, instead of waiting
 *            CUSTOM       hand-written wrapper
 *   effect   NONE         nothing more
 *            READ         the call only reads: it cannot change whether the handle is idle
 *            SQL(sql)     the SQL the call sends: a statement the classifier cannot vouch
 *                         for ties the handle to its server connection until it finishes
 *                         (sql_class.h); PREPARE / DEALLOCATE change its named statements
 *            PREPARE(sql, name)  as SQL, and the handle has one more named prepared
 *                         statement (it keeps its server connection while it has any)
 *            STICKY       the call leaves state on the server connection pqdedup cannot
 *                         undo or follow (client encoding, large objects, the fast path):
 *                         the handle keeps its server connection
 *            EVENTS       as STICKY, and the server connection is closed, not kept, when
 *                         the handle finishes (event procedures hear CONNDESTROY)
 *
 * Everything that needs the list takes it from here: the wrappers, the real libpq entry
 * points (real.h), the loader auditor and the GOT sweep (which bindings to send to the
 * wrappers), the start-up check of libpq's exports (real.c), and the build-time check that
 * every declaration in the installed headers that takes a PGconn * has a row
 * (check_wrapped.sh). Adding a function is one line; a missing one fails the build.
 * Freestanding: the auditor expands only the names, without libc or libpq headers. */
#ifndef PQDEDUP_INTERCEPTED_H
#define PQDEDUP_INTERCEPTED_H

#define PQDEDUP_INTERCEPTED(X)                                                                     \
    /* connecting (connect.c) */                                                                   \
    X(PQconnectdb, PGconn *, (const char *conninfo), (conninfo), CUSTOM, NONE)                     \
    X(PQconnectdbParams, PGconn *,                                                                 \
      (const char *const *keywords, const char *const *values, int expand_dbname),                 \
      (keywords, values, expand_dbname), CUSTOM, NONE)                                             \
    X(PQsetdbLogin, PGconn *,                                                                      \
      (const char *pghost, const char *pgport, const char *pgoptions, const char *pgtty,           \
       const char *dbName, const char *login, const char *pwd),                                    \
      (pghost, pgport, pgoptions, pgtty, dbName, login, pwd), CUSTOM, NONE)                        \
    X(PQconnectStart, PGconn *, (const char *conninfo), (conninfo), CUSTOM, NONE)                  \
    X(PQconnectStartParams, PGconn *,                                                              \
      (const char *const *keywords, const char *const *values, int expand_dbname),                 \
      (keywords, values, expand_dbname), CUSTOM, NONE)                                             \
    X(PQconnectPoll, PostgresPollingStatusType, (PGconn *conn), (conn), CUSTOM, NONE)              \
    X(PQping, PGPing, (const char *conninfo), (conninfo), CUSTOM, NONE)                            \
    X(PQpingParams, PGPing,                                                                        \
      (const char *const *keywords, const char *const *values, int expand_dbname),                 \
      (keywords, values, expand_dbname), CUSTOM, NONE)                                             \
    X(PQreset, void, (PGconn *conn), (conn), CUSTOM, NONE)                                         \
    X(PQresetStart, int, (PGconn *conn), (conn), CUSTOM, NONE)                                     \
    X(PQresetPoll, PostgresPollingStatusType, (PGconn *conn), (conn), CUSTOM, NONE)                \
    /* finishing (finish.c) */                                                                     \
    X(PQfinish, void, (PGconn *conn), (conn), CUSTOM, NONE)                                        \
    /* cancelling (cancel.c) */                                                                    \
    X(PQgetCancel, PGcancel *, (PGconn *conn), (conn), CUSTOM, NONE)                               \
    X(PQcancel, int, (PGcancel *cancel, char *errbuf, int errbufsize), (cancel, errbuf, errbufsize), \
      CUSTOM, NONE)                                                                                \
    X(PQfreeCancel, void, (PGcancel *cancel), (cancel), CUSTOM, NONE)                              \
    X(PQrequestCancel, int, (PGconn *conn), (conn), CUSTOM, NONE)                                  \
    /* what the app reads (status.c; the rest answer from the handle while unbound) */             \
    X(PQstatus, ConnStatusType, (const PGconn *conn), (conn), CUSTOM, NONE)                        \
    X(PQtransactionStatus, PGTransactionStatusType, (const PGconn *conn), (conn), CUSTOM, NONE)    \
    X(PQsocket, int, (const PGconn *conn), (conn), CUSTOM, NONE)                                   \
    X(PQdb, char *, (const PGconn *conn), (conn), IDLE(h->view->db), READ)                      \
    X(PQuser, char *, (const PGconn *conn), (conn), IDLE(h->view->user), READ)                  \
    X(PQpass, char *, (const PGconn *conn), (conn), IDLE(h->view->pass), READ)                  \
    X(PQhost, char *, (const PGconn *conn), (conn), IDLE(h->view->host), READ)                  \
    X(PQhostaddr, char *, (const PGconn *conn), (conn), IDLE(h->view->hostaddr), READ)          \
    X(PQport, char *, (const PGconn *conn), (conn), IDLE(h->view->port), READ)                  \
    X(PQtty, char *, (const PGconn *conn), (conn), IDLE(h->view->tty), READ)                    \
    X(PQoptions, char *, (const PGconn *conn), (conn), IDLE(h->view->options), READ)            \
    X(PQparameterStatus, const char *, (const PGconn *conn, const char *paramName),                \
      (conn, paramName), IDLE(handle_unbound_parameter(h, paramName)), READ)                       \
    X(PQprotocolVersion, int, (const PGconn *conn), (conn), IDLE(h->view->protocol_version), READ) \
    X(PQserverVersion, int, (const PGconn *conn), (conn), IDLE(h->view->server_version), READ)  \
    X(PQerrorMessage, char *, (const PGconn *conn), (conn), CUSTOM, NONE)                           \
    X(PQbackendPID, int, (const PGconn *conn), (conn), IDLE(h->last_backend_pid), READ)        \
    X(PQpipelineStatus, PGpipelineStatus, (const PGconn *conn), (conn), IDLE(PQ_PIPELINE_OFF), READ) \
    X(PQconnectionNeedsPassword, int, (const PGconn *conn), (conn), IDLE(0), READ)                 \
    X(PQconnectionUsedPassword, int, (const PGconn *conn), (conn),                                 \
      IDLE(h->view->used_password), READ)                                                       \
    X(PQclientEncoding, int, (const PGconn *conn), (conn), IDLE(h->view->client_encoding), READ) \
    X(PQsslInUse, int, (PGconn *conn), (conn), IDLE(h->view->ssl_in_use), READ)                 \
    X(PQgssEncInUse, int, (PGconn *conn), (conn), IDLE(h->view->gss_in_use), READ)              \
    X(PQisnonblocking, int, (const PGconn *conn), (conn), IDLE(h->client.nonblocking), READ)       \
    X(PQinstanceData, void *, (const PGconn *conn, PGEventProc proc), (conn, proc), IDLE(NULL), READ) \
    X(PQconninfo, PQconninfoOption *, (PGconn *conn), (conn), BIND, READ)                          \
    X(PQsslStruct, void *, (PGconn *conn, const char *struct_name), (conn, struct_name), BIND, READ) \
    X(PQsslAttribute, const char *, (PGconn *conn, const char *attribute_name),                    \
      (conn, attribute_name), BIND, READ)                                                          \
    X(PQsslAttributeNames, const char *const *, (PGconn *conn), (conn), BIND, READ)                \
    X(PQgetssl, void *, (PGconn *conn), (conn), BIND, READ)                                        \
    X(PQgetgssctx, void *, (PGconn *conn), (conn), BIND, READ)                                     \
    /* client-side state of the handle, applied to whichever connection it is bound to           \
     * (client_state.c) */                                                                         \
    X(PQsetClientEncoding, int, (PGconn *conn, const char *encoding), (conn, encoding), BIND, STICKY) \
    X(PQsetErrorVerbosity, PGVerbosity, (PGconn *conn, PGVerbosity verbosity), (conn, verbosity),  \
      CUSTOM, NONE)                                                                                \
    X(PQsetErrorContextVisibility, PGContextVisibility,                                            \
      (PGconn *conn, PGContextVisibility show_context), (conn, show_context), CUSTOM, NONE)        \
    X(PQsetNoticeReceiver, PQnoticeReceiver, (PGconn *conn, PQnoticeReceiver proc, void *arg),     \
      (conn, proc, arg), CUSTOM, NONE)                                                             \
    X(PQsetNoticeProcessor, PQnoticeProcessor, (PGconn *conn, PQnoticeProcessor proc, void *arg),  \
      (conn, proc, arg), CUSTOM, NONE)                                                             \
    X(PQtrace, void, (PGconn *conn, FILE *debug_port), (conn, debug_port), CUSTOM, NONE)           \
    X(PQuntrace, void, (PGconn *conn), (conn), CUSTOM, NONE)                                       \
    X(PQsetTraceFlags, void, (PGconn *conn, int flags), (conn, flags), CUSTOM, NONE)               \
    X(PQsetnonblocking, int, (PGconn *conn, int arg), (conn, arg), CUSTOM, NONE)                   \
    /* queries */                                                                                  \
    X(PQexec, PGresult *, (PGconn *conn, const char *query), (conn, query), BIND, SQL(query)) \
    X(PQexecParams, PGresult *,                                                                    \
      (PGconn *conn, const char *command, int nParams, const Oid *paramTypes,                      \
       const char *const *paramValues, const int *paramLengths, const int *paramFormats,           \
       int resultFormat),                                                                          \
      (conn, command, nParams, paramTypes, paramValues, paramLengths, paramFormats, resultFormat), \
      BIND, SQL(command))                                                                    \
    X(PQprepare, PGresult *,                                                                       \
      (PGconn *conn, const char *stmtName, const char *query, int nParams, const Oid *paramTypes), \
      (conn, stmtName, query, nParams, paramTypes), BIND, PREPARE(query, stmtName))                    \
    X(PQexecPrepared, PGresult *,                                                                  \
      (PGconn *conn, const char *stmtName, int nParams, const char *const *paramValues,            \
       const int *paramLengths, const int *paramFormats, int resultFormat),                        \
      (conn, stmtName, nParams, paramValues, paramLengths, paramFormats, resultFormat), BIND,      \
      NONE)                                                                           \
    X(PQsendQuery, int, (PGconn *conn, const char *query), (conn, query), SEND(queue_query(h, query)), \
      SQL(query))                                                                                  \
    X(PQsendQueryParams, int,                                                                      \
      (PGconn *conn, const char *command, int nParams, const Oid *paramTypes,                      \
       const char *const *paramValues, const int *paramLengths, const int *paramFormats,           \
       int resultFormat),                                                                          \
      (conn, command, nParams, paramTypes, paramValues, paramLengths, paramFormats, resultFormat), \
      SEND(queue_query_params(h, command, nParams, paramTypes, paramValues, paramLengths,         \
                              paramFormats, resultFormat)),                                        \
      SQL(command))                                                                                \
    X(PQsendPrepare, int,                                                                          \
      (PGconn *conn, const char *stmtName, const char *query, int nParams, const Oid *paramTypes), \
      (conn, stmtName, query, nParams, paramTypes),                                                \
      SEND(queue_prepare(h, stmtName, query, nParams, paramTypes)), PREPARE(query, stmtName))      \
    X(PQsendQueryPrepared, int,                                                                    \
      (PGconn *conn, const char *stmtName, int nParams, const char *const *paramValues,            \
       const int *paramLengths, const int *paramFormats, int resultFormat),                        \
      (conn, stmtName, nParams, paramValues, paramLengths, paramFormats, resultFormat),            \
      SEND(queue_query_prepared(h, stmtName, nParams, paramValues, paramLengths, paramFormats,     \
                                resultFormat)),                                                    \
      NONE)                                                                                        \
    X(PQdescribePrepared, PGresult *, (PGconn *conn, const char *stmt), (conn, stmt), BIND, NONE)  \
    X(PQdescribePortal, PGresult *, (PGconn *conn, const char *portal), (conn, portal), BIND, NONE) \
    X(PQsendDescribePrepared, int, (PGconn *conn, const char *stmt), (conn, stmt),                 \
      SEND(queue_describe(h, false, stmt)), NONE)                                                  \
    X(PQsendDescribePortal, int, (PGconn *conn, const char *portal), (conn, portal),               \
      SEND(queue_describe(h, true, portal)), NONE)                                                 \
    X(PQsetSingleRowMode, int, (PGconn *conn), (conn), IDLE(0), NONE)                              \
    X(PQgetResult, PGresult *, (PGconn *conn), (conn), CUSTOM, NONE)                               \
    X(PQisBusy, int, (PGconn *conn), (conn), IDLE(queued_is_kept(h)), NONE)                \
    X(PQconsumeInput, int, (PGconn *conn), (conn), IDLE(1), NONE)                                  \
    X(PQflush, int, (PGconn *conn), (conn), IDLE(0), NONE)                                         \
    X(PQnotifies, PGnotify *, (PGconn *conn), (conn), IDLE(NULL), NONE)                            \
    X(PQmakeEmptyPGresult, PGresult *, (PGconn *conn, ExecStatusType status), (conn, status),      \
      IDLE(real.PQmakeEmptyPGresult(NULL, status)), READ)                                          \
    X(PQfn, PGresult *,                                                                            \
      (PGconn *conn, int fnid, int *result_buf, int *result_len, int result_is_int,                \
       const PQArgBlock *args, int nargs),                                                         \
      (conn, fnid, result_buf, result_len, result_is_int, args, nargs), BIND, STICKY)              \
    /* pipeline mode (a handle in it is busy: it keeps its server connection) */                  \
    X(PQenterPipelineMode, int, (PGconn *conn), (conn), BIND, NONE)                                \
    X(PQexitPipelineMode, int, (PGconn *conn), (conn), IDLE(1), NONE)                              \
    X(PQpipelineSync, int, (PGconn *conn), (conn), BIND, NONE)                                     \
    X(PQsendFlushRequest, int, (PGconn *conn), (conn), BIND, NONE)                                 \
    /* COPY (a handle in COPY is busy) */                                                          \
    X(PQputCopyData, int, (PGconn *conn, const char *buffer, int nbytes), (conn, buffer, nbytes),  \
      BIND, NONE)                                                                                  \
    X(PQputCopyEnd, int, (PGconn *conn, const char *errormsg), (conn, errormsg), BIND, NONE)       \
    X(PQgetCopyData, int, (PGconn *conn, char **buffer, int async), (conn, buffer, async), BIND, NONE) \
    X(PQgetline, int, (PGconn *conn, char *string, int length), (conn, string, length), BIND, NONE) \
    X(PQputline, int, (PGconn *conn, const char *string), (conn, string), BIND, NONE)              \
    X(PQgetlineAsync, int, (PGconn *conn, char *buffer, int bufsize), (conn, buffer, bufsize),     \
      BIND, NONE)                                                                                  \
    X(PQputnbytes, int, (PGconn *conn, const char *buffer, int nbytes), (conn, buffer, nbytes),    \
      BIND, NONE)                                                                                  \
    X(PQendcopy, int, (PGconn *conn), (conn), BIND, NONE)                                          \
    /* escaping: needs the session's encoding and standard_conforming_strings */                  \
    X(PQescapeStringConn, size_t,                                                                  \
      (PGconn *conn, char *to, const char *from, size_t length, int *error),                       \
      (conn, to, from, length, error), BIND, READ)                                                 \
    X(PQescapeLiteral, char *, (PGconn *conn, const char *str, size_t len), (conn, str, len), BIND, READ) \
    X(PQescapeIdentifier, char *, (PGconn *conn, const char *str, size_t len), (conn, str, len),   \
      BIND, READ)                                                                                  \
    X(PQescapeByteaConn, unsigned char *,                                                          \
      (PGconn *conn, const unsigned char *from, size_t from_length, size_t *to_length),            \
      (conn, from, from_length, to_length), BIND, READ)                                            \
    X(PQencryptPasswordConn, char *,                                                               \
      (PGconn *conn, const char *passwd, const char *user, const char *algorithm),                 \
      (conn, passwd, user, algorithm), BIND, NONE)                                                 \
    X(PQdefaultSSLKeyPassHook_OpenSSL, int, (char *buf, int size, PGconn *conn), (buf, size, conn), \
      BIND, NONE)                                                                                  \
    /* large objects (they run through the fast path) */                                          \
    X(lo_open, int, (PGconn *conn, Oid lobjId, int mode), (conn, lobjId, mode), BIND, STICKY)      \
    X(lo_close, int, (PGconn *conn, int fd), (conn, fd), BIND, STICKY)                             \
    X(lo_read, int, (PGconn *conn, int fd, char *buf, size_t len), (conn, fd, buf, len), BIND, STICKY) \
    X(lo_write, int, (PGconn *conn, int fd, const char *buf, size_t len), (conn, fd, buf, len),    \
      BIND, STICKY)                                                                                \
    X(lo_lseek, int, (PGconn *conn, int fd, int offset, int whence), (conn, fd, offset, whence),   \
      BIND, STICKY)                                                                                \
    X(lo_lseek64, pg_int64, (PGconn *conn, int fd, pg_int64 offset, int whence),                  \
      (conn, fd, offset, whence), BIND, STICKY)                                                    \
    X(lo_creat, Oid, (PGconn *conn, int mode), (conn, mode), BIND, STICKY)                         \
    X(lo_create, Oid, (PGconn *conn, Oid lobjId), (conn, lobjId), BIND, STICKY)                    \
    X(lo_tell, int, (PGconn *conn, int fd), (conn, fd), BIND, STICKY)                              \
    X(lo_tell64, pg_int64, (PGconn *conn, int fd), (conn, fd), BIND, STICKY)                       \
    X(lo_truncate, int, (PGconn *conn, int fd, size_t len), (conn, fd, len), BIND, STICKY)         \
    X(lo_truncate64, int, (PGconn *conn, int fd, pg_int64 len), (conn, fd, len), BIND, STICKY)     \
    X(lo_unlink, int, (PGconn *conn, Oid lobjId), (conn, lobjId), BIND, STICKY)                    \
    X(lo_import, Oid, (PGconn *conn, const char *filename), (conn, filename), BIND, STICKY)        \
    X(lo_import_with_oid, Oid, (PGconn *conn, const char *filename, Oid lobjId),                   \
      (conn, filename, lobjId), BIND, STICKY)                                                      \
    X(lo_export, int, (PGconn *conn, Oid lobjId, const char *filename), (conn, lobjId, filename),  \
      BIND, STICKY)                                                                                \
    /* event procedures (libpq-events.h): they hear CONNRESET and CONNDESTROY of one             \
     * connection, so a handle that has any keeps its server connection */                        \
    X(PQregisterEventProc, int, (PGconn *conn, PGEventProc proc, const char *name, void *passThrough), \
      (conn, proc, name, passThrough), BIND, EVENTS)                                               \
    X(PQsetInstanceData, int, (PGconn *conn, PGEventProc proc, void *data), (conn, proc, data),    \
      BIND, NONE)                                                                                  \
    X(PQfireResultCreateEvents, int, (PGconn *conn, PGresult *res), (conn, res), BIND, NONE)

/* Every other function libpq 15 exports: they take no PGconn * (results, escaping without a
 * connection, encodings, SSL set-up, libpq's internal buffers), so they reach libpq directly.
 * At start-up pqdedup compares libpq's exported functions with this list and PQDEDUP_INTERCEPTED:
 * a libpq that exports anything else might take a handle pqdedup does not know, and pqdedup
 * then passes every call through (real.c). */
#define PQDEDUP_NOT_INTERCEPTED(Y)                                                                 \
    Y(PQbinaryTuples) Y(PQclear) Y(PQcmdStatus) Y(PQcmdTuples) Y(PQconndefaults)                   \
    Y(PQconninfoFree) Y(PQconninfoParse) Y(PQcopyResult) Y(PQdisplayTuples) Y(PQdsplen)            \
    Y(PQencryptPassword) Y(PQenv2encoding) Y(PQescapeBytea) Y(PQescapeString) Y(PQfformat)         \
    Y(PQfmod) Y(PQfname) Y(PQfnumber) Y(PQfreeNotify) Y(PQfreemem) Y(PQfsize) Y(PQftable)          \
    Y(PQftablecol) Y(PQftype) Y(PQgetSSLKeyPassHook_OpenSSL) Y(PQgetisnull) Y(PQgetlength)         \
    Y(PQgetvalue) Y(PQinitOpenSSL) Y(PQinitSSL) Y(PQisthreadsafe) Y(PQlibVersion) Y(PQmblen)       \
    Y(PQmblenBounded) Y(PQnfields) Y(PQnparams) Y(PQntuples) Y(PQoidStatus) Y(PQoidValue)          \
    Y(PQparamtype) Y(PQprint) Y(PQprintTuples) Y(PQregisterThreadLock) Y(PQresStatus)              \
    Y(PQresultAlloc) Y(PQresultErrorField) Y(PQresultErrorMessage) Y(PQresultInstanceData)         \
    Y(PQresultMemorySize) Y(PQresultSetInstanceData) Y(PQresultStatus)                             \
    Y(PQresultVerboseErrorMessage) Y(PQsetResultAttrs) Y(PQsetSSLKeyPassHook_OpenSSL)              \
    Y(PQsetvalue) Y(PQunescapeBytea) Y(appendBinaryPQExpBuffer) Y(appendPQExpBuffer)               \
    Y(appendPQExpBufferChar) Y(appendPQExpBufferStr) Y(createPQExpBuffer) Y(destroyPQExpBuffer)    \
    Y(enlargePQExpBuffer) Y(initPQExpBuffer) Y(pg_char_to_encoding) Y(pg_encoding_to_char)         \
    Y(pg_utf_mblen) Y(pg_valid_server_encoding) Y(pg_valid_server_encoding_id) Y(pqsignal)         \
    Y(printfPQExpBuffer) Y(resetPQExpBuffer) Y(termPQExpBuffer)

#endif
