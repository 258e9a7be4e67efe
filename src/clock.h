/* clock.h: the monotonic clock pqdedup measures ages and deadlines with. */
#ifndef PQDEDUP_CLOCK_H
#define PQDEDUP_CLOCK_H

#include <stdint.h>
#include <time.h>

#define NS_PER_SEC INT64_C(1000000000)
#define NS_PER_MS INT64_C(1000000)

/* Nanoseconds on CLOCK_MONOTONIC (a vDSO call, no syscall). */
static inline int64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

/* Nanoseconds on CLOCK_MONOTONIC_COARSE: the same clock as of its last tick (at most
 * monotonic_coarse_tick_ns behind monotonic_ns), a vDSO read that costs a fraction of one. */
static inline int64_t monotonic_coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t) ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

/* How far monotonic_coarse_ns may lag behind monotonic_ns: one tick (4 ms at HZ=250). */
static inline int64_t monotonic_coarse_tick_ns(void)
{
    struct timespec ts;
    if (clock_getres(CLOCK_MONOTONIC_COARSE, &ts) != 0)
        return 10 * NS_PER_MS; /* cannot happen on Linux; HZ=100's tick */
    return (int64_t) ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

#endif
