/* Microbenchmark: ns per PQconnectdb+PQfinish cycle, and heap bytes per open or kept connection. */
#include <libpq-fe.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Nanoseconds on the monotonic clock; never fails on Linux. */
static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* One connect+finish; returns its duration in ns, or 0 when the connection failed. */
static uint64_t one_cycle(const char *conninfo)
{
	uint64_t t = now_ns();
	PGconn *c = PQconnectdb(conninfo);
	int ok = PQstatus(c) == CONNECTION_OK;

	if (!ok)
		fprintf(stderr, "cycle: connect failed: %s", PQerrorMessage(c));
	PQfinish(c);
	t = now_ns() - t;
	return ok ? (t ? t : 1) : 0;
}

/*
 * Times ITER cycles after WARMUP untimed ones, stopping early at BUDGET_S seconds
 * (so an unpooled run cannot take minutes). Returns 1 on a failed connection.
 */
static int run_cycle(const char *conninfo, long iter, long warmup, double budget_s)
{
	uint64_t *d = calloc((size_t)iter, sizeof *d), start, sum = 0;
	long n = 0;

	if (!d) {
		fprintf(stderr, "cycle: out of memory\n");
		return 1;
	}
	for (long i = 0; i < warmup; i++)
		if (!one_cycle(conninfo))
			return 1;
	start = now_ns();
	while (n < iter && (now_ns() - start) < (uint64_t)(budget_s * 1e9)) {
		if (!(d[n] = one_cycle(conninfo)))
			return 1;
		sum += d[n++];
	}
	qsort(d, (size_t)n, sizeof *d, cmp_u64);
	printf("cycle iterations=%ld median_ns=%llu p10_ns=%llu p90_ns=%llu p99_ns=%llu mean_ns=%.0f "
	       "min_ns=%llu max_ns=%llu\n",
	       n, (unsigned long long)d[n / 2], (unsigned long long)d[n / 10],
	       (unsigned long long)d[n * 9 / 10], (unsigned long long)d[n * 99 / 100],
	       (double)sum / (double)n, (unsigned long long)d[0], (unsigned long long)d[n - 1]);
	free(d);
	return 0;
}

/* Bytes the process has malloc'd (all arenas plus mmapped chunks). */
static long long heap_bytes(void)
{
	struct mallinfo2 mi = mallinfo2();

	return (long long)mi.uordblks + (long long)mi.hblkhd;
}

/* Resident set size in bytes from /proc/self/statm, or -1 if unreadable. */
static long long rss_bytes(void)
{
	long pages_total, pages_rss;
	FILE *f = fopen("/proc/self/statm", "r");

	if (!f)
		return -1;
	if (fscanf(f, "%ld %ld", &pages_total, &pages_rss) != 2)
		pages_rss = -1;
	fclose(f);
	return pages_rss < 0 ? -1 : (long long)pages_rss * sysconf(_SC_PAGESIZE);
}

/* Server backends whose application_name starts with our prefix; -1 on error. */
static int count_backends(PGconn *obs)
{
	PGresult *res = PQexec(obs, "SELECT count(*) FROM pg_stat_activity "
	                            "WHERE application_name LIKE 'pqdedup-bench-mem-%'");
	int n = PQresultStatus(res) == PGRES_TUPLES_OK ? atoi(PQgetvalue(res, 0, 0)) : -1;

	PQclear(res);
	return n;
}

/*
 * Opens K connections with distinct application_names and holds them, then
 * PQfinishes them all; prints heap and RSS at each step and the backends the
 * server still has. Returns 1 if a connection fails.
 */
static int run_mem(const char *conninfo, const char *obsinfo, int k)
{
	char ci[1200];
	PGconn **conns = calloc((size_t)k, sizeof *conns);
	long long heap0, rss0, heap1, rss1, heap2, rss2;
	PGconn *obs;

	/* The observer also warms libpq up (first-connect allocations), in both modes. */
	snprintf(ci, sizeof ci, "%s application_name=pqdedup-bench-observer", obsinfo);
	obs = PQconnectdb(ci);
	if (!conns || PQstatus(obs) != CONNECTION_OK) {
		fprintf(stderr, "cycle: observer: %s", PQerrorMessage(obs));
		return 1;
	}
	heap0 = heap_bytes();
	rss0 = rss_bytes();
	for (int i = 0; i < k; i++) {
		snprintf(ci, sizeof ci, "%s application_name=pqdedup-bench-mem-%d", conninfo, i);
		conns[i] = PQconnectdb(ci);
		if (PQstatus(conns[i]) != CONNECTION_OK) {
			fprintf(stderr, "cycle: connection %d: %s", i, PQerrorMessage(conns[i]));
			return 1;
		}
	}
	heap1 = heap_bytes();
	rss1 = rss_bytes();
	int held = count_backends(obs);

	for (int i = 0; i < k; i++)
		PQfinish(conns[i]);
	usleep(200 * 1000);     /* let the server notice closed sockets */
	heap2 = heap_bytes();
	rss2 = rss_bytes();
	int kept = count_backends(obs);

	printf("mem k=%d backends_held=%d backends_after_finish=%d "
	       "heap_base=%lld heap_held=%lld heap_after_finish=%lld "
	       "rss_base=%lld rss_held=%lld rss_after_finish=%lld\n",
	       k, held, kept, heap0, heap1, heap2, rss0, rss1, rss2);
	PQfinish(obs);
	free(conns);
	return 0;
}

/*
 * Times N calls of PQbackendPID on one open connection (under pqdedup each goes through the
 * handle's entry and exit: its lock and, with the live stats, its record), best of 5 runs.
 * Returns 1 if the connection fails.
 */
static int run_calls(const char *conninfo, long n)
{
	PGconn *c = PQconnectdb(conninfo);
	uint64_t best = UINT64_MAX;
	volatile long sink = 0;

	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "cycle: connect failed: %s", PQerrorMessage(c));
		return 1;
	}
	for (int run = 0; run < 5; run++) {
		uint64_t t = now_ns();

		for (long i = 0; i < n; i++)
			sink += PQbackendPID(c);
		t = now_ns() - t;
		if (t < best)
			best = t;
	}
	printf("calls n=%ld ns_per_call=%.2f\n", n, (double)best / (double)n);
	PQfinish(c);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && strcmp(argv[1], "cycle") == 0)
		return run_cycle(argv[2], argc > 3 ? atol(argv[3]) : 200000,
		                 argc > 4 ? atol(argv[4]) : 2000,
		                 argc > 5 ? atof(argv[5]) : 10.0);
	if (argc >= 3 && strcmp(argv[1], "calls") == 0)
		return run_calls(argv[2], argc > 3 ? atol(argv[3]) : 10000000);
	if (argc >= 4 && strcmp(argv[1], "mem") == 0)
		return run_mem(argv[2], argv[3], argc > 4 ? atoi(argv[4]) : 90);
	fprintf(stderr, "usage: %s cycle CONNINFO [ITER [WARMUP [BUDGET_S]]]\n"
	                "       %s calls CONNINFO [N]\n"
	                "       %s mem CONNINFO OBSERVER_CONNINFO [K]\n", argv[0], argv[0], argv[0]);
	return 2;
}
