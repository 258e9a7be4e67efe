/* gotsweep.c: libpqdedup.so's side of the loader auditor: the channel, and the GOT sweep.
 *
 * The auditor (src/audit/pqdedup_audit.c) sends the PLT, BIND_NOW and dlsym bindings of
 * wrapped names that bypass LD_PRELOAD to the wrappers. Slots glibc fills without asking
 * it (GLOB_DAT and R_X86_64_64: a function's address taken, -fno-plt code) still hold
 * libpq's own address; only objects whose scope puts libpq before libpqdedup.so
 * (RTLD_DEEPBIND modules) have such slots. The sweep rewrites them, before a connection is
 * handed out, so that a pooled connection's PQfinish always reaches pqdedup. It looks only
 * at objects of the base namespace that link the same libpq as libpqdedup.so, and only
 * when objects were loaded since the last sweep. Pages under RELRO are made writable for
 * the store and read-only again. No other symbol's slot is touched.
 *
 * Locks: the sweep runs inside a dl_iterate_phdr callback, which holds the loader's list
 * lock, so no object can be unloaded meanwhile. Nothing here calls the loader (dlopen,
 * dladdr, dlsym, dlinfo) inside that callback, nor while holding sweep_lock: dlopen takes
 * the load lock and then the list lock, and runs constructors that may connect (and so
 * wait for sweep_lock) with the load lock held. Everything the loader must answer is asked
 * once, in the constructor. dl_iterate_phdr lists dlmopen namespaces too: an object is
 * swept only if it is on the base namespace's list (_r_debug.r_map), walked under that
 * same lock. */
#define _GNU_SOURCE
#include "gotsweep.h"
#include "audit_channel.h"
#include "intercepted.h"
#include "log.h"
#include "real.h"
#include "settings.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The channel the auditor looks for (audit_channel.h); exported through exports.map. */
__attribute__((visibility("default"))) struct pqdedup_audit_channel pqdedup_audit_channel = {
    .layout = PQDEDUP_CHANNEL_LAYOUT,
};

/* What the constructor found, logged once the log is set up. */
enum loader_status {
    LOADERS_ON,            /* the auditor is attached and told to redirect */
    LOADERS_NOT_LOADED,    /* no auditor in this process */
    LOADERS_OTHER_VERSION, /* an auditor with another channel layout */
    LOADERS_OLD_GLIBC,     /* glibc < 2.35: BIND_NOW slots are not audited */
    LOADERS_TURNED_OFF,    /* PQDEDUP_AUDIT=0 */
    LOADERS_DISABLED,      /* PQDEDUP_DISABLE=1: pqdedup passes everything through */
    LOADERS_NO_WRAPPERS,   /* libpq's or pqdedup's addresses of the wrapped names not found */
};
static enum loader_status status;
static const char *bad_audit_value; /* PQDEDUP_AUDIT's value when it is not a boolean */

static pthread_mutex_t sweep_lock = PTHREAD_MUTEX_INITIALIZER;
static bool degraded;                 /* a slot could not be rewritten: connects pass through */
static unsigned long long swept_adds; /* dlpi_adds at the last sweep */
static unsigned notes_done;           /* auditor notes logged so far */

static void lock_sweep(void) { pthread_mutex_lock(&sweep_lock); }
static void unlock_sweep(void) { pthread_mutex_unlock(&sweep_lock); }

/* True for "1", "true", ... as the other PQDEDUP_ switches; `fallback` when unset or bad. */
static bool env_bool(const char *name, bool fallback, const char **bad)
{
    const char *text = getenv(name);
    bool value = fallback;
    if (text != NULL && settings_parse_bool(text, &value) != 0) {
        if (bad != NULL)
            *bad = text;
        value = fallback;
    }
    return value;
}

/* ---- the wrapped functions: libpq's own address and pqdedup's wrapper ---- */

struct wrapped_fn {
    const char *name;
    void *libpq;   /* the address a module bound straight to libpq holds */
    void *wrapper; /* libpqdedup.so's own definition */
};
#define WRAPPED_ROW(fn, ...) { #fn, NULL, NULL },
static struct wrapped_fn wrapped_fns[] = { PQDEDUP_INTERCEPTED(WRAPPED_ROW) };
#define N_WRAPPED (sizeof wrapped_fns / sizeof wrapped_fns[0])
/* real.h has a member for every name: a name added to intercepted.h alone fails here. */
#define REAL_MEMBER_CHECK(fn, ...) (void) sizeof(real.fn);

