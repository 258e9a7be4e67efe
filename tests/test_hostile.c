/* test_hostile.c: hostile connection parameters, app misuse and bad settings through the real preload: libpq's own results, no crash, no wrong reuse. */
#define _GNU_SOURCE
#include "test_hostile_common.h"

#include <stdarg.h>

#include <poll.h>
#include <pthread.h>

/*
 * Usage: test_hostile MODE
 *   inputs    ~50 malformed, huge (1 MB values, 10,000 keywords), quoted/escaped, duplicate-key,
 *             unknown-keyword and percent-encoded conninfo strings, URIs, keyword arrays
 *             (expand_dbname 0/1), PQsetdbLogin and async calls are run in a child with
 *             PQDEDUP_DISABLE=1 (plain libpq) and twice here under pqdedup: the same PQstatus,
 *             PQerrorMessage and session identity (current_user, database, application_name,
 *             search_path) every time, so nothing was reused across users, databases or passwords.
 *   misuse    PQfinish(NULL); PQfinish twice on a kept connection: one warning line on stderr
 *             (run with PQDEDUP_LOG=warn), and the next holders get the kept backend, working.
 *   settings  bad PQDEDUP_* values, each in a child process: exactly one warning line per bad
 *             variable, and the default's behaviour (KEEP_PER_KEY 16, MAX_WAIT 5s,
 *             UNBIND_AFTER 100ms, LOG off).
 */

/* ---- inputs: one connect call each ---------------------------------------------------- */

struct input {
    char kind;              /* S conninfo, A arrays, E arrays+expand, L PQsetdbLogin, T async */
    const char *label;
    char *conninfo;         /* S, T */
    const char **kw, **val; /* A, E (NULL-terminated kw) */
    const char *setdb[7];   /* L: host, port, options, tty, dbname, login, pwd */
};

#define MAX_INPUTS 80
static struct input inputs[MAX_INPUTS];
static int ninputs;
static char role_q[64];     /* a role whose password has quotes and backslashes */
static const char role_q_password[] = "q'u\"o\\te pw";

static char *xstrdup(const char *s)
{
    char *d = strdup(s);

    REQUIRE(d != NULL, "out of memory");
    return d;
}

static char *xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;

    va_start(ap, fmt);
    REQUIRE(vasprintf(&s, fmt, ap) >= 0, "out of memory");
    va_end(ap);
    return s;
}

static struct input *add(char kind, const char *label)
{
    REQUIRE(ninputs < MAX_INPUTS, "too many inputs");
    inputs[ninputs] = (struct input){.kind = kind, .label = label};
    return &inputs[ninputs++];
}

static void add_string(char kind, const char *label, char *conninfo)
{
    add(kind, label)->conninfo = conninfo;
}

/* Arrays from a flat list k1, v1, k2, v2, ..., NULL (a value may be NULL: give the count). */
static void add_arrays(char kind, const char *label, int npairs, const char *const *flat)
{
    struct input *in = add(kind, label);

    in->kw = calloc((size_t)npairs + 1, sizeof *in->kw);
    in->val = calloc((size_t)npairs + 1, sizeof *in->val);
    REQUIRE(in->kw && in->val, "out of memory");
    for (int i = 0; i < npairs; i++) {
        in->kw[i] = flat[2 * i];
        in->val[i] = flat[2 * i + 1];
    }
}

static void add_setdb(const char *label, const char *host, const char *port, const char *options,
                      const char *dbname, const char *login, const char *pwd)
{
    struct input *in = add('L', label);
    const char *a[7] = {host, port, options, NULL, dbname, login, pwd};

    memcpy(in->setdb, a, sizeof a);
}

