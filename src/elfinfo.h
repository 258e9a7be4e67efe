/* elfinfo.h: what `pqdedup --check` reads from a program file: ELF class, machine, loader and DT_NEEDED. */
#ifndef PQDEDUP_ELFINFO_H
#define PQDEDUP_ELFINFO_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

struct elf_info {
    bool is_elf;             /* starts with the ELF magic */
    bool native;             /* same class, byte order and machine as this launcher */
    int elf_class;           /* ELFCLASS32 or ELFCLASS64 */
    int machine;             /* e_machine (EM_X86_64, ...) */
    bool has_interp;         /* PT_INTERP: the loader runs (a dynamic program) */
    bool has_dynamic;        /* PT_DYNAMIC (a static-pie has it without PT_INTERP) */
    char interp[PATH_MAX];   /* the PT_INTERP path when has_interp */
    char **needed;           /* DT_NEEDED names, n_needed of them (native files only) */
    size_t n_needed;
};

/* Reads `path`'s ELF headers into *info (which the caller frees with elfinfo_free). Only
 * native files are read past the header. Returns 0, or -1 with errno set when the file
 * cannot be read; a file that is not ELF returns 0 with is_elf false. A malformed ELF file
 * returns 0 with what could be read. */
int elfinfo_read(const char *path, struct elf_info *info);

/* Frees what elfinfo_read allocated; *info may then be read again. */
void elfinfo_free(struct elf_info *info);

/* A name for e_machine (x86-64, i386, aarch64, ...), or "machine N" in a static buffer. */
const char *elfinfo_machine_name(int machine);

#endif
