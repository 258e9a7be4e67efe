/* test_key.c: unit tests of the connection key (src/key.c): what shares a cached session and what must not. */
#define _GNU_SOURCE
#include "testutil.h"
#include "key.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * Linked with the library core directly, no preload. Every check compares keys that
 * key_from_conninfo / key_from_arrays / key_from_setdb compute for two inputs:
 *   SAME:   libpq would open an equivalent session, so the key must match (else pqdedup
 *           misses a reuse the issue asks for);
 *   DIFFER: libpq would open a different session (other user, database, server, password,
 *           setting, ...), so the key must differ (else pqdedup hands a session to the wrong
 *           connect: the one unforgivable bug).
 * Where it helps, libpq itself is the oracle: PQconnectStart on an unreachable socket
 * directory resolves every option as a real connect would, and PQuser/PQpass/PQconninfo
 * report the result.
 */

extern char **environ;

#define KA(expand, ...) key_from_arrays_list(expand, (const char *const[]) { __VA_ARGS__, NULL })

/* key_from_arrays for a flat {keyword, value, keyword, value, ..., NULL} list. */
static char *key_from_arrays_list(int expand, const char *const *pairs)
{
    const char *kw[32], *val[32];
    int n = 0;
    for (; pairs[2 * n] != NULL && n < 31; n++) {
        kw[n] = pairs[2 * n];
        val[n] = pairs[2 * n + 1];
    }
    kw[n] = val[n] = NULL;
    return key_from_arrays(kw, val, expand);
}

/* Records a check that two keys are equal (both parsed), and frees them. */
#define SAME(a, b, what) expect_keys(1, (a), (b), (what), __FILE__, __LINE__)
/* Records a check that two keys differ (both parsed), and frees them. */
#define DIFFER(a, b, what) expect_keys(0, (a), (b), (what), __FILE__, __LINE__)

static void expect_keys(int same, char *a, char *b, const char *what, const char *file, int line)
{
    char da[256], db[256];
    int ok = a != NULL && b != NULL && (strcmp(a, b) == 0) == same;
    tu_check(ok, same ? "keys equal" : "keys differ", file, line, "%s: %s vs %s", what,
             a ? key_describe(a, da, sizeof da) : "(NULL key)",
             b ? key_describe(b, db, sizeof db) : "(NULL key)");
    free(a);
    free(b);
}

/* Records a check that a key is NULL (libpq rejects the input: pass-through). */
#define REJECTED(k, what) expect_null((k), (what), __FILE__, __LINE__)

static void expect_null(char *k, const char *what, const char *file, int line)
{
    tu_check(k == NULL, "key == NULL", file, line, "%s: unparsable input got a key", what);
    free(k);
}

/* Removes every PG* variable so each test starts from libpq's compiled defaults. */
static void clear_pg_env(void)
{
    for (;;) {
        char name[256] = "";
        for (char **e = environ; e && *e; e++) {
            if (strncmp(*e, "PG", 2) == 0) {
                size_t n = strcspn(*e, "=");
                if (n < sizeof name) {
                    memcpy(name, *e, n);
                    name[n] = '\0';
                }
                break;
            }
        }
        if (name[0] == '\0')
            return;
        unsetenv(name);
    }
}

/* What libpq itself resolves `keyword` to for this conninfo (host forced to a directory
 * that does not exist, so nothing is sent anywhere). "password" answers PQpass, which
 * includes the password file. Returns a malloc'd string, "(null)" for no value. */
static char *libpq_resolves(const char *conninfo, const char *keyword)
{
    char *full = NULL, *result = NULL;
    if (asprintf(&full, "%s host=/nonexistent/pqdedup_test_key", conninfo) < 0)
        return NULL;
    PGconn *c = PQconnectStart(full);
    free(full);
    if (c == NULL)
        return NULL;
    if (strcmp(keyword, "password") == 0) {
        result = strdup(PQpass(c) ? PQpass(c) : "(null)");
    } else {
        PQconninfoOption *opts = PQconninfo(c);
        for (PQconninfoOption *o = opts; o && o->keyword; o++)
            if (strcmp(o->keyword, keyword) == 0)
                result = strdup(o->val ? o->val : "(null)");
        PQconninfoFree(opts);
    }
    PQfinish(c);
    return result;
}

/* Key=value strings that differ only in order, spacing and quoting share a key. */
static void test_conninfo_spelling(void)
{
    const char *base = "host=db.example port=5432 dbname=app user=alice password=pw";
    SAME(key_from_conninfo(base),
         key_from_conninfo("password=pw user=alice dbname=app port=5432 host=db.example"), "order");
    SAME(key_from_conninfo(base),
         key_from_conninfo("  host = db.example\tport= 5432 dbname =app\nuser=alice   password=pw  "),
         "spacing");
    SAME(key_from_conninfo(base),
         key_from_conninfo("host='db.example' port='5432' dbname='app' user='alice' password='pw'"),
         "quoting");
    SAME(key_from_conninfo("user=alice password='a b\\'c'"),
         key_from_conninfo("password=a\\ b\\'c user=alice"), "quoted vs backslash-escaped value");
    /* A repeated keyword: libpq keeps the last one. */
    SAME(key_from_conninfo("host=first port=1 host=second"),
         key_from_conninfo("port=1 host=second"), "repeated keyword, last wins");
    DIFFER(key_from_conninfo("host=first port=1 host=second"),
           key_from_conninfo("port=1 host=first"), "repeated keyword is not the first");
}

