/* hashtable.h: uthash, as every table of pqdedup uses it: nonfatal on out of memory, hashed with XXH3. */
#ifndef PQDEDUP_HASHTABLE_H
#define PQDEDUP_HASHTABLE_H

/* uthash's own hash (Jenkins) takes about 2.5 instructions a byte; a pool key is a few
 * hundred bytes and is hashed on every connect. XXH3 (libxxhash-dev, used header-only:
 * nothing is linked and no symbol is exported) takes a fraction of that. */
#define XXH_INLINE_ALL
#include <xxhash.h>
#define HASH_FUNCTION(keyptr, keylen, hashv) ((hashv) = (unsigned) XXH3_64bits((keyptr), (size_t) (keylen)))

/* A table add that runs out of memory calls uthash_nonfatal_oom (each file defines it)
 * and leaves the table as it was, instead of exiting the host process. */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#endif
