/* test_paths_exit.c: at process exit, kept connections are closed cleanly: the server logs no unexpected EOF. */
#include "test_leak_common.h"

#include <pthread.h>

/*
 * The parent runs this program again as children that keep connections and then exit, and
 * reads the server log (PQD_TEST_PGLOG from the harness) for their application_names. The
 * children connect with options "-c log_min_messages=debug1 -c log_disconnections=on" (the
 * test user is a superuser), so the server logs "disconnection: ..." for every backend and
 * "unexpected EOF on client connection" (DEBUG1) when a client goes away without Terminate;
 * an abrupt close also logs "could not receive data from client" (connection reset), or,
 * when the server was still answering, "could not send data to client" and "FATAL:
 * connection to client lost".
 *
 *   test_paths_exit              the test (parent)
 *   test_paths_exit child APP HOW  a child: keeps 2 unix-socket and 2 TCP+SSL connections of
 *                                APP, takes them again and finishes them right before exit
 *                                (their resets still in flight), and keeps one more TCP+SSL
 *                                connection whose reset answered long before exit (its
 *                                answer unread), then ends by HOW:
 *                                "return" from main, "exit" from a second thread, or "_exit"
 *                                (skips exit handlers: the control that proves the log
 *                                check can fail).
 */

#define LOG_OPTIONS "options='-c log_min_messages=debug1 -c log_disconnections=on'"

static void *exit_from_thread(void *arg)
{
    (void)arg;
    exit(0);
}

static int child(const char *app, const char *how)
{
    char unix_ci[512], tcp_ci[512];
    PGconn *c[4], *held[4];

    snprintf(unix_ci, sizeof unix_ci, "application_name=%s %s", app, LOG_OPTIONS);
    snprintf(tcp_ci, sizeof tcp_ci, "application_name=%s host=%s sslmode=require %s", app,
             tu_tcp_host(), LOG_OPTIONS);
    c[0] = PQconnectdb(unix_ci);
    c[1] = PQconnectdb(unix_ci);
    c[2] = PQconnectdb(tcp_ci);
    c[3] = PQconnectdb(tcp_ci);
    for (int i = 0; i < 4; i++)
        if (PQstatus(c[i]) != CONNECTION_OK || !tu_exec_ok(c[i], "SELECT 1")) {
            fprintf(stderr, "child %s: connection %d: %s", app, i, PQerrorMessage(c[i]));
            return 3;
        }
    if (!PQsslInUse(c[2])) {
        fprintf(stderr, "child %s: no SSL over TCP\n", app);
        return 3;
    }
    /* A third key over TCP: kept from here to exit, its reset answered but never read. */
    {
        char ci[600];
        PGconn *idle;

        snprintf(ci, sizeof ci, "%s connect_timeout=9", tcp_ci);
        idle = PQconnectdb(ci);
        if (PQstatus(idle) != CONNECTION_OK) {
            fprintf(stderr, "child %s: %s", app, PQerrorMessage(idle));
            return 3;
        }
        PQfinish(idle);
    }
    for (int i = 0; i < 4; i++)
        PQfinish(c[i]); /* kept: 2 per key */
    tu_sleep_ms(100);   /* their resets complete */
    /* Take them again and finish them right before exit: their resets are still in flight. */
    held[0] = PQconnectdb(unix_ci);
    held[1] = PQconnectdb(unix_ci);
    held[2] = PQconnectdb(tcp_ci);
    held[3] = PQconnectdb(tcp_ci);
    for (int i = 0; i < 4; i++)
        if (PQstatus(held[i]) != CONNECTION_OK) {
            fprintf(stderr, "child %s: %s", app, PQerrorMessage(held[i]));
            return 3;
        }
    for (int i = 0; i < 4; i++)
        PQfinish(held[i]);

    if (!strcmp(how, "_exit"))
        _exit(0);
    if (!strcmp(how, "exit")) {
        pthread_t t;

        if (pthread_create(&t, NULL, exit_from_thread, NULL) == 0)
            pthread_join(t, NULL);
        return 4;
    }
    return 0;
}