/* URIs share a key with the equivalent key=value string (percent-encoding, sockets, query). */
static void test_uri(void)
{
    SAME(key_from_conninfo("host=localhost port=5432 dbname=app"),
         key_from_conninfo("postgresql://localhost:5432/app"), "URI vs key=value");
    SAME(key_from_conninfo("postgres://localhost:5432/app"),
         key_from_conninfo("postgresql://localhost:5432/app"), "postgres:// vs postgresql://");
    SAME(key_from_conninfo("user=alice password='p@ss:w/rd' host=h dbname='my db'"),
         key_from_conninfo("postgresql://alice:p%40ss%3aw%2Frd@h/my%20db"), "percent-encoding");
    SAME(key_from_conninfo("host=/tmp/sock dbname=app"),
         key_from_conninfo("postgresql://%2Ftmp%2Fsock/app"), "socket directory as URI host");
    SAME(key_from_conninfo("host=/tmp/sock dbname=app"),
         key_from_conninfo("postgresql:///app?host=/tmp/sock"), "socket directory as URI parameter");
    SAME(key_from_conninfo("dbname=app"), key_from_conninfo("postgresql:///app"),
         "URI without host = no host");
    SAME(key_from_conninfo("host=h dbname=d sslmode=require application_name=x connect_timeout=3"),
         key_from_conninfo("postgresql://h/d?application_name=x&sslmode=require&connect_timeout=3"),
         "URI query parameters");
    SAME(key_from_conninfo("host=h,h2 port=5432,5433 dbname=d target_session_attrs=read-write"),
         key_from_conninfo("postgresql://h:5432,h2:5433/d?target_session_attrs=read-write"),
         "multi-host URI");
    DIFFER(key_from_conninfo("postgresql://h:5432/d"), key_from_conninfo("postgresql://h:5433/d"),
           "URI port");
    DIFFER(key_from_conninfo("postgresql://alice@h/d"), key_from_conninfo("postgresql://bob@h/d"),
           "URI user");
}

/* PQconnectdbParams arrays share a key with the equivalent string; empty values are unset. */
static void test_arrays(void)
{
    SAME(KA(0, "host", "h", "port", "5432", "dbname", "d", "user", "u", "password", "pw"),
         key_from_conninfo("host=h port=5432 dbname=d user=u password=pw"), "arrays vs conninfo");
    SAME(KA(0, "user", "u", "host", "h"), KA(1, "host", "h", "user", "u"),
         "arrays: order, expand_dbname without a dbname");
    SAME(KA(0, "host", "", "user", "u", "options", ""), key_from_conninfo("user=u"),
         "empty values in arrays are unset");
    SAME(KA(0, "host", NULL, "user", "u"), key_from_conninfo("user=u"),
         "NULL values in arrays are unset");
    SAME(KA(0, "user", "a", "user", "b"), key_from_conninfo("user=b"),
         "repeated keyword in arrays, last wins");
    SAME(KA(0, "user", "a", "user", ""), key_from_conninfo("user=a"),
         "a later empty value does not unset an earlier one");
    DIFFER(KA(0, "host", "h", "user", "u"), KA(0, "host", "h", "user", "v"), "arrays: user");
}

/* expand_dbname: a conninfo or URI in dbname is expanded exactly where libpq expands it. */
static void test_expand_dbname(void)
{
    const char *ci = "host=h port=5433 dbname=d user=alice";
    SAME(KA(1, "dbname", ci), key_from_conninfo(ci), "expanded conninfo");
    SAME(KA(1, "dbname", "postgresql://alice@h:5433/d"), key_from_conninfo(ci), "expanded URI");
    SAME(KA(1, "dbname", "user=alice dbname=d", "user", "bob"),
         key_from_conninfo("dbname=d user=bob"), "explicit parameter after dbname wins");
    SAME(KA(1, "user", "bob", "dbname", "user=alice dbname=d"),
         key_from_conninfo("dbname=d user=alice"), "dbname's conninfo overrides earlier params");
    SAME(KA(1, "dbname", "host=h dbname=x", "dbname", "host=q"),
         KA(0, "host", "h", "dbname", "host=q"), "only the first dbname is expanded");
    SAME(KA(1, "dbname", "", "dbname", "host=q dbname=z"),
         KA(0, "dbname", "host=q dbname=z"), "an empty first dbname stops expansion (libpq)");
    SAME(KA(1, "dbname", NULL, "dbname", "host=q dbname=z"),
         key_from_conninfo("host=q dbname=z"), "a NULL first dbname is skipped (libpq)");
    SAME(KA(1, "dbname", "plaindb"), KA(0, "dbname", "plaindb"),
         "a plain dbname is a name either way");

    /* expand_dbname=0: a conninfo-looking dbname is a literal database name. */
    char *literal = KA(0, "dbname", "host=h dbname=d");
    char *expanded = KA(1, "dbname", "host=h dbname=d");
    DIFFER(literal, expanded, "expand_dbname=0 keeps the string as a database name");
    /* The same arrays again, the other way round (the parsed-key cache must keep them apart). */
    DIFFER(KA(1, "dbname", "host=h dbname=d"), KA(0, "dbname", "host=h dbname=d"),
           "expand_dbname, cached");
    SAME(KA(0, "dbname", "host=h dbname=d"), key_from_conninfo("dbname='host=h dbname=d'"),
         "literal dbname = quoted dbname in a string");
    /* PQconnectdb never expands dbname. */
    DIFFER(key_from_conninfo("dbname='host=h dbname=d'"), key_from_conninfo("host=h dbname=d"),
           "PQconnectdb does not expand dbname");
}

