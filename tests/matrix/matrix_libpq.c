/* matrix_libpq.c: a C matrix client, linked with -lpq, or (built with MATRIX_DLOPEN) loading libpq.so.5 itself with dlopen + dlsym. */
#define _GNU_SOURCE
#include <libpq-fe.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef MATRIX_DLOPEN
#include <dlfcn.h>
#endif

/*
 * Usage: matrix_libpq churn|leak N APP
 * The protocol (result line, "matrix-refused:" line, exit status) is described in
 * tests/matrix/matrix_common.py: churn connects (PQconnectdb), queries and finishes N times;
 * leak connects and queries N times and never finishes (the handles stay in a global array).
 * Built with MATRIX_DLOPEN the program is not linked with libpq at all: it dlopen()s
 * libpq.so.5 (RTLD_NOW | RTLD_LOCAL) and takes every function from dlsym(handle, ...), as a
 * plugin host or a language binding does; such calls never bind to an LD_PRELOADed symbol.
 */

/* The libpq functions the client calls, bound at start. */
static struct {
    PGconn *(*connectdb)(const char *);
    ConnStatusType (*status)(const PGconn *);
    char *(*errorMessage)(const PGconn *);
    PGresult *(*exec)(PGconn *, const char *);
    ExecStatusType (*resultStatus)(const PGresult *);
    int (*ntuples)(const PGresult *);
    char *(*getvalue)(const PGresult *, int, int);
    void (*clear)(PGresult *);
    void (*finish)(PGconn *);
} pq;

static void bind_libpq(void)
{
#ifdef MATRIX_DLOPEN
    void *h = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);

    if (!h) {
        fprintf(stderr, "matrix: dlopen libpq.so.5: %s\n", dlerror());
        exit(1);
    }
#define BIND(field, name)                                                     \
    do {                                                                      \
        *(void **)&pq.field = dlsym(h, name);                                 \
        if (!pq.field) {                                                      \
            fprintf(stderr, "matrix: dlsym %s: %s\n", name, dlerror());       \
            exit(1);                                                          \
        }                                                                     \
    } while (0)
#else
#define BIND(field, name) (pq.field = field##_linked)
#define connectdb_linked PQconnectdb
#define status_linked PQstatus
#define errorMessage_linked PQerrorMessage
#define exec_linked PQexec
#define resultStatus_linked PQresultStatus
#define ntuples_linked PQntuples
#define getvalue_linked PQgetvalue
#define clear_linked PQclear
#define finish_linked PQfinish
#endif
    BIND(connectdb, "PQconnectdb");
    BIND(status, "PQstatus");
    BIND(errorMessage, "PQerrorMessage");
    BIND(exec, "PQexec");
    BIND(resultStatus, "PQresultStatus");
    BIND(ntuples, "PQntuples");
    BIND(getvalue, "PQgetvalue");
    BIND(clear, "PQclear");
    BIND(finish, "PQfinish");
}

/* Runs sql on conn and stores up to two columns of its single row; exits 1 on any error. */
static void query(PGconn *conn, const char *sql, long *v0, long *v1)
{
    PGresult *r = pq.exec(conn, sql);

    if (pq.resultStatus(r) != PGRES_TUPLES_OK || pq.ntuples(r) != 1) {
        fprintf(stderr, "matrix: %s: %s", sql, pq.errorMessage(conn));
        exit(1);
    }
    *v0 = atol(pq.getvalue(r, 0, 0));
    if (v1)
        *v1 = atol(pq.getvalue(r, 0, 1));
    pq.clear(r);
}

/* Prints a connect failure on one line: "matrix-refused: MESSAGE". */
static void print_refusal(PGconn *conn)
{
    const char *m = pq.errorMessage(conn);
    int space = 0;

    fputs("matrix-refused: ", stdout);
    for (; *m; m++) {
        if (*m == ' ' || *m == '\n' || *m == '\t') {
            space = 1;
            continue;
        }
        if (space)
            putchar(' ');
        space = 0;
        putchar(*m);
    }
    putchar('\n');
}

static PGconn **kept; /* leaked handles: referenced until exit */
static PGconn *observer;

static PGconn *connect_app(const char *app, const char *suffix)
{
    char conninfo[256];

    snprintf(conninfo, sizeof conninfo, "application_name=%s%s", app, suffix);
    return pq.connectdb(conninfo);
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;

    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    char sql[200];
    long n, i, ok = 0, refused_at = 0, recheck = 0, npids = 0, distinct = 0, max_conn, backends;
    long *pids;
    int leak;

    if (argc != 4 || (strcmp(argv[1], "churn") && strcmp(argv[1], "leak")) || atol(argv[2]) < 1 ||
        strlen(argv[3]) > 60) {
        fprintf(stderr, "usage: %s churn|leak N APP\n", argv[0]);
        return 2;
    }
    leak = !strcmp(argv[1], "leak");
    n = atol(argv[2]);
    bind_libpq();
    kept = calloc((size_t)n, sizeof *kept);
    pids = calloc((size_t)n, sizeof *pids);
    if (!kept || !pids)
        return 1;

    observer = connect_app(argv[3], "_obs");
    if (pq.status(observer) != CONNECTION_OK) {
        fprintf(stderr, "matrix: observer: %s", pq.errorMessage(observer));
        return 1;
    }
    query(observer, "SHOW max_connections", &max_conn, NULL);

    for (i = 1; i <= n; i++) {
        PGconn *c = connect_app(argv[3], "");
        long pid, echo;

        if (pq.status(c) != CONNECTION_OK) {
            refused_at = i;
            print_refusal(c);
            pq.finish(c);
            break;
        }
        snprintf(sql, sizeof sql, "SELECT pg_backend_pid(), %ld", i);
        query(c, sql, &pid, &echo);
        if (echo != i) {
            fprintf(stderr, "matrix: cycle %ld: SELECT returned %ld\n", i, echo);
            return 1;
        }
        pids[npids++] = pid;
        ok++;
        if (leak)
            kept[i - 1] = c;
        else
            pq.finish(c);
    }
    for (i = 1; i <= n && kept[i - 1]; i++) {
        long v;

        snprintf(sql, sizeof sql, "SELECT %ld * 7", i);
        query(kept[i - 1], sql, &v, NULL);
        if (v != i * 7) {
            fprintf(stderr, "matrix: leaked handle %ld: SELECT returned %ld\n", i, v);
            return 1;
        }
        recheck++;
    }
    qsort(pids, (size_t)npids, sizeof *pids, cmp_long);
    for (i = 0; i < npids; i++)
        distinct += i == 0 || pids[i] != pids[i - 1];
    free(pids);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'", argv[3]);
    query(observer, sql, &backends, NULL);
    printf("matrix-result mode=%s n=%ld ok=%ld pids=%ld backends=%ld max_conn=%ld refused_at=%ld "
           "recheck=%ld\n", argv[1], n, ok, distinct, backends, max_conn, refused_at, recheck);
    /* Like the scripts, the leaked handles and the observer are never finished. */
    return 0;
}
