/* elfinfo.c: what `pqdedup --check` reads from a program file: ELF class, machine, loader and DT_NEEDED. */
#define _GNU_SOURCE
#include "elfinfo.h"

#include <elf.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if __BYTE_ORDER == __LITTLE_ENDIAN
#define NATIVE_DATA ELFDATA2LSB
#else
#define NATIVE_DATA ELFDATA2MSB
#endif
#if __ELF_NATIVE_CLASS == 64
#define NATIVE_CLASS ELFCLASS64
#else
#define NATIVE_CLASS ELFCLASS32
#endif

#define MAX_PHDRS 4096
#define MAX_DYNAMIC (1 << 20)  /* bytes of PT_DYNAMIC read at most */
#define MAX_STRTAB (16 << 20)  /* bytes of the dynamic string table read at most */

/* Reads exactly `len` bytes at `off`. Returns 0, or -1 on a short read or error. */
static int read_at(int fd, void *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (char *) buf + done, len - done, (off_t) (off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        done += (size_t) n;
    }
    return 0;
}

/* The file offset of virtual address `addr`, through the PT_LOAD that maps it; -1 if none. */
static int64_t vaddr_to_offset(const ElfW(Phdr) *ph, size_t n, uint64_t addr)
{
    for (size_t i = 0; i < n; i++)
        if (ph[i].p_type == PT_LOAD && addr >= ph[i].p_vaddr && addr - ph[i].p_vaddr < ph[i].p_filesz)
            return (int64_t) (addr - ph[i].p_vaddr + ph[i].p_offset);
    return -1;
}

/* Fills info->needed from the PT_DYNAMIC segment `dyn_ph`. Leaves it empty when the
 * segment or its string table cannot be read. Returns 0, or -1 when out of memory. */
static int read_needed(int fd, const ElfW(Phdr) *ph, size_t n, const ElfW(Phdr) *dyn_ph, struct elf_info *info)
{
    size_t size = dyn_ph->p_filesz < MAX_DYNAMIC ? dyn_ph->p_filesz : MAX_DYNAMIC;
    size_t count = size / sizeof(ElfW(Dyn));
    ElfW(Dyn) *dyn = malloc(count * sizeof *dyn + 1);
    if (dyn == NULL)
        return -1;
    if (read_at(fd, dyn, count * sizeof *dyn, dyn_ph->p_offset) != 0)
        count = 0;
    uint64_t strtab = 0, strsz = 0;
    size_t n_needed = 0;
    for (size_t i = 0; i < count && dyn[i].d_tag != DT_NULL; i++) {
        if (dyn[i].d_tag == DT_STRTAB)
            strtab = dyn[i].d_un.d_ptr;
        else if (dyn[i].d_tag == DT_STRSZ)
            strsz = dyn[i].d_un.d_val;
        else if (dyn[i].d_tag == DT_NEEDED)
            n_needed++;
    }
    int64_t str_off = strtab != 0 ? vaddr_to_offset(ph, n, strtab) : -1;
    char *strings = NULL;
    if (str_off >= 0 && strsz > 0 && strsz <= MAX_STRTAB && n_needed > 0) {
        strings = malloc(strsz + 1);
        if (strings == NULL) {
            free(dyn);
            return -1;
        }
        if (read_at(fd, strings, strsz, (uint64_t) str_off) != 0) {
            free(strings);
            strings = NULL;
        } else {
            strings[strsz] = '\0';
        }
    }
    if (strings != NULL) {
        info->needed = calloc(n_needed, sizeof *info->needed);
        for (size_t i = 0; info->needed != NULL && i < count && dyn[i].d_tag != DT_NULL; i++) {
            if (dyn[i].d_tag != DT_NEEDED || dyn[i].d_un.d_val >= strsz)
                continue;
            char *name = strdup(strings + dyn[i].d_un.d_val);
            if (name == NULL)
                break;
            info->needed[info->n_needed++] = name;
        }
    }
    free(strings);
    free(dyn);
    return 0;
}

/* This launcher's own e_machine, read from /proc/self/exe (EM_NONE without /proc). */
static int own_machine(void)
{
    ElfW(Ehdr) self;
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return EM_NONE;
    int machine = read_at(fd, &self, sizeof self, 0) == 0 ? self.e_machine : EM_NONE;
    close(fd);
    return machine;
}

int elfinfo_read(const char *path, struct elf_info *info)
{
    memset(info, 0, sizeof *info);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    unsigned char ident[EI_NIDENT + 4];
    if (read_at(fd, ident, sizeof ident, 0) != 0 || memcmp(ident, ELFMAG, SELFMAG) != 0) {
        close(fd);
        return 0;
    }
    info->is_elf = true;
    info->elf_class = ident[EI_CLASS];
    /* e_machine follows e_type at offset 18 in both classes. */
    info->machine = ident[EI_DATA] == ELFDATA2MSB ? ident[18] << 8 | ident[19] : ident[19] << 8 | ident[18];
    ElfW(Ehdr) eh;
    if (ident[EI_CLASS] != NATIVE_CLASS || ident[EI_DATA] != NATIVE_DATA || read_at(fd, &eh, sizeof eh, 0) != 0) {
        close(fd);
        return 0;
    }
    info->native = eh.e_machine == own_machine();
    size_t n = eh.e_phnum;
    if (eh.e_phentsize != sizeof(ElfW(Phdr)) || n == 0 || n > MAX_PHDRS) {
        close(fd);
        return 0;
    }
    ElfW(Phdr) *ph = calloc(n, sizeof *ph);
    if (ph == NULL || read_at(fd, ph, n * sizeof *ph, eh.e_phoff) != 0) {
        free(ph);
        close(fd);
        return ph == NULL ? -1 : 0;
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (ph[i].p_type == PT_INTERP && ph[i].p_filesz > 0 && ph[i].p_filesz < sizeof info->interp) {
            if (read_at(fd, info->interp, ph[i].p_filesz, ph[i].p_offset) == 0) {
                info->interp[ph[i].p_filesz] = '\0';
                info->has_interp = true;
            }
        } else if (ph[i].p_type == PT_DYNAMIC && !info->has_dynamic) {
            info->has_dynamic = true;
            if (info->native && read_needed(fd, ph, n, &ph[i], info) != 0) {
                errno = ENOMEM;
                rc = -1;
            }
        }
    }
    free(ph);
    close(fd);
    return rc;
}

void elfinfo_free(struct elf_info *info)
{
    for (size_t i = 0; i < info->n_needed; i++)
        free(info->needed[i]);
    free(info->needed);
    info->needed = NULL;
    info->n_needed = 0;
}

const char *elfinfo_machine_name(int machine)
{
    static char other[32];
    switch (machine) {
    case EM_X86_64:
        return "x86-64";
    case EM_386:
        return "i386";
    case EM_AARCH64:
        return "aarch64";
    case EM_ARM:
        return "arm";
    case EM_PPC64:
        return "ppc64";
    case EM_S390:
        return "s390";
    case EM_RISCV:
        return "riscv";
    }
    snprintf(other, sizeof other, "machine %d", machine);
    return other;
}