/* A string of n copies of c. */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);

    REQUIRE(s != NULL, "out of memory");
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* The fixed list of hostile inputs. Same in parent and child (role_q set first). */
static void build_inputs(void)
{
    const char *h = tu_tcp_host(), *p = hq_port();
    char *base = xprintf("host=%s port=%s", h, p);
    char *mb = repeat('m', 1024 * 1024);
    char *big = repeat('o', 100 * 1024);

    /* credentials, users and databases in key=value strings */
    add_string('S', "+alice", xprintf("%s user=pqd_alice password=alice_pw dbname=postgres", base));
    add_string('S', "-alice wrong password", xprintf("%s user=pqd_alice password=wrong dbname=postgres", base));
    add_string('S', "+alice other db", xprintf("%s user=pqd_alice password=alice_pw dbname=pqd_other", base));
    add_string('S', "+bob", xprintf("%s user=pqd_bob password=bob_pw dbname=postgres", base));
    add_string('S', "-bob with alice's password", xprintf("%s user=pqd_bob password=alice_pw dbname=postgres", base));
    add_string('S', "+duplicate keys: last user/password win",
               xprintf("%s user=pqd_bob password=bob_pw user=pqd_alice password=alice_pw", base));
    add_string('S', "-duplicate keys: last password wrong",
               xprintf("%s user=pqd_alice password=alice_pw password=bob_pw", base));
    add_string('S', "+quoted values and spacing",
               xprintf("  host = '%s'  port='%s' user = 'pqd_alice'  password = 'alice_pw' dbname = 'pqd_other' ", h, p));
    add_string('S', "+password with quotes and backslashes",
               xprintf("%s user=%s password='q\\'u\"o\\\\te pw' dbname=postgres", base, role_q));
    add_string('S', "-same password, one escape short",
               xprintf("%s user=%s password='q\\'u\"o\\te pw' dbname=postgres", base, role_q));
    add_string('S', "+escaped password unquoted",
               xprintf("%s user=%s password=q\\'u\"o\\\\te\\ pw dbname=postgres", base, role_q));
    add_string('S', "-unknown keyword", xprintf("%s user=pqd_alice password=alice_pw nosuchkeyword=1", base));
    add_string('S', "-unterminated quote", xprintf("%s user=pqd_alice password='alice_pw", base));
    add_string('S', "-missing =", xprintf("%s user pqd_alice", base));
    add_string('S', "-bare =", xstrdup("=value"));
    add_string('S', "-not a conninfo", xstrdup("justadbname"));
    add_string('S', "+trailing backslash", xprintf("%s user=pqd_alice password=alice_pw\\", base));
    add_string('S', "-'' is not an escape", xprintf("%s user=pqd_alice password=alice_pw application_name='it''s'", base));
    add_string('S', "-bad sslmode", xprintf("%s user=pqd_alice password=alice_pw sslmode=bogus", base));
    add_string('S', "-bad port", xprintf("host=%s port=notaport user=pqd_alice password=alice_pw", h));
    add_string('S', "-bad connect_timeout", xprintf("%s user=pqd_alice password=alice_pw connect_timeout=abc", base));
    add_string('S', "+options with escapes",
               xprintf("%s user=pqd_alice password=alice_pw options='-c application_name=a\\\\ b'", base));
    add_string('S', "-dbname URI is not expanded in PQconnectdb",
               xprintf("%s user=pqd_alice password=alice_pw dbname=postgresql://%s:%s/pqd_other", base, h, p));
    add_string('S', "+empty string: the environment's defaults", xstrdup(""));
    add_string('S', "-1 MB application_name", xprintf("%s user=pqd_alice password=alice_pw application_name=%s", base, mb));
    add_string('S', "-100 kB options", xprintf("%s user=pqd_alice password=alice_pw options='-c search_path=%s'", base, big));
    /* A 1 MB password takes plain libpq ~5 s (SASLprep); 100 kB is enough. */
    add_string('S', "-100 kB password", xprintf("%s user=pqd_alice password=%s", base, big));
    {
        size_t cap = 10000 * 32 + 256, len = 0;
        char *s = malloc(cap);

        REQUIRE(s != NULL, "out of memory");
        len += (size_t)snprintf(s + len, cap - len, "%s user=pqd_alice password=alice_pw", base);
        for (int i = 0; i < 10000; i++)
            len += (size_t)snprintf(s + len, cap - len, " application_name=hq_k%d", i);
        add_string('S', "+10,000 keywords", s);
    }

    /* URIs */
    add_string('S', "+URI percent-encoded", xprintf("postgresql://pqd_%%61lice:alice%%5Fpw@%s:%s/pqd%%5Fother", h, p));
    add_string('S', "-URI percent-encoded wrong password", xprintf("postgresql://pqd_alice:alice%%5Fpx@%s:%s/postgres", h, p));
    add_string('S', "-URI bad percent", xprintf("postgresql://pqd_alice:alice_pw@%s:%s/postgres?application_name=%%zz", h, p));
    add_string('S', "-URI %00", xprintf("postgresql://pqd_alice:alice_pw@%s:%s/postgres?application_name=a%%00b", h, p));
    add_string('S', "-URI unknown parameter", xprintf("postgresql://pqd_alice:alice_pw@%s:%s/postgres?nosuch=1", h, p));
    add_string('S', "-URI IPv6 nobody listens on", xprintf("postgresql://pqd_alice:alice_pw@[::1]:%s/postgres", p));
    add_string('S', "+URI IPv6 then IPv4", xprintf("postgresql://pqd_alice:alice_pw@[::1]:%s,%s:%s/postgres", p, h, p));
    add_string('S', "-URI unterminated IPv6", xprintf("postgresql://[::1:%s/postgres", p));
    add_string('S', "+URI duplicate query keys", xprintf("postgresql://%s:%s/postgres?user=pqd_bob&user=pqd_alice&password=alice_pw", h, p));
    add_string('S', "-URI user in query and authority", xprintf("postgresql://pqd_bob:bob_pw@%s:%s/postgres?user=pqd_alice", h, p));
    add_string('S', "-URI socket directory", xprintf("postgresql://%%2F%s/postgres?port=%s&application_name=%%27q%%22", "nonexistent-dir", p));

    /* keyword arrays */
    {
        const char *a[] = {"host", h, "port", p, "user", "pqd_alice", "password", "alice_pw", "dbname", "postgres"};
        add_arrays('A', "+arrays alice", 5, a);
    }
    {
        const char *a[] = {"password", "", "host", h, "port", p, "user", "pqd_bob", "password", "bob_pw", "password", NULL, "dbname", ""};
        add_arrays('A', "+arrays: empty and NULL values are unset", 7, a);
    }
    {
        const char *a[] = {"nosuch", "", "nosuch2", NULL, "host", h, "port", p, "user", "pqd_alice", "password", "alice_pw"};
        add_arrays('A', "+arrays: unknown keyword with empty value is ignored", 6, a);
    }
    {
        const char *a[] = {"host", h, "port", p, "user", "pqd_alice", "password", "alice_pw", "nosuch", "1"};
        add_arrays('A', "-arrays: unknown keyword", 5, a);
    }
    {
        const char *a[] = {"host", h, "port", p, "user", "pqd_alice", "password", "alice_pw", "user", "pqd_bob"};
        add_arrays('A', "-arrays: duplicate user, last wins", 5, a);
    }
    {
        const char *a[] = {"host", h, "port", p, "user", "pqd_alice", "password", "alice_pw", "application_name", mb};
        add_arrays('A', "-arrays: 1 MB application_name", 5, a);
    }
    {
        int n = 10000 + 4;
        const char **flat = calloc((size_t)n * 2, sizeof *flat);

        REQUIRE(flat != NULL, "out of memory");
        flat[0] = "host", flat[1] = h, flat[2] = "port", flat[3] = p;
        flat[4] = "user", flat[5] = "pqd_alice", flat[6] = "password", flat[7] = "alice_pw";
        for (int i = 0; i < 10000; i++) {
            flat[8 + 2 * i] = "application_name";
            flat[9 + 2 * i] = xprintf("hq_a%d", i);
        }
        add_arrays('A', "+arrays: 10,000 keywords", n, flat);
        free(flat);
    }
    {
        const char *a[] = {"dbname", xprintf("postgresql://pqd_alice:alice_pw@%s:%s/pqd_other", h, p)};
        add_arrays('E', "+expand: URI in dbname", 1, a);
    }
    {
        const char *a[] = {"dbname", xprintf("postgresql://pqd_alice:alice_pw@%s:%s/pqd_other", h, p), "password", "wrong"};
        add_arrays('E', "-expand: URI then a wrong password", 2, a);
    }
    {
        const char *a[] = {"dbname", xprintf("postgresql://pqd_alice:alice_pw@%s:%s/pqd_other", h, p)};
        add_arrays('A', "-no expand: URI in dbname is a name", 1, a);
    }
    {
        const char *a[] = {"dbname", xprintf("%s user=pqd_bob password=bob_pw dbname=pqd_other", base), "user", "pqd_alice"};
        add_arrays('E', "-expand: conninfo then another user", 2, a);
    }
    {
        const char *a[] = {"user", "pqd_bob", "dbname", xprintf("%s user=pqd_alice password=alice_pw", base)};
        add_arrays('E', "+expand: conninfo overrides an earlier user", 2, a);
    }
    {
        const char *a[] = {"dbname", "host='unterminated"};
        add_arrays('E', "-expand: malformed conninfo", 1, a);
    }

    /* PQsetdbLogin and async */
    add_setdb("+setdb alice", h, p, NULL, "pqd_other", "pqd_alice", "alice_pw");
    add_setdb("-setdb conninfo dbName, another login", h, p, NULL,
              xprintf("dbname=pqd_other user=pqd_bob password=bob_pw"), "pqd_alice", NULL);
    add_setdb("+setdb URI dbName", NULL, NULL, NULL,
              xprintf("postgresql://pqd_alice:alice_pw@%s:%s/pqd_other", h, p), NULL, NULL);
    add_setdb("+setdb all NULL", NULL, NULL, NULL, NULL, NULL, NULL);
    add_setdb("-setdb malformed dbName", h, p, NULL, "host='x", "pqd_alice", "alice_pw");
    add_string('T', "+async alice", xprintf("%s user=pqd_alice password=alice_pw dbname=postgres", base));
    add_string('T', "-async wrong password", xprintf("%s user=pqd_alice password=wrong dbname=postgres", base));
    add_string('T', "-async malformed", xprintf("%s user='pqd_alice", base));
    free(base);
    free(big); /* mb stays: an arrays input points at it */
}

