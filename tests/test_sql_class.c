/* test_sql_class.c: unit tests of the SQL classifier (src/sql_class.c): which strings are session-clean, and what it notes. */
#define _GNU_SOURCE
#include "testutil.h"
#include "sql_class.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/*
 * Compiled with src/sql_class.c directly: no server, no preload. Each row of the table is run
 * three ways:
 *   notes:  sql_is_session_clean_but_noted with both callbacks (statement and setting);
 *   unset:  the same with setting == NULL (SET and RESET are then unclean);
 *   plain:  sql_is_session_clean.
 * When a way is expected to be clean, the notes it reported (in order) and
 * notes.other_statements must be exactly the row's; on an unclean result the caller
 * (handle.c) ignores the notes, so they are not compared.
 */

/* What the callbacks were told, one line per call:
 *   "set NAME [STATEMENT]"   a SET (the statement's text as reported)
 *   "reset NAME"             a RESET (statement NULL)
 *   "prepare NAME", "deallocate NAME"
 * NAME "(all)": name length 0. */
struct recorder {
    const char *sql;
    char log[1024];
    size_t used;
};

static void record(struct recorder *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void record(struct recorder *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(r->log + r->used, sizeof r->log - r->used, fmt, ap);
    va_end(ap);
    if (n > 0)
        r->used += (size_t) n < sizeof r->log - r->used ? (size_t) n : sizeof r->log - 1 - r->used;
}

static void on_statement(void *arg, bool prepared, const char *name, size_t len)
{
    struct recorder *r = arg;
    if (len == 0)
        record(r, "%s (all)\n", prepared ? "prepare" : "deallocate");
    else
        record(r, "%s %.*s\n", prepared ? "prepare" : "deallocate", (int) len, name);
}

static void on_setting(void *arg, const char *name, size_t name_len, const char *statement, size_t len)
{
    struct recorder *r = arg;
    const char *shown = name_len == 0 ? "(all)" : name;
    int shown_len = name_len == 0 ? 5 : (int) name_len;
    if (statement == NULL) {
        record(r, "reset %.*s%s\n", shown_len, shown, len != 0 ? " (len not 0)" : "");
        return;
    }
    /* The statement text must be a piece of the string scanned (it is run again as it is). */
    size_t sql_len = strlen(r->sql);
    if (statement < r->sql || statement > r->sql + sql_len || len > (size_t) (r->sql + sql_len - statement))
        record(r, "set %.*s <outside the SQL text>\n", shown_len, shown);
    else
        record(r, "set %.*s [%.*s]\n", shown_len, shown, (int) len, statement);
}

struct row {
    int line;
    const char *sql;
    bool clean;       /* with both callbacks */
    bool clean_unset; /* with setting == NULL */
    bool clean_plain; /* sql_is_session_clean */
    bool other;       /* notes.other_statements (not SET, RESET or SHOW), when clean */
    const char *notes;
};

/* Clean every way, nothing noted (statements other than SET, RESET and SHOW). */
#define CLEAN(sql) { __LINE__, (sql), true, true, true, true, "" }
/* Unclean every way. */
#define DIRTY(sql) { __LINE__, (sql), false, false, false, false, "" }
/* Clean only with a setting callback, with these notes; nothing but SET, RESET and SHOW. */
#define SETS(sql, notes) { __LINE__, (sql), true, false, false, false, (notes) }
/* The same beside other statements. */
#define SETS_OTHER(sql, notes) { __LINE__, (sql), true, false, false, true, (notes) }
/* Clean with notes (either way), unclean for sql_is_session_clean: PREPARE, DEALLOCATE. */
#define NOTED(sql, notes) { __LINE__, (sql), true, true, false, true, (notes) }

static const struct row rows[] = {
    /* Clean statements, comments and quotes. */
    CLEAN("SELECT 1"),
    CLEAN("select 1; select 2"),
    CLEAN("WITH x AS (SELECT 1) SELECT * FROM x"),
    CLEAN("BEGIN"),
    CLEAN("SELECT ';' -- set x\n"),
    CLEAN("SELECT $$a;b$$"),
    CLEAN("SELECT /* nested /* c */ */ 1"),

    /* Session state, or text that cannot be split for sure. */
    DIRTY("LISTEN x"),
    DIRTY("CREATE TEMP TABLE t(x int)"),
    DIRTY("SELECT set_config('a','b',false)"),
    DIRTY("SELECT nextval('s')"),
    DIRTY("SELECT pg_advisory_lock(1)"),
    DIRTY("SELECT 1 INTO t"),
    DIRTY("SELECT 'a\\'b'"),
    DIRTY("SELECT 'unterminated"),
    DIRTY(NULL),

    /* SET and RESET of a session parameter: carried with a setting callback. */
    SETS("SET work_mem = '7MB'", "set work_mem [SET work_mem = '7MB']\n"),
    SETS("SET SESSION work_mem TO 1", "set work_mem [SET SESSION work_mem TO 1]\n"),
    SETS("set WORK_MEM=1", "set work_mem [set WORK_MEM=1]\n"),
    SETS("SET TIME ZONE 'UTC'", "set timezone [SET TIME ZONE 'UTC']\n"),
    SETS("SET SCHEMA 'x'", "set search_path [SET SCHEMA 'x']\n"),
    SETS("SET XML OPTION DOCUMENT", "set xmloption [SET XML OPTION DOCUMENT]\n"),
    SETS("SET app.tenant = '42'", "set app.tenant [SET app.tenant = '42']\n"),
    SETS("SET x = 1 -- c", "set x [SET x = 1 -- c]\n"),
    SETS("SET a=1;SET b=2", "set a [SET a=1]\nset b [SET b=2]\n"),
    /* psqlODBC's connect-time string */
    SETS("SET DateStyle = 'ISO';SET extra_float_digits = 2;show transaction_isolation",
         "set datestyle [SET DateStyle = 'ISO']\nset extra_float_digits [SET extra_float_digits = 2]\n"),
    SETS("SET a = $$x;y$$", "set a [SET a = $$x;y$$]\n"),
    SETS("RESET work_mem", "reset work_mem\n"),
    SETS("RESET ALL", "reset (all)\n"),
    SETS("RESET TIME ZONE", "reset timezone\n"),
    /* The server's old names: one parameter, one name. */
    SETS("SET sort_mem = 1", "set work_mem [SET sort_mem = 1]\n"),
    SETS("SET vacuum_mem = 1", "set maintenance_work_mem [SET vacuum_mem = 1]\n"),
    /* Bytes of 0x80 and up are identifier characters, as for the server: \xc3\xa9$x$ is one
     * word, and $\xc3\xa9$ a dollar-quote tag. */
    SETS("SET application_name = \xc3\xa9$x$; SET work_mem='1GB'; SET application_name = \xc3\xa9$x$",
         "set application_name [SET application_name = \xc3\xa9$x$]\nset work_mem [SET work_mem='1GB']\n"
         "set application_name [SET application_name = \xc3\xa9$x$]\n"),
    SETS("SET application_name = $\xc3\xa9$;$\xc3\xa9$", "set application_name [SET application_name = $\xc3\xa9$;$\xc3\xa9$]\n"),

    /* Other statements beside a SET (transaction control, a query): clean, but the caller must
     * know. */
    SETS_OTHER("BEGIN; SET a=1; COMMIT", "set a [SET a=1]\n"),
    SETS_OTHER("SET a=1; SELECT 1", "set a [SET a=1]\n"),
    SETS("SET a=1", "set a [SET a=1]\n"),

    /* SETs whose effects reach beyond a value, quoted names, unsplittable text: never carried. */
    DIRTY("SET ROLE alice"),
    DIRTY("SET SESSION AUTHORIZATION bob"),
    DIRTY("RESET ROLE"),
    DIRTY("RESET SESSION AUTHORIZATION"),
    DIRTY("SET NAMES 'LATIN1'"),
    DIRTY("SET client_encoding = 'LATIN1'"),
    DIRTY("SET \"work_mem\" = 1"),
    DIRTY("SET session_authorization = x"),
    DIRTY("SET x = 'unterminated"),
    /* A '$' inside a word starts no dollar quote: the CREATE is seen. */
    DIRTY("SET pqdt.x = a$b$; CREATE TEMP TABLE tt AS SELECT 1 AS i; SELECT 1 AS c$b$"),
    /* A -- comment ends at a carriage return too, as the server's lexer ends it. */
    DIRTY("SET pqdt.y = 1 --c\r; CREATE TEMP TABLE t2 (x int)"),
    DIRTY("SELECT 1 --c\r; CREATE TEMP TABLE t3 (x int)"),
    /* Names that are not all ASCII word characters: two of them must never read as one. */
    DIRTY("SET pqdt.\"A\" = 1"),
    DIRTY("SET myapp.caf\xc3\xa9 = 1"),
    DIRTY("SET pqdt. = 1"),
    DIRTY("SET work_mem/* c */= 1"),
    /* FROM CURRENT: no value to run again, with or without a comment in the way. */
    DIRTY("SET work_mem FROM CURRENT"),
    DIRTY("SET work_mem /**/ FROM CURRENT"),
    DIRTY("SET work_mem FROM/**/CURRENT"),

    /* Ends with its transaction: clean with a setting callback, nothing noted. */
    SETS("SET LOCAL work_mem = 1", ""),
    SETS("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", ""),
    SETS("SET CONSTRAINTS ALL DEFERRED", ""),
    SETS("SET LOCAL ROLE alice", ""),

    /* Named prepared statements. */
    NOTED("PREPARE p AS SELECT 1", "prepare p\n"),
    NOTED("DEALLOCATE ALL", "deallocate (all)\n"),
    NOTED("DEALLOCATE PREPARE \"Q\"", "deallocate Q\n"),
};

/* A check failing at the table row's line. */
#define ROW_CHECK(r, cond, ...) tu_check(!!(cond), #cond, __FILE__, (r)->line, __VA_ARGS__)

static const char *shown(const char *sql)
{
    return sql ? sql : "(NULL)";
}

/* One way of running a row: with or without the setting callback. */
static void run_noted(const struct row *r, bool with_setting)
{
    struct recorder rec = { .sql = r->sql };
    struct sql_session_notes notes = {
        .statement = on_statement,
        .setting = with_setting ? on_setting : NULL,
        .arg = &rec,
        .other_statements = false,
    };
    bool want = with_setting ? r->clean : r->clean_unset;
    const char *way = with_setting ? "with setting" : "setting NULL";
    bool clean = sql_is_session_clean_but_noted(r->sql, &notes);
    ROW_CHECK(r, clean == want, "\"%s\" %s: %s, expected %s", shown(r->sql), way,
              clean ? "clean" : "not clean", want ? "clean" : "not clean");
    if (!want || !clean)
        return;
    ROW_CHECK(r, strcmp(rec.log, r->notes) == 0, "\"%s\" %s: notes\n%s-- expected\n%s--", shown(r->sql), way,
              rec.log, r->notes);
    ROW_CHECK(r, notes.other_statements == r->other, "\"%s\" %s: other_statements %d, expected %d",
              shown(r->sql), way, notes.other_statements, r->other);
}

int main(void)
{
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const struct row *r = &rows[i];
        run_noted(r, true);
        run_noted(r, false);
        bool clean = sql_is_session_clean(r->sql);
        ROW_CHECK(r, clean == r->clean_plain, "\"%s\" sql_is_session_clean: %s, expected %s", shown(r->sql),
                  clean ? "clean" : "not clean", r->clean_plain ? "clean" : "not clean");
    }
    return tu_finish();
}
