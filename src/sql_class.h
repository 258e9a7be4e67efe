/* sql_class.h: decides whether SQL text pqdedup sees can leave session state behind. */
#ifndef PQDEDUP_SQL_CLASS_H
#define PQDEDUP_SQL_CLASS_H

#include <stdbool.h>
#include <stddef.h>

/* True only when every statement in `sql` starts with a word that changes no
 * session state by itself (SELECT, INSERT, UPDATE, DELETE, WITH, VALUES, TABLE,
 * SHOW, and transaction control) and mentions none of the functions or words known
 * to leave session state (set_config, nextval, setval, advisory locks, large
 * objects, dblink, temp tables, SELECT INTO). False for anything else, for NULL,
 * and for text it cannot split into statements for sure (unterminated quotes, a
 * backslash inside a string literal). It cannot see into functions, triggers,
 * rules, views or column defaults that the statements run. */
bool sql_is_session_clean(const char *sql);

/* Named prepared statements a string of SQL creates or drops (PREPARE name ..., DEALLOCATE
 * [PREPARE] name, DEALLOCATE ALL), reported to the caller, which keeps the set. */
struct sql_statement_names {
    /* A name (unquoted names folded to lower case, as the server does; quotes removed):
     * created (prepared) or dropped; dropped with len 0 means DEALLOCATE ALL. */
    void (*note)(void *arg, bool prepared, const char *name, size_t len);
    void *arg;
};

/* As sql_is_session_clean, but PREPARE and DEALLOCATE statements count as clean and their
 * names go to `names`: session state the caller follows itself. */
bool sql_is_session_clean_but_names(const char *sql, const struct sql_statement_names *names);

#endif
