/* pqdedup_audit.c: libpqdedup-audit.so, the loader auditor (LD_AUDIT) that sends libpq calls
 * LD_PRELOAD cannot reach to libpqdedup.so's wrappers.
 *
 * Modules loaded with RTLD_DEEPBIND (PHP's pgsql.so, pdo_pgsql.so) bind PQconnectdb and
 * PQfinish straight to libpq, and dlsym() on a libpq handle (ctypes: psycopg 3's pure-Python
 * implementation) returns libpq's own functions. glibc tells an auditor about both bindings
 * (la_symbind64: PLT and BIND_NOW slots from glibc 2.35 on, and every dlsym), and uses the
 * address it returns. This auditor returns the wrapper's address for the names in
 * intercepted.h and changes nothing else:
 *   - la_objopen flags the libpq libpqdedup.so itself links (matched by soname) BINDTO, every
 *     other object of the base namespace BINDFROM, and libpqdedup.so, other copies of libpq
 *     and other namespaces (dlmopen) 0. Only bindings from a BINDFROM object to that libpq
 *     reach la_symbind64 through the PLT.
 *   - dlsym reaches la_symbind64 when the caller is BINDFROM or the target BINDTO, so
 *     libpqdedup.so's own lookups of libpq's functions arrive too: they are left alone, as
 *     are the bindings of an object that defines the wrapped name itself (another wrapper).
 *   - Slots filled without la_symbind64 (GLOB_DAT, R_X86_64_64: function addresses taken,
 *     -fno-plt code) are rewritten by libpqdedup.so's GOT sweep (gotsweep.c).
 * It sends nothing anywhere until libpqdedup.so says so in the channel (audit_channel.h).
 *
 * It runs in its own link namespace and is freestanding (-nostdlib, no sanitizer): with
 * libc, ld.so would load a second libc for it into every process. So it has its own string
 * helpers and raw system calls, cannot log by itself, and leaves notes in the channel.
 * Without libpqdedup.so in the process it only says so, when PQDEDUP_LOG asks for
 * warnings (read from /proc/self/environ). It defines no la_pltenter/la_pltexit, so glibc
 * installs no per-call trampolines: calls cost the same as without it. */
#define _GNU_SOURCE
#include <elf.h>
#include <link.h>
#include <stdint.h>

#include "audit_channel.h"
#include "intercepted.h"

#define EXPORT __attribute__((visibility("default")))

#define NAME_STRING(name, ...) #name,
static const char *const wrapped_names[] = { PQDEDUP_INTERCEPTED(NAME_STRING) };
#define N_WRAPPED ((int) (sizeof wrapped_names / sizeof wrapped_names[0]))

static unsigned lav_seen;                     /* what la_version received */
static struct link_map *shim_map;             /* libpqdedup.so, once seen */
static struct pqdedup_audit_channel *channel; /* its channel, when the layouts match */
static const char *libpq_soname;              /* the libpq libpqdedup.so links, e.g. libpq.so.5 */
static struct link_map *libpq_map;            /* that libpq, once opened */
static uintptr_t wrappers[N_WRAPPED];         /* libpqdedup.so's wrapper for each name */

/* ---- what libc would give: the compiler may emit calls to memcpy and memset ---- */

__attribute__((visibility("hidden"))) void *memcpy(void *dst, const void *src, unsigned long n);
__attribute__((visibility("hidden"))) void *memset(void *dst, int c, unsigned long n);