/* ---- running one input ------------------------------------------------------------------ */

struct result {
    int ok;
    char *user, *db, *app, *search_path, *err;
    int pid;
};

static char *dup_or_empty(const char *s)
{
    return xstrdup(s ? s : "");
}

static PGconn *connect_async(const char *conninfo)
{
    PGconn *c = PQconnectStart(conninfo);
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    long deadline = tu_now_ms() + 30000;

    if (!c || PQstatus(c) == CONNECTION_BAD)
        return c;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED && tu_now_ms() < deadline) {
        struct pollfd pfd = {PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0};

        if (pfd.fd >= 0)
            poll(&pfd, 1, 1000);
        st = PQconnectPoll(c);
    }
    return c;
}

static void run_input(const struct input *in, struct result *r)
{
    PGconn *c = NULL;

    switch (in->kind) {
    case 'S':
        c = PQconnectdb(in->conninfo);
        break;
    case 'T':
        c = connect_async(in->conninfo);
        break;
    case 'A':
    case 'E':
        c = PQconnectdbParams(in->kw, in->val, in->kind == 'E');
        break;
    case 'L':
        c = PQsetdbLogin(in->setdb[0], in->setdb[1], in->setdb[2], in->setdb[3], in->setdb[4],
                         in->setdb[5], in->setdb[6]);
        break;
    }
    memset(r, 0, sizeof *r);
    r->ok = c && PQstatus(c) == CONNECTION_OK;
    if (!c) {
        r->err = xstrdup("(NULL PGconn)");
    } else if (!r->ok) {
        r->err = dup_or_empty(PQerrorMessage(c));
    } else {
        PGresult *res = PQexec(c, "SELECT current_user, current_database(), "
                                  "current_setting('application_name'), "
                                  "current_setting('search_path'), pg_backend_pid()");

        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            r->user = dup_or_empty(PQgetvalue(res, 0, 0));
            r->db = dup_or_empty(PQgetvalue(res, 0, 1));
            r->app = dup_or_empty(PQgetvalue(res, 0, 2));
            r->search_path = dup_or_empty(PQgetvalue(res, 0, 3));
            r->pid = atoi(PQgetvalue(res, 0, 4));
            r->err = xstrdup("");
        } else {
            r->ok = 0;
            r->err = xprintf("(query failed) %s", PQerrorMessage(c));
        }
        PQclear(res);
    }
    if (!r->user) {
        r->user = xstrdup("");
        r->db = xstrdup("");
        r->app = xstrdup("");
        r->search_path = xstrdup("");
    }
    PQfinish(c);
}

