/* loaders_util.h: what test_loaders_dlsym.c and test_loaders_deepbind.c share: their options
 * and the count of distinct backends. Header-only; include after testutil.h. */
#ifndef PQDEDUP_LOADERS_UTIL_H
#define PQDEDUP_LOADERS_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Options common to both programs (-1: not given). */
struct loaders_options {
    long cycles;         /* --cycles N: connect, SELECT pg_backend_pid(), finish (scaled) */
    long leak;           /* --leak N: connect and query N times, never finish (not scaled) */
    long max_pids;       /* --expect-max-pids N: at most N distinct backends (not scaled) */
    long min_pids;       /* --expect-min-pids N: at least N distinct backends (scaled) */
    int expect_redirect; /* --expect-redirect yes|no: the wrapped names reach pqdedup */
    const char *module;  /* --module PATH (test_loaders_deepbind only) */
    int lazy;            /* --lazy: dlopen the module RTLD_LAZY instead of RTLD_NOW */
    int connect_first;   /* --connect-first: a connect of the main program before the churn */
    int symbols;         /* --symbols: check which definition each probe symbol binds to */
};

static long loaders_count(const char *prog, const char *opt, const char *s)
{
    char *end;
    long v = s ? strtol(s, &end, 10) : -1;
    if (!s || *end || v < 0) {
        fprintf(stderr, "%s: %s needs a non-negative number\n", prog, opt);
        exit(1);
    }
    return v;
}

/* Parses argv into o; exits 1 on a bad argument. */
static void loaders_parse(const char *prog, int argc, char **argv, struct loaders_options *o)
{
    *o = (struct loaders_options) { -1, -1, -1, -1, -1, NULL, 0, 0, 0 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--cycles"))
            o->cycles = loaders_count(prog, a, v), i++;
        else if (!strcmp(a, "--leak"))
            o->leak = loaders_count(prog, a, v), i++;
        else if (!strcmp(a, "--expect-max-pids"))
            o->max_pids = loaders_count(prog, a, v), i++;
        else if (!strcmp(a, "--expect-min-pids"))
            o->min_pids = loaders_count(prog, a, v), i++;
        else if (!strcmp(a, "--expect-redirect") && v && (!strcmp(v, "yes") || !strcmp(v, "no")))
            o->expect_redirect = !strcmp(v, "yes"), i++;
        else if (!strcmp(a, "--module") && v)
            o->module = v, i++;
        else if (!strcmp(a, "--lazy"))
            o->lazy = 1;
        else if (!strcmp(a, "--connect-first"))
            o->connect_first = 1;
        else if (!strcmp(a, "--symbols"))
            o->symbols = 1;
        else {
            fprintf(stderr, "%s: bad argument %s\n", prog, a);
            exit(1);
        }
    }
}

static int loaders_cmp_int(const void *a, const void *b)
{
    int x = *(const int *) a, y = *(const int *) b;
    return (x > y) - (x < y);
}

/* Distinct positive values among pids[0..n) (sorts pids). */
static long loaders_distinct(int *pids, long n)
{
    long distinct = 0;
    qsort(pids, (size_t) n, sizeof *pids, loaders_cmp_int);
    for (long i = 0; i < n; i++)
        if (pids[i] > 0 && (i == 0 || pids[i] != pids[i - 1]))
            distinct++;
    return distinct;
}

/* Checks the distinct backends of a churn against --expect-max-pids / --expect-min-pids. */
static void loaders_check_pids(const struct loaders_options *o, int *pids, long cycles)
{
    long distinct = loaders_distinct(pids, cycles);
    printf("%ld cycles served by %ld distinct backends\n", cycles, distinct);
    if (o->max_pids >= 0)
        CHECK(distinct >= 1 && distinct <= o->max_pids, "%ld cycles: %ld distinct backends, expected at most %ld",
              cycles, distinct, o->max_pids);
    if (o->min_pids >= 0)
        CHECK(distinct >= tu_scaled(o->min_pids), "%ld cycles: %ld distinct backends, expected at least %ld",
              cycles, distinct, tu_scaled(o->min_pids));
}

#endif
