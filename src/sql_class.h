/* sql_class.h: decides whether SQL text pqdedup sees can leave session state behind. */
#ifndef PQDEDUP_SQL_CLASS_H
#define PQDEDUP_SQL_CLASS_H

#include <stdbool.h>

/* True only when every statement in `sql` starts with a word that changes no
 * session state by itself (SELECT, INSERT, UPDATE, DELETE, WITH, VALUES, TABLE,
 * SHOW, and transaction control) and mentions none of the functions or words known
 * to leave session state (set_config, nextval, setval, advisory locks, large
 * objects, dblink, temp tables, SELECT INTO). False for anything else, for NULL,
 * and for text it cannot split into statements for sure (unterminated quotes, a
 * backslash inside a string literal). It cannot see into functions, triggers,
 * rules, views or column defaults that the statements run. */
bool sql_is_session_clean(const char *sql);

#endif
