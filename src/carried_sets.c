/* carried_sets.c: the SET statements a handle carries from one server connection to the next. */
#define _GNU_SOURCE
#include "carried_sets.h"

#include <stdlib.h>
#include <string.h>

/* Drops item i, keeping the others in the order the app ran them. */
static void drop(struct carried_sets *c, int i)
{
    c->bytes -= strlen(c->items[i].statement);
    free(c->items[i].name);
    free(c->items[i].statement);
    memmove(&c->items[i], &c->items[i + 1], (size_t) (c->count - i - 1) * sizeof c->items[0]);
    c->count--;
}

bool carried_sets_note(struct carried_sets *c, const char *name, size_t name_len, const char *statement,
                       size_t statement_len)
{
    if (statement == NULL && name_len == 0) {
        carried_sets_clear(c);
        return true;
    }
    for (int i = 0; i < c->count; i++) {
        if (strlen(c->items[i].name) == name_len && memcmp(c->items[i].name, name, name_len) == 0) {
            drop(c, i);
            break;
        }
    }
    if (statement == NULL)
        return true;
    if (c->count == CARRIED_SETS_MAX || c->bytes + statement_len > CARRIED_SETS_MAX_BYTES)
        return false;
    if (c->count == c->size) {
        int size = c->size ? 2 * c->size : 4;
        struct carried_set *grown = realloc(c->items, (size_t) size * sizeof *grown);
        if (grown == NULL)
            return false;
        c->items = grown;
        c->size = size;
    }
    char *name_copy = strndup(name, name_len);
    char *statement_copy = strndup(statement, statement_len);
    if (name_copy == NULL || statement_copy == NULL) {
        free(name_copy);
        free(statement_copy);
        return false;
    }
    c->items[c->count++] = (struct carried_set) { .name = name_copy, .statement = statement_copy };
    c->bytes += statement_len;
    return true;
}

char *carried_sets_sql(const struct carried_sets *c)
{
    /* "\n;" between them: a statement may end with a -- comment. */
    char *sql = malloc(c->bytes + 2 * (size_t) c->count + 1);
    if (sql == NULL)
        return NULL;
    char *end = sql;
    for (int i = 0; i < c->count; i++) {
        end = stpcpy(end, c->items[i].statement);
        *end++ = '\n';
        *end++ = ';';
    }
    *end = '\0';
    return sql;
}

void carried_sets_clear(struct carried_sets *c)
{
    for (int i = 0; i < c->count; i++) {
        free(c->items[i].name);
        free(c->items[i].statement);
    }
    free(c->items);
    *c = (struct carried_sets) { 0 };
}
