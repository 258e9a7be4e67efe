/* carried_sets.h: the SET statements a handle carries from one server connection to the next. */
#ifndef PQDEDUP_CARRIED_SETS_H
#define PQDEDUP_CARRIED_SETS_H

#include <stdbool.h>
#include <stddef.h>

/* The last SET of each session parameter a handle ran, in the order first set: what makes a
 * reset server connection of its key the same session again. Owned by the handle; starts
 * zeroed (empty). */
struct carried_sets {
    struct carried_set {
        char *name;      /* folded, as sql_class.h reports it */
        char *statement; /* the SET as the app wrote it */
    } *items;
    int count, size;
    size_t bytes; /* the statements' length in all */
};

/* Most a handle carries: past these, it keeps its server connection instead. */
enum { CARRIED_SETS_MAX = 64, CARRIED_SETS_MAX_BYTES = 16384 };

/* Records a SET of `name` (its statement's text), replacing an earlier one of the same name;
 * with statement NULL, a RESET of it (name_len 0: RESET ALL) drops it (all of them). Returns
 * false when out of memory or past the limits: what is carried is then incomplete, and the
 * caller must keep the server connection (the handle turns sticky). */
bool carried_sets_note(struct carried_sets *c, const char *name, size_t name_len, const char *statement,
                       size_t statement_len);

/* The statements, each ended by a new line and ';', to run on a new server connection: a string the caller
 * frees; NULL when out of memory. */
char *carried_sets_sql(const struct carried_sets *c);

/* Forgets everything (at PQfinish, and at PQreset, which starts a new session). */
void carried_sets_clear(struct carried_sets *c);

#endif
