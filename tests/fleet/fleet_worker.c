/* fleet_worker.c: one worker of a fleet (connect, query, finish or leak, for a while), or an observer of the server's backends. */
#define _POSIX_C_SOURCE 200809L
#include <libpq-fe.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*
 * A plain libpq program, run as it is or under the pqdedup launcher; it knows nothing of
 * pqdedup or PgBouncer.
 *
 *   fleet_worker work [-s SECONDS] [-n CONNECTS] [-l LEAK_EVERY] [-p] [-t] [-c NAME=VALUE...] CONNINFO
 *     Until SECONDS have passed (default 3) or CONNECTS connects were made: PQconnectdb,
 *     SELECT pg_backend_pid(), then PQfinish, except every LEAK_EVERY-th connection, which
 *     is left open and never used again (0, the default: none). With -p, each connection
 *     first reads the session variable pqd.mark (a non-empty value is state some earlier
 *     holder of the server session left: counted as "stale") and then sets it for the
 *     rest of the session with set_config(..., false). With -t the query runs inside
 *     BEGIN ... COMMIT. With -c NAME=VALUE (repeatable, at most 8), each connection checks
 *     that the server setting NAME is VALUE (SHOW), as the connection parameters asked;
 *     a connection where one is not counts as "mismatch". Prints one line:
 *       work pid=P connects=N ok=N errors=N leaked=N stale=N mismatch=N backends=N ms=N
 *            first_error="..." first_mismatch="..."
 *     (backends: distinct pg_backend_pid() values seen). Exit status 0 when every connect
 *     and query worked, 1 otherwise, 2 for a usage error.
 *
 *   fleet_worker observe [-s SECONDS] [-r READY_FILE] -u ROLE -f STOP_FILE CONNINFO
 *     Counts the server's client backends logged in as ROLE (pg_stat_activity, its own
 *     backend excluded; not background workers such as the logical replication launcher,
 *     which runs as the bootstrap superuser) every 5 ms; creates READY_FILE after the first sample; stops when STOP_FILE
 *     exists or SECONDS have passed (default 120: a deadline, not the expected length).
 *     Prints: observe samples=N max=N last=N. Exit status 0 when every sample worked and
 *     STOP_FILE appeared, 1 otherwise.
 */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* msg as one line, without quotes, into buf (size bytes); returns buf. */
static char *one_line(const char *msg, char *buf, size_t size)
{
    size_t n = 0;
    for (; msg != NULL && *msg != '\0' && n + 1 < size; msg++)
        buf[n++] = (*msg == '\n' || *msg == '\r' || *msg == '"') ? ' ' : *msg;
    while (n > 0 && buf[n - 1] == ' ')
        n--;
    buf[n] = '\0';
    return buf;
}

static void usage(void)
{
    fprintf(stderr, "usage: fleet_worker work [-s SECONDS] [-n CONNECTS] [-l LEAK_EVERY] [-p] [-t] [-c NAME=VALUE] CONNINFO\n"
                    "       fleet_worker observe [-s SECONDS] [-r READY_FILE] -u ROLE -f STOP_FILE CONNINFO\n");
}

/* The worker's tallies. */
struct tally {
    long connects, ok, errors, leaked, stale, mismatch;
    char first_error[512], first_mismatch[256];
    int pids[4096];
    int npids;
};

static void note_error(struct tally *t, const char *what, const char *msg)
{
    t->errors++;
    if (t->first_error[0] == '\0') {
        char line[400];
        snprintf(t->first_error, sizeof t->first_error, "connect %ld: %s: %s", t->connects, what,
                 one_line(msg, line, sizeof line));
    }
}

static void note_pid(struct tally *t, int pid)
{
    for (int i = 0; i < t->npids; i++)
        if (t->pids[i] == pid)
            return;
    if (t->npids < (int)(sizeof t->pids / sizeof t->pids[0]))
        t->pids[t->npids++] = pid;
}

/* Runs sql on c; true when it returned PGRES_TUPLES_OK or PGRES_COMMAND_OK. The value of
 * the first column of the first row, if any, goes into value (size bytes). */
static bool run(struct tally *t, PGconn *c, const char *sql, char *value, size_t size)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    bool ok = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
    if (!ok)
        note_error(t, sql, PQerrorMessage(c));
    else if (value != NULL) {
        value[0] = '\0';
        if (PQntuples(r) > 0 && PQnfields(r) > 0)
            snprintf(value, size, "%s", PQgetvalue(r, 0, 0));
    }
    PQclear(r);
    return ok;
}

/* The settings to check (-c NAME=VALUE). */
static char *check_name[8], *check_value[8];
static int nchecks;

/* One connection's work; true when all of it worked. */
static bool one_connection(struct tally *t, PGconn *c, bool probe, bool in_tx)
{
    char v[128];
    for (int i = 0; i < nchecks; i++) {
        char *q = PQescapeIdentifier(c, check_name[i], strlen(check_name[i]));
        char sql[200];
        snprintf(sql, sizeof sql, "SHOW %s", q != NULL ? q : "");
        PQfreemem(q);
        if (!run(t, c, sql, v, sizeof v))
            return false;
        if (strcmp(v, check_value[i]) != 0) {
            if (t->mismatch++ == 0)
                snprintf(t->first_mismatch, sizeof t->first_mismatch, "connect %ld: %s is '%s', not '%s'",
                         t->connects, check_name[i], v, check_value[i]);
            break;
        }
    }
    if (probe) {
        if (!run(t, c, "SELECT current_setting('pqd.mark', true)", v, sizeof v))
            return false;
        if (v[0] != '\0')
            t->stale++;
    }
    if (in_tx && !run(t, c, "BEGIN", NULL, 0))
        return false;
    if (!run(t, c, "SELECT pg_backend_pid()", v, sizeof v))
        return false;
    note_pid(t, atoi(v));
    if (in_tx && !run(t, c, "COMMIT", NULL, 0))
        return false;
    if (probe) {
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT set_config('pqd.mark', 'pid %d', false)", (int)getpid());
        if (!run(t, c, sql, NULL, 0))
            return false;
    }
    return true;
}

