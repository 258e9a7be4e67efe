/* key.c: builds normalized connection keys from conninfo strings, URIs and arrays. */
#define _GNU_SOURCE
#include "key.h"
#include "credentials.h"
#include "hashtable.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

/* ---- growable byte buffer ------------------------------------------------ */

struct buf {
    char *data;
    size_t len, cap;
    bool failed;   /* out of memory: the result must not be used */
    bool borrowed; /* data is the caller's storage: moved to the heap when it grows */
};

/* A buffer that starts in `storage` (an array), so a short one needs no malloc. */
#define BUF_IN(storage) { .data = (storage), .cap = sizeof(storage), .borrowed = true }

static void buf_release(struct buf *b)
{
    if (!b->borrowed)
        free(b->data);
}

static void buf_add(struct buf *b, const char *bytes, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *grown = b->borrowed ? malloc(cap) : realloc(b->data, cap);
        if (grown == NULL) {
            b->failed = true;
            return;
        }
        if (b->borrowed && b->len > 0)
            memcpy(grown, b->data, b->len);
        b->borrowed = false;
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_add_str(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s) + 1); /* keeps the NUL as a separator */
}

/* ---- libpq's parameter rules ----------------------------------------------- */

/* Same test as libpq's recognized_connection_string(). */
static bool looks_like_conninfo(const char *s)
{
    return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0 ||
           strchr(s, '=') != NULL;
}

static PQconninfoOption *find_option(PQconninfoOption *opts, const char *keyword)
{
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (strcmp(o->keyword, keyword) == 0)
            return o;
    return NULL;
}

/* Replaces an option's value with a copy of `value`. Returns false on OOM. */
static bool set_option(PQconninfoOption *o, const char *value)
{
    char *copy = strdup(value);
    if (copy == NULL)
        return false;
    free(o->val);
    o->val = copy;
    return true;
}

/* Parses a conninfo string or URI with libpq. Returns NULL when libpq rejects it. */
static PQconninfoOption *parse_conninfo(const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    PQfreemem(err);
    return opts;
}

/* Mirrors libpq's conninfo_array_parse(): empty values are unset, an unknown keyword
 * is an error, and with expand_dbname the first dbname that looks like a conninfo
 * is expanded in place. Returns the explicit options, or NULL when libpq would fail. */
static PQconninfoOption *parse_arrays(const char *const *keywords, const char *const *values,
                                      int expand_dbname)
{
    PQconninfoOption *expanded = NULL;
    for (int i = 0; expand_dbname && keywords[i] != NULL; i++) {
        if (strcmp(keywords[i], "dbname") == 0 && values[i] != NULL) {
            if (looks_like_conninfo(values[i]) && (expanded = parse_conninfo(values[i])) == NULL)
                return NULL;
            break;
        }
    }

    PQconninfoOption *opts = parse_conninfo("");
    bool ok = opts != NULL;
    for (int i = 0; ok && keywords[i] != NULL; i++) {
        if (values[i] == NULL || values[i][0] == '\0')
            continue;
        PQconninfoOption *o = find_option(opts, keywords[i]);
        if (o == NULL) {
            ok = false;
        } else if (strcmp(keywords[i], "dbname") == 0 && expanded != NULL) {
            for (PQconninfoOption *e = expanded; ok && e->keyword != NULL; e++) {
                PQconninfoOption *target = e->val ? find_option(opts, e->keyword) : NULL;
                if (target != NULL)
                    ok = set_option(target, e->val);
            }
            PQconninfoFree(expanded);
            expanded = NULL;
        } else {
            ok = set_option(o, values[i]);
        }
    }
    PQconninfoFree(expanded);
    if (!ok) {
        PQconninfoFree(opts);
        return NULL;
    }
    return opts;
}

/* ---- defaults, cached per environment ------------------------------------ */

static pthread_mutex_t key_lock = PTHREAD_MUTEX_INITIALIZER;
static struct buf env_snapshot;          /* euid, HOME and PG* variables last seen */
static PQconninfoOption *cached_defaults; /* PQconndefaults() for that environment */

struct parsed_key {
    char *raw;  /* the call's arguments, serialized; hash key */
    size_t raw_len;
    char *key;
    UT_hash_handle hh;
};
static struct parsed_key *parsed_keys;
static unsigned parsed_count;
#define PARSED_KEYS_MAX 512

#undef uthash_nonfatal_oom
#define uthash_nonfatal_oom(elt) (oom_on_add = true)
static bool oom_on_add;

