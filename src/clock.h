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

#endif