/* PQsetdbLogin's arguments share a key with the equivalent conninfo. */
static void test_setdb(void)
{
    SAME(key_from_setdb("h", "5433", "-c work_mem=1MB", "d", "u", "pw"),
         key_from_conninfo("host=h port=5433 options='-c work_mem=1MB' dbname=d user=u password=pw"),
         "PQsetdbLogin vs conninfo");
    SAME(key_from_setdb(NULL, "", "", "d", NULL, ""), key_from_conninfo("dbname=d"),
         "PQsetdbLogin NULL/empty arguments are unset");
    SAME(key_from_setdb(NULL, NULL, NULL, "host=h dbname=d user=a", "b", NULL),
         key_from_conninfo("host=h dbname=d user=b"), "PQsetdbLogin: conninfo dbName, login wins");
    SAME(key_from_setdb("h2", NULL, NULL, "postgresql://a@h/d", NULL, NULL),
         key_from_conninfo("host=h2 dbname=d user=a"), "PQsetdbLogin: URI dbName, pghost wins");
    DIFFER(key_from_setdb("h", NULL, NULL, "d", "u", "pw1"),
           key_from_setdb("h", NULL, NULL, "d", "u", "pw2"), "PQsetdbLogin: password");
    DIFFER(key_from_setdb("h", NULL, "-c a=1", "d", "u", NULL),
           key_from_setdb("h", NULL, "-c a=2", "d", "u", NULL), "PQsetdbLogin: options");
}

/* PG* environment variables are the same as explicit values, and dbname defaults to user. */
static void test_environment_defaults(void)
{
    const char *explicit = "host=/tmp/envsock port=6543 user=envuser dbname=envdb "
                           "options='-c geqo=off' application_name=envapp password=envpw "
                           "sslmode=disable";
    setenv("PGHOST", "/tmp/envsock", 1);
    setenv("PGPORT", "6543", 1);
    setenv("PGUSER", "envuser", 1);
    setenv("PGDATABASE", "envdb", 1);
    setenv("PGOPTIONS", "-c geqo=off", 1);
    setenv("PGAPPNAME", "envapp", 1);
    setenv("PGPASSWORD", "envpw", 1);
    setenv("PGSSLMODE", "disable", 1);
    SAME(key_from_conninfo(""), key_from_conninfo(explicit), "PG* variables vs explicit values");
    SAME(KA(0, "application_name", ""), key_from_conninfo(explicit), "arrays: env fills unset");
    SAME(key_from_setdb(NULL, NULL, NULL, NULL, NULL, NULL), key_from_conninfo(explicit),
         "PQsetdbLogin: env fills unset");
    DIFFER(key_from_conninfo("user=other"), key_from_conninfo(""), "explicit user beats PGUSER");
    DIFFER(key_from_conninfo("password=other"), key_from_conninfo(""),
           "explicit password beats PGPASSWORD");
    clear_pg_env();

    /* A value equal to libpq's built-in default is the default. */
    SAME(key_from_conninfo("host=h sslmode=prefer port=5432 target_session_attrs=any"),
         key_from_conninfo("host=h"), "explicit built-in defaults");
    setenv("PGSSLMODE", "require", 1);
    DIFFER(key_from_conninfo("host=h sslmode=prefer"), key_from_conninfo("host=h"),
           "explicit sslmode=prefer vs PGSSLMODE=require");
    clear_pg_env();

    /* Without PGDATABASE libpq uses the user name as the database name. */
    SAME(key_from_conninfo("user=alice"), key_from_conninfo("user=alice dbname=alice"),
         "dbname defaults to user");
    SAME(key_from_conninfo("user=alice dbname=''"), key_from_conninfo("user=alice dbname=alice"),
         "empty dbname defaults to user");
    DIFFER(key_from_conninfo("user=alice"), key_from_conninfo("user=alice dbname=bob"),
           "default dbname is the user's, not another");
    setenv("PGUSER", "carol", 1);
    SAME(key_from_conninfo(""), key_from_conninfo("user=carol dbname=carol"),
         "PGUSER gives user and dbname");
    DIFFER(key_from_conninfo(""), key_from_conninfo("user=carol dbname=dave"),
           "PGUSER's dbname is not another");
    clear_pg_env();
}

