/* carried_sets.h: the SET statements a handle carries from one server connection to the next. */
#ifndef PQDEDUP_CARRIED_SETS_H
#define PQDEDUP_CARRIED_SETS_H

#include <stdbool.h>
#include <stddef.h>

/* One SET or RESET, as sql_class.h reports it. */
struct carried_set {
    char *name;      /* folded; "" with statement NULL: RESET ALL */
    char *statement; /* the SET as the app wrote it; NULL: a RESET */
};

/* The last SET of each session parameter a handle ran, in the order last set: what makes a
 * reset server connection of its key the same session again; and the SETs and RESETs of the
 * command under way, applied to them once it succeeded. Owned by the handle; starts zeroed
 * (empty). */
struct carried_sets {
    struct carried_set *items; /* confirmed: only SETs, one per name */
    int count, size;
    size_t bytes;                /* the confirmed statements' length in all */
    struct carried_set *pending; /* of the command under way, in order */
    int npending, pending_size;
};

/* Most a handle carries: past these, it keeps its server connection instead. */
enum { CARRIED_SETS_MAX = 64, CARRIED_SETS_MAX_BYTES = 16384 };

/* Notes a SET of `name` (its statement's text), or with statement NULL a RESET of it (name_len
 * 0: RESET ALL), sent in the command under way: pending until carried_sets_confirm. Returns
 * false when out of memory: the caller must then keep the server connection (the handle turns
 * sticky). */
bool carried_sets_note(struct carried_sets *c, const char *name, size_t name_len, const char *statement,
                       size_t statement_len);

/* The command succeeded: its SETs replace earlier ones of the same name, its RESETs drop them.
 * Returns false when out of memory or past the limits: what is carried is then incomplete, and
 * the caller must keep the server connection. */
bool carried_sets_confirm(struct carried_sets *c);


/* The confirmed statements, each ended by a new line and ';', to run on a new server connection: a string the caller
 * frees; NULL when out of memory. */
char *carried_sets_sql(const struct carried_sets *c);

/* Forgets everything, confirmed and pending (at PQfinish, and at PQreset, which starts a new
 * session). */
void carried_sets_clear(struct carried_sets *c);

#endif
