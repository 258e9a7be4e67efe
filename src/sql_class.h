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

/* What a string of SQL does to the session that its caller follows itself, reported while
 * sql_is_session_clean_but_noted scans it. */
struct sql_session_notes {
    /* A named prepared statement created (PREPARE name ...) or dropped (DEALLOCATE [PREPARE]
     * name; len 0: DEALLOCATE ALL). Unquoted names are folded to lower case, as the server
     * does; quotes are removed. */
    void (*statement)(void *arg, bool prepared, const char *name, size_t len);
    /* A SET of a session parameter: its name (folded; "timezone" for SET TIME ZONE,
     * "search_path" for SET SCHEMA) and the statement's whole text (len bytes, not
     * terminated), to be run again as it is; or a RESET of it (statement NULL; name_len 0:
     * RESET ALL). NULL: SET and RESET make the string unclean, as for sql_is_session_clean. */
    void (*setting)(void *arg, const char *name, size_t name_len, const char *statement, size_t len);
    void *arg;
    /* Set by the scan: a statement is other than SET, RESET or SHOW (a query, transaction
     * control, ...): whether a SET in the same string lasts, and whether it was all that
     * changed the session's reported parameters, cannot be told from the string's success. */
    bool other_statements;
};

/* As sql_is_session_clean, but the statements `notes` follows count as clean and are reported
 * to it: PREPARE and DEALLOCATE; with a `setting` callback, SET and RESET of a session
 * parameter (not SET ROLE, SESSION AUTHORIZATION, NAMES or client_encoding, whose effects
 * reach beyond a setting's value, nor SET ... FROM CURRENT, and only with unquoted ASCII
 * names). SET LOCAL, SET TRANSACTION
 * and SET CONSTRAINTS, which end with their transaction, count as clean and are not reported. */
bool sql_is_session_clean_but_noted(const char *sql, struct sql_session_notes *notes);

#endif
