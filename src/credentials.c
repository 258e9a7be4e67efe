/* credentials.c: the process's effective uid, read from the kernel again only after it may have changed. */
#define _GNU_SOURCE
#include "credentials.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* Bumped after every call of PQDEDUP_CREDENTIAL_CALLS, whether or not it succeeded. */
static _Atomic uint32_t changes = 1;
/* The euid last read, tagged with the value of `changes` read before it: changes << 32 | euid
 * (0, never a valid tag, until the first read). */
static _Atomic uint64_t last_read;

uid_t credentials_euid(void)
{
    uint32_t now = atomic_load(&changes);
    uint64_t seen = atomic_load(&last_read);
    if ((uint32_t) (seen >> 32) == now)
        return (uid_t) (uint32_t) seen;
    /* `changes` was read first: a change that lands after it leaves this read tagged stale. */
    uid_t euid = geteuid();
    atomic_store(&last_read, (uint64_t) now << 32 | (uint32_t) euid);
    return euid;
}

/* Each wrapper calls libc's function (found on its first call; ENOSYS and -1 if there is none,
 * which glibc never lacks), then marks the euid as to be read again; errno is libc's. */
#define CREDENTIAL_WRAPPER(name, params, args)                                          \
    EXPORT int name params                                                              \
    {                                                                                   \
        typedef int(*name##_fn) params;                                                 \
        static _Atomic(name##_fn) real_fn;                                              \
        name##_fn fn = atomic_load(&real_fn);                                           \
        if (fn == NULL) {                                                               \
            *(void **) &fn = dlsym(RTLD_NEXT, #name);                                   \
            atomic_store(&real_fn, fn);                                                 \
        }                                                                               \
        int result = -1;                                                                \
        if (fn != NULL)                                                                 \
            result = fn args;                                                           \
        else                                                                            \
            errno = ENOSYS;                                                             \
        atomic_fetch_add(&changes, 1);                                                  \
        return result;                                                                  \
    }
PQDEDUP_CREDENTIAL_CALLS(CREDENTIAL_WRAPPER)
#undef CREDENTIAL_WRAPPER