static ElfW(Addr) self_base, libpq_base;
static char libpq_soname[64];

/* glibc rewrites most d_ptr entries to absolute addresses, not every target or object does. */
static ElfW(Addr) dyn_ptr(ElfW(Addr) base, ElfW(Addr) p)
{
    return p < base ? p + base : p;
}

static const char *dyn_strtab(ElfW(Addr) base, const ElfW(Dyn) *dyn)
{
    for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; d++)
        if (d->d_tag == DT_STRTAB)
            return (const char *) dyn_ptr(base, d->d_un.d_ptr);
    return NULL;
}

/* True when the object's DT_NEEDED names `soname`. */
static bool needs(ElfW(Addr) base, const ElfW(Dyn) *dyn, const char *soname)
{
    const char *strtab = dyn_strtab(base, dyn);
    if (strtab == NULL)
        return false;
    for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; d++)
        if (d->d_tag == DT_NEEDED && strcmp(strtab + d->d_un.d_val, soname) == 0)
            return true;
    return false;
}

/* Finds this library, the libpq it links (by its DT_NEEDED) and both addresses of every
 * wrapped function. Returns false when any is missing. Called from the constructor only. */
static bool find_wrapped(void)
{
    PQDEDUP_INTERCEPTED(REAL_MEMBER_CHECK)
    Dl_info info;
    struct link_map *self = NULL;
    if (dladdr1(&pqdedup_audit_channel, &info, (void **) &self, RTLD_DL_LINKMAP) == 0 || self == NULL)
        return false;
    self_base = self->l_addr;
    const char *strtab = dyn_strtab(self->l_addr, self->l_ld);
    for (const ElfW(Dyn) *d = self->l_ld; strtab != NULL && d->d_tag != DT_NULL; d++)
        if (d->d_tag == DT_NEEDED && strncmp(strtab + d->d_un.d_val, "libpq", 5) == 0)
            snprintf(libpq_soname, sizeof libpq_soname, "%s", strtab + d->d_un.d_val);
    void *self_handle = dlopen(self->l_name, RTLD_LAZY | RTLD_NOLOAD);
    void *libpq_handle = libpq_soname[0] != '\0' ? dlopen(libpq_soname, RTLD_LAZY | RTLD_NOLOAD) : NULL;
    struct link_map *libpq = NULL;
    bool ok = self_handle != NULL && libpq_handle != NULL &&
              dlinfo(libpq_handle, RTLD_DI_LINKMAP, &libpq) == 0 && libpq != NULL;
    for (size_t i = 0; ok && i < N_WRAPPED; i++) {
        wrapped_fns[i].libpq = dlsym(libpq_handle, wrapped_fns[i].name);
        wrapped_fns[i].wrapper = dlsym(self_handle, wrapped_fns[i].name);
        ok = wrapped_fns[i].libpq != NULL && wrapped_fns[i].wrapper != NULL &&
             wrapped_fns[i].libpq != wrapped_fns[i].wrapper;
    }
    if (ok)
        libpq_base = libpq->l_addr;
    if (libpq_handle != NULL)
        dlclose(libpq_handle);
    if (self_handle != NULL)
        dlclose(self_handle);
    return ok;
}

/* Runs when libpqdedup.so is loaded, before the program's code and before any module it
 * loads later: the auditor redirects nothing until this says PQDEDUP_AUDIT_ON. Objects
 * loaded before this runs bound PQ* to this library through the global scope anyway. */
__attribute__((constructor)) static void loaders_attach(void)
{
    struct pqdedup_audit_channel *c = &pqdedup_audit_channel;
    unsigned attached = __atomic_load_n(&c->attached, __ATOMIC_ACQUIRE);
    bool wanted = env_bool("PQDEDUP_AUDIT", true, &bad_audit_value);
    if (!wanted)
        status = LOADERS_TURNED_OFF;
    else if (attached == 0)
        status = LOADERS_NOT_LOADED;
    else if (attached != PQDEDUP_CHANNEL_LAYOUT)
        status = LOADERS_OTHER_VERSION;
    else if (c->lav < 2)
        status = LOADERS_OLD_GLIBC;
    else if (env_bool("PQDEDUP_DISABLE", false, NULL))
        status = LOADERS_DISABLED;
    else if (!find_wrapped())
        status = LOADERS_NO_WRAPPERS;
    else
        status = LOADERS_ON;
    if (attached == PQDEDUP_CHANNEL_LAYOUT)
        __atomic_store_n(&c->state, status == LOADERS_ON ? PQDEDUP_AUDIT_ON : PQDEDUP_AUDIT_OFF,
                         __ATOMIC_RELEASE);
    /* No lock of pqdedup is held across fork (as pool.c's). */
    pthread_atfork(lock_sweep, unlock_sweep, unlock_sweep);
}

