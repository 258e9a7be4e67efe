/* Leak run: one PQconnectdb per unit of work, SELECT 1, and never a PQfinish. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define APP_LEAKY "pqdedup-bench-leaky"
#define APP_OBSERVER "pqdedup-bench-observer"

/* Milliseconds on the monotonic clock; never fails on Linux. */
static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Copies libpq's (multi-line) message into buf as one line; returns buf. */
static char *one_line(const char *msg, char *buf, size_t size)
{
	size_t n = 0;

	for (; msg && *msg && n + 1 < size; msg++)
		buf[n++] = (*msg == '\n' || *msg == '\r' || *msg == '"') ? ' ' : *msg;
	while (n > 0 && buf[n - 1] == ' ')
		n--;
	buf[n] = '\0';
	return buf;
}

/*
 * Prints one sample line of server backends as the observer sees them.
 * On error prints "leaky_backends=-1" and the reason; the run goes on.
 */
static void sample(PGconn *obs, int unit)
{
	char msg[256];
	PGresult *res = PQexec(obs,
		"SELECT count(*) FILTER (WHERE application_name = '" APP_LEAKY "'), count(*) "
		"FROM pg_stat_activity WHERE backend_type = 'client backend'");

	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		printf("sample unit=%d leaky_backends=%s client_backends=%s\n", unit,
		       PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
	else
		printf("sample unit=%d leaky_backends=-1 error=\"%s\"\n", unit,
		       one_line(PQerrorMessage(obs), msg, sizeof msg));
	PQclear(res);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	char conninfo[1024], obsinfo[1024], first_error[512] = "";
	int units, every, ok = 0, errors = 0;
	double t0;
	PGconn *obs;

	if (argc < 4) {
		fprintf(stderr, "usage: %s WORK_CONNINFO OBSERVER_CONNINFO UNITS [SAMPLE_EVERY]\n", argv[0]);
		return 2;
	}
	units = atoi(argv[3]);
	every = argc > 4 ? atoi(argv[4]) : 50;
	if (every <= 0)
		every = 50;
	snprintf(conninfo, sizeof conninfo, "%s application_name=" APP_LEAKY, argv[1]);
	snprintf(obsinfo, sizeof obsinfo, "%s application_name=" APP_OBSERVER, argv[2]);

	/* The observer takes its slot first, so it can always report. */
	obs = PQconnectdb(obsinfo);
	if (PQstatus(obs) != CONNECTION_OK) {
		fprintf(stderr, "leaky: observer cannot connect: %s", PQerrorMessage(obs));
		return 1;
	}
	sample(obs, 0);
	t0 = now_ms();
	for (int i = 1; i <= units; i++) {
		PGconn *c = PQconnectdb(conninfo);   /* leaked on purpose */
		PGresult *res = NULL;

		if (PQstatus(c) == CONNECTION_OK)
			res = PQexec(c, "SELECT 1");
		if (res && PQresultStatus(res) == PGRES_TUPLES_OK) {
			ok++;
		} else {
			if (errors++ == 0)
				snprintf(first_error, sizeof first_error, "unit %d: %s", i, PQerrorMessage(c));
		}
		PQclear(res);
		if (i % every == 0 || i == units)
			sample(obs, i);
	}
	{
		char line[512];

		printf("result units=%d ok=%d errors=%d elapsed_ms=%.0f first_error=\"%s\"\n",
		       units, ok, errors, now_ms() - t0,
		       one_line(first_error, line, sizeof line));
	}
	PQfinish(obs);
	return 0;
}
