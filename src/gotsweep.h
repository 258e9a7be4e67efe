/* gotsweep.h: libpqdedup.so's side of the loader auditor: the channel and the GOT sweep. */
#ifndef PQDEDUP_GOTSWEEP_H
#define PQDEDUP_GOTSWEEP_H

#include <stdbool.h>

/*
 * Called by the connect path (shim.c) before a connection is handed out, after the
 * settings are loaded. When the loader auditor is active and objects were loaded since the
 * last call, it points every slot of a wrapped libpq function that such an object still
 * holds (GLOB_DAT, R_X86_64_64, resolved JUMP_SLOT: bound to libpq itself, which only
 * RTLD_DEEPBIND modules are) at pqdedup's wrapper, so that a connection handed out is
 * finished through pqdedup. It also logs what the auditor reported (once, and its notes).
 * Otherwise it costs one dl_iterate_phdr step.
 *
 * Returns true when the connect may be pooled; false once a slot could not be rewritten
 * (a page that cannot be made writable): from then on every connect of the process goes
 * to libpq untouched (logged once at warn), since a connection whose PQfinish might bypass
 * pqdedup must never be pooled. Finishes still go through the pool. Preserves errno.
 */
bool gotsweep_if_needed(void);

#endif