static void report_status(void)
{
    if (bad_audit_value != NULL)
        log_setting_warning("ignoring PQDEDUP_AUDIT: not 1 or 0; using the default");
    static const char *const what_it_means =
        "modules loaded with RTLD_DEEPBIND and libpq functions found with dlsym use plain libpq";
    switch (status) {
    case LOADERS_ON:
        log_msg(LOG_INFO, "loader auditor active: modules loaded with RTLD_DEEPBIND and libpq "
                          "functions found with dlsym go through pqdedup too");
        break;
    case LOADERS_NOT_LOADED:
        log_msg(LOG_INFO, "loader auditor not loaded (LD_AUDIT does not name libpqdedup-audit.so): %s",
                what_it_means);
        break;
    case LOADERS_OTHER_VERSION:
        log_msg(LOG_WARN, "libpqdedup-audit.so in LD_AUDIT belongs to another version of pqdedup; "
                          "loader auditing is off: %s", what_it_means);
        break;
    case LOADERS_OLD_GLIBC:
        log_msg(LOG_WARN, "glibc older than 2.35 (audit interface version %u) does not show BIND_NOW "
                          "bindings to an auditor; loader auditing is off: %s",
                pqdedup_audit_channel.lav, what_it_means);
        break;
    case LOADERS_TURNED_OFF:
        log_msg(LOG_INFO, "loader auditing turned off by PQDEDUP_AUDIT: %s", what_it_means);
        break;
    case LOADERS_NO_WRAPPERS:
        log_msg(LOG_WARN, "cannot find libpq (%s) or pqdedup's own wrappers; loader auditing is off: %s",
                libpq_soname[0] ? libpq_soname : "not linked", what_it_means);
        break;
    case LOADERS_DISABLED:
        break;
    }
}

/* Logs the auditor's notes written since the last call. Called with sweep_lock held. */
static void drain_notes(void)
{
    static const enum log_level levels[] = {
        [PQDEDUP_NOTE_DEBUG] = LOG_DEBUG, [PQDEDUP_NOTE_INFO] = LOG_INFO, [PQDEDUP_NOTE_WARN] = LOG_WARN,
    };
    struct pqdedup_audit_channel *c = &pqdedup_audit_channel;
    unsigned written = __atomic_load_n(&c->nnotes, __ATOMIC_ACQUIRE);
    unsigned done = notes_done;
    if (written - done > PQDEDUP_CHANNEL_NOTES) {
        log_msg(LOG_DEBUG, "loader auditor: %u notes were overwritten before they were logged",
                written - done - PQDEDUP_CHANNEL_NOTES);
        done = written - PQDEDUP_CHANNEL_NOTES;
    }
    for (; done != written; done++) {
        const struct pqdedup_audit_note *n = &c->notes[done % PQDEDUP_CHANNEL_NOTES];
        unsigned seq = __atomic_load_n(&n->seq, __ATOMIC_ACQUIRE);
        if (seq == 0 || (int) (seq - (done + 1)) < 0)
            break; /* still being written: next time */
        if (seq != done + 1)
            continue; /* overwritten by a later note */
        char text[PQDEDUP_CHANNEL_NOTE_LEN];
        memcpy(text, n->text, sizeof text);
        text[sizeof text - 1] = '\0';
        unsigned level = n->level;
        if (__atomic_load_n(&n->seq, __ATOMIC_ACQUIRE) != seq)
            continue;
        log_msg(level < sizeof levels / sizeof levels[0] ? levels[level] : LOG_DEBUG, "loader auditor: %s", text);
    }
    __atomic_store_n(&notes_done, done, __ATOMIC_RELAXED);
}

/* ---- one object's slots ---- */

