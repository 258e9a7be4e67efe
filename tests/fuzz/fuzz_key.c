/* fuzz_key.c: libFuzzer target for the key builder (src/key.c) and the settings parsers, with libpq's own parser as the oracle. */
#define _GNU_SOURCE
#include "key.h"
#include "settings.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Input: the first byte picks the call shape, the rest is its data.
 *   'S' (or any byte b with b % 5 == 0): the rest, up to a NUL, is a conninfo string or URI
 *        for key_from_conninfo.
 *   'A' (b % 5 == 1), 'E' (b % 5 == 2): the rest, split at NUL bytes, is keyword, value,
 *        keyword, value, ... for key_from_arrays with expand_dbname 0 ('A') or 1 ('E'); a
 *        token that is exactly "\x01" is a NULL value.
 *   'D' (b % 5 == 3): the rest, split at NULs, is host, port, options, tty, dbname, user,
 *        password for key_from_setdb ("\x01" or a missing token: NULL).
 *   'V' (b % 5 == 4): the rest, up to a NUL, is the value of every PQDEDUP_* setting.
 * Properties, each a crash (abort) with a message when violated:
 *   - never a sanitizer report;
 *   - string form: the key is NULL exactly when PQconninfoParse rejects the string;
 *   - arrays and PQsetdbLogin: the key is NULL exactly when libpq's rules for those calls
 *     (conninfo_array_parse, PQsetdbLogin in fe-connect.c, re-implemented here from the
 *     source) reject the call;
 *   - determinism: the same call twice, and again after key_cache_clear(), gives the same key;
 *   - equivalence: the key equals the key of a canonical conninfo string built from libpq's
 *     own parse of the input (every set parameter as keyword='value', escaped);
 *   - separation: changing the value of any one set parameter, or the password, gives
 *     another key;
 *   - round trip: key_get returns every explicitly set value (except libpq's compiled
 *     default, which keys leave out);
 *   - key_describe does not depend on password or sslpassword (the description of the key
 *     with another password is the same text).
 */

#define MAX_TOKENS 512

static void violation(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_key: PROPERTY VIOLATED: %s\n", what);
    if (detail != NULL)
        fprintf(stderr, "fuzz_key:   %s\n", detail);
    abort();
}

static bool same_key(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

/* ---- canonical conninfo strings ------------------------------------------- */

struct text {
    char *data;
    size_t len, cap;
};

static void text_add(struct text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        while (cap < t->len + n + 1)
            cap *= 2;
        t->data = realloc(t->data, cap);
        if (t->data == NULL)
            abort();
        t->cap = cap;
    }
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = '\0';
}

/* Appends keyword='value' with ' and \ escaped, as libpq's conninfo parser reads it. */
static void text_add_pair(struct text *t, const char *keyword, const char *value)
{
    if (t->len > 0)
        text_add(t, " ", 1);
    text_add(t, keyword, strlen(keyword));
    text_add(t, "='", 2);
    for (const char *c = value; *c; c++) {
        if (*c == '\'' || *c == '\\')
            text_add(t, "\\", 1);
        text_add(t, c, 1);
    }
    text_add(t, "'", 1);
}

/* The canonical conninfo for parsed options: every set value, in libpq's order, with
 * `replace_keyword` (if not NULL) given `replace_value` instead. malloc'd. */
static char *canonical(const PQconninfoOption *opts, const char *replace_keyword, const char *replace_value)
{
    struct text t = { 0 };
    text_add(&t, "", 0);
    bool replaced = false;
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        const char *v = o->val;
        if (replace_keyword != NULL && strcmp(o->keyword, replace_keyword) == 0) {
            v = replace_value;
            replaced = true;
        }
        if (v != NULL)
            text_add_pair(&t, o->keyword, v);
    }
    if (replace_keyword != NULL && !replaced)
        text_add_pair(&t, replace_keyword, replace_value);
    return t.data;
}

static PQconninfoOption *find(PQconninfoOption *opts, const char *keyword)
{
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (strcmp(o->keyword, keyword) == 0)
            return o;
    return NULL;
}

static void set_val(PQconninfoOption *o, const char *value)
{
    free(o->val);
    o->val = strdup(value);
    if (o->val == NULL)
        abort();
}

/* libpq's recognized_connection_string(). */
static bool recognized(const char *s)
{
    return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0 ||
           strchr(s, '=') != NULL;
}