static void parsed_keys_clear(void)
{
    struct parsed_key *p, *tmp;
    HASH_ITER(hh, parsed_keys, p, tmp) {
        HASH_DEL(parsed_keys, p);
        free(p->raw);
        free(p->key);
        free(p);
    }
    parsed_count = 0;
}

void key_lock_for_fork(void)
{
    pthread_mutex_lock(&key_lock);
}

void key_unlock_after_fork(void)
{
    pthread_mutex_unlock(&key_lock);
}

void key_cache_clear(void)
{
    pthread_mutex_lock(&key_lock);
    parsed_keys_clear();
    PQconninfoFree(cached_defaults);
    cached_defaults = NULL;
    free(env_snapshot.data);
    env_snapshot = (struct buf) { 0 };
    pthread_mutex_unlock(&key_lock);
}

/* True for the environment entries libpq resolves defaults from: PG* and HOME. */
static bool is_environment_input(const char *entry)
{
    return (entry[0] == 'P' && entry[1] == 'G') || (entry[0] == 'H' && strncmp(entry, "HOME=", 5) == 0);
}

/* Everything outside the call's arguments that libpq resolves defaults from:
 * the effective uid, then each PG* and HOME entry with its NUL. */
static void snapshot_environment(struct buf *out)
{
    uid_t euid = credentials_euid();
    buf_add(out, (const char *) &euid, sizeof euid);
    for (char **e = environ; e != NULL && *e != NULL; e++)
        if (is_environment_input(*e))
            buf_add_str(out, *e);
}

/* True when a snapshot taken now would equal env_snapshot; compares in place,
 * without allocating, since it runs on every connect. Caller holds key_lock. */
static bool environment_unchanged(void)
{
    const char *snap = env_snapshot.data;
    size_t left = env_snapshot.len;
    uid_t euid = credentials_euid();
    if (snap == NULL || left < sizeof euid || memcmp(snap, &euid, sizeof euid) != 0)
        return false;
    snap += sizeof euid;
    left -= sizeof euid;
    for (char **e = environ; e != NULL && *e != NULL; e++) {
        if (!is_environment_input(*e))
            continue;
        size_t n = strlen(*e) + 1;
        if (n > left || memcmp(snap, *e, n) != 0)
            return false;
        snap += n;
        left -= n;
    }
    return left == 0;
}

/* Makes cached_defaults match the environment. Caller holds key_lock.
 * Returns false when libpq's defaults cannot be had (out of memory). */
static bool refresh_defaults(void)
{
    if (cached_defaults != NULL && environment_unchanged())
        return true;
    struct buf now = { 0 };
    snapshot_environment(&now);
    if (now.failed) {
        free(now.data);
        return false;
    }
    parsed_keys_clear();
    PQconninfoFree(cached_defaults);
    free(env_snapshot.data);
    env_snapshot = now;
    cached_defaults = PQconndefaults();
    return cached_defaults != NULL;
}

/* ---- serialization -------------------------------------------------------- */

static void add_quoted(struct buf *b, const char *value)
{
    buf_add(b, "'", 1);
    for (const char *c = value; *c; c++) {
        if (*c == '\'' || *c == '\\')
            buf_add(b, "\\", 1);
        buf_add(b, c, 1);
    }
    buf_add(b, "'", 1);
}

/* Environment variables libpq reads outside its connection options: the three it
 * sends to the server as session settings (libpq's EnvironmentOptions); HOME,
 * where ~/.pgpass, ~/.pg_service.conf and the SSL files are looked for; and where
 * the service files are. */
static const char *const environment_inputs[] = {
    "PGDATESTYLE", "PGTZ", "PGGEQO", "HOME", "PGSERVICEFILE", "PGSYSCONFDIR",
};

static void add_pair(struct buf *key, const char *name, const char *value)
{
    if (key->len > 0)
        buf_add(key, " ", 1);
    buf_add(key, name, strlen(name));
    buf_add(key, "=", 1);
    add_quoted(key, value);
}

/* Fills unset options from the cached defaults, defaults dbname to the user as
 * libpq does, and writes every option as keyword='value', except those whose
 * value is libpq's compiled-in default: leaving those out depends only on the
 * resolved value, so two keys are still equal exactly when every resolved value
 * is, and keys stay short to hash. When a service is named, the service file
 * outranks the environment and the built-in defaults, so every explicit value is
 * written (even one equal to a built-in default), and a value that came from the
 * environment or a default is written as default.keyword and never matches an
 * explicit one. Then the
 * environment inputs above and the effective uid. Returns a malloc'd key or NULL
 * on OOM. Caller holds key_lock. */
