/* slots.h: fixed-size slots in one reserved address range, so that "is this one of ours?" is a
 * range check that needs no lock (and may be asked from a signal handler). */
#ifndef PQDEDUP_SLOTS_H
#define PQDEDUP_SLOTS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* One range. Define with SLOTS_INIT(size, count, quarantine); the range is reserved at the
 * first slots_take (no access and MAP_NORESERVE: made accessible a megabyte at a time as slots
 * are first taken; when that much address space cannot be had, an eighth of it, and so on) and
 * never unmapped, so a pointer to a slot that was given back still points at readable memory.
 * Given-back slots are reused first-in first-out once `quarantine` of them wait. */
struct slots {
    uintptr_t slot_size, count, quarantine;
    _Atomic uintptr_t base;  /* 0 until reserved */
    _Atomic uintptr_t bytes; /* the size reserved */
    pthread_mutex_t lock;
    uint32_t used;           /* slots ever taken: [0, used) */
    uint32_t *ring;          /* given-back slots, oldest first (a ring of ring_size) */
    uint32_t ring_size, head, waiting;
    _Atomic uintptr_t committed; /* bytes of the range made accessible: [0, committed) */
};

#define SLOTS_INIT(size, number, quarantined) \
    { .slot_size = (size), .count = (number), .quarantine = (quarantined), .lock = PTHREAD_MUTEX_INITIALIZER }

/* A slot (zero-filled the first time; as it was left when given back afterwards), and whether
 * it is new in *fresh. Returns NULL when the range cannot be reserved or every slot is taken. */
void *slots_take(struct slots *s, bool *fresh);

/* Gives a slot back. */
void slots_give_back(struct slots *s, void *slot);

/* slots_find and slots_index for a range of slots of `slot_size` bytes: given a constant, the
 * compiler divides without a division instruction (handle.c asks at every libpq call). */
static inline void *slots_find_sized(struct slots *s, const void *p, uintptr_t slot_size)
{
    uintptr_t base = atomic_load_explicit(&s->base, memory_order_relaxed);
    uintptr_t offset = (uintptr_t) p - base;
    if (base == 0 || offset >= atomic_load_explicit(&s->committed, memory_order_relaxed) ||
        offset % slot_size != 0)
        return NULL;
    return (void *) (uintptr_t) p;
}

static inline uint32_t slots_index_sized(struct slots *s, const void *slot, uintptr_t slot_size)
{
    return (uint32_t) (((uintptr_t) slot - atomic_load_explicit(&s->base, memory_order_relaxed)) / slot_size);
}

/* The slot `p` points at the start of, or NULL when it is not one of this range's. */
static inline void *slots_find(struct slots *s, const void *p)
{
    return slots_find_sized(s, p, s->slot_size);
}

/* The index of slot `slot` (one of this range's) in the range. */
static inline uint32_t slots_index(struct slots *s, const void *slot)
{
    return slots_index_sized(s, slot, s->slot_size);
}

/* Calls fn on every slot ever taken (fork handling; no other thread may run). */
void slots_for_each(struct slots *s, void (*fn)(void *slot));

/* Fork handlers: the range's lock is held across fork() and released after. */
void slots_lock_for_fork(struct slots *s);
void slots_unlock_after_fork(struct slots *s);

#endif
