/* real.h: libpq's own entry points, found behind pqdedup's wrappers. */
#ifndef PQDEDUP_REAL_H
#define PQDEDUP_REAL_H

#include "intercepted.h"

#include <libpq-events.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>

/* One pointer per row of intercepted.h, of that function's own type. */
struct real_libpq {
#define REAL_MEMBER(name, ret, params, ...) ret (*name) params;
    PQDEDUP_INTERCEPTED(REAL_MEMBER)
#undef REAL_MEMBER
};

extern struct real_libpq real;

/* Fills `real` from the next object in lookup order (libpq itself).
 * Returns 0 when every pointer was found, -1 otherwise (the missing ones stay NULL). */
int real_resolve(void);

/* Compares the functions libpq exports with the ones pqdedup knows (intercepted.h: the
 * wrapped ones and the ones that take no connection). Returns true when every one is known;
 * false, with the first unknown name copied into `unknown` (cut to size), when this libpq
 * has a function that might take a PGconn * pqdedup would not translate: handles must then
 * never be handed out. Call after real_resolve. */
bool real_libpq_is_known(char *unknown, unsigned long size);

#endif
