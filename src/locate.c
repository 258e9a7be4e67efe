/* locate.c: where the launcher finds libpqdedup.so and its auditor, relative to itself first. */
#define _GNU_SOURCE
#include "locate.h"

#include <libgen.h>
#include <stdbool.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Set by src/CMakeLists.txt at configure time:
 *   PQDEDUP_LIB_RELATIVE   the private library directory relative to the launcher's
 *                          directory as installed (e.g. "../lib/x86_64-linux-gnu/pqdedup")
 *   PQDEDUP_LIB_MULTIARCH  the multiarch triplet, or "" where there is none
 *   PQDEDUP_LIB_INSTALLED  the private library directory as configured (absolute) */
#ifndef PQDEDUP_LIB_RELATIVE
#error "PQDEDUP_LIB_RELATIVE is set by src/CMakeLists.txt"
#endif

#define LIBRARY_NAME "libpqdedup.so"
#define AUDITOR_NAME "libpqdedup-audit.so"

/* The launcher's own directory, symlinks resolved, into `dir`; false without /proc. */
static bool self_dir(char dir[PATH_MAX])
{
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0)
        return false;
    self[len] = '\0';
    snprintf(dir, PATH_MAX, "%s", dirname(self));
    return dir[0] == '/';
}

/* The directories to try, in order; each either absolute or relative to the launcher's
 * own directory (marked by a leading '+'), never to the current directory. */
static const char *const candidates[] = {
    "+.",                                       /* a build tree: everything at its top */
    "+" PQDEDUP_LIB_RELATIVE,                   /* installed as configured, at any prefix */
    "+../lib/" PQDEDUP_LIB_MULTIARCH "/pqdedup", /* the usual layouts, whatever was configured */
    "+../lib/pqdedup",
    "+../lib64/pqdedup",
    PQDEDUP_LIB_INSTALLED,                      /* the configured directory itself */
};

/* The file `name` in candidate `c`, symlinks resolved, if it is readable. Returns a
 * malloc'd path or NULL. */
static char *try_candidate(const char *c, const char *dir, const char *name)
{
    char *path = NULL;
    int rc = c[0] == '+' ? asprintf(&path, "%s/%s/%s", dir, c + 1, name)
                         : asprintf(&path, "%s/%s", c, name);
    if (rc < 0)
        return NULL;
    char *real = path[0] == '/' && access(path, R_OK) == 0 ? realpath(path, NULL) : NULL;
    free(path);
    return real;
}

char *locate_library(void)
{
    char dir[PATH_MAX];
    bool have_dir = self_dir(dir);
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        if (candidates[i][0] == '+' && !have_dir)
            continue;
        char *found = try_candidate(candidates[i], dir, LIBRARY_NAME);
        if (found != NULL)
            return found;
    }
    return NULL;
}

char *locate_auditor(const char *library)
{
    char *copy = strdup(library);
    char *path = NULL;
    if (copy != NULL && asprintf(&path, "%s/" AUDITOR_NAME, dirname(copy)) < 0)
        path = NULL;
    free(copy);
    if (path != NULL && access(path, R_OK) != 0) {
        free(path);
        path = NULL;
    }
    return path;
}

void locate_print_candidates(FILE *out, const char *indent)
{
    char dir[PATH_MAX];
    bool have_dir = self_dir(dir);
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        const char *c = candidates[i];
        if (c[0] != '+')
            fprintf(out, "%s%s\n", indent, c);
        else if (have_dir)
            fprintf(out, "%s%s/%s\n", indent, dir, c + 1);
    }
}
