/* test_handles_threads.c: threads churning and leaking handles of one key beside threads holding handles in transactions: no backend ever serves two handles at once, every answer is right. */
#define _GNU_SOURCE
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Usage: test_handles_threads (no arguments); default settings (registered also with
 * PQDEDUP_UNBIND_AFTER=0).
 *
 * 8 churn threads connect, run a transaction and a query, and finish, over and over; one
 * connect in 8 is leaked (never finished), and now and then a leaked handle is used again.
 * 8 hold threads keep a handle each inside transactions meanwhile. Inside every transaction
 * the handle's backend pid is registered, before its COMMIT unregistered: a pid registered
 * twice is a backend serving two handles at once. The backend of a handle must not change
 * inside its transaction. A sampler checks pg_stat_activity: every registered backend is
 * inside a transaction. Every query's answer is checked.
 */

#define CHURNERS 8
#define HOLDERS 8
#define REGISTRY 64

static const char *conninfo; /* made once, before any thread */
static atomic_bool done;

/* ---- backends inside transactions, with the handle each serves ---- */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    int pid;
    const void *handle;
    char who[24];
} reg[REGISTRY];
static atomic_long max_registered;

static void register_pid(int pid, const void *handle, const char *who)
{
    int slot = -1, n = 0;

    pthread_mutex_lock(&reg_lock);
    for (int i = 0; i < REGISTRY; i++) {
        if (reg[i].pid == pid && pid > 0)
            CHECK(false, "backend %d serves %s (%p) and %s (%p) at once, both inside transactions", pid,
                  reg[i].who, reg[i].handle, who, handle);
        if (reg[i].pid == 0 && slot < 0)
            slot = i;
        n += reg[i].pid != 0;
    }
    REQUIRE(slot >= 0, "registry full");
    reg[slot].pid = pid;
    reg[slot].handle = handle;
    snprintf(reg[slot].who, sizeof reg[slot].who, "%s", who);
    if (n + 1 > atomic_load(&max_registered))
        atomic_store(&max_registered, n + 1);
    pthread_mutex_unlock(&reg_lock);
}

static void unregister_pid(const void *handle)
{
    pthread_mutex_lock(&reg_lock);
    for (int i = 0; i < REGISTRY; i++)
        if (reg[i].handle == handle && reg[i].pid != 0)
            reg[i].pid = 0;
    pthread_mutex_unlock(&reg_lock);
}

/* ---- one checked query ---- */

/* SELECT n * 2 on c; CHECKs the answer. */
static bool doubled(PGconn *c, long n, const char *who)
{
    char sql[64], want[32];
    char *v;
    bool ok;

    snprintf(sql, sizeof sql, "SELECT %ld * 2", n);
    snprintf(want, sizeof want, "%ld", n * 2);
    v = tu_query_value(c, sql);
    ok = CHECK(v != NULL && strcmp(v, want) == 0, "%s: SELECT %ld * 2 answered %s: %s", who, n, v ? v : "(none)",
               PQerrorMessage(c));
    free(v);
    return ok;
}

/* A transaction on c: BEGIN, register the backend, `queries` checked queries (the backend
 * must not change), unregister, COMMIT. */
static void transaction(PGconn *c, int queries, unsigned *seed, const char *who)
{
    int pid;

    if (!tu_exec_check(c, "BEGIN"))
        return;
    pid = tu_backend_pid(c);
    CHECK(pid > 0, "%s: pg_backend_pid: %s", who, PQerrorMessage(c));
    register_pid(pid, c, who);
    for (int i = 0; i < queries; i++) {
        doubled(c, (long) rand_r(seed) % 100000, who);
        CHECK(PQbackendPID(c) == pid && PQtransactionStatus(c) == PQTRANS_INTRANS,
              "%s: inside its transaction the handle moved from backend %d to %d", who, pid, PQbackendPID(c));
    }
    CHECK(tu_backend_pid(c) == pid, "%s: the transaction's backend changed", who);
    unregister_pid(c);
    tu_exec_check(c, "COMMIT");
}

/* ---- threads ---- */

struct worker {
    int id;
    pthread_t thread;
    long cycles;
};

