/* slots.c: fixed-size slots in one reserved address range (see slots.h). */
#define _GNU_SOURCE
#include "slots.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

/* The range is reserved with no access, and made readable and writable a megabyte at a time
 * as slots are first taken: what was never used costs no page tables, and valgrind's leak check
 * (which reads every readable mapping at exit: seconds for a reserved range of gigabytes) and
 * core dumps skip it. LeakSanitizer does not look into memory mapped with mmap, so in ASan
 * builds each committed part is shown to it: what slots point at (a handle's view, its
 * strings) would otherwise read as leaked at exit. Makes the first `slots` slots accessible.
 * Caller holds s->lock. Returns false when the kernel refuses the memory. */
static bool commit_slots(struct slots *s, uint32_t slots)
{
    const uintptr_t chunk = 1 << 20;
    uintptr_t used = (uintptr_t) slots * s->slot_size;
    uintptr_t base = atomic_load_explicit(&s->base, memory_order_relaxed);
    uintptr_t bytes = atomic_load_explicit(&s->bytes, memory_order_relaxed);
    uintptr_t committed = atomic_load_explicit(&s->committed, memory_order_relaxed);
    while (committed < used) {
        uintptr_t length = bytes - committed < chunk ? bytes - committed : chunk;
        if (mprotect((void *) (base + committed), length, PROT_READ | PROT_WRITE) != 0)
            return false;
#if defined(__SANITIZE_ADDRESS__)
        __lsan_register_root_region((void *) (base + committed), length);
#endif
        committed += length;
        atomic_store_explicit(&s->committed, committed, memory_order_release);
    }
    return true;
}

/* Reserves the range on first use: as much of it as the address space allows (RLIMIT_AS),
 * down to 1/64 of it. Caller holds s->lock. Returns false when it cannot. */
static bool reserve(struct slots *s)
{
    if (atomic_load_explicit(&s->base, memory_order_relaxed) != 0)
        return true;
    for (uintptr_t count = s->count; count >= s->count / 64 && count > 0; count /= 8) {
        void *range = mmap(NULL, s->slot_size * count, PROT_NONE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (range == MAP_FAILED)
            continue;
        s->count = count;
        atomic_store_explicit(&s->bytes, s->slot_size * count, memory_order_relaxed);
        atomic_store_explicit(&s->base, (uintptr_t) range, memory_order_release);
        return true;
    }
    return false;
}

/* Makes room in the ring for one more given-back slot. Returns false when out of memory (the
 * slot is then never reused). */
static bool ring_room(struct slots *s)
{
    if (s->waiting < s->ring_size)
        return true;
    uint32_t size = s->ring_size ? 2 * s->ring_size : 1024;
    uint32_t *grown = malloc(size * sizeof *grown);
    if (grown == NULL)
        return false;
    for (uint32_t i = 0; i < s->waiting; i++)
        grown[i] = s->ring[(s->head + i) % s->ring_size];
    free(s->ring);
    s->ring = grown;
    s->ring_size = size;
    s->head = 0;
    return true;
}

static void *slot_at(struct slots *s, uint32_t i)
{
    return (void *) (atomic_load_explicit(&s->base, memory_order_relaxed) + (uintptr_t) i * s->slot_size);
}

void *slots_take(struct slots *s, bool *fresh)
{
    int saved_errno = errno;
    void *slot = NULL;
    *fresh = false;
    pthread_mutex_lock(&s->lock);
    if (reserve(s)) {
        if (s->waiting > s->quarantine || (s->used == s->count && s->waiting > 0)) {
            slot = slot_at(s, s->ring[s->head]);
            s->head = (s->head + 1) % s->ring_size;
            s->waiting--;
        } else if (s->used < s->count && commit_slots(s, s->used + 1)) {
            slot = slot_at(s, s->used++);
            *fresh = true;
        }
    }
    pthread_mutex_unlock(&s->lock);
    errno = saved_errno;
    return slot;
}

void slots_give_back(struct slots *s, void *slot)
{
    uint32_t index = (uint32_t) (((uintptr_t) slot - atomic_load_explicit(&s->base, memory_order_relaxed)) /
                                 s->slot_size);
    pthread_mutex_lock(&s->lock);
    if (ring_room(s)) {
        s->ring[(s->head + s->waiting) % s->ring_size] = index;
        s->waiting++;
    }
    pthread_mutex_unlock(&s->lock);
}

void slots_for_each(struct slots *s, void (*fn)(void *slot))
{
    for (uint32_t i = 0; i < s->used; i++)
        fn(slot_at(s, i));
}

void slots_lock_for_fork(struct slots *s)
{
    pthread_mutex_lock(&s->lock);
}

void slots_unlock_after_fork(struct slots *s)
{
    pthread_mutex_unlock(&s->lock);
}