static char *serialize_with_defaults(PQconninfoOption *opts)
{
    bool explicit[128] = { false };
    const char *user = NULL, *service = NULL;
    int n = 0;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++, n++) {
        if (n >= (int) (sizeof explicit / sizeof explicit[0]))
            return NULL; /* a libpq with far more options: do not guess */
        explicit[n] = o->val != NULL;
        if (o->val == NULL) {
            PQconninfoOption *d = find_option(cached_defaults, o->keyword);
            if (d != NULL && d->val != NULL && !set_option(o, d->val))
                return NULL;
        }
        if (strcmp(o->keyword, "user") == 0)
            user = o->val;
        else if (strcmp(o->keyword, "service") == 0)
            service = o->val;
    }
    bool mark_defaults = service != NULL && service[0] != '\0';

    struct buf key = { 0 };
    n = 0;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++, n++) {
        const char *value = o->val;
        if (strcmp(o->keyword, "dbname") == 0 && (value == NULL || value[0] == '\0'))
            value = user;
        bool is_builtin_default = o->compiled != NULL && value != NULL && strcmp(value, o->compiled) == 0;
        if (value == NULL || (is_builtin_default && !(mark_defaults && explicit[n])))
            continue;
        if (mark_defaults && !explicit[n]) {
            char name[96];
            snprintf(name, sizeof name, "default.%s", o->keyword);
            add_pair(&key, name, value);
        } else {
            add_pair(&key, o->keyword, value);
        }
    }
    for (size_t i = 0; i < sizeof environment_inputs / sizeof environment_inputs[0]; i++) {
        const char *value = getenv(environment_inputs[i]);
        if (value != NULL) {
            char name[32];
            snprintf(name, sizeof name, "env.%s", environment_inputs[i]);
            add_pair(&key, name, value);
        }
    }
    char euid[24];
    snprintf(euid, sizeof euid, "%u", (unsigned) credentials_euid());
    add_pair(&key, "env.euid", euid);
    if (key.failed) {
        free(key.data);
        return NULL;
    }
    return key.data;
}

/* Looks the serialized call up in the parsed keys, else parses it with `parse` and
 * remembers the result. Returns a malloc'd copy of the key, or NULL when the
 * arguments are rejected or memory ran out. */
static char *key_for_call(const struct buf *raw, PQconninfoOption *(*parse)(const void *), const void *call)
{
    if (raw->failed)
        return NULL;
    char *result = NULL;
    pthread_mutex_lock(&key_lock);
    if (!refresh_defaults())
        goto out;

    struct parsed_key *hit;
    HASH_FIND(hh, parsed_keys, raw->data, raw->len, hit);
    if (hit != NULL) {
        result = strdup(hit->key);
        goto out;
    }

    PQconninfoOption *opts = parse(call);
    if (opts == NULL)
        goto out;
    char *key = serialize_with_defaults(opts);
    PQconninfoFree(opts);
    if (key == NULL)
        goto out;
    result = strdup(key);

    if (parsed_count >= PARSED_KEYS_MAX)
        parsed_keys_clear();
    struct parsed_key *entry = calloc(1, sizeof *entry);
    char *raw_copy = malloc(raw->len);
    if (entry == NULL || raw_copy == NULL) {
        free(entry);
        free(raw_copy);
        free(key);
        goto out;
    }
    memcpy(raw_copy, raw->data, raw->len);
    entry->raw = raw_copy;
    entry->raw_len = raw->len;
    entry->key = key;
    oom_on_add = false;
    HASH_ADD_KEYPTR(hh, parsed_keys, entry->raw, entry->raw_len, entry);
    if (oom_on_add) {
        free(raw_copy);
        free(key);
        free(entry);
    } else {
        parsed_count++;
    }
out:
    pthread_mutex_unlock(&key_lock);
    return result;
}

/* ---- the three call shapes ------------------------------------------------ */

static PQconninfoOption *parse_conninfo_call(const void *call)
{
    return parse_conninfo(call);
}

char *key_from_conninfo(const char *conninfo)
{
    if (conninfo == NULL)
        return NULL;
    char storage[512];
    struct buf raw = BUF_IN(storage);
    buf_add_str(&raw, "S");
    buf_add_str(&raw, conninfo);
    char *key = key_for_call(&raw, parse_conninfo_call, conninfo);
    buf_release(&raw);
    return key;
}

