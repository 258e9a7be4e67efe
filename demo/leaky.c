/* leaky.c: a stand-in for a legacy service: one new libpq connection per request, closed or leaked. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_PIDS 100000

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* Serves `requests` requests: connect, one query, then PQfinish unless leaking.
 * Prints one summary line; returns 0 when every request was served. */
int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "leak") != 0 && strcmp(argv[1], "churn") != 0)) {
        fprintf(stderr, "usage: leaky leak|churn REQUESTS   (connects with the PG* environment)\n");
        return 2;
    }
    int leak = strcmp(argv[1], "leak") == 0;
    int requests = atoi(argv[2]);
    static int pids[MAX_PIDS];
    int npids = 0, served = 0, failed = 0;
    char first_error[256] = "";
    double start = seconds_now();

    for (int i = 0; i < requests; i++) {
        PGconn *conn = PQconnectdb("application_name=leaky_demo");
        PGresult *res = PQstatus(conn) == CONNECTION_OK ? PQexec(conn, "SELECT pg_backend_pid()") : NULL;
        if (PQresultStatus(res) == PGRES_TUPLES_OK) {
            int pid = atoi(PQgetvalue(res, 0, 0));
            int seen = 0;
            for (int j = 0; j < npids && !seen; j++)
                seen = pids[j] == pid;
            if (!seen && npids < MAX_PIDS)
                pids[npids++] = pid;
            served++;
        } else {
            if (failed++ == 0) {
                snprintf(first_error, sizeof first_error, "%s", PQerrorMessage(conn));
                first_error[strcspn(first_error, "\n")] = '\0';
            }
        }
        PQclear(res);
        if (!leak || PQstatus(conn) != CONNECTION_OK)
            PQfinish(conn);
    }
    printf("%4d served, %4d failed, %4d server backends, %6.2f s%s%s\n", served, failed, npids,
           seconds_now() - start, failed ? "; first error: " : "", first_error);
    return failed ? 1 : 0;
}