/* Every libpq parameter, not just the usual ones, separates keys. */
static void test_every_parameter_differs(void)
{
    const char *base = "host=h port=5432 dbname=d user=u";
    PQconninfoOption *all = PQconndefaults();
    REQUIRE(all != NULL, "PQconndefaults");
    int n = 0;
    for (PQconninfoOption *o = all; o->keyword != NULL; o++, n++) {
        char with1[512], with2[512], what[128];
        snprintf(with1, sizeof with1, "%s %s=pqd_value_1", base, o->keyword);
        snprintf(with2, sizeof with2, "%s %s=pqd_value_2", base, o->keyword);
        snprintf(what, sizeof what, "parameter %s set vs default", o->keyword);
        DIFFER(key_from_conninfo(base), key_from_conninfo(with1), what);
        snprintf(what, sizeof what, "parameter %s: two values", o->keyword);
        DIFFER(key_from_conninfo(with1), key_from_conninfo(with2), what);
        snprintf(what, sizeof what, "parameter %s: two values (arrays)", o->keyword);
        DIFFER(KA(0, "host", "h", o->keyword, "pqd_value_1"),
               KA(0, "host", "h", o->keyword, "pqd_value_2"), what);
    }
    PQconninfoFree(all);
    CHECK(n >= 30, "libpq 15 has 30+ parameters, saw %d", n);

    /* The everyday ones, spelled out. */
    DIFFER(key_from_conninfo("host=a"), key_from_conninfo("host=b"), "host");
    DIFFER(key_from_conninfo("host=h port=5432"), key_from_conninfo("host=h port=5433"), "port");
    DIFFER(key_from_conninfo("dbname=a"), key_from_conninfo("dbname=b"), "dbname");
    DIFFER(key_from_conninfo("user=a"), key_from_conninfo("user=b"), "user");
    DIFFER(key_from_conninfo("user=a password=x"), key_from_conninfo("user=a password=y"), "password");
    DIFFER(key_from_conninfo("user=a password=x"), key_from_conninfo("user=a"), "password vs none");
    DIFFER(key_from_conninfo("options='-c a=1'"), key_from_conninfo("options='-c a=2'"), "options");
    DIFFER(key_from_conninfo("sslmode=require"), key_from_conninfo("sslmode=disable"), "sslmode");
    DIFFER(key_from_conninfo("application_name=a"), key_from_conninfo("application_name=b"),
           "application_name");
    DIFFER(key_from_conninfo("connect_timeout=1"), key_from_conninfo("connect_timeout=2"),
           "connect_timeout");
    DIFFER(key_from_conninfo("target_session_attrs=any"),
           key_from_conninfo("target_session_attrs=read-write"), "target_session_attrs");
    /* Empty is not unset in a string: host='' means libpq's default socket, not PGHOST. */
    setenv("PGHOST", "/tmp/envsock", 1);
    DIFFER(key_from_conninfo("host=''"), key_from_conninfo(""), "host='' vs PGHOST");
    clear_pg_env();
    /* The serialization must not let one value's quoting fake another parameter. */
    DIFFER(key_from_conninfo("application_name='x user=evil'"),
           key_from_conninfo("application_name=x user=evil"), "quote injection");
    DIFFER(key_from_conninfo("application_name='x\\' user=\\'evil'"),
           key_from_conninfo("application_name=x user=evil"), "escaped-quote injection");
}

