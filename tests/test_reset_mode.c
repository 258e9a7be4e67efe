/* test_reset_mode.c: what PQDEDUP_RESET=dirty resets and what it documents it can miss, against =always. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One holder: connect, run `sql`, report the backend pid, finish. */
static int hold_and_run(const char *sql)
{
    PGconn *conn = PQconnectdb(tu_conninfo(NULL));
    REQUIRE(PQstatus(conn) == CONNECTION_OK, "connect: %s", PQerrorMessage(conn));
    int pid = tu_backend_pid(conn);
    if (sql != NULL) {
        PGresult *res = PQexec(conn, sql);
        CHECK(PQresultStatus(res) == PGRES_TUPLES_OK || PQresultStatus(res) == PGRES_COMMAND_OK,
              "%s: %s", sql, PQerrorMessage(conn));
        PQclear(res);
    }
    PQfinish(conn);
    return pid;
}

/* The next holder's value of `setting`, on the same backend as `pid` (required). */
static char *next_holder_setting(int pid, const char *setting)
{
    PGconn *conn = PQconnectdb(tu_conninfo(NULL));
    REQUIRE(PQstatus(conn) == CONNECTION_OK, "connect: %s", PQerrorMessage(conn));
    REQUIRE(tu_backend_pid(conn) == pid, "the next holder got the same backend (keep_per_key=1)");
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT current_setting('%s')", setting);
    char *value = tu_query_value(conn, sql);
    PQfinish(conn);
    return value;
}

int main(int argc, char **argv)
{
    if (argc != 3 || strcmp(argv[1], "--mode") != 0) {
        fprintf(stderr, "usage: test_reset_mode --mode dirty|always (run with PQDEDUP_RESET to match)\n");
        return 2;
    }
    int dirty = strcmp(argv[2], "dirty") == 0;
    PGconn *obs = tu_observer();
    /* Functions whose bodies change session settings: pqdedup cannot see inside them. */
    PGresult *res = PQexec(obs,
        "CREATE OR REPLACE FUNCTION pqd_set_work_mem() RETURNS text LANGUAGE sql AS "
        "$$ SELECT set_config('work_mem', '1234kB', false) $$;"
        "CREATE OR REPLACE FUNCTION pqd_set_datestyle() RETURNS text LANGUAGE sql AS "
        "$$ SELECT set_config('DateStyle', 'SQL, DMY', false) $$;");
    REQUIRE(PQresultStatus(res) == PGRES_COMMAND_OK, "create functions: %s", PQerrorMessage(obs));
    PQclear(res);
    char *default_work_mem = tu_query_value(obs, "SELECT current_setting('work_mem')");
    char *default_datestyle = tu_query_value(obs, "SELECT current_setting('DateStyle')");
    REQUIRE(default_work_mem && default_datestyle, "defaults");

    /* An explicit SET is seen in the SQL: reset in both modes. */
    int pid = hold_and_run("SET work_mem = '2345kB'");
    char *value = next_holder_setting(pid, "work_mem");
    CHECK(value && strcmp(value, default_work_mem) == 0, "explicit SET reset: work_mem %s", value);
    free(value);

    /* A reported parameter (DateStyle) changed inside a function: the parameter
     * fingerprint catches it, so it is reset in both modes. */
    pid = hold_and_run("SELECT pqd_set_datestyle()");
    value = next_holder_setting(pid, "DateStyle");
    CHECK(value && strcmp(value, default_datestyle) == 0, "reported parameter reset: DateStyle %s", value);
    free(value);

    /* An unreported setting changed inside a function: only the full reset removes
     * it; dirty mode skips the reset and the setting survives, as documented. */
    pid = hold_and_run("SELECT pqd_set_work_mem()");
    value = next_holder_setting(pid, "work_mem");
    if (dirty)
        CHECK(value && strcmp(value, "1234kB") == 0,
              "dirty mode skipped the reset after SQL it judged clean (documented miss): work_mem %s", value);
    else
        CHECK(value && strcmp(value, default_work_mem) == 0, "always mode reset it: work_mem %s", value);
    free(value);

    free(default_work_mem);
    free(default_datestyle);
    return tu_finish();
}