struct arrays_call {
    const char *const *keywords;
    const char *const *values;
    int expand_dbname;
};

static PQconninfoOption *parse_arrays_call(const void *call)
{
    const struct arrays_call *a = call;
    return parse_arrays(a->keywords, a->values, a->expand_dbname);
}

char *key_from_arrays(const char *const *keywords, const char *const *values, int expand_dbname)
{
    if (keywords == NULL || values == NULL)
        return NULL;
    char storage[512];
    struct buf raw = BUF_IN(storage);
    buf_add_str(&raw, expand_dbname ? "A1" : "A0");
    for (int i = 0; keywords[i] != NULL; i++) {
        buf_add_str(&raw, keywords[i]);
        buf_add_str(&raw, values[i] ? "=" : "-");
        if (values[i] != NULL)
            buf_add_str(&raw, values[i]);
    }
    struct arrays_call call = { keywords, values, expand_dbname };
    char *key = key_for_call(&raw, parse_arrays_call, &call);
    buf_release(&raw);
    return key;
}

char *key_from_setdb(const char *pghost, const char *pgport, const char *pgoptions,
                     const char *dbname, const char *login, const char *pwd)
{
    /* PQsetdbLogin reads dbName as a conninfo when it looks like one, then lets the
     * other non-empty arguments override it: the same as expand_dbname arrays. */
    const char *const keywords[] = { "dbname", "host", "port", "options", "user", "password", NULL };
    const char *const values[] = { dbname, pghost, pgport, pgoptions, login, pwd, NULL };
    return key_from_arrays(keywords, values, 1);
}

/* Reads one name='value' pair of a key at *pos into name/value (unescaped, cut to
 * their sizes) and advances *pos. Returns false at the end of the key. */
static bool next_pair(const char **pos, char *name, size_t name_size, char *value, size_t value_size)
{
    const char *p = *pos;
    while (*p == ' ')
        p++;
    if (*p == '\0')
        return false;
    size_t n = 0, v = 0;
    for (; *p && *p != '='; p++)
        if (n + 1 < name_size)
            name[n++] = *p;
    name[n] = '\0';
    if (*p == '=')
        p++;
    if (*p == '\'')
        p++;
    for (; *p && *p != '\''; p++) {
        if (*p == '\\' && p[1] != '\0')
            p++;
        if (v + 1 < value_size)
            value[v++] = *p;
    }
    value[v] = '\0';
    if (*p == '\'')
        p++;
    *pos = p;
    return true;
}

char *key_conninfo(const char *key)
{
    struct buf out = { 0 };
    buf_add(&out, "", 0);
    for (const char *p = key; *p != '\0';) {
        while (*p == ' ')
            p++;
        const char *start = p;
        /* name='value', the value quoted and escaped as add_quoted() wrote it */
        while (*p != '\0' && *p != '=')
            p++;
        if (*p == '=' && p[1] == '\'')
            for (p += 2; *p != '\0' && *p != '\''; p++)
                if (*p == '\\' && p[1] != '\0')
                    p++;
        if (*p == '\'')
            p++;
        if (strncmp(start, "env.", 4) == 0 || p == start)
            continue;
        if (strncmp(start, "default.", 8) == 0)
            start += 8;
        if (out.len > 0)
            buf_add(&out, " ", 1);
        buf_add(&out, start, (size_t) (p - start));
    }
    if (out.failed) {
        free(out.data);
        return NULL;
    }
    return out.data;
}

bool key_get(const char *key, const char *name, char *value, unsigned long size)
{
    char found_name[96];
    const char *pos = key ? key : "";
    while (next_pair(&pos, found_name, sizeof found_name, value, size)) {
        const char *plain = strncmp(found_name, "default.", 8) == 0 ? found_name + 8 : found_name;
        if (strcmp(plain, name) == 0)
            return true;
    }
    if (size > 0)
        value[0] = '\0';
    return false;
}

char *key_describe(const char *key, char *buf, unsigned long size)
{
    char user[64], host[128], port[16], dbname[64];
    key_get(key, "user", user, sizeof user);
    key_get(key, "host", host, sizeof host);
    key_get(key, "port", port, sizeof port);
    key_get(key, "dbname", dbname, sizeof dbname);
    snprintf(buf, size, "%s@%s:%s/%s", user, host, port, dbname);
    return buf;
}