/* The key follows the environment at the time of each call (the key cache must notice). */
static void test_environment_changes(void)
{
    static const char *const vars[] = { "PGPASSWORD", "PGUSER", "PGOPTIONS", "PGSSLMODE",
                                        "PGHOST", "PGPORT", "PGDATABASE", "PGAPPNAME",
                                        "PGCONNECT_TIMEOUT", "PGTARGETSESSIONATTRS" };
    static const char *const values[][2] = { { "pw1", "pw2" }, { "u1", "u2" },
                                             { "-c a=1", "-c a=2" }, { "disable", "require" },
                                             { "/tmp/s1", "/tmp/s2" }, { "5001", "5002" },
                                             { "db1", "db2" }, { "app1", "app2" }, { "3", "4" },
                                             { "any", "read-write" } };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        char what[128];
        snprintf(what, sizeof what, "setenv %s between two calls", vars[i]);
        setenv(vars[i], values[i][0], 1);
        char *first = key_from_conninfo("connect_timeout=10");
        char *arrays1 = KA(1, "dbname", "", "port", "");
        char *setdb1 = key_from_setdb(NULL, NULL, NULL, NULL, NULL, NULL);
        setenv(vars[i], values[i][1], 1);
        char *second = key_from_conninfo("connect_timeout=10");
        if (strcmp(vars[i], "PGCONNECT_TIMEOUT") == 0)
            SAME(first, second, "an explicit connect_timeout beats PGCONNECT_TIMEOUT");
        else
            DIFFER(first, second, what);
        DIFFER(arrays1, KA(1, "dbname", "", "port", ""), what);
        DIFFER(setdb1, key_from_setdb(NULL, NULL, NULL, NULL, NULL, NULL), what);
        char *set = key_from_conninfo("");
        unsetenv(vars[i]);
        snprintf(what, sizeof what, "unsetenv %s between two calls", vars[i]);
        DIFFER(set, key_from_conninfo(""), what);
    }
    /* PGREQUIRESSL=1 means sslmode=require to libpq. */
    char *plain = key_from_conninfo("host=h");
    setenv("PGREQUIRESSL", "1", 1);
    DIFFER(plain, key_from_conninfo("host=h"), "PGREQUIRESSL=1");
    SAME(key_from_conninfo("host=h"), key_from_conninfo("host=h sslmode=require"),
         "PGREQUIRESSL=1 is sslmode=require");
    clear_pg_env();
    /* Back to the first environment: back to the first key. */
    setenv("PGUSER", "u1", 1);
    char *a = key_from_conninfo("host=h");
    setenv("PGUSER", "u2", 1);
    free(key_from_conninfo("host=h"));
    setenv("PGUSER", "u1", 1);
    SAME(a, key_from_conninfo("host=h"), "same environment again, same key");
    clear_pg_env();
}

/* libpq sends PGTZ, PGDATESTYLE and PGGEQO as session settings in the startup packet
 * (`PGTZ=Asia/Tokyo psql -c 'show timezone'` says Asia/Tokyo), and DISCARD ALL resets to
 * them, so a session opened under one value must not serve a connect under another. */
static void test_startup_environment(void)
{
    static const char *const vars[][3] = { { "PGTZ", "UTC", "Asia/Tokyo" },
                                           { "PGDATESTYLE", "ISO", "German" },
                                           { "PGGEQO", "on", "off" } };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        char what[128];
        char *unset = key_from_conninfo("host=h dbname=d user=u");
        setenv(vars[i][0], vars[i][1], 1);
        char *first = key_from_conninfo("host=h dbname=d user=u");
        setenv(vars[i][0], vars[i][2], 1);
        char *second = key_from_conninfo("host=h dbname=d user=u");
        unsetenv(vars[i][0]);
        snprintf(what, sizeof what, "%s=%s vs %s=%s (session setting sent by libpq)", vars[i][0],
                 vars[i][1], vars[i][0], vars[i][2]);
        DIFFER(first, second, what);
        snprintf(what, sizeof what, "%s unset again", vars[i][0]);
        SAME(unset, key_from_conninfo("host=h dbname=d user=u"), what);
    }
    clear_pg_env();
}

/* Writes `text` to a new file under dir/name with mode 0600. Returns 0 on success. */
static int write_file(const char *dir, const char *name, const char *text, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fputs(text, f);
    fclose(f);
    return chmod(path, 0600);
}

/* A connection service (service=name, read from the service file) supplies parameters
 * that come BEFORE the PG* variables in libpq's order: explicit > service > environment >
 * compiled default. So "service=s" and "service=s user=$PGUSER" are different sessions when
 * the service names another user. */