void *memcpy(void *dst, const void *src, unsigned long n)
{
    char *d = dst;
    const char *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

void *memset(void *dst, int c, unsigned long n)
{
    char *d = dst;
    while (n--)
        *d++ = (char) c;
    return dst;
}

static int str_eq(const char *a, const char *b)
{
    while (*a != '\0' && *a == *b)
        a++, b++;
    return *a == *b;
}

static int starts_with(const char *s, const char *prefix)
{
    while (*prefix != '\0' && *s == *prefix)
        s++, prefix++;
    return *prefix == '\0';
}

static int str_ieq(const char *a, const char *b)
{
    for (;; a++, b++) {
        char x = (*a >= 'A' && *a <= 'Z') ? (char) (*a + 32) : *a;
        char y = (*b >= 'A' && *b <= 'Z') ? (char) (*b + 32) : *b;
        if (x != y)
            return 0;
        if (x == '\0')
            return 1;
    }
}

static const char *base_name(const char *path)
{
    const char *base = path;
    for (; *path != '\0'; path++)
        if (*path == '/')
            base = path + 1;
    return base;
}

/* Appends src to dst (used bytes *len, capacity cap, always NUL-terminated). */
static void append(char *dst, unsigned *len, unsigned cap, const char *src)
{
    while (src != 0 && *src != '\0' && *len + 1 < cap)
        dst[(*len)++] = *src++;
    dst[*len] = '\0';
}

static void append_number(char *dst, unsigned *len, unsigned cap, long value)
{
    char digits[24];
    int n = 0;
    do
        digits[n++] = (char) ('0' + value % 10);
    while ((value /= 10) > 0 && n < (int) sizeof digits);
    char text[24];
    for (int i = 0; i < n; i++)
        text[i] = digits[n - 1 - i];
    text[n] = '\0';
    append(dst, len, cap, text);
}

/* ---- raw system calls (x86_64 Linux) ---- */

static long syscall3(long nr, long a, long b, long c)
{
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
}
#define SYS_READ 0
#define SYS_WRITE 1
#define SYS_OPEN 2
#define SYS_CLOSE 3
#define SYS_GETPID 39
#define O_WRONLY_APPEND_CREAT_CLOEXEC (01 | 02000 | 0100 | 02000000)

/* ---- symbols and dynamic entries of a loaded object ---- */

/* glibc rewrites most d_ptr entries to absolute addresses, not every target or object does. */
static uintptr_t dyn_ptr(const struct link_map *m, uintptr_t p)
{
    return p < m->l_addr ? p + m->l_addr : p;
}

static const char *dyn_strtab(const struct link_map *m)
{
    for (const ElfW(Dyn) *d = m->l_ld; d != 0 && d->d_tag != DT_NULL; d++)
        if (d->d_tag == DT_STRTAB)
            return (const char *) dyn_ptr(m, d->d_un.d_ptr);
    return 0;
}

/* The first DT_NEEDED of m starting with prefix, or with prefix 0 its DT_SONAME; 0 if none. */
static const char *dyn_name(const struct link_map *m, ElfW(Sxword) tag, const char *prefix)
{
    const char *strtab = dyn_strtab(m);
    if (strtab == 0)
        return 0;
    for (const ElfW(Dyn) *d = m->l_ld; d->d_tag != DT_NULL; d++)
        if (d->d_tag == tag && (prefix == 0 || starts_with(strtab + d->d_un.d_val, prefix)))
            return strtab + d->d_un.d_val;
    return 0;
}

/* The address of m's own definition of name with the given symbol type, through its
 * DT_GNU_HASH table; 0 when m does not define it (or has no such table). */
static uintptr_t lookup_defined(const struct link_map *m, const char *name, int type)
{
    const ElfW(Sym) *symtab = 0;
    const char *strtab = 0;
    const uint32_t *gnu_hash = 0;
    for (const ElfW(Dyn) *d = m->l_ld; d != 0 && d->d_tag != DT_NULL; d++) {
        if (d->d_tag == DT_SYMTAB)
            symtab = (const ElfW(Sym) *) dyn_ptr(m, d->d_un.d_ptr);
        else if (d->d_tag == DT_STRTAB)
            strtab = (const char *) dyn_ptr(m, d->d_un.d_ptr);
        else if (d->d_tag == DT_GNU_HASH)
            gnu_hash = (const uint32_t *) dyn_ptr(m, d->d_un.d_ptr);
    }
    if (symtab == 0 || strtab == 0 || gnu_hash == 0)
        return 0;
    uint32_t h = 5381;
    for (const char *s = name; *s != '\0'; s++)
        h = h * 33 + (unsigned char) *s;
    uint32_t nbuckets = gnu_hash[0], symoffset = gnu_hash[1], bloom_size = gnu_hash[2], shift = gnu_hash[3];
    if (nbuckets == 0 || bloom_size == 0)
        return 0;
    const ElfW(Addr) *bloom = (const ElfW(Addr) *) (gnu_hash + 4);
    const unsigned bits = 8 * sizeof(ElfW(Addr));
    ElfW(Addr) word = bloom[(h / bits) % bloom_size];
    ElfW(Addr) mask = ((ElfW(Addr)) 1 << (h % bits)) | ((ElfW(Addr)) 1 << ((h >> shift) % bits));
    if ((word & mask) != mask)
        return 0;
    const uint32_t *buckets = (const uint32_t *) (bloom + bloom_size);
    const uint32_t *chain = buckets + nbuckets;
    uint32_t i = buckets[h % nbuckets];
    if (i < symoffset)
        return 0;
    for (;; i++) {
        uint32_t ch = chain[i - symoffset];
        const ElfW(Sym) *s = &symtab[i];
        if ((ch | 1) == (h | 1) && s->st_shndx != SHN_UNDEF && ELF64_ST_TYPE(s->st_info) == type &&
            str_eq(strtab + s->st_name, name))
            return m->l_addr + s->st_value;
        if (ch & 1)
            return 0;
    }
}

static const char *object_name(const struct link_map *m)
{
    return m->l_name[0] != '\0' ? m->l_name : "the main program";
}

/* ---- notes for libpqdedup.so to log ---- */

/* Appends one note (the parts, concatenated) to the channel's ring. */
static void note(unsigned level, const char *a, const char *b, const char *c, const char *d)
{
    if (channel == 0)
        return;
    unsigned i = __atomic_fetch_add(&channel->nnotes, 1, __ATOMIC_RELAXED);
    struct pqdedup_audit_note *n = &channel->notes[i % PQDEDUP_CHANNEL_NOTES];
    __atomic_store_n(&n->seq, 0, __ATOMIC_RELEASE);
    unsigned len = 0;
    n->text[0] = '\0';
    append(n->text, &len, sizeof n->text, a);
    append(n->text, &len, sizeof n->text, b);
    append(n->text, &len, sizeof n->text, c);
    append(n->text, &len, sizeof n->text, d);
    n->level = level;
    __atomic_store_n(&n->seq, i + 1, __ATOMIC_RELEASE);
}

/* Without libpqdedup.so there is no one to log for the auditor: it writes one warning line
 * itself, as libpqdedup.so would, when PQDEDUP_LOG is warn, info or debug (to
 * PQDEDUP_LOG_FILE when set). The environment is the one the process started with. */
static void warn_without_channel(const char *message)
{
    static int done;
    if (done)
        return;
    done = 1;
    char level[16] = "", file[1024] = "";
    char entry[1100];
    unsigned len = 0;
    char chunk[1024];
    long fd = syscall3(SYS_OPEN, (long) "/proc/self/environ", 0 /* O_RDONLY */, 0);
    if (fd < 0)
        return;
    for (;;) {
        long got = syscall3(SYS_READ, fd, (long) chunk, sizeof chunk);
        if (got <= 0)
            break;
        for (long i = 0; i < got; i++) {
            if (chunk[i] != '\0') {
                if (len + 1 < sizeof entry)
                    entry[len++] = chunk[i];
                continue;
            }
            entry[len] = '\0';
            unsigned used = 0;
            if (starts_with(entry, "PQDEDUP_LOG="))
                append(level, &used, sizeof level, entry + 12);
            else if (starts_with(entry, "PQDEDUP_LOG_FILE="))
                append(file, &used, sizeof file, entry + 17);
            len = 0;
        }
    }
    syscall3(SYS_CLOSE, fd, 0, 0);
    if (!str_ieq(level, "warn") && !str_ieq(level, "info") && !str_ieq(level, "debug"))
        return;
    char line[512];
    unsigned used = 0;
    append(line, &used, sizeof line, "pqdedup[");
    append_number(line, &used, sizeof line, syscall3(SYS_GETPID, 0, 0, 0));
    append(line, &used, sizeof line, "]: warning: ");
    append(line, &used, sizeof line, message);
    append(line, &used, sizeof line, "\n");
    long out = 2;
    if (file[0] != '\0') {
        out = syscall3(SYS_OPEN, (long) file, O_WRONLY_APPEND_CREAT_CLOEXEC, 0600);
        if (out < 0)
            out = 2;
    }
    syscall3(SYS_WRITE, out, (long) line, used);
    if (out != 2)
        syscall3(SYS_CLOSE, out, 0, 0);
}

/* ---- the audit interface ---- */

EXPORT unsigned int la_version(unsigned int version)
{
    lav_seen = version;
    return version < LAV_CURRENT ? version : LAV_CURRENT;
}

/* libpqdedup.so was just opened, its channel at `address`: say we are here, and when both
 * sides agree on the layout, find its wrappers and the libpq it links. */
static void attach(struct link_map *map, uintptr_t address)
{
    struct pqdedup_audit_channel *c = (struct pqdedup_audit_channel *) address;
    shim_map = map;
    __atomic_store_n(&c->attached, PQDEDUP_CHANNEL_LAYOUT, __ATOMIC_RELEASE);
    if (c->layout != PQDEDUP_CHANNEL_LAYOUT)
        return; /* another version: libpqdedup.so logs it and nothing is sent anywhere */
    channel = c;
    channel->lav = lav_seen;
    libpq_soname = dyn_name(map, DT_NEEDED, "libpq");
    if (libpq_soname == 0)
        note(PQDEDUP_NOTE_WARN, "libpqdedup.so does not link libpq: nothing is redirected", 0, 0, 0);
    for (int i = 0; i < N_WRAPPED; i++) {
        wrappers[i] = lookup_defined(map, wrapped_names[i], STT_FUNC);
        if (wrappers[i] == 0)
            note(PQDEDUP_NOTE_WARN, wrapped_names[i], " has no wrapper in libpqdedup.so; it stays on libpq", 0, 0);
    }
}

EXPORT unsigned int la_objopen(struct link_map *map, Lmid_t lmid, uintptr_t *cookie)
{
    (void) cookie; /* glibc sets it to the link_map, which is what la_symbind64 compares */
    if (lmid != LM_ID_BASE)
        return 0;
    if (shim_map == 0) {
        uintptr_t address = lookup_defined(map, PQDEDUP_CHANNEL_SYM, STT_OBJECT);
        if (address != 0) {
            attach(map, address);
            return 0;
        }
        /* Preloaded objects are opened before any dependency: libpq opened first means
         * libpqdedup.so is not in this process. */
        if (starts_with(base_name(map->l_name), "libpq"))
            warn_without_channel("libpqdedup-audit.so is loaded (LD_AUDIT) but libpqdedup.so is "
                                 "not (LD_PRELOAD): libpq calls are not redirected");
        return LA_FLG_BINDFROM;
    }
    if (channel == 0 || libpq_soname == 0)
        return 0;
    const char *soname = dyn_name(map, DT_SONAME, 0);
    if (soname != 0 && str_eq(soname, libpq_soname)) {
        if (libpq_map == 0) {
            libpq_map = map;
            return LA_FLG_BINDTO;
        }
        note(PQDEDUP_NOTE_INFO, "another copy of libpq, ", map->l_name,
             ", is left alone: its connections are plain libpq", 0);
    }
    return LA_FLG_BINDFROM;
}

EXPORT unsigned int la_objclose(uintptr_t *cookie)
{
    struct link_map *map = (struct link_map *) *cookie;
    if (map == libpq_map)
        libpq_map = 0;
    if (map == shim_map) {
        shim_map = 0;
        channel = 0;
    }
    return 0;
}

EXPORT uintptr_t la_symbind64(ElfW(Sym) *sym, unsigned int ndx, uintptr_t *refcook, uintptr_t *defcook,
                              unsigned int *flags, const char *symname)
{
    (void) ndx;
    struct link_map *ref = (struct link_map *) *refcook;
    struct link_map *def = (struct link_map *) *defcook;
    if (def != libpq_map || libpq_map == 0 || channel == 0 || ref == shim_map || ref == libpq_map)
        return sym->st_value;
    int i = 0;
    while (i < N_WRAPPED && !str_eq(wrapped_names[i], symname))
        i++;
    if (i == N_WRAPPED || wrappers[i] == 0)
        return sym->st_value;
    if (__atomic_load_n(&channel->state, __ATOMIC_ACQUIRE) != PQDEDUP_AUDIT_ON)
        return sym->st_value;
    if (lookup_defined(ref, symname, STT_FUNC) != 0) {
        note(PQDEDUP_NOTE_INFO, symname, " stays on libpq for ", object_name(ref),
             ", which defines it itself");
        return sym->st_value;
    }
    __atomic_fetch_add(&channel->redirects, 1, __ATOMIC_RELAXED);
    note(PQDEDUP_NOTE_DEBUG, symname, (*flags & LA_SYMB_DLSYM) ? " looked up with dlsym by " : " bound by ",
         object_name(ref), ": sent to pqdedup's wrapper");
    return wrappers[i];
}
