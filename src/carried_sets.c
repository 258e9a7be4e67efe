/* carried_sets.c: the SET statements a handle carries from one server connection to the next. */
#define _GNU_SOURCE
#include "carried_sets.h"

#include <stdlib.h>
#include <string.h>

static void free_set(struct carried_set *set)
{
    free(set->name);
    free(set->statement);
}

/* Drops confirmed item i, keeping the others in the order the app ran them. */
static void drop(struct carried_sets *c, int i)
{
    c->bytes -= strlen(c->items[i].statement);
    free_set(&c->items[i]);
    memmove(&c->items[i], &c->items[i + 1], (size_t) (c->count - i - 1) * sizeof c->items[0]);
    c->count--;
}

/* Makes room for one more in *array (of *size). Returns false when out of memory. */
static bool grow(struct carried_set **array, int count, int *size)
{
    if (count < *size)
        return true;
    int bigger = *size ? 2 * *size : 4;
    struct carried_set *grown = realloc(*array, (size_t) bigger * sizeof *grown);
    if (grown == NULL)
        return false;
    *array = grown;
    *size = bigger;
    return true;
}

static void drop_pending(struct carried_sets *c)
{
    for (int i = 0; i < c->npending; i++)
        free_set(&c->pending[i]);
    c->npending = 0;
}

bool carried_sets_note(struct carried_sets *c, const char *name, size_t name_len, const char *statement,
                       size_t statement_len)
{
    if (!grow(&c->pending, c->npending, &c->pending_size))
        return false;
    struct carried_set set = { .name = strndup(name, name_len) };
    if (statement != NULL)
        set.statement = strndup(statement, statement_len);
    if (set.name == NULL || (statement != NULL && set.statement == NULL)) {
        free_set(&set);
        return false;
    }
    c->pending[c->npending++] = set;
    return true;
}

bool carried_sets_confirm(struct carried_sets *c)
{
    bool ok = true;
    for (int p = 0; p < c->npending && ok; p++) {
        struct carried_set *set = &c->pending[p];
        if (set->statement == NULL && set->name[0] == '\0') { /* RESET ALL */
            while (c->count > 0)
                drop(c, c->count - 1);
            continue;
        }
        for (int i = 0; i < c->count; i++) {
            if (strcmp(c->items[i].name, set->name) == 0) {
                drop(c, i);
                break;
            }
        }
        if (set->statement == NULL)
            continue;
        size_t len = strlen(set->statement);
        if (c->count == CARRIED_SETS_MAX || c->bytes + len > CARRIED_SETS_MAX_BYTES ||
            !grow(&c->items, c->count, &c->size)) {
            ok = false;
            break;
        }
        c->items[c->count++] = *set; /* the item owns its strings now */
        *set = (struct carried_set) { 0 };
        c->bytes += len;
    }
    drop_pending(c);
    return ok;
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
    for (int i = 0; i < c->count; i++)
        free_set(&c->items[i]);
    free(c->items);
    drop_pending(c);
    free(c->pending);
    *c = (struct carried_sets) { 0 };
}