static void test_service_file(void)
{
    char dir[] = "/tmp/pqd_key_svc_XXXXXX", path[512], path2[512], sysconf[512];
    REQUIRE(mkdtemp(dir) != NULL, "mkdtemp");
    REQUIRE(write_file(dir, "pg_service.conf",
                       "[pqd_svc]\nuser=svc_user\ndbname=svc_db\n"
                       "[pqd_svc2]\nuser=svc2_user\ndbname=svc_db\n"
                       "[pqd_port]\nport=5433\nsslmode=require\ntarget_session_attrs=read-write\n",
                       path, sizeof path) == 0, "write service file");
    REQUIRE(write_file(dir, "other_service.conf", "[pqd_svc]\nuser=other_user\ndbname=svc_db\n",
                       path2, sizeof path2) == 0, "write second service file");
    setenv("PGSERVICEFILE", path, 1);
    setenv("PGUSER", "env_user", 1);

    char *lib_svc = libpq_resolves("service=pqd_svc", "user");
    char *lib_both = libpq_resolves("service=pqd_svc user=env_user", "user");
    REQUIRE(lib_svc && lib_both, "libpq oracle");
    CHECK(strcmp(lib_svc, "svc_user") == 0 && strcmp(lib_both, "env_user") == 0,
          "libpq resolves service=pqd_svc to user %s, with user=env_user to %s", lib_svc,
          lib_both);
    free(lib_svc);
    free(lib_both);

    DIFFER(key_from_conninfo("service=pqd_svc"), key_from_conninfo("service=pqd_svc user=env_user"),
           "service's user vs explicit user equal to PGUSER (libpq: svc_user vs env_user)");
    DIFFER(key_from_conninfo("service=pqd_svc"), key_from_conninfo("service=pqd_svc2"),
           "two services");
    DIFFER(KA(1, "dbname", "service=pqd_svc"), KA(0, "service", "pqd_svc", "user", "env_user"),
           "service in an expanded dbname vs explicit user");
    SAME(key_from_conninfo("service=pqd_svc host=h"), key_from_conninfo("host=h service=pqd_svc"),
         "service: order does not matter");

    /* An explicit value equal to libpq's built-in default still beats the service's value. */
    char *lib_port = libpq_resolves("service=pqd_port", "port");
    char *lib_port_explicit = libpq_resolves("service=pqd_port port=5432", "port");
    CHECK(lib_port && lib_port_explicit && strcmp(lib_port, "5433") == 0 &&
          strcmp(lib_port_explicit, "5432") == 0,
          "libpq: service port %s, explicit port=5432 gives %s", lib_port ? lib_port : "(null)",
          lib_port_explicit ? lib_port_explicit : "(null)");
    free(lib_port);
    free(lib_port_explicit);
    DIFFER(key_from_conninfo("service=pqd_port"), key_from_conninfo("service=pqd_port port=5432"),
           "service's port=5433 vs explicit port=5432 (the built-in default)");
    DIFFER(key_from_conninfo("service=pqd_port"),
           key_from_conninfo("service=pqd_port sslmode=prefer"),
           "service's sslmode=require vs explicit sslmode=prefer (the built-in default)");
    DIFFER(key_from_conninfo("service=pqd_port"),
           key_from_conninfo("service=pqd_port target_session_attrs=any"),
           "service's target_session_attrs vs explicit built-in default");
    DIFFER(KA(0, "service", "pqd_port"), KA(0, "service", "pqd_port", "port", "5432"),
           "arrays: service's port vs explicit built-in default");

    /* The same service name in another service file is another service. */
    char *first = key_from_conninfo("service=pqd_svc");
    setenv("PGSERVICEFILE", path2, 1);
    char *lib_other = libpq_resolves("service=pqd_svc", "user");
    CHECK(lib_other && strcmp(lib_other, "other_user") == 0, "libpq reads PGSERVICEFILE: %s",
          lib_other ? lib_other : "(null)");
    free(lib_other);
    DIFFER(first, key_from_conninfo("service=pqd_svc"),
           "PGSERVICEFILE changed between two calls (libpq: svc_user vs other_user)");
    /* Likewise PGSYSCONFDIR/pg_service.conf, where libpq looks when PGSERVICEFILE is unset
     * (and ~/.pg_service.conf has no such service). */
    unsetenv("PGSERVICEFILE");
    const char *saved_home = getenv("HOME");
    char *home = saved_home ? strdup(saved_home) : NULL;
    setenv("HOME", dir, 1); /* no .pg_service.conf there */
    snprintf(sysconf, sizeof sysconf, "%s", dir);
    setenv("PGSYSCONFDIR", sysconf, 1);
    first = key_from_conninfo("service=pqd_svc");
    char *lib_sys = libpq_resolves("service=pqd_svc", "user");
    CHECK(lib_sys && strcmp(lib_sys, "svc_user") == 0, "libpq reads PGSYSCONFDIR: %s",
          lib_sys ? lib_sys : "(null)");
    free(lib_sys);
    setenv("PGSYSCONFDIR", "/nonexistent/pqd_sysconf", 1);
    DIFFER(first, key_from_conninfo("service=pqd_svc"), "PGSYSCONFDIR changed between two calls");
    if (home) {
        setenv("HOME", home, 1);
        free(home);
    } else {
        unsetenv("HOME");
    }
    clear_pg_env();

    /* PGSERVICE instead of service=: the service still beats PGUSER. */
    setenv("PGSERVICEFILE", path, 1);
    setenv("PGUSER", "env_user", 1);
    setenv("PGSERVICE", "pqd_svc", 1);
    DIFFER(key_from_conninfo(""), key_from_conninfo("user=env_user"),
           "PGSERVICE's user vs explicit user equal to PGUSER");
    setenv("PGSERVICE", "pqd_port", 1);
    DIFFER(key_from_conninfo(""), key_from_conninfo("port=5432"),
           "PGSERVICE's port vs explicit built-in default");
    clear_pg_env();
    unlink(path);
    unlink(path2);
    rmdir(dir);
}

/* With no password given, libpq reads ~/.pgpass, i.e. $HOME/.pgpass: another HOME is another
 * password (a connect libpq would reject must not be served a cached session). */
