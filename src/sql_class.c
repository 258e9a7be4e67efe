/* sql_class.c: decides whether SQL text pqdedup sees can leave session state behind. */
#define _GNU_SOURCE
#include "sql_class.h"

#include <ctype.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

/* A word list entry: the word in lower case and its length (compared without strlen). */
struct word {
    const char *text;
    unsigned char len;
};
#define WORD(w) { w, sizeof(w) - 1 }

/* Statements that, by their first word, change no session-level state by themselves
 * (transaction-scoped effects end with the ROLLBACK or COMMIT that ends them). */
static const struct word clean_first_words[] = {
    WORD("select"), WORD("insert"), WORD("update"), WORD("delete"), WORD("with"), WORD("values"),
    WORD("table"), WORD("show"), WORD("begin"), WORD("start"), WORD("commit"), WORD("end"),
    WORD("rollback"), WORD("abort"), WORD("savepoint"), WORD("release"),
};

/* Words that make any statement dirty: functions with session effects (settings,
 * session advisory locks, sequence state behind currval/lastval, large objects,
 * other servers) and temporary objects. */
static const struct word dirty_words[] = {
    WORD("set_config"), WORD("nextval"), WORD("setval"), WORD("temp"), WORD("temporary"),
};
static const struct word dirty_prefixes[] = {
    WORD("pg_advisory"), WORD("pg_try_advisory"), WORD("lo_"), WORD("dblink"),
};

/* SELECT ... INTO creates a table. */
static const struct word into_makes_dirty[] = { WORD("select"), WORD("with"), WORD("values"), WORD("table") };

/* ASCII lower case: SQL keywords and the words the scan reads are ASCII (the server folds
 * keywords the same way, whatever the locale). */
static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char) (c + ('a' - 'A')) : c;
}

/* True when the first n bytes of `word` are `text` (lower case) in any case. */
static bool same_word(const char *word, const char *text, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower(word[i]) != text[i])
            return false;
    return true;
}

/* True when `word` (len bytes, any case) is one of the list's. */
static bool word_is(const char *word, size_t len, const struct word *list, size_t n)
{
    char first = lower(word[0]);
    for (size_t i = 0; i < n; i++)
        if (list[i].len == len && list[i].text[0] == first && same_word(word, list[i].text, len))
            return true;
    return false;
}