static void free_result(struct result *r)
{
    free(r->user), free(r->db), free(r->app), free(r->search_path), free(r->err);
}

/* Hex so that any byte survives the pipe; one result a line. */
static void put_hex(FILE *f, const char *s)
{
    fputc(' ', f);
    if (!*s)
        fputc('-', f);
    for (; *s; s++)
        fprintf(f, "%02x", (unsigned char)*s);
}

static char *get_hex(char **pos)
{
    char *p = *pos, *out;
    size_t n = 0;

    while (*p == ' ')
        p++;
    size_t len = strcspn(p, " \n");
    out = malloc(len / 2 + 1);
    REQUIRE(out != NULL, "out of memory");
    if (!(len == 1 && *p == '-'))
        for (size_t i = 0; i + 1 < len; i += 2) {
            unsigned v;

            sscanf(p + i, "%2x", &v);
            out[n++] = (char)v;
        }
    out[n] = '\0';
    *pos = p + len;
    return out;
}

/* The child: plain libpq (PQDEDUP_DISABLE=1), one line per input on stdout. */
static int report(void)
{
    build_inputs();
    for (int i = 0; i < ninputs; i++) {
        struct result r;

        run_input(&inputs[i], &r);
        printf("%d %d", i, r.ok);
        put_hex(stdout, r.user), put_hex(stdout, r.db), put_hex(stdout, r.app);
        put_hex(stdout, r.search_path), put_hex(stdout, r.err);
        putchar('\n');
        free_result(&r);
    }
    fflush(stdout);
    return 0;
}

/* Compares one field; returns 1 when equal. */
static int same_field(const char *what, const char *label, int round, const char *plain, const char *here)
{
    return CHECK(!strcmp(plain, here), "input \"%s\" (round %d): %s under pqdedup \"%.300s\", plain libpq \"%.300s\"",
                 label, round, what, here, plain);
}

/* True when msg is libpq's word for a server that closed the connection before libpq read
 * its answer. With an input the server rejects while the client is still sending (a 100 kB
 * password over TLS), whether libpq reads the FATAL first or finds the connection closed is a
 * race between the two, which plain libpq loses too on a slow machine (valgrind, load). */
static int lost_race(const char *msg)
{
    return strstr(msg, "closed unexpectedly") != NULL || strstr(msg, "could not send data to server") != NULL ||
           strstr(msg, "Connection reset by peer") != NULL || strstr(msg, "Broken pipe") != NULL;
}

/* Compares two failures' messages: equal, or the same connection attempt's first words
 * ("connection to server at ... failed:") where one of them lost that race. Returns 1 when so. */
static int same_failure(const char *label, int round, const char *plain, const char *here)
{
    const char *plain_end = strstr(plain, "failed:"), *here_end = strstr(here, "failed:");

    if ((lost_race(plain) || lost_race(here)) && plain_end && here_end && plain_end - plain == here_end - here &&
        !strncmp(plain, here, (size_t)(plain_end - plain)))
        return 1;
    return same_field("error message", label, round, plain, here);
}

/* Every hostile input gives what plain libpq gives, twice (the second time reusing kept
 * connections), and the session is the one the parameters name (no wrong reuse). */