static const ElfW(Dyn) *dynamic_of(const struct dl_phdr_info *info)
{
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
            return (const ElfW(Dyn) *) (info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    return NULL;
}

/* True when the object is on the base namespace's list (not a dlmopen namespace's).
 * Called under the loader's list lock (inside dl_iterate_phdr), which guards that list. */
static bool in_base_namespace(ElfW(Addr) base, const ElfW(Dyn) *dyn)
{
    for (const struct link_map *m = _r_debug.r_map; m != NULL; m = m->l_next)
        if (m->l_addr == base && m->l_ld == dyn)
            return true;
    return false;
}

/* Where a slot may be written: in a writable segment (stored directly), or in RELRO
 * (read-only after loading, as ld.so protects it: the page-aligned part of PT_GNU_RELRO). */
struct object_layout {
    ElfW(Addr) relro_lo, relro_hi;
    ElfW(Addr) writable_lo[4], writable_hi[4];
    int nwritable;
};

static void layout_of(const struct dl_phdr_info *info, struct object_layout *l)
{
    ElfW(Addr) page_size = (ElfW(Addr)) sysconf(_SC_PAGESIZE);
    memset(l, 0, sizeof *l);
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        ElfW(Addr) start = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_GNU_RELRO) {
            l->relro_lo = start & ~(page_size - 1);
            l->relro_hi = (start + ph->p_memsz) & ~(page_size - 1);
        } else if (ph->p_type == PT_LOAD && (ph->p_flags & PF_W) && l->nwritable < 4) {
            l->writable_lo[l->nwritable] = start;
            l->writable_hi[l->nwritable++] = start + ph->p_memsz;
        }
    }
}

/* Stores `value` into `slot`. A page under RELRO is made writable for the store and
 * read-only again. Returns false, logged, when the slot is in neither kind of place (a text
 * relocation) or its page cannot be made writable. */
static bool store_slot(void **slot, void *value, const struct object_layout *l, const char *name,
                       const char *object)
{
    ElfW(Addr) address = (ElfW(Addr)) slot;
    if (address >= l->relro_lo && address < l->relro_hi) {
        ElfW(Addr) page_size = (ElfW(Addr)) sysconf(_SC_PAGESIZE);
        void *page = (void *) (address & ~(page_size - 1));
        if (mprotect(page, page_size, PROT_READ | PROT_WRITE) != 0) {
            log_msg(LOG_WARN, "GOT sweep: cannot make the page holding %s's slot in %s writable (%s); "
                              "connects are plain libpq from now on", name, object, strerror(errno));
            return false;
        }
        __atomic_store_n(slot, value, __ATOMIC_RELEASE);
        if (mprotect(page, page_size, PROT_READ) != 0)
            log_msg(LOG_WARN, "GOT sweep: cannot make a page of %s read-only again (%s)", object, strerror(errno));
        return true;
    }
    for (int i = 0; i < l->nwritable; i++) {
        if (address >= l->writable_lo[i] && address + sizeof *slot <= l->writable_hi[i]) {
            __atomic_store_n(slot, value, __ATOMIC_RELEASE);
            return true;
        }
    }
    log_msg(LOG_WARN, "GOT sweep: %s's slot in %s is not in a writable segment; connects are plain libpq "
                      "from now on", name, object);
    return false;
}

static struct wrapped_fn *wrapped_named(const char *name)
{
    if (name[0] != 'P' || name[1] != 'Q')
        return NULL;
    for (size_t i = 0; i < N_WRAPPED; i++)
        if (strcmp(wrapped_fns[i].name, name) == 0)
            return &wrapped_fns[i];
    return NULL;
}

/* Points every slot of the object that holds libpq's own address of a wrapped name at the
 * wrapper. A lazy JUMP_SLOT not called yet still points into the object's PLT: the auditor
 * sees its first call. Returns false when a slot could not be written. */
