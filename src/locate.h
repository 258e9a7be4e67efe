/* locate.h: where the launcher finds libpqdedup.so and its auditor, relative to itself first. */
#ifndef PQDEDUP_LOCATE_H
#define PQDEDUP_LOCATE_H

#include <stdio.h>

/* Finds libpqdedup.so: beside the launcher's own executable (a build tree), then in the
 * library directories relative to it (an installed tree at any prefix, or moved), then in
 * the directory configured at build time. Never the current directory, never a path
 * relative to it. Returns a malloc'd absolute path (symlinks resolved), or NULL. */
char *locate_library(void);

/* The auditor, libpqdedup-audit.so, beside `library` (so both come from one build).
 * Returns a malloc'd path, or NULL when there is none. */
char *locate_auditor(const char *library);

/* Writes the directories locate_library() tries, one per line, each indented by `indent`. */
void locate_print_candidates(FILE *out, const char *indent);

#endif
