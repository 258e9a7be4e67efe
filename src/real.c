/* real.c: finds libpq's own functions behind pqdedup's wrappers and checks it knows them all. */
#define _GNU_SOURCE
#include "real.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

struct real_libpq real;

/* Every row's type is the one libpq-fe.h declares. */
#define SAME_TYPE(name, ret, params, ...)                                          \
    _Static_assert(__builtin_types_compatible_p(__typeof__(&name), ret(*) params), \
                   "intercepted.h: the type of " #name " differs from libpq's");
PQDEDUP_INTERCEPTED(SAME_TYPE)
#undef SAME_TYPE

/* Looks `name` up after this library (RTLD_NEXT), then in an already loaded libpq.so.5.
 * Returns NULL when neither has it. */
static void *find_symbol(const char *name)
{
    void *sym = dlsym(RTLD_NEXT, name);
    if (sym == NULL) {
        void *libpq = dlopen("libpq.so.5", RTLD_LAZY | RTLD_NOLOAD);
        if (libpq != NULL) {
            sym = dlsym(libpq, name);
            dlclose(libpq);
        }
    }
    return sym;
}

int real_resolve(void)
{
    int ok = 1;
#define RESOLVE(name, ...) ok &= (*(void **) &real.name = find_symbol(#name)) != NULL;
    PQDEDUP_INTERCEPTED(RESOLVE)
#undef RESOLVE
    return ok ? 0 : -1;
}

/* ---- the start-up check of libpq's exports ---- */

#define NAME_STRING(name, ...) #name,
static const char *const known_names[] = {
    PQDEDUP_INTERCEPTED(NAME_STRING) PQDEDUP_NOT_INTERCEPTED(NAME_STRING)
};
#undef NAME_STRING

static bool is_known(const char *name)
{
    for (size_t i = 0; i < sizeof known_names / sizeof known_names[0]; i++)
        if (strcmp(known_names[i], name) == 0)
            return true;
    return false;
}

/* glibc rewrites most d_ptr entries to absolute addresses, not every object does. */
static ElfW(Addr) dyn_ptr(ElfW(Addr) base, ElfW(Addr) p)
{
    return p < base ? p + base : p;
}

/* The number of symbols in a DT_GNU_HASH table: one past the highest chain index. */
static unsigned gnu_hash_symbol_count(const uint32_t *hash)
{
    uint32_t nbuckets = hash[0], symoffset = hash[1], bloom_size = hash[2];
    const uint32_t *buckets = hash + 4 + bloom_size * (sizeof(ElfW(Addr)) / 4);
    const uint32_t *chain = buckets + nbuckets;
    uint32_t last = 0;
    for (uint32_t b = 0; b < nbuckets; b++)
        if (buckets[b] > last)
            last = buckets[b];
    if (last < symoffset)
        return symoffset;
    while ((chain[last - symoffset] & 1) == 0)
        last++;
    return last + 1;
}

bool real_libpq_is_known(char *unknown, unsigned long size)
{
    Dl_info info;
    struct link_map *map = NULL;
    if (dladdr1((void *) real.PQfinish, &info, (void **) &map, RTLD_DL_LINKMAP) == 0 || map == NULL) {
        snprintf(unknown, size, "(libpq's symbol table not found)");
        return false;
    }
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    unsigned nsyms = 0;
    for (const ElfW(Dyn) *d = map->l_ld; d->d_tag != DT_NULL; d++) {
        if (d->d_tag == DT_SYMTAB)
            symtab = (const ElfW(Sym) *) dyn_ptr(map->l_addr, d->d_un.d_ptr);
        else if (d->d_tag == DT_STRTAB)
            strtab = (const char *) dyn_ptr(map->l_addr, d->d_un.d_ptr);
        else if (d->d_tag == DT_GNU_HASH)
            nsyms = gnu_hash_symbol_count((const uint32_t *) dyn_ptr(map->l_addr, d->d_un.d_ptr));
        else if (d->d_tag == DT_HASH && nsyms == 0)
            nsyms = ((const uint32_t *) dyn_ptr(map->l_addr, d->d_un.d_ptr))[1];
    }
    if (symtab == NULL || strtab == NULL || nsyms == 0) {
        snprintf(unknown, size, "(libpq's symbol table not found)");
        return false;
    }
    for (unsigned i = 1; i < nsyms; i++) {
        const ElfW(Sym) *s = &symtab[i];
        if (s->st_shndx == SHN_UNDEF || ELF64_ST_TYPE(s->st_info) != STT_FUNC ||
            ELF64_ST_BIND(s->st_info) == STB_LOCAL)
            continue;
        const char *name = strtab + s->st_name;
        if (!is_known(name)) {
            snprintf(unknown, size, "%s", name);
            return false;
        }
    }
    return true;
}
