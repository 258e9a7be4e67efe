/* sql_class.c: decides whether SQL text pqdedup sees can leave session state behind. */
#define _GNU_SOURCE
#include "sql_class.h"

#include <ctype.h>
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

/* True when `word` (len bytes, any case) is one of the list's. */
static bool word_is(const char *word, size_t len, const struct word *list, size_t n)
{
    char first = (char) tolower((unsigned char) word[0]);
    for (size_t i = 0; i < n; i++)
        if (list[i].len == len && list[i].text[0] == first && strncasecmp(word, list[i].text, len) == 0)
            return true;
    return false;
}

/* True when `word` starts with one of the list's. */
static bool word_has_prefix(const char *word, size_t len, const struct word *list, size_t n)
{
    char first = (char) tolower((unsigned char) word[0]);
    for (size_t i = 0; i < n; i++)
        if (len >= list[i].len && list[i].text[0] == first && strncasecmp(word, list[i].text, list[i].len) == 0)
            return true;
    return false;
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Skips a quoted literal, identifier, dollar-quoted string or comment starting at
 * p. Returns the position after it, p itself when none starts there, or NULL when
 * it never ends or holds a backslash: with standard_conforming_strings off (or in
 * E'' strings) a backslash escapes the quote, and the statement boundaries the
 * server sees can no longer be told. */
static const char *skip_quoted(const char *p)
{
    if (p[0] == '-' && p[1] == '-') {
        const char *end = strchr(p, '\n');
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
        const char *tag_end = p + 1;
        while (isalnum((unsigned char) *tag_end) || *tag_end == '_')
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

/* ASCII letters, digits, '_' and '$' make words (identifiers and keywords). */
static bool is_word_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_word_char(char c)
{
    return is_word_start(c) || (c >= '0' && c <= '9') || c == '$';
}

/* Characters at which the scan has something to do: the end, a statement boundary, a quote,
 * a comment, a dollar quote, a word. */
static const bool starts_something[256] = {
    ['\0'] = true, [';'] = true, ['\''] = true, ['"'] = true, ['-'] = true, ['/'] = true, ['$'] = true,
    ['_'] = true,
    ['a'] = true, ['b'] = true, ['c'] = true, ['d'] = true, ['e'] = true, ['f'] = true, ['g'] = true,
    ['h'] = true, ['i'] = true, ['j'] = true, ['k'] = true, ['l'] = true, ['m'] = true, ['n'] = true,
    ['o'] = true, ['p'] = true, ['q'] = true, ['r'] = true, ['s'] = true, ['t'] = true, ['u'] = true,
    ['v'] = true, ['w'] = true, ['x'] = true, ['y'] = true, ['z'] = true,
    ['A'] = true, ['B'] = true, ['C'] = true, ['D'] = true, ['E'] = true, ['F'] = true, ['G'] = true,
    ['H'] = true, ['I'] = true, ['J'] = true, ['K'] = true, ['L'] = true, ['M'] = true, ['N'] = true,
    ['O'] = true, ['P'] = true, ['Q'] = true, ['R'] = true, ['S'] = true, ['T'] = true, ['U'] = true,
    ['V'] = true, ['W'] = true, ['X'] = true, ['Y'] = true, ['Z'] = true,
};

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

bool sql_is_session_clean_but_names(const char *sql, const struct sql_statement_names *names)
{
    if (sql == NULL)
        return false;
    const char *p = sql;
    const char *first = NULL;
    size_t first_len = 0;
    for (;;) {
        /* Most characters start nothing: skipped without a call (ASCII, as SQL keywords are). */
        while (!starts_something[(unsigned char) *p])
            p++;
        const char *after = skip_quoted(p);
        if (after == NULL)
            return false; /* unterminated: cannot tell */
        if (after != p) {
            p = after;
            continue;
        }
        if (*p == '\0')
            return true;
        if (*p == ';') {
            first = NULL; /* the next statement */
            p++;
            continue;
        }
        if (is_word_start(*p)) {
            const char *word = p;
            while (is_word_char(*p))
                p++;
            size_t len = (size_t) (p - word);
            if (first == NULL) {
                bool prepare = len == 7 && strncasecmp(word, "prepare", 7) == 0;
                bool deallocate = len == 10 && strncasecmp(word, "deallocate", 10) == 0;
                if (names != NULL && (prepare || deallocate)) {
                    char name[128];
                    size_t name_len;
                    const char *next = read_statement_name(p, deallocate, name, sizeof name, &name_len);
                    if (next == NULL || name_len + 1 >= sizeof name)
                        return false; /* a name it cannot follow */
                    names->note(names->arg, prepare, name, name_len);
                    p = next;
                } else if (!word_is(word, len, clean_first_words, COUNT(clean_first_words))) {
                    return false;
                }
                first = word;
                first_len = len;
            } else if (word_is(word, len, dirty_words, COUNT(dirty_words)) ||
                       word_has_prefix(word, len, dirty_prefixes, COUNT(dirty_prefixes)) ||
                       (len == 4 && strncasecmp(word, "into", 4) == 0 &&
                        word_is(first, first_len, into_makes_dirty, COUNT(into_makes_dirty)))) {
                return false;
            }
            continue;
        }
        p++;
    }
}

bool sql_is_session_clean(const char *sql)
{
    return sql_is_session_clean_but_names(sql, NULL);
}
