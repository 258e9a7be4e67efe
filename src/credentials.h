/* credentials.h: the process's effective uid, read from the kernel again only after it may have changed. */
#ifndef PQDEDUP_CREDENTIALS_H
#define PQDEDUP_CREDENTIALS_H

/* The libc calls that change the effective uid (libcap's cap_setuid calls setuid). credentials.c
 * wraps each one (and exports.map.in exports them) so that the next credentials_euid() asks the
 * kernel again. X(name, parameters, arguments). */
#define PQDEDUP_CREDENTIAL_CALLS(X)                                          \
    X(setuid, (uid_t uid), (uid))                                            \
    X(seteuid, (uid_t euid), (euid))                                         \
    X(setreuid, (uid_t ruid, uid_t euid), (ruid, euid))                      \
    X(setresuid, (uid_t ruid, uid_t euid, uid_t suid), (ruid, euid, suid))

#ifndef PQDEDUP_EXPORTS_MAP /* (exports.map.in reads the list above only) */
#include <sys/types.h>

/* geteuid(), without its system call while none of the calls above is under way or was made
 * since the last read. A change made by a system call of the program's own (syscall(2),
 * assembly, libcap built with libpsx) is not seen: the README's Limits. Never fails. */
uid_t credentials_euid(void);
#endif

#endif