static void test_home_password_file(void)
{
    char a[] = "/tmp/pqd_key_homeA_XXXXXX", b[] = "/tmp/pqd_key_homeB_XXXXXX";
    char pa[512], pb[512];
    REQUIRE(mkdtemp(a) && mkdtemp(b), "mkdtemp");
    REQUIRE(write_file(a, ".pgpass", "*:*:*:*:password_a\n", pa, sizeof pa) == 0 &&
            write_file(b, ".pgpass", "*:*:*:*:password_b\n", pb, sizeof pb) == 0, ".pgpass");
    const char *saved = getenv("HOME");
    char *home = saved ? strdup(saved) : NULL;
    const char *ci = "port=5432 dbname=d user=u";

    setenv("HOME", a, 1);
    char *lib_a = libpq_resolves(ci, "password");
    char *key_a = key_from_conninfo(ci);
    setenv("HOME", b, 1);
    char *lib_b = libpq_resolves(ci, "password");
    char *key_b = key_from_conninfo(ci);
    CHECK(lib_a && lib_b && strcmp(lib_a, "password_a") == 0 && strcmp(lib_b, "password_b") == 0,
          "libpq reads $HOME/.pgpass: %s / %s", lib_a ? lib_a : "(null)", lib_b ? lib_b : "(null)");
    DIFFER(key_a, key_b, "HOME changed: libpq sends another password from another ~/.pgpass");
    /* An explicit password makes ~/.pgpass irrelevant: sharing would be right, not required. */
    free(lib_a);
    free(lib_b);
    if (home) {
        setenv("HOME", home, 1);
        free(home);
    } else {
        unsetenv("HOME");
    }
    unlink(pa);
    unlink(pb);
    rmdir(a);
    rmdir(b);
}

/* Input libpq cannot parse gets no key: the call goes to libpq untouched. */
static void test_unparsable(void)
{
    REJECTED(key_from_conninfo(NULL), "NULL conninfo");
    REJECTED(key_from_conninfo("host='unterminated"), "bad quoting");
    REJECTED(key_from_conninfo("nosuchkeyword=1"), "unknown keyword");
    REJECTED(key_from_conninfo("HOST=h"), "keywords are case-sensitive");
    REJECTED(key_from_conninfo("mydb"), "a bare word is not a conninfo");
    REJECTED(key_from_conninfo("host"), "missing =");
    REJECTED(key_from_conninfo("postgresql://[::1/db"), "bad URI: unterminated IPv6");
    REJECTED(key_from_conninfo("postgresql://h/d?nosuchparam=1"), "bad URI: unknown parameter");
    REJECTED(key_from_conninfo("postgresql://h/d?sslmode"), "bad URI: parameter without =");
    REJECTED(key_from_conninfo("postgresql://h/d%zz"), "bad URI: bad percent-encoding");
    REJECTED(key_from_conninfo("postgresql://h/d%00x"), "bad URI: %00");
    REJECTED(key_from_arrays(NULL, NULL, 0), "NULL arrays");
    const char *kw[] = { "host", NULL }, *val[] = { "h", NULL };
    REJECTED(key_from_arrays(NULL, val, 0), "NULL keywords");
    REJECTED(key_from_arrays(kw, NULL, 0), "NULL values");
    REJECTED(KA(0, "host", "h", "nosuchkeyword", "1"), "unknown keyword in arrays");
    REJECTED(KA(1, "dbname", "host='unterminated"), "expand_dbname: bad conninfo in dbname");
    REJECTED(KA(1, "dbname", "nosuchkeyword=1"), "expand_dbname: unknown keyword in dbname");
    REJECTED(KA(1, "dbname", "postgresql://[::1/db"), "expand_dbname: bad URI in dbname");
    REJECTED(key_from_setdb(NULL, NULL, NULL, "host='bad", NULL, NULL), "PQsetdbLogin bad dbName");
    /* libpq ignores an unknown keyword whose value is empty in arrays. */
    char *k = KA(0, "nosuchkeyword", "", "host", "h");
    SAME(k, key_from_conninfo("host=h"), "arrays: unknown keyword with an empty value is skipped");
    /* expand_dbname=0: an unparsable-looking dbname is just a name. */
    k = KA(0, "dbname", "host='unterminated");
    CHECK(k != NULL, "expand_dbname=0 takes a conninfo-looking dbname literally");
    free(k);
}