static PQconninfoOption *libpq_parse(const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    PQfreemem(err);
    return opts;
}

/* The explicit options libpq's conninfo_array_parse() arrives at (PostgreSQL 15
 * fe-connect.c, before defaults), or NULL where it fails. */
static PQconninfoOption *libpq_arrays(const char *const *kw, const char *const *val, int expand)
{
    PQconninfoOption *dbname_options = NULL;
    for (int i = 0; expand && kw[i] != NULL; i++) {
        if (strcmp(kw[i], "dbname") == 0 && val[i] != NULL) {
            if (recognized(val[i]) && (dbname_options = libpq_parse(val[i])) == NULL)
                return NULL;
            break;
        }
    }
    PQconninfoOption *opts = libpq_parse("");
    for (int i = 0; kw[i] != NULL; i++) {
        if (val[i] == NULL || val[i][0] == '\0')
            continue;
        PQconninfoOption *o = find(opts, kw[i]);
        if (o == NULL) {
            PQconninfoFree(opts);
            PQconninfoFree(dbname_options);
            return NULL;
        }
        if (strcmp(kw[i], "dbname") == 0 && dbname_options != NULL) {
            for (PQconninfoOption *d = dbname_options; d->keyword != NULL; d++)
                if (d->val != NULL)
                    set_val(find(opts, d->keyword), d->val);
            PQconninfoFree(dbname_options);
            dbname_options = NULL;
        } else {
            set_val(o, val[i]);
        }
    }
    PQconninfoFree(dbname_options);
    return opts;
}

/* The explicit options PQsetdbLogin() arrives at, or NULL where it fails: a dbName that
 * looks like a conninfo is parsed, else it is the database name; then every other
 * non-empty argument overrides (pgtty is ignored). */
static PQconninfoOption *libpq_setdb(const char *host, const char *port, const char *options,
                                     const char *dbname, const char *user, const char *pwd)
{
    PQconninfoOption *opts;
    if (dbname != NULL && recognized(dbname)) {
        if ((opts = libpq_parse(dbname)) == NULL)
            return NULL;
    } else {
        opts = libpq_parse("");
        if (dbname != NULL && dbname[0] != '\0')
            set_val(find(opts, "dbname"), dbname);
    }
    const char *names[] = { "host", "port", "options", "user", "password" };
    const char *values[] = { host, port, options, user, pwd };
    for (int i = 0; i < 5; i++)
        if (values[i] != NULL && values[i][0] != '\0')
            set_val(find(opts, names[i]), values[i]);
    return opts;
}

/* ---- the properties ----------------------------------------------------------- */

/* A value unlike `v`: v with a suffix no compiled default ends with. malloc'd. */
static char *other_value(const char *v)
{
    size_t n = strlen(v);
    char *o = malloc(n + 3);
    if (o == NULL)
        abort();
    memcpy(o, v, n);
    memcpy(o + n, "~m", 3);
    return o;
}

/* Checks everything that follows from libpq's parse `opts` of a call whose key is `key`.
 * `pick` selects the parameter whose change must change the key. */