static void *churn(void *arg)
{
    struct worker *w = arg;
    unsigned seed = (unsigned) w->id * 7919u + 1;
    PGconn *leaked[256];
    int nleaked = 0;
    char who[24];
    long n = tu_scaled(300);

    snprintf(who, sizeof who, "churn %d", w->id);
    for (long i = 0; i < n; i++) {
        PGconn *c = PQconnectdb(conninfo);

        if (!CHECK(PQstatus(c) == CONNECTION_OK, "%s: connect: %s", who, PQerrorMessage(c))) {
            PQfinish(c);
            continue;
        }
        transaction(c, 1, &seed, who);
        doubled(c, i, who);
        if (i % 8 == 7 && nleaked < (int) (sizeof leaked / sizeof leaked[0]))
            leaked[nleaked++] = c; /* never finished */
        else
            PQfinish(c);
        if (i % 5 == 4 && nleaked > 0) {
            PGconn *old = leaked[rand_r(&seed) % nleaked];

            doubled(old, i, who); /* a leaked handle, idle for a while, used again */
            transaction(old, 1, &seed, who);
        }
        w->cycles++;
    }
    return NULL;
}

static void *hold(void *arg)
{
    struct worker *w = arg;
    unsigned seed = (unsigned) w->id * 104729u + 3;
    PGconn *c = PQconnectdb(conninfo);
    char who[24];

    snprintf(who, sizeof who, "hold %d", w->id);
    REQUIRE(PQstatus(c) == CONNECTION_OK, "%s: connect: %s", who, PQerrorMessage(c));
    while (!atomic_load(&done)) {
        transaction(c, 5, &seed, who);
        doubled(c, w->cycles++, who);
    }
    PQfinish(c);
    return NULL;
}

/* Every registered backend is inside a transaction in pg_stat_activity. Its own connection
 * (another key), since testutil's observer belongs to the main thread. */
static void *sample(void *arg)
{
    PGconn *s = PQconnectdb("application_name=pqd_sampler");
    long *samples = arg;

    REQUIRE(PQstatus(s) == CONNECTION_OK, "sampler: connect: %s", PQerrorMessage(s));
    while (!atomic_load(&done)) {
        char list[REGISTRY * 12 + 8] = "{";
        char sql[REGISTRY * 12 + 200];
        char *v;

        pthread_mutex_lock(&reg_lock);
        for (int i = 0; i < REGISTRY; i++)
            if (reg[i].pid != 0)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", list[1] ? "," : "", reg[i].pid);
        strcat(list, "}");
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FILTER (WHERE xact_start IS NULL OR state NOT IN ('active', 'idle in "
                 "transaction')) || '/' || count(*) FROM pg_stat_activity WHERE pid = ANY('%s'::int[])", list);
        /* Under the lock: a registered handle cannot leave its transaction meanwhile. */
        v = tu_query_value(s, sql);
        pthread_mutex_unlock(&reg_lock);
        CHECK(v != NULL && strncmp(v, "0/", 2) == 0, "sampler: registered backends %s not all inside a "
              "transaction (outside/seen: %s): %s", list, v ? v : "(none)", PQerrorMessage(s));
        free(v);
        ++*samples;
        tu_sleep_ms(20);
    }
    PQfinish(s);
    return NULL;
}

int main(void)
{
    struct worker churners[CHURNERS], holders[HOLDERS];
    pthread_t sampler;
    long samples = 0, cycles = 0;

    conninfo = tu_conninfo("");
    tu_app_name();
    for (int i = 0; i < HOLDERS; i++) {
        holders[i] = (struct worker){.id = i};
        REQUIRE(pthread_create(&holders[i].thread, NULL, hold, &holders[i]) == 0, "pthread_create");
    }
    REQUIRE(pthread_create(&sampler, NULL, sample, &samples) == 0, "pthread_create");
    for (int i = 0; i < CHURNERS; i++) {
        churners[i] = (struct worker){.id = i};
        REQUIRE(pthread_create(&churners[i].thread, NULL, churn, &churners[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < CHURNERS; i++) {
        pthread_join(churners[i].thread, NULL);
        cycles += churners[i].cycles;
    }
    atomic_store(&done, true);
    for (int i = 0; i < HOLDERS; i++)
        pthread_join(holders[i].thread, NULL);
    pthread_join(sampler, NULL);
    CHECK(cycles == CHURNERS * tu_scaled(300), "every churn cycle ran (%ld)", cycles);
    CHECK(samples > 0, "the sampler ran");
    printf("test_handles_threads: %ld churn cycles, %ld samples, at most %ld handles in transactions at once\n",
           cycles, samples, atomic_load(&max_registered));
    return tu_finish();
}