/* True when `word` starts with one of the list's. */
static bool word_has_prefix(const char *word, size_t len, const struct word *list, size_t n)
{
    char first = lower(word[0]);
    for (size_t i = 0; i < n; i++)
        if (len >= list[i].len && list[i].text[0] == first && same_word(word, list[i].text, list[i].len))
            return true;
    return false;
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* What a character means to the scan: letters, '_' and bytes of 0x80 and up start words;
 * those, digits and '$' continue them (identifiers and keywords, as the server's lexer reads
 * them); the end, a statement boundary, a quote, a comment or a dollar quote may start
 * something else. Anything else is skipped. */
enum { WORD_START = 1, WORD_CHAR = 2, SPECIAL = 4 };
static const unsigned char char_class[256] = {
    ['a' ... 'z'] = WORD_START | WORD_CHAR, ['A' ... 'Z'] = WORD_START | WORD_CHAR,
    ['_'] = WORD_START | WORD_CHAR, ['0' ... '9'] = WORD_CHAR, ['$'] = WORD_CHAR | SPECIAL,
    [0x80 ... 0xff] = WORD_START | WORD_CHAR,
    ['\0'] = SPECIAL, [';'] = SPECIAL, ['\''] = SPECIAL, ['"'] = SPECIAL, ['-'] = SPECIAL, ['/'] = SPECIAL,
};

/* Skips a quoted literal, identifier, dollar-quoted string or comment starting at
 * p. Returns the position after it, p itself when none starts there, or NULL when
 * it never ends or holds a backslash: with standard_conforming_strings off (or in
 * E'' strings) a backslash escapes the quote, and the statement boundaries the
 * server sees can no longer be told. */
static const char *skip_quoted(const char *p)
{
    if (p[0] == '-' && p[1] == '-') {
        /* the server's lexer ends it at a new line or a carriage return */
        const char *end = strpbrk(p, "\r\n");
        return end ? end + 1 : p + strlen(p);
    }
    if (p[0] == '/' && p[1] == '*') {
        int depth = 0;
        for (; *p; p++) {
            if (p[0] == '/' && p[1] == '*')
                depth++, p++;
            else if (p[0] == '*' && p[1] == '/' && --depth == 0)
                return p + 2;
            else if (p[0] == '*' && p[1] == '/')
                p++;
        }
        return NULL;
    }
    if (*p == '\'' || *p == '"') {
        char quote = *p;
        for (p++; *p; p++) {
            if (*p == '\\' && quote == '\'')
                return NULL;
            if (*p == quote && p[1] == quote)
                p++;
            else if (*p == quote)
                return p + 1;
        }
        return NULL;
    }
    if (*p == '$') {
        /* A tag starts as an identifier does (not with a digit: $1 is a parameter) and goes on
         * with identifier characters, bytes of 0x80 and up included, as the server's lexer. */
        const char *tag_end = p + 1;
        if (char_class[(unsigned char) *tag_end] & WORD_START)
            while ((char_class[(unsigned char) *tag_end] & WORD_CHAR) && *tag_end != '$')
                tag_end++;
        if (*tag_end != '$')
            return p; /* a parameter like $1 */
        size_t tag_len = (size_t) (tag_end - p) + 1;
        const char *close;
        for (close = tag_end + 1; (close = strchr(close, '$')) != NULL; close++)
            if (strncmp(close, p, tag_len) == 0)
                return close + tag_len;
        return NULL;
    }
    return p;
}

/* The bit of a word's first character (any case) in a set of first characters. */
static uint64_t first_bit(char c)
{
    return UINT64_C(1) << (lower(c) & 63);
}

/* INTO after a first word of into_makes_dirty. */
static const struct word into_word = WORD("into");

/* The first characters of every word that can make a statement dirty after its first word
 * (dirty_words, dirty_prefixes, INTO): any other word is passed over without a look at the
 * lists. Worked out from the lists at the first call. */
static uint64_t dirty_first_chars(void)
{
    static _Atomic uint64_t set;
    uint64_t bits = atomic_load_explicit(&set, memory_order_relaxed);
    if (bits == 0) {
        bits = first_bit(into_word.text[0]);
        for (size_t i = 0; i < COUNT(dirty_words); i++)
            bits |= first_bit(dirty_words[i].text[0]);
        for (size_t i = 0; i < COUNT(dirty_prefixes); i++)
            bits |= first_bit(dirty_prefixes[i].text[0]);
        atomic_store_explicit(&set, bits, memory_order_relaxed);
    }
    return bits;
}

/* The two scans' steps (statement_end's and sql_is_session_clean_but_noted's). */

/* The next character at or after p that may start something: a word, the end, ';', a quote,
 * a comment or a dollar quote. */
static inline const char *next_interesting(const char *p)
{
    while ((char_class[(unsigned char) *p] & (WORD_START | SPECIAL)) == 0)
        p++;
    return p;
}

/* The end of the word starting at p (its '$', as in a$b$, starts no dollar quote). */
static inline const char *word_end(const char *p)
{
    while (char_class[(unsigned char) *p] & WORD_CHAR)
        p++;
    return p;
}

/* Past what starts at the special character p (not the end, not ';'): a quote, comment or
 * dollar quote, else the character itself. NULL when it never ends (skip_quoted). */
static inline const char *skip_special(const char *p)
{
    const char *after = skip_quoted(p);
    return after == NULL ? NULL : after != p ? after : p + 1;
}

/* The end of the statement at p: its ';' or the string's end; *from is set when the word
 * FROM is in it (outside quotes and comments). NULL when the end cannot be told
 * (skip_quoted). */
static const char *statement_end(const char *p, bool *from)
{
    while (p != NULL) {
        p = next_interesting(p);
        if (char_class[(unsigned char) *p] & WORD_START) {
            const char *word = p;
            p = word_end(p);
            if (p - word == 4 && same_word(word, "from", 4))
                *from = true;
        } else if (*p == '\0' || *p == ';') {
            return p;
        } else {
            p = skip_special(p);
        }
    }
    return NULL;
}

/* Reads a parameter name (or keyword) at p, after blanks: ASCII letters, digits, '_', '$'
 * and '.' (a custom parameter is prefix.name), folded to lower case into buf, and ended by a
 * blank, '=', ';' or the end. Returns the position after it, or NULL when there is none or
 * it is not all of the name (quotes, other bytes, a comment right after it), it starts or
 * ends with '.', or it does not fit: two names must never read as one. */
static const char *read_setting_name(const char *p, char *buf, size_t size, size_t *len)
{
    while (isspace((unsigned char) *p))
        p++;
    *len = 0;
    while ((char_class[(unsigned char) *p] & WORD_CHAR) || *p == '.') {
        if (*len + 1 >= size || (unsigned char) *p >= 0x80)
            return NULL;
        buf[(*len)++] = lower(*p++);
    }
    buf[*len] = '\0';
    bool ended = *p == '\0' || *p == ';' || *p == '=' || isspace((unsigned char) *p);
    return *len > 0 && ended && buf[0] != '.' && buf[*len - 1] != '.' ? p : NULL;
}

/* Parameters whose SET does more than set a value: another role's privileges, or the client
 * encoding libpq converts with. */
static const struct word uncarried_settings[] = {
    WORD("role"), WORD("session_authorization"), WORD("names"), WORD("client_encoding"),
};

/* SET or RESET (`reset`), whose first word starts `statement` and ends at p: reported to
 * notes->setting when it sets a session parameter. Returns the statement's end (its ';' or
 * the string's end), or NULL when it is not a statement pqdedup can carry. */
static const char *read_setting(const char *statement, const char *p, bool reset, struct sql_session_notes *notes)
{
    char name[128];
    size_t len;
    if ((p = read_setting_name(p, name, sizeof name, &len)) == NULL)
        return NULL;
    bool from = false;
    if (!reset && (strcmp(name, "local") == 0 || strcmp(name, "transaction") == 0 ||
                   strcmp(name, "constraints") == 0))
        return statement_end(p, &from); /* ends with its transaction: nothing to carry */
    if (!reset && strcmp(name, "session") == 0 && (p = read_setting_name(p, name, sizeof name, &len)) == NULL)
        return NULL;
    if (strcmp(name, "session") == 0 || strcmp(name, "authorization") == 0 ||
        strcmp(name, "characteristics") == 0 || word_is(name, len, uncarried_settings, COUNT(uncarried_settings)))
        return NULL;
    char second[16];
    size_t second_len;
    if (strcmp(name, "time") == 0 || strcmp(name, "xml") == 0) {
        /* TIME ZONE and XML OPTION: two words for one parameter */
        bool time = name[0] == 't';
        if ((p = read_setting_name(p, second, sizeof second, &second_len)) == NULL ||
            strcmp(second, time ? "zone" : "option") != 0)
            return NULL;
        strcpy(name, time ? "timezone" : "xmloption");
    } else if (strcmp(name, "schema") == 0 && !reset) {
        strcpy(name, "search_path");
    } else if (reset && strcmp(name, "all") == 0) {
        name[0] = '\0';
    } else if (strcmp(name, "sort_mem") == 0 || strcmp(name, "vacuum_mem") == 0) {
        /* the server's old names for these two: one parameter, one name */
        strcpy(name, name[0] == 's' ? "work_mem" : "maintenance_work_mem");
    }
    len = strlen(name);
    const char *end = statement_end(p, &from);
    if (from)
        return NULL; /* SET name FROM CURRENT: not a value that can be run again elsewhere */
    if (end != NULL)
        notes->setting(notes->arg, name, len, reset ? NULL : statement, reset ? 0 : (size_t) (end - statement));
    return end;
}

/* Reads the name after PREPARE or DEALLOCATE [PREPARE] at p into buf (folded or unquoted),
 * "" for ALL. Returns the position after it, or NULL when there is no name there. */
static const char *read_statement_name(const char *p, bool deallocate, char *buf, size_t size, size_t *len)
{
    while (isspace((unsigned char) *p))
        p++;
    if (deallocate && strncasecmp(p, "prepare", 7) == 0 && !isalnum((unsigned char) p[7]) && p[7] != '_') {
        p += 7;
        while (isspace((unsigned char) *p))
            p++;
    }
    *len = 0;
    if (*p == '"') {
        for (p++; *p; p++) {
            if (*p == '"' && p[1] == '"')
                p++;
            else if (*p == '"')
                return *len > 0 ? p + 1 : NULL;
            if (*len + 1 < size)
                buf[(*len)++] = *p;
        }
        return NULL;
    }
    const char *start = p;
    while (isalnum((unsigned char) *p) || *p == '_' || *p == '$') {
        if (*len + 1 < size)
            buf[(*len)++] = (char) tolower((unsigned char) *p);
        p++;
    }
    if (p == start)
        return NULL;
    if (deallocate && *len == 3 && strncmp(buf, "all", 3) == 0)
        *len = 0;
    buf[*len] = '\0';
    return p;
}

bool sql_is_session_clean_but_noted(const char *sql, struct sql_session_notes *notes)
{
    if (sql == NULL)
        return false;
    const uint64_t may_be_dirty = dirty_first_chars();
    const char *p = sql;
    const char *first = NULL;
    size_t first_len = 0;
    for (;;) {
        /* Most characters start nothing: skipped without a call (ASCII, as SQL keywords are). */
        p = next_interesting(p);
        if (char_class[(unsigned char) *p] & WORD_START) {
            const char *word = p;
            p = word_end(p);
            size_t len = (size_t) (p - word);
            if (first == NULL) {
                bool prepare = len == 7 && same_word(word, "prepare", 7);
                bool deallocate = len == 10 && same_word(word, "deallocate", 10);
                bool set = len == 3 && same_word(word, "set", 3);
                bool reset = len == 5 && same_word(word, "reset", 5);
                if (notes != NULL && notes->setting != NULL && (set || reset)) {
                    if ((p = read_setting(word, p, reset, notes)) == NULL)
                        return false; /* a SET it cannot carry */
                } else if (notes != NULL && (prepare || deallocate)) {
                    notes->other_statements = true;
                    char name[128];
                    size_t name_len;
                    const char *next = read_statement_name(p, deallocate, name, sizeof name, &name_len);
                    if (next == NULL || name_len + 1 >= sizeof name)
                        return false; /* a name it cannot follow */
                    notes->statement(notes->arg, prepare, name, name_len);
                    p = next;
                } else if (!word_is(word, len, clean_first_words, COUNT(clean_first_words))) {
                    return false;
                } else if (notes != NULL && !(len == 4 && same_word(word, "show", 4))) {
                    notes->other_statements = true;
                }
                first = word;
                first_len = len;
            } else if ((may_be_dirty & first_bit(word[0])) != 0 &&
                       (word_is(word, len, dirty_words, COUNT(dirty_words)) ||
                        word_has_prefix(word, len, dirty_prefixes, COUNT(dirty_prefixes)) ||
                        (len == into_word.len && same_word(word, into_word.text, into_word.len) &&
                         word_is(first, first_len, into_makes_dirty, COUNT(into_makes_dirty))))) {
                return false;
            }
            continue;
        }
        if (*p == '\0')
            return true;
        if (*p == ';') {
            first = NULL; /* the next statement */
            p++;
            continue;
        }
        if ((p = skip_special(p)) == NULL)
            return false; /* unterminated: cannot tell */
    }
}

bool sql_is_session_clean(const char *sql)
{
    return sql_is_session_clean_but_noted(sql, NULL);
}