static int work(int argc, char **argv)
{
    double seconds = 3;
    long max_connects = 0, leak_every = 0;
    bool probe = false, in_tx = false;
    int opt;
    while ((opt = getopt(argc, argv, "s:n:l:ptc:")) != -1) {
        switch (opt) {
        case 'c': {
            char *eq = strchr(optarg, '=');
            if (eq == NULL || nchecks == 8) {
                usage();
                return 2;
            }
            *eq = '\0';
            check_name[nchecks] = optarg;
            check_value[nchecks++] = eq + 1;
            break;
        }
        case 's': seconds = atof(optarg); break;
        case 'n': max_connects = atol(optarg); break;
        case 'l': leak_every = atol(optarg); break;
        case 'p': probe = true; break;
        case 't': in_tx = true; break;
        default: usage(); return 2;
        }
    }
    if (optind != argc - 1 || seconds <= 0 || max_connects < 0 || leak_every < 0) {
        usage();
        return 2;
    }
    const char *conninfo = argv[optind];
    static struct tally t;
    double t0 = now_ms(), deadline = t0 + seconds * 1e3;
    while (now_ms() < deadline && (max_connects == 0 || t.connects < max_connects)) {
        t.connects++;
        PGconn *c = PQconnectdb(conninfo);
        bool ok;
        if (PQstatus(c) != CONNECTION_OK) {
            note_error(&t, "PQconnectdb", PQerrorMessage(c));
            ok = false;
        } else {
            ok = one_connection(&t, c, probe, in_tx);
        }
        if (ok)
            t.ok++;
        if (ok && leak_every > 0 && t.connects % leak_every == 0)
            t.leaked++; /* never finished */
        else
            PQfinish(c);
    }
    char line[600], line2[300];
    printf("work pid=%d connects=%ld ok=%ld errors=%ld leaked=%ld stale=%ld mismatch=%ld backends=%d "
           "ms=%.0f first_error=\"%s\" first_mismatch=\"%s\"\n",
           (int)getpid(), t.connects, t.ok, t.errors, t.leaked, t.stale, t.mismatch, t.npids,
           now_ms() - t0, one_line(t.first_error, line, sizeof line),
           one_line(t.first_mismatch, line2, sizeof line2));
    fflush(stdout);
    return t.errors == 0 && t.ok > 0 ? 0 : 1;
}

static int observe(int argc, char **argv)
{
    double seconds = 120;
    const char *role = NULL, *stop_file = NULL, *ready_file = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "s:u:f:r:")) != -1) {
        switch (opt) {
        case 's': seconds = atof(optarg); break;
        case 'u': role = optarg; break;
        case 'f': stop_file = optarg; break;
        case 'r': ready_file = optarg; break;
        default: usage(); return 2;
        }
    }
    if (optind != argc - 1 || role == NULL || stop_file == NULL || seconds <= 0) {
        usage();
        return 2;
    }
    PGconn *c = PQconnectdb(argv[optind]);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "fleet_worker observe: cannot connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return 1;
    }
    const char *params[1] = {role};
    long samples = 0, max = 0, last = 0;
    bool failed = false, stopped = false;
    double deadline = now_ms() + seconds * 1e3;
    while (now_ms() < deadline) {
        /* Checked before the sample, so the last sample is taken after the stop file. */
        stopped = access(stop_file, F_OK) == 0;
        PGresult *r = PQexecParams(c,
                                   "SELECT count(*) FROM pg_stat_activity "
                                   "WHERE usename = $1 AND backend_type = 'client backend' "
                                   "AND pid <> pg_backend_pid()",
                                   1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            fprintf(stderr, "fleet_worker observe: %s", PQerrorMessage(c));
            PQclear(r);
            failed = true;
            break;
        }
        last = atol(PQgetvalue(r, 0, 0));
        PQclear(r);
        if (last > max)
            max = last;
        if (samples++ == 0 && ready_file != NULL) {
            FILE *f = fopen(ready_file, "w");
            if (f == NULL || fclose(f) != 0) {
                fprintf(stderr, "fleet_worker observe: %s: %s\n", ready_file, strerror(errno));
                failed = true;
                break;
            }
        }
        if (stopped)
            break;
        nanosleep(&(struct timespec){.tv_nsec = 5 * 1000 * 1000}, NULL);
    }
    PQfinish(c);
    printf("observe samples=%ld max=%ld last=%ld\n", samples, max, last);
    if (!stopped && !failed)
        fprintf(stderr, "fleet_worker observe: %s did not appear within %.0f s\n", stop_file, seconds);
    return stopped && !failed ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "work") == 0)
        return work(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "observe") == 0)
        return observe(argc - 1, argv + 1);
    usage();
    return 2;
}
