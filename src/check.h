/* check.h: `pqdedup --check PROGRAM`: whether pqdedup would reach a program, without running it. */
#ifndef PQDEDUP_CHECK_H
#define PQDEDUP_CHECK_H

#include <stdbool.h>

#define CHECK_REACHED 0     /* pqdedup would reach it, or may at run time */
#define CHECK_NOT_REACHED 1 /* it certainly would not */

/* Reports on stdout, one finding a line, what the launcher would run for `program` (found
 * on PATH as execvp would, through #! lines) and whether libpqdedup.so would reach it:
 * set-ID bits, static or dynamic, libpq linked or not and which file the loader maps (the
 * system loader's --list, which runs none of the program's code), the auditor. `audit` is
 * false when --no-audit or PQDEDUP_AUDIT=0 leave the auditor out. Never runs `program`.
 * Returns CHECK_REACHED or CHECK_NOT_REACHED. */
int check_program(const char *program, bool audit);

#endif