static void test_inputs(void)
{
    char *argv[] = {NULL, "inputs", "--report", NULL};
    char role_env[128];
    const char *env[] = {"PQDEDUP_DISABLE=1", role_env, NULL};
    char *out = NULL, *err = NULL;
    struct result *plain;
    int status, reused = 0, ok_connects = 0, *pids;

    snprintf(role_env, sizeof role_env, "PQD_HOSTILE_ROLE=%s", role_q);
    hq_create_role(role_q, role_q_password);
    build_inputs();
    printf("test_hostile: %d inputs; plain libpq first (child with PQDEDUP_DISABLE=1)\n", ninputs);

    status = hq_run_capture(NULL, argv, env, &out, &err);
    REQUIRE(status == 0, "the plain-libpq child failed (wait status %d): %s", status, err);
    plain = calloc((size_t)ninputs, sizeof *plain);
    pids = calloc((size_t)ninputs * 2, sizeof *pids);
    REQUIRE(plain && pids, "out of memory");
    {
        char *pos = out;
        int n = 0;

        while (pos && *pos) {
            int idx, ok, used = 0;

            REQUIRE(sscanf(pos, "%d %d%n", &idx, &ok, &used) == 2 && idx == n, "bad child line: %.80s", pos);
            pos += used;
            plain[n].ok = ok;
            plain[n].user = get_hex(&pos), plain[n].db = get_hex(&pos), plain[n].app = get_hex(&pos);
            plain[n].search_path = get_hex(&pos), plain[n].err = get_hex(&pos);
            if (*pos == '\n')
                pos++;
            n++;
        }
        REQUIRE(n == ninputs, "the child reported %d of %d inputs", n, ninputs);
    }

    for (int round = 1; round <= 2; round++) {
        for (int i = 0; i < ninputs; i++) {
            const struct input *in = &inputs[i];
            struct result r;
            int same;

            run_input(in, &r);
            if (round == 1)
                CHECK(plain[i].ok == (in->label[0] == '+'), "input \"%s\": plain libpq %s, expected it to %s: %.300s",
                      in->label + 1, plain[i].ok ? "connected" : "failed", in->label[0] == '+' ? "connect" : "fail",
                      plain[i].err);
            same = CHECK(r.ok == plain[i].ok, "input \"%s\" (round %d): %s under pqdedup, %s with plain libpq: %.300s%.300s",
                         in->label, round, r.ok ? "connected" : "failed", plain[i].ok ? "connected" : "failed",
                         r.err, plain[i].err);
            if (same && !r.ok)
                same_failure(in->label, round, plain[i].err, r.err);
            if (same && r.ok) {
                same_field("current_user", in->label, round, plain[i].user, r.user);
                same_field("current_database()", in->label, round, plain[i].db, r.db);
                same_field("application_name", in->label, round, plain[i].app, r.app);
                same_field("search_path", in->label, round, plain[i].search_path, r.search_path);
                ok_connects++;
                for (int j = 0; j < (round - 1) * ninputs + i; j++)
                    if (pids[j] == r.pid) {
                        reused++;
                        break;
                    }
                pids[(round - 1) * ninputs + i] = r.pid;
            }
            free_result(&r);
        }
    }
    printf("test_hostile: %d successful connects under pqdedup, %d of them on a backend used before\n",
           ok_connects, reused);
    /* Without reuse this test would not show that reuse respects the parameters. */
    CHECK(reused >= ok_connects / 2, "only %d of %d connects reused a kept backend", reused, ok_connects);
    for (int i = 0; i < ninputs; i++)
        free_result(&plain[i]);
    free(plain);
    free(pids);
    free(out);
    free(err);
    hq_drop_role(role_q);
}

/* ---- misuse ------------------------------------------------------------------------------ */

/* Runs fn(arg) with fd 2 sent to a file; returns what was written to it (malloc'd). */
static char *capture_stderr(void (*fn)(void *), void *arg)
{
    tu_capture_stderr();
    fn(arg);
    return tu_release_stderr();
}

static void finish_it(void *conn)
{
    PQfinish(conn);
}

static int query_pid(PGconn *c)
{
    return PQstatus(c) == CONNECTION_OK ? tu_backend_pid(c) : -1;
}

/* PQfinish(NULL) is harmless; PQfinish twice on a connection pqdedup kept logs exactly one
 * warning and ignores the second call: the kept backend stays usable for the next holders. */