static void check_against_parse(const char *key, PQconninfoOption *opts, unsigned pick)
{
    char *canon = canonical(opts, NULL, NULL);
    char *canon_key = key_from_conninfo(canon);
    if (canon_key == NULL)
        violation("libpq parses the call but the key of its canonical string is NULL", canon);
    if (!same_key(key, canon_key))
        violation("libpq-equal inputs have different keys (input vs its canonical string)", canon);

    /* Sanity of the oracle itself: the canonical string parses to the same options. */
    PQconninfoOption *again = libpq_parse(canon);
    if (again == NULL)
        violation("oracle: libpq rejects the canonical string", canon);
    char *canon2 = canonical(again, NULL, NULL);
    if (strcmp(canon, canon2) != 0)
        violation("oracle: the canonical string does not round-trip through libpq", canon);
    PQconninfoFree(again);
    free(canon2);

    /* Round trip: key_get gives back what was set (compiled defaults are left out). */
    size_t vsize = strlen(key) + 1;
    char *value = malloc(vsize);
    if (value == NULL)
        abort();
    int nset = 0;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        nset++;
        if ((o->compiled != NULL && strcmp(o->val, o->compiled) == 0) ||
            (strcmp(o->keyword, "dbname") == 0 && o->val[0] == '\0'))
            continue;
        if (!key_get(key, o->keyword, value, vsize) || strcmp(value, o->val) != 0) {
            char detail[200];
            snprintf(detail, sizeof detail, "keyword %s: key_get gives \"%.60s\" for \"%.60s\"",
                     o->keyword, value, o->val);
            violation("key_get does not return an explicitly set value", detail);
        }
    }
    free(value);

    /* Separation: one set parameter with another value is another key. */
    if (nset > 0) {
        int which = (int) (pick % (unsigned) nset);
        for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
            if (o->val == NULL || which-- != 0)
                continue;
            if (strcmp(o->keyword, "dbname") == 0 && o->val[0] == '\0')
                break; /* "" means "the user's name": another name may be the same database */
            char *changed_value = other_value(o->val);
            char *changed = canonical(opts, o->keyword, changed_value);
            char *changed_key = key_from_conninfo(changed);
            if (changed_key == NULL || same_key(changed_key, key))
                violation("changing one parameter's value does not change the key", o->keyword);
            free(changed_key);
            free(changed);
            free(changed_value);
            break;
        }
    }

    /* The password is part of the key, and never part of its description. */
    static const char *const secrets[] = { "password", "sslpassword" };
    for (int s = 0; s < 2; s++) {
        PQconninfoOption *o = find(opts, secrets[s]);
        const char *other = o->val != NULL && strcmp(o->val, "pw-A") == 0 ? "pw-B" : "pw-A";
        char *changed = canonical(opts, secrets[s], other);
        char *changed_key = key_from_conninfo(changed);
        if (changed_key == NULL || same_key(changed_key, key))
            violation("another password gives the same key", secrets[s]);
        char d1[512], d2[512];
        key_describe(key, d1, sizeof d1);
        key_describe(changed_key, d2, sizeof d2);
        if (strcmp(d1, d2) != 0)
            violation("key_describe depends on the password", secrets[s]);
        if (o->val != NULL && strlen(o->val) >= 4 && strstr(d1, o->val) != NULL &&
            strstr(d2, o->val) == NULL)
            violation("key_describe shows the password", secrets[s]);
        free(changed_key);
        free(changed);
    }
    free(canon_key);
    free(canon);
}

/* The same call again, and after the key cache is cleared, gives the same key. */
static void check_deterministic(const char *key, char *(*again)(const void *), const void *arg)
{
    char *k2 = again(arg);
    if (!same_key(key, k2))
        violation("the same call twice gives different keys", NULL);
    free(k2);
    key_cache_clear();
    char *k3 = again(arg);
    if (!same_key(key, k3))
        violation("the same call after key_cache_clear gives a different key", NULL);
    free(k3);
}

static char *again_conninfo(const void *arg)
{
    return key_from_conninfo(arg);
}

struct arrays {
    const char *kw[MAX_TOKENS / 2 + 1];
    const char *val[MAX_TOKENS / 2 + 1];
    int expand;
};

static char *again_arrays(const void *arg)
{
    const struct arrays *a = arg;
    return key_from_arrays(a->kw, a->val, a->expand);
}

struct setdb {
    const char *arg[7]; /* host, port, options, tty, dbname, user, password */
};

static char *again_setdb(const void *arg)
{
    const struct setdb *s = arg;
    return key_from_setdb(s->arg[0], s->arg[1], s->arg[2], s->arg[4], s->arg[5], s->arg[6]);
}

/* Splits data at NUL bytes into at most max tokens (the last one is NUL-terminated by
 * the copy); "\x01" stands for NULL. Returns the count. */
static int split(char *copy, size_t size, const char **tokens, int max)
{
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; i <= size && n < max; i++) {
        if (i == size || copy[i] == '\0') {
            copy[i] = '\0';
            tokens[n++] = strcmp(copy + start, "\x01") == 0 ? NULL : copy + start;
            start = i + 1;
        }
    }
    return n;
}

static unsigned mix(const uint8_t *data, size_t size)
{
    unsigned h = 2166136261u;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 16777619u;
    return h;
}