/* key_describe names user@host:port/dbname and never the password. */
static void test_describe(void)
{
    char buf[256];
    const char *inputs[] = { "host=h port=5433 dbname=d user=u password=S3cr3tPw",
                             "postgresql://u:S3cr3tPw@h:5433/d", "host=h user=S3cr3tPwUser" };
    char *k = key_from_conninfo(inputs[0]);
    REQUIRE(k != NULL, "key");
    key_describe(k, buf, sizeof buf);
    CHECK(strcmp(buf, "u@h:5433/d") == 0, "describe: %s", buf);
    CHECK(strstr(k, "S3cr3tPw") != NULL, "sanity: the key itself holds the password");
    free(k);
    k = key_from_conninfo(inputs[1]);
    REQUIRE(k != NULL, "key");
    CHECK(strstr(key_describe(k, buf, sizeof buf), "S3cr3tPw") == NULL, "describe %s", buf);
    free(k);
    setenv("PGPASSWORD", "EnvS3cr3t", 1);
    k = key_from_conninfo("host=h user=u");
    REQUIRE(k != NULL, "key");
    CHECK(strstr(key_describe(k, buf, sizeof buf), "EnvS3cr3t") == NULL, "describe %s", buf);
    free(k);
    clear_pg_env();
    /* A password with quotes and backslashes does not leak through the parsing either. */
    k = key_from_conninfo("host=h user=u password='pw\\' dbname=Leak'");
    REQUIRE(k != NULL, "key");
    key_describe(k, buf, sizeof buf);
    CHECK(strstr(buf, "Leak") == NULL && strstr(buf, "pw") == NULL, "describe %s", buf);
    free(k);
    char tiny[8];
    key_describe("user=u host=averyveryverylonghostname", tiny, sizeof tiny);
    CHECK(strlen(tiny) == sizeof tiny - 1, "describe truncates and terminates: %s", tiny);
    key_describe(NULL, buf, sizeof buf);
    CHECK(strcmp(buf, "@:/") == 0, "describe(NULL): %s", buf);
}

/* Inputs and their reference keys for the stability and thread tests. */
#define N_INPUTS 6
static const char *const stable_inputs[N_INPUTS] = {
    "host=h port=5432 dbname=d user=u password=pw",
    "postgresql://u:pw@h:5432/d",
    "host=h2 user=u application_name=x",
    "service_not_used=1",
    "",
    "postgresql://h/d?sslmode=require",
};
static char *reference[N_INPUTS];

/* One input's key through whichever call shape; i picks the input. */
static char *key_n(int i)
{
    if (i == 1)
        return KA(1, "dbname", stable_inputs[1]);
    return key_from_conninfo(stable_inputs[i]);
}

static int keys_equal(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* The same call gives the same key over many calls, across cache refills and clears. */
static void test_stable(void)
{
    for (int i = 0; i < N_INPUTS; i++)
        reference[i] = key_n(i);
    CHECK(reference[3] == NULL, "unknown keyword rejected");
    CHECK(reference[0] && reference[1] && strcmp(reference[0], reference[1]) == 0,
          "string and expanded URI agree");
    long rounds = tu_scaled(2000), bad = 0;
    for (long r = 0; r < rounds; r++) {
        int i = (int) (r % N_INPUTS);
        char *k = key_n(i);
        bad += !keys_equal(k, reference[i]);
        free(k);
        if (r % 97 == 0) {
            char filler[64];
            snprintf(filler, sizeof filler, "application_name=filler_%ld", r);
            free(key_from_conninfo(filler)); /* pushes the parsed-key cache past its size */
        }
        if (r % 500 == 499)
            key_cache_clear();
    }
    for (int j = 0; j < 700; j++) {
        char filler[64];
        snprintf(filler, sizeof filler, "host=h user=filler_%d", j);
        free(key_from_conninfo(filler));
    }
    for (int i = 0; i < N_INPUTS; i++) {
        char *k = key_n(i);
        bad += !keys_equal(k, reference[i]);
        free(k);
    }
    CHECK(bad == 0, "%ld of %ld calls gave another key", bad, rounds);
}

/* Threads computing keys at once get exactly the keys one thread gets. */
static void *key_thread(void *arg)
{
    long id = (long) arg, bad = 0, rounds = tu_scaled(3000);
    for (long r = 0; r < rounds; r++) {
        int i = (int) ((r + id) % N_INPUTS);
        char *k = key_n(i);
        bad += !keys_equal(k, reference[i]);
        free(k);
        if (r % 50 == (id * 7) % 50) {
            char filler[64];
            snprintf(filler, sizeof filler, "user=t%ld_%ld", id, r);
            free(key_from_conninfo(filler));
        }
        if (id == 0 && r % 400 == 399)
            key_cache_clear();
    }
    return (void *) bad;
}

static void test_threads(void)
{
    pthread_t t[4];
    long bad = 0;
    for (long i = 0; i < 4; i++)
        REQUIRE(pthread_create(&t[i], NULL, key_thread, (void *) i) == 0, "pthread_create");
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad += (long) r;
    }
    CHECK(bad == 0, "%ld keys computed concurrently differed from the single-thread key", bad);
    for (int i = 0; i < N_INPUTS; i++)
        free(reference[i]);
}

int main(void)
{
    clear_pg_env();
    key_cache_clear();
    test_conninfo_spelling();
    test_uri();
    test_arrays();
    test_expand_dbname();
    test_setdb();
    test_environment_defaults();
    test_every_parameter_differs();
    test_environment_changes();
    test_startup_environment();
    test_service_file();
    test_home_password_file();
    test_unparsable();
    test_describe();
    test_stable();
    test_threads();
    key_cache_clear();
    return tu_finish();
}