static void test_misuse(void)
{
    const char *ci = tu_conninfo("");
    PGconn *c, *d, *e;
    int pid, pid_d, pid_e;
    char *text;
    const char *warned[] = {"pqdedup[", "warning", "already finished", NULL};
    const char *any[] = {"pqdedup[", NULL};

    text = capture_stderr(finish_it, NULL);
    CHECK(hq_count_lines(text, any) == 0, "PQfinish(NULL) logged: %s", text);
    free(text);

    c = PQconnectdb(ci);
    REQUIRE(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    pid = query_pid(c);
    PQfinish(c);
    text = capture_stderr(finish_it, c); /* the second PQfinish of the same handle */
    CHECK(hq_count_lines(text, warned) == 1,
          "the second PQfinish should log one warning line saying it was already finished; stderr: %s", text);
    CHECK(hq_count_lines(text, any) == 1, "the second PQfinish logged more than one line: %s", text);
    free(text);

    tu_wait_reset(pid);
    d = PQconnectdb(ci);
    pid_d = query_pid(d);
    CHECK(pid_d == pid, "after a double PQfinish the next connect got backend %d, expected the kept %d (%s)",
          pid_d, pid, PQerrorMessage(d));
    CHECK(d && tu_exec_ok(d, "CREATE TEMP TABLE hq_t(x int); INSERT INTO hq_t VALUES (1)"),
          "the next holder cannot work: %s", PQerrorMessage(d));
    PQfinish(d);
    tu_wait_reset(pid);
    e = PQconnectdb(ci);
    pid_e = query_pid(e);
    CHECK(pid_e == pid, "the holder after that got backend %d, expected %d", pid_e, pid);
    {
        char *v = tu_query_value(e, "SELECT count(*) FROM pg_tables WHERE tablename = 'hq_t'");

        CHECK(v && !strcmp(v, "0"), "the previous holder's temp table is still there (%s)", v ? v : "error");
        free(v);
    }
    PQfinish(e);
    CHECK(tu_wait_backends(tu_app_name(), 1, 3000) == 1, "expected the one kept backend at the end");
}

/* ---- settings ------------------------------------------------------------------------------ */

/* Child: 20 connections open at once, each inside a transaction (busy: each keeps a server
 * connection of its own, none lends it to the next connect), all finished: how many backends
 * stay kept. Waits (5 s at most) for the count to reach `want` (the backends of the ones closed
 * exit a moment after), and prints the count it ended on. */
static int settings_child_keep(long want)
{
    PGconn *c[20];
    long kept;

    for (int i = 0; i < 20; i++) {
        c[i] = PQconnectdb(tu_conninfo(""));
        REQUIRE(PQstatus(c[i]) == CONNECTION_OK, "connect %d: %s", i, PQerrorMessage(c[i]));
        REQUIRE(tu_exec_ok(c[i], "BEGIN"), "BEGIN %d: %s", i, PQerrorMessage(c[i]));
    }
    CHECK(tu_count_backends(tu_app_name()) == 20, "20 busy connections are not 20 backends");
    for (int i = 0; i < 20; i++)
        PQfinish(c[i]);
    kept = tu_wait_backends(tu_app_name(), want, 5000);
    printf("kept=%ld\n", kept);
    fflush(stdout);
    return tu_finish();
}

/* Child: a connection used once, then idle 300 ms, and a second connect: whether the second
 * got the first one's server connection (moved=1: the first had been idle longer than
 * PQDEDUP_UNBIND_AFTER), or a new backend (moved=0). */
static int settings_child_unbind(void)
{
    PGconn *a = PQconnectdb(tu_conninfo("")), *b;
    int pid_a;

    REQUIRE(PQstatus(a) == CONNECTION_OK, "connect: %s", PQerrorMessage(a));
    pid_a = tu_backend_pid(a);
    tu_sleep_ms(300); /* the scenario: a is idle this long */
    b = PQconnectdb(tu_conninfo(""));
    REQUIRE(PQstatus(b) == CONNECTION_OK, "connect: %s", PQerrorMessage(b));
    printf("moved=%d\n", tu_backend_pid(b) == pid_a);
    fflush(stdout);
    PQfinish(b);
    PQfinish(a);
    return tu_finish();
}

/* Child: with PQDEDUP_MAX_PER_KEY=1 and the only connection inside a transaction, how long
 * the second connect waits before it is refused. */
static int settings_child_wait(void)
{
    PGconn *a = PQconnectdb(tu_conninfo("")), *b;
    long t0, waited;

    REQUIRE(PQstatus(a) == CONNECTION_OK, "connect: %s", PQerrorMessage(a));
    REQUIRE(tu_exec_ok(a, "BEGIN"), "BEGIN: %s", PQerrorMessage(a));
    t0 = tu_now_ms();
    b = PQconnectdb(tu_conninfo(""));
    waited = tu_now_ms() - t0;
    printf("waited=%ld refused=%d\n", waited,
           PQstatus(b) == CONNECTION_BAD && strstr(PQerrorMessage(b), "PQDEDUP_MAX_PER_KEY") != NULL);
    fflush(stdout);
    PQfinish(b);
    PQfinish(a);
    return tu_finish();
}

/* Child: a double PQfinish (a warning at PQDEDUP_LOG=warn) and some churn in 4 threads. */
static void *churn_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20; i++) {
        PGconn *c = PQconnectdb(tu_conninfo(""));

        CHECK(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
        PQfinish(c);
    }
    return NULL;
}