static void fuzz_settings(const char *text)
{
    static const char *const names[] = {
        "PQDEDUP_DISABLE", "PQDEDUP_SHARE_AFTER", "PQDEDUP_MAX_PER_KEY", "PQDEDUP_MAX_WAIT",
        "PQDEDUP_KEEP_PER_KEY", "PQDEDUP_IDLE_TIMEOUT", "PQDEDUP_MAX_LIFETIME",
        "PQDEDUP_RESET_QUERY", "PQDEDUP_CHECK_AFTER", "PQDEDUP_CHECK_TIMEOUT", "PQDEDUP_LOG",
        "PQDEDUP_LOG_FILE", "PQDEDUP_STATS", "PQDEDUP_NO_SUCH_SETTING",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *expect = NULL;
        (void) settings_check(names[i], text, &expect);
    }
    int64_t ns = -1;
    if (settings_parse_duration(text, &ns) == 0 && (ns < 0 || ns > INT64_C(30) * 24 * 3600 * 1000000000))
        violation("a duration outside 0..30 days was accepted", text);
    int count = -1;
    if (settings_parse_count(text, 100000, &count) == 0 && (count < 0 || count > 100000))
        violation("a count outside 0..100000 was accepted", text);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;
    /* A fixed environment: keys depend on PG* variables and HOME. */
    extern char **environ;
    for (;;) {
        char **e = environ;
        while (*e != NULL && strncmp(*e, "PG", 2) != 0)
            e++;
        if (*e == NULL)
            break;
        char name[256];
        size_t n = strcspn(*e, "=");
        snprintf(name, sizeof name, "%.*s", (int) (n < 255 ? n : 255), *e);
        unsetenv(name);
    }
    setenv("HOME", "/nonexistent-fuzz-home", 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int mode = data[0] == 'S' ? 0 : data[0] == 'A' ? 1 : data[0] == 'E' ? 2 : data[0] == 'D' ? 3
             : data[0] == 'V' ? 4 : data[0] % 5;
    unsigned pick = mix(data, size);
    char *copy = malloc(size);
    if (copy == NULL)
        return 0;
    memcpy(copy, data + 1, size - 1);
    copy[size - 1] = '\0';

    if (mode == 0) {
        char *key = key_from_conninfo(copy);
        PQconninfoOption *opts = libpq_parse(copy);
        if ((key == NULL) != (opts == NULL))
            violation(key ? "a key for a string libpq rejects" : "no key for a string libpq parses", copy);
        check_deterministic(key, again_conninfo, copy);
        if (opts != NULL)
            check_against_parse(key, opts, pick);
        PQconninfoFree(opts);
        free(key);
    } else if (mode == 1 || mode == 2) {
        static const char *tokens[MAX_TOKENS];
        int n = split(copy, size - 1, tokens, MAX_TOKENS);
        struct arrays *a = calloc(1, sizeof *a);
        if (a == NULL)
            abort();
        int pairs = 0;
        for (int i = 0; i < n; i += 2) {
            if (tokens[i] == NULL)
                continue; /* a NULL keyword would end the array */
            a->kw[pairs] = tokens[i];
            a->val[pairs] = i + 1 < n ? tokens[i + 1] : NULL;
            pairs++;
        }
        a->expand = mode == 2;
        char *key = key_from_arrays(a->kw, a->val, a->expand);
        PQconninfoOption *opts = libpq_arrays(a->kw, a->val, a->expand);
        if ((key == NULL) != (opts == NULL))
            violation(key ? "a key for arrays libpq rejects" : "no key for arrays libpq accepts", NULL);
        check_deterministic(key, again_arrays, a);
        if (opts != NULL)
            check_against_parse(key, opts, pick);
        PQconninfoFree(opts);
        free(key);
        free(a);
    } else if (mode == 3) {
        struct setdb s = { { NULL } };
        const char *tokens[7] = { NULL };
        int n = split(copy, size - 1, tokens, 7);
        for (int i = 0; i < n; i++)
            s.arg[i] = tokens[i];
        char *key = key_from_setdb(s.arg[0], s.arg[1], s.arg[2], s.arg[4], s.arg[5], s.arg[6]);
        PQconninfoOption *opts = libpq_setdb(s.arg[0], s.arg[1], s.arg[2], s.arg[4], s.arg[5], s.arg[6]);
        if ((key == NULL) != (opts == NULL))
            violation(key ? "a key for PQsetdbLogin arguments libpq rejects"
                          : "no key for PQsetdbLogin arguments libpq accepts", NULL);
        check_deterministic(key, again_setdb, &s);
        if (opts != NULL)
            check_against_parse(key, opts, pick);
        PQconninfoFree(opts);
        free(key);
    } else {
        fuzz_settings(copy);
    }
    free(copy);
    return 0;
}