static bool sweep_object(const struct dl_phdr_info *info, const ElfW(Dyn) *dyn)
{
    struct object_layout layout;
    layout_of(info, &layout);
    const ElfW(Addr) base = info->dlpi_addr;
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    const ElfW(Rela) *tables[2] = { NULL, NULL };
    size_t sizes[2] = { 0, 0 };
    for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; d++) {
        switch (d->d_tag) {
        case DT_SYMTAB: symtab = (const ElfW(Sym) *) dyn_ptr(base, d->d_un.d_ptr); break;
        case DT_STRTAB: strtab = (const char *) dyn_ptr(base, d->d_un.d_ptr); break;
        case DT_JMPREL: tables[0] = (const ElfW(Rela) *) dyn_ptr(base, d->d_un.d_ptr); break;
        case DT_PLTRELSZ: sizes[0] = d->d_un.d_val; break;
        case DT_RELA: tables[1] = (const ElfW(Rela) *) dyn_ptr(base, d->d_un.d_ptr); break;
        case DT_RELASZ: sizes[1] = d->d_un.d_val; break;
        }
    }
    if (symtab == NULL || strtab == NULL)
        return true;
    for (int t = 0; t < 2; t++) {
        for (size_t i = 0; tables[t] != NULL && i < sizes[t] / sizeof(ElfW(Rela)); i++) {
            const ElfW(Rela) *r = &tables[t][i];
            unsigned type = (unsigned) ELF64_R_TYPE(r->r_info);
            if ((type != R_X86_64_JUMP_SLOT && type != R_X86_64_GLOB_DAT && type != R_X86_64_64) ||
                ELF64_R_SYM(r->r_info) == 0 || (type == R_X86_64_64 && r->r_addend != 0))
                continue;
            struct wrapped_fn *fn = wrapped_named(strtab + symtab[ELF64_R_SYM(r->r_info)].st_name);
            void **slot = (void **) (base + r->r_offset);
            if (fn == NULL || __atomic_load_n(slot, __ATOMIC_ACQUIRE) != fn->libpq)
                continue;
            if (!store_slot(slot, fn->wrapper, &layout, fn->name, info->dlpi_name))
                return false;
            log_msg(LOG_DEBUG, "GOT sweep: %s's slot in %s (relocation type %u) now points at pqdedup's wrapper",
                    fn->name, info->dlpi_name, type);
        }
    }
    return true;
}

/* dl_iterate_phdr callback: sweeps each object of the base namespace that links our libpq
 * (anything else finds PQ* in the global scope, where libpqdedup.so comes first). Only reads
 * and writes memory and logs: no loader call here. *data is set false on a failure. */
static int sweep_callback(struct dl_phdr_info *info, size_t size, void *data)
{
    (void) size;
    if (info->dlpi_addr == libpq_base || info->dlpi_addr == self_base || info->dlpi_name == NULL ||
        info->dlpi_name[0] == '\0')
        return 0; /* libpq, ourselves, the main program (which binds through the global scope) */
    const ElfW(Dyn) *dyn = dynamic_of(info);
    if (dyn == NULL || !needs(info->dlpi_addr, dyn, libpq_soname) || !in_base_namespace(info->dlpi_addr, dyn))
        return 0;
    if (!sweep_object(info, dyn)) {
        *(bool *) data = false;
        return 1;
    }
    return 0;
}

static int read_adds(struct dl_phdr_info *info, size_t size, void *data)
{
    (void) size;
    *(unsigned long long *) data = info->dlpi_adds;
    return 1; /* the counter is the same in every entry */
}

static pthread_once_t report_once = PTHREAD_ONCE_INIT;

bool gotsweep_if_needed(void)
{
    pthread_once(&report_once, report_status);
    if (status != LOADERS_ON)
        return true; /* plain LD_PRELOAD: nothing bypasses the wrappers */
    int saved_errno = errno;
    unsigned long long adds = 0;
    dl_iterate_phdr(read_adds, &adds);
    bool work = adds != __atomic_load_n(&swept_adds, __ATOMIC_ACQUIRE) ||
                __atomic_load_n(&pqdedup_audit_channel.nnotes, __ATOMIC_RELAXED) !=
                    __atomic_load_n(&notes_done, __ATOMIC_RELAXED);
    if (work && !__atomic_load_n(&degraded, __ATOMIC_ACQUIRE)) {
        lock_sweep();
        drain_notes();
        if (adds != swept_adds && !degraded) {
            bool ok = true;
            dl_iterate_phdr(sweep_callback, &ok);
            if (!ok)
                __atomic_store_n(&degraded, true, __ATOMIC_RELEASE);
            __atomic_store_n(&swept_adds, adds, __ATOMIC_RELEASE);
        }
        unlock_sweep();
    }
    errno = saved_errno;
    return !__atomic_load_n(&degraded, __ATOMIC_ACQUIRE);
}
