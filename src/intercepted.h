/* intercepted.h: the one list of libpq functions libpqdedup.so wraps.
 *
 * PQDEDUP_INTERCEPTED(X) expands X(name) once per wrapped function. Everything that needs
 * the list takes it from here: the loader auditor (which bindings to send to the wrappers),
 * the GOT sweep (which slots to rewrite) and the test that checks this list, exports.map
 * and the built library's dynamic symbols agree (tests/loaders/check_exports.sh).
 * shim.c defines the wrappers and real.h their libpq counterparts, member for member.
 * Freestanding: the auditor includes it without libc. */
#ifndef PQDEDUP_INTERCEPTED_H
#define PQDEDUP_INTERCEPTED_H

#define PQDEDUP_INTERCEPTED(X) \
    X(PQconnectdb)             \
    X(PQconnectdbParams)       \
    X(PQsetdbLogin)            \
    X(PQconnectStart)          \
    X(PQconnectStartParams)    \
    X(PQfinish)                \
    X(PQping)                  \
    X(PQpingParams)            \
    X(PQregisterEventProc)     \
    X(PQsendQuery)             \
    X(PQsendQueryParams)       \
    X(PQsendPrepare)           \
    X(PQsendQueryPrepared)     \
    X(PQfn)

#endif