static int settings_child_log(void)
{
    pthread_t t[4];
    PGconn *c = PQconnectdb(tu_conninfo(""));

    REQUIRE(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    PQfinish(c);
    PQfinish(c);
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, churn_thread, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    printf("done\n");
    return tu_finish();
}

/* Runs the settings child `what` with env; returns its stdout, *err gets stderr. */
static char *run_settings_child(const char *what, const char *const *env, char **err)
{
    char *argv[] = {NULL, "settings", "--child", (char *)what, NULL, NULL};
    char want[16];

    if (!strncmp(what, "keep=", 5)) { /* keep=N: the kept count the child waits for */
        snprintf(want, sizeof want, "%s", what + 5);
        argv[3] = "keep";
        argv[4] = want;
    }
    char *out = NULL;
    int status = hq_run_capture(NULL, argv, env, &out, err);

    CHECK(status == 0, "settings child %s (%s ...) failed, wait status %d; stderr: %s", what, env[0], status,
          *err ? *err : "");
    return out;
}

/* Exactly one "warning: ... <name> ... using the default" line for each bad variable. */
static void check_one_warning(const char *err, const char *name, const char *context)
{
    const char *needles[] = {"pqdedup[", "warning", name, "using the default", NULL};
    int n = hq_count_lines(err, needles);

    CHECK(n == 1, "%s: %d warning lines for %s, expected exactly 1; stderr:\n%s", context, n, name, err);
}

static long value_of(const char *out, const char *name)
{
    const char *p = out ? strstr(out, name) : NULL;

    return p ? strtol(p + strlen(name), NULL, 10) : -1;
}

static void test_settings(void)
{
    const char *pqd_lines[] = {"pqdedup[", NULL};

    /* KEEP_PER_KEY: garbage, negative and huge values mean the default 16. */
    static const char *const bad_keep[] = {"PQDEDUP_KEEP_PER_KEY=-1", "PQDEDUP_KEEP_PER_KEY=99999999999",
                                           "PQDEDUP_KEEP_PER_KEY=abc", "PQDEDUP_KEEP_PER_KEY=", "PQDEDUP_KEEP_PER_KEY=1.5"};
    for (size_t i = 0; i < sizeof bad_keep / sizeof bad_keep[0]; i++) {
        const char *env[] = {bad_keep[i], "PQDEDUP_LOG", NULL};
        char *err = NULL, *out = run_settings_child("keep=16", env, &err);
        long kept = value_of(out, "kept=");

        check_one_warning(err, "PQDEDUP_KEEP_PER_KEY", bad_keep[i]);
        CHECK(hq_count_lines(err, pqd_lines) == 1, "%s: other pqdedup lines: %s", bad_keep[i], err);
        CHECK(kept == 16, "%s: %ld connections kept after finishing 20, expected the default 16", bad_keep[i], kept);
        free(out), free(err);
    }
    {   /* control: a good value is used, and says nothing */
        const char *env[] = {"PQDEDUP_KEEP_PER_KEY=3", "PQDEDUP_LOG", NULL};
        char *err = NULL, *out = run_settings_child("keep=3", env, &err);

        CHECK(value_of(out, "kept=") == 3, "PQDEDUP_KEEP_PER_KEY=3: %ld kept, expected 3", value_of(out, "kept="));
        CHECK(hq_count_lines(err, pqd_lines) == 0, "PQDEDUP_KEEP_PER_KEY=3 printed: %s", err);
        free(out), free(err);
    }

    /* MAX_WAIT: 1e9 is not a duration; the default 5 s is waited at the cap. */
    {
        const char *env[] = {"PQDEDUP_MAX_WAIT=1e9", "PQDEDUP_MAX_PER_KEY=1", "PQDEDUP_LOG", NULL};
        char *err = NULL, *out = run_settings_child("wait", env, &err);
        long waited = value_of(out, "waited="), refused = value_of(out, "refused=");

        check_one_warning(err, "PQDEDUP_MAX_WAIT", "PQDEDUP_MAX_WAIT=1e9");
        CHECK(refused == 1 && waited >= 4500 && waited < 9000,
              "PQDEDUP_MAX_WAIT=1e9: refused=%ld after %ld ms, expected a refusal after the default 5000 ms",
              refused, waited);
        free(out), free(err);
    }
    {   /* control: a good MAX_WAIT is used */
        const char *env[] = {"PQDEDUP_MAX_WAIT=300ms", "PQDEDUP_MAX_PER_KEY=1", "PQDEDUP_LOG", NULL};
        char *err = NULL, *out = run_settings_child("wait", env, &err);
        long waited = value_of(out, "waited=");

        CHECK(value_of(out, "refused=") == 1 && waited >= 250 && waited < 2500,
              "PQDEDUP_MAX_WAIT=300ms: waited %ld ms", waited);
        free(out), free(err);
    }

    /* UNBIND_AFTER: not a duration means the default 100ms, after which an idle connection's
     * server connection goes to the next connect that needs one; a good value (1h) is used. */
    static const char *const bad_unbind[] = {"PQDEDUP_UNBIND_AFTER=soon", "PQDEDUP_UNBIND_AFTER=-100ms",
                                             "PQDEDUP_UNBIND_AFTER=99999999999999999999"};
    for (size_t i = 0; i < sizeof bad_unbind / sizeof bad_unbind[0]; i++) {
        const char *env[] = {bad_unbind[i], "PQDEDUP_LOG", NULL};
        char *err = NULL, *out = run_settings_child("unbind", env, &err);

        check_one_warning(err, "PQDEDUP_UNBIND_AFTER", bad_unbind[i]);
        CHECK(hq_count_lines(err, pqd_lines) == 1, "%s: other pqdedup lines: %s", bad_unbind[i], err);
        CHECK(value_of(out, "moved=") == 1, "%s: a connection idle 300 ms did not lend its server "
              "connection (moved=%ld), as with the default 100ms", bad_unbind[i], value_of(out, "moved="));
        free(out), free(err);
    }
    {   /* control: a good value is used, and says nothing */
        const char *env[] = {"PQDEDUP_UNBIND_AFTER=1h", "PQDEDUP_LOG", NULL};
        char *err = NULL, *out = run_settings_child("unbind", env, &err);

        CHECK(value_of(out, "moved=") == 0, "PQDEDUP_UNBIND_AFTER=1h: a connection idle 300 ms lent "
              "its server connection (moved=%ld)", value_of(out, "moved="));
        CHECK(hq_count_lines(err, pqd_lines) == 0, "PQDEDUP_UNBIND_AFTER=1h printed: %s", err);
        free(out), free(err);
    }

    /* LOG=loud: one warning, then the default (off): the double PQfinish says nothing. */
    {
        const char *env[] = {"PQDEDUP_LOG=loud", NULL};
        const char *double_finish[] = {"already finished", NULL};
        char *err = NULL, *out = run_settings_child("log", env, &err);

        check_one_warning(err, "PQDEDUP_LOG", "PQDEDUP_LOG=loud");
        CHECK(hq_count_lines(err, pqd_lines) == 1, "PQDEDUP_LOG=loud: more than the one warning: %s", err);
        CHECK(hq_count_lines(err, double_finish) == 0, "PQDEDUP_LOG=loud logged at warn level: %s", err);
        free(out), free(err);
    }
    {   /* control: at warn, the same child's double PQfinish is logged */
        const char *env[] = {"PQDEDUP_LOG=warn", NULL};
        const char *double_finish[] = {"already finished", NULL};
        char *err = NULL, *out = run_settings_child("log", env, &err);

        CHECK(hq_count_lines(err, double_finish) == 1, "PQDEDUP_LOG=warn: the double PQfinish was not logged: %s", err);
        free(out), free(err);
    }

    /* Many bad values at once, in a process with 4 threads connecting: one line each. */
    {
        static const char *const names[] = {"PQDEDUP_KEEP_PER_KEY", "PQDEDUP_MAX_WAIT", "PQDEDUP_LOG",
                                            "PQDEDUP_IDLE_TIMEOUT", "PQDEDUP_UNBIND_AFTER", "PQDEDUP_STATS",
                                            "PQDEDUP_MAX_LIFETIME", "PQDEDUP_CHECK_TIMEOUT", "PQDEDUP_MAX_PER_KEY",
                                            "PQDEDUP_CHECK_AFTER", "PQDEDUP_DISABLE"};
        const char *env[] = {"PQDEDUP_KEEP_PER_KEY=abc", "PQDEDUP_MAX_WAIT=1e9", "PQDEDUP_LOG=loud",
                             "PQDEDUP_IDLE_TIMEOUT=-1", "PQDEDUP_UNBIND_AFTER=1 fortnight", "PQDEDUP_STATS=maybe",
                             "PQDEDUP_MAX_LIFETIME=10 years", "PQDEDUP_CHECK_TIMEOUT=-5s",
                             "PQDEDUP_MAX_PER_KEY=0x10", "PQDEDUP_CHECK_AFTER=99999999999999999999",
                             "PQDEDUP_DISABLE=perhaps", NULL};
        char *err = NULL, *out = run_settings_child("log", env, &err);
        size_t n = sizeof names / sizeof names[0];

        for (size_t i = 0; i < n; i++)
            check_one_warning(err, names[i], "all bad at once");
        CHECK(hq_count_lines(err, pqd_lines) == (int)n, "all bad at once: %d pqdedup lines, expected %zu: %s",
              hq_count_lines(err, pqd_lines), n, err);
        CHECK(out && strstr(out, "done"), "the child with bad settings did not finish its work");
        free(out), free(err);
    }
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    const char *role = getenv("PQD_HOSTILE_ROLE");

    if (role)
        snprintf(role_q, sizeof role_q, "%s", role);
    else
        snprintf(role_q, sizeof role_q, "pqd_hq_%ld", (long)getpid());
    if (!strcmp(mode, "inputs") && argc > 2 && !strcmp(argv[2], "--report"))
        return report();
    if (!strcmp(mode, "settings") && argc > 3 && !strcmp(argv[2], "--child")) {
        if (!strcmp(argv[3], "keep"))
            return settings_child_keep(argc > 4 ? atol(argv[4]) : 16);
        if (!strcmp(argv[3], "unbind"))
            return settings_child_unbind();
        if (!strcmp(argv[3], "wait"))
            return settings_child_wait();
        return settings_child_log();
    }
    tu_observer();
    if (!strcmp(mode, "inputs"))
        test_inputs();
    else if (!strcmp(mode, "misuse"))
        test_misuse();
    else if (!strcmp(mode, "settings"))
        test_settings();
    else {
        fprintf(stderr, "usage: test_hostile inputs|misuse|settings\n");
        return 2;
    }
    return tu_finish();
}