/* Reads the server log and counts lines containing needle that belong to application_name
 * app (by the log_line_prefix's "/%a "); app NULL: any line. */
static long log_count(const char *app, const char *needle)
{
    const char *path = getenv("PQD_TEST_PGLOG");
    char tag[128], line[4096];
    long n = 0;
    FILE *f;

    snprintf(tag, sizeof tag, "/%s ", app ? app : "");
    f = path ? fopen(path, "r") : NULL;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if ((!app || strstr(line, tag)) && strstr(line, needle))
            n++;
    fclose(f);
    return n;
}

/* Runs a child that ends by `how`, waits until the server has logged the end of all its
 * backends, and returns how many abnormal-close lines the log has for it (-1 on error). */
static long run_child(const char *how, long *disconnections)
{
    static const char *const abnormal[] = {"unexpected EOF on client connection",
                                           "could not receive data from client",
                                           "could not send data to client",
                                           "connection to client lost", NULL};
    char app[64], authorized[256];
    char *argv[] = {NULL, "child", app, (char *)how, NULL};
    int status = 0;
    long start, opened, bad = 0;
    pid_t pid;

    snprintf(app, sizeof app, "pqdt_exit_%s_%ld", how[0] == '_' ? "underscore" : how,
             (long)getpid());
    snprintf(authorized, sizeof authorized, "connection authorized: user=postgres database=postgres "
             "application_name=%s", app);
    pid = pqt_run_self(argv, NULL, &status);
    REQUIRE(pid > 0, "could not run the child: %s", strerror(errno));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %s ended with status %d", how,
          status);
    CHECK(tu_wait_backends(app, 0, 10000) == 0, "child %s: backends still open after exit", how);
    /* Every backend logs its disconnection last: wait until each one opened has. */
    opened = log_count(NULL, authorized);
    CHECK(opened >= 5, "child %s: %ld connections in the log, expected at least 5", how, opened);
    start = tu_now_ms();
    while ((*disconnections = log_count(app, "disconnection: session time")) < opened &&
           tu_now_ms() - start < 10000)
        tu_sleep_ms(50);
    CHECK(*disconnections == opened, "child %s: %ld disconnections logged for %ld connections",
          how, *disconnections, opened);
    for (int i = 0; abnormal[i]; i++) {
        long n = log_count(app, abnormal[i]);

        if (n < 0)
            return -1;
        if (n > 0)
            printf("test_paths_exit: child %s (%s): %ld x \"%s\"\n", how, app, n, abnormal[i]);
        bad += n;
    }
    printf("test_paths_exit: child %s (%s): %ld connections, %ld abnormal-close lines\n", how,
           app, opened, bad);
    return bad;
}

/* Kept connections are closed with a proper Terminate at exit, whether main returns or a
 * thread calls exit(), over the unix socket and over SSL; a child that skips exit handlers
 * shows what the log looks like otherwise (so the check is able to fail). */
int main(int argc, char **argv)
{
    const char *log = getenv("PQD_TEST_PGLOG");
    long bad, disc;
    FILE *f;

    if (argc == 4 && !strcmp(argv[1], "child"))
        return child(argv[2], argv[3]);

    REQUIRE(log && (f = fopen(log, "r")) != NULL, "cannot read the server log PQD_TEST_PGLOG=%s "
            "(source the harness env.sh)", log ? log : "(unset)");
    fclose(f);
    tu_observer();

    bad = run_child("return", &disc);
    CHECK(bad == 0, "child return: %ld abnormal-close lines in the server log: kept "
          "connections were not closed cleanly at exit", bad);

    bad = run_child("exit", &disc);
    CHECK(bad == 0, "child exit from a thread: %ld abnormal-close lines in the server log", bad);

    /* Control: without exit handlers the kept connections just vanish. */
    bad = run_child("_exit", &disc);
    CHECK(bad >= 4, "control child (_exit, kept connections never closed): only %ld "
          "abnormal-close lines; the log check cannot see an unclean close", bad);
    return tu_finish();
}
