/* credentials.c: the process's effective uid, read from the kernel again only after it may have changed. */
#define _GNU_SOURCE
#include "credentials.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* Calls of PQDEDUP_CREDENTIAL_CALLS under way: while one is, every read asks the kernel (the
 * call may already have changed the uid another thread sees). */
static _Atomic int changing;
/* Bumped when such a call returns, whether or not it succeeded. */
static _Atomic uint32_t changes = 1;
/* The euid last read, tagged with the value `changes` had before it was read:
 * changes << 32 | euid (0, never a valid tag, until the first read). */
static _Atomic uint64_t last_read;

uid_t credentials_euid(void)
{
    if (atomic_load(&changing) != 0)
        return geteuid();
    uint32_t now = atomic_load(&changes);
    uint64_t seen = atomic_load(&last_read);
    if ((uint32_t) (seen >> 32) == now)
        return (uid_t) (uint32_t) seen;
    /* `changes` was read first: a change that ends after it leaves this read tagged stale. */
    uid_t euid = geteuid();
    atomic_store(&last_read, (uint64_t) now << 32 | (uint32_t) euid);
    return euid;
}

/* The wrapped functions, found when the library is loaded (so that a first call from a signal
 * handler, where setuid is allowed, does not enter the loader) or, if a call comes before
 * that (another library's constructor), at that call. */
#define REAL_POINTER(name, params, args) static int(*_Atomic real_##name) params;
PQDEDUP_CREDENTIAL_CALLS(REAL_POINTER)
#undef REAL_POINTER

__attribute__((constructor)) static void find_credential_calls(void)
{
#define FIND(name, params, args) *(void **) &real_##name = dlsym(RTLD_NEXT, #name);
    PQDEDUP_CREDENTIAL_CALLS(FIND)
#undef FIND
}

/* Each wrapper calls the real function (ENOSYS and -1 if there is none), marked as under way;
 * errno is the real function's. */
#define CREDENTIAL_WRAPPER(name, params, args)                    \
    EXPORT int name params                                        \
    {                                                             \
        int(*fn) params = atomic_load(&real_##name);              \
        if (fn == NULL) {                                         \
            *(void **) &fn = dlsym(RTLD_NEXT, #name);             \
            atomic_store(&real_##name, fn);                       \
        }                                                         \
        atomic_fetch_add(&changing, 1);                           \
        int result = -1;                                          \
        if (fn != NULL)                                           \
            result = fn args;                                     \
        else                                                      \
            errno = ENOSYS;                                       \
        atomic_fetch_add(&changes, 1);                            \
        atomic_fetch_sub(&changing, 1);                           \
        return result;                                            \
    }
PQDEDUP_CREDENTIAL_CALLS(CREDENTIAL_WRAPPER)
#undef CREDENTIAL_WRAPPER
