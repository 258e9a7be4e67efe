/* check.c: `pqdedup --check PROGRAM`: whether pqdedup would reach a program, without running it. */
#define _GNU_SOURCE
#include "check.h"
#include "elfinfo.h"
#include "locate.h"

#include <errno.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#define MAX_SCRIPT_DEPTH 4     /* the kernel follows #! lines 4 deep (BINPRM_MAX_RECURSION) */
#define MAX_LIST_OUTPUT 65536  /* bytes of the loader's --list output read at most */

extern char **environ;

/* One finding: "tag:" padded, then the text. */
static void say(const char *tag, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%-10s", tag);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

static int not_reached(const char *why)
{
    say("verdict:", "NOT reached: %s", why);
    return CHECK_NOT_REACHED;
}

/* True when `path` is a regular file this user may execute. */
static bool is_executable_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* Finds `name` as execvp does: as given when it holds a '/', else in each PATH entry
 * (glibc's default "/bin:/usr/bin" when PATH is unset; an empty entry is the current
 * directory, as for execvp). Writes the absolute path to `out`. Returns false if none. */
static bool resolve_command(const char *name, char out[PATH_MAX])
{
    if (strchr(name, '/') != NULL)
        return realpath(name, out) != NULL;
    const char *path = getenv("PATH");
    if (path == NULL)
        path = "/bin:/usr/bin";
    for (const char *dir = path;; ) {
        size_t len = strcspn(dir, ":");
        char candidate[PATH_MAX];
        if (snprintf(candidate, sizeof candidate, "%.*s/%s", len ? (int) len : 1, len ? dir : ".", name) <
                (int) sizeof candidate &&
            is_executable_file(candidate) && realpath(candidate, out) != NULL)
            return true;
        if (dir[len] == '\0')
            return false;
        dir += len + 1;
    }
}

/* The command `#!/usr/bin/env ARG` runs: the first word of ARG that is neither an option
 * (-S, -i, ...) nor a NAME=VALUE. Writes it to `out`. Returns false if there is none. */
static bool env_command(const char *arg, char out[PATH_MAX])
{
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", arg);
    char *save = NULL;
    for (char *word = strtok_r(copy, " \t", &save); word != NULL; word = strtok_r(NULL, " \t", &save)) {
        if (word[0] == '-' || strchr(word, '=') != NULL)
            continue;
        snprintf(out, PATH_MAX, "%s", word);
        return true;
    }
    return false;
}

/* True when `path` starts with the ELF magic (or cannot be read: elfinfo_read says why). */
static bool is_elf_file(const char *path)
{
    struct elf_info info;
    if (elfinfo_read(path, &info) != 0)
        return true;
    elfinfo_free(&info);
    return info.is_elf;
}

/* Reads a "#!" line of `path` into interpreter and argument. Returns true for a script. */
static bool read_shebang(const char *path, char interp[PATH_MAX], char arg[PATH_MAX])
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return false;
    char line[PATH_MAX];
    bool script = fgets(line, sizeof line, f) != NULL && line[0] == '#' && line[1] == '!';
    fclose(f);
    if (!script)
        return false;
    line[strcspn(line, "\n")] = '\0';
    char *p = line + 2 + strspn(line + 2, " \t");
    size_t len = strcspn(p, " \t");
    snprintf(interp, PATH_MAX, "%.*s", (int) len, p);
    p += len + strspn(p + len, " \t");
    snprintf(arg, PATH_MAX, "%s", p);
    /* The kernel passes the rest of the line as one argument, trailing blanks removed. */
    for (len = strlen(arg); len > 0 && (arg[len - 1] == ' ' || arg[len - 1] == '\t'); len--)
        arg[len - 1] = '\0';
    return interp[0] != '\0';
}

/* Whether the loader would run `path` in secure-execution mode for this user (set-ID bits
 * that change the ids, or file capabilities): it then ignores LD_PRELOAD and LD_AUDIT.
 * Writes the reason to `why`. */
static bool secure_execution(const char *path, const struct stat *st, char *why, size_t size)
{
    if ((st->st_mode & S_ISUID) && st->st_uid != getuid()) {
        snprintf(why, size, "setuid (to uid %u): the loader ignores LD_PRELOAD and LD_AUDIT for anyone but uid %u",
                 (unsigned) st->st_uid, (unsigned) st->st_uid);
        return true;
    }
    if ((st->st_mode & S_ISGID) && st->st_gid != getgid()) {
        snprintf(why, size, "setgid (to gid %u): the loader ignores LD_PRELOAD and LD_AUDIT",
                 (unsigned) st->st_gid);
        return true;
    }
    if (getxattr(path, "security.capability", NULL, 0) > 0 && getuid() != 0) {
        snprintf(why, size, "file capabilities: the loader ignores LD_PRELOAD and LD_AUDIT for users but root");
        return true;
    }
    return false;
}

/* Runs `loader --list program` with LD_PRELOAD=`preload` (or none) and LD_AUDIT unset,
 * output into `out`. The loader maps the libraries and stops: none of the program's code
 * runs. Returns the loader's exit status, or -1 when it could not be run. */
static int loader_list(const char *loader, const char *program, const char *preload, char *out, size_t size)
{
    size_t n_env = 0;
    while (environ[n_env] != NULL)
        n_env++;
    char **env = calloc(n_env + 2, sizeof *env);
    char *preload_entry = NULL;
    int fds[2];
    if (env == NULL || (preload != NULL && asprintf(&preload_entry, "LD_PRELOAD=%s", preload) < 0) ||
        pipe2(fds, O_CLOEXEC) != 0) {
        free(env);
        free(preload_entry);
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++)
        if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0 && strncmp(environ[i], "LD_AUDIT=", 9) != 0)
            env[k++] = environ[i];
    if (preload_entry != NULL)
        env[k++] = preload_entry;
    env[k] = NULL;

    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        char *argv[] = { (char *) loader, "--list", (char *) program, NULL };
        execve(loader, argv, env);
        _exit(127);
    }
    close(fds[1]);
    size_t used = 0;
    while (pid > 0) {
        ssize_t r = read(fds[0], out + used, size - 1 - used);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        used += (size_t) r;
        if (used == size - 1)
            break;
    }
    out[used] = '\0';
    close(fds[0]);
    free(env);
    free(preload_entry);
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The path --list output gives for the first library whose name starts with `prefix`
 * ("\tlibpq.so.5 => /usr/lib/.../libpq.so.5 (0x...)"), into `path`. Returns false if
 * it is not listed; "not found" when listed unresolved. */
static bool listed_library(const char *list, const char *prefix, char path[PATH_MAX])
{
    for (const char *line = list; *line != '\0'; line += strcspn(line, "\n") + (line[strcspn(line, "\n")] == '\n')) {
        const char *name = line + strspn(line, " \t");
        if (strncmp(name, prefix, strlen(prefix)) != 0)
            continue;
        const char *arrow = strstr(name, " => ");
        size_t line_len = strcspn(name, "\n");
        if (arrow == NULL || (size_t) (arrow - name) > line_len) {
            snprintf(path, PATH_MAX, "%.*s", (int) strcspn(name, " \n"), name);
        } else {
            const char *p = arrow + 4;
            size_t len = strcspn(p, "\n");
            const char *paren = strstr(p, " (0x");
            if (paren != NULL && (size_t) (paren - p) < len)
                len = (size_t) (paren - p);
            snprintf(path, PATH_MAX, "%.*s", (int) len, p);
        }
        return true;
    }
    return false;
}

/* What a program named like an interpreter loads libpq through, or NULL. */
static const char *module_hint(const char *path)
{
    static const struct { const char *prefix, *hint; } hints[] = {
        { "python", "psycopg2 and psycopg 3's C implementation link libpq (reached); psycopg 3's "
                    "pure-Python implementation finds it with ctypes and dlsym (reached through the auditor)" },
        { "php", "the pgsql and pdo_pgsql extensions are loaded with RTLD_DEEPBIND (reached through "
                 "the auditor)" },
        { "ruby", "the pg gem links libpq (reached)" },
        { "perl", "DBD::Pg links libpq (reached)" },
        { "sh", "a shell: the programs it runs inherit LD_PRELOAD and LD_AUDIT; check those" },
        { "bash", "a shell: the programs it runs inherit LD_PRELOAD and LD_AUDIT; check those" },
        { "dash", "a shell: the programs it runs inherit LD_PRELOAD and LD_AUDIT; check those" },
    };
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", path);
    const char *base = basename(copy);
    for (size_t i = 0; i < sizeof hints / sizeof hints[0]; i++) {
        size_t len = strlen(hints[i].prefix);
        /* "sh" only as itself; the others with a version or suffix (python3.11, php-fpm8.2). */
        if (strncmp(base, hints[i].prefix, len) == 0 && (len > 2 || base[len] == '\0'))
            return hints[i].hint;
    }
    return NULL;
}

/* True when this glibc is at least 2.35, which the auditor needs. */
static bool glibc_has_audit_support(void)
{
    int major = 0, minor = 0;
    return sscanf(gnu_get_libc_version(), "%d.%d", &major, &minor) == 2 && (major > 2 || (major == 2 && minor >= 35));
}

/* The auditor line: where it is, or why it is not there. */
static void report_auditor(const char *library, bool audit)
{
    if (!audit) {
        say("auditor:", "left out (--no-audit or PQDEDUP_AUDIT=0): modules loaded with RTLD_DEEPBIND and "
                        "programs that find libpq with dlsym use plain libpq");
        return;
    }
    char *auditor = locate_auditor(library);
    if (auditor == NULL)
        say("auditor:", "none beside the library (x86_64 only): modules loaded with RTLD_DEEPBIND and dlsym "
                        "users use plain libpq");
    else if (!glibc_has_audit_support())
        say("auditor:", "%s, but glibc %s is older than 2.35: RTLD_DEEPBIND modules and dlsym users use "
                        "plain libpq", auditor, gnu_get_libc_version());
    else
        say("auditor:", "%s (in LD_AUDIT): reaches modules loaded at run time with RTLD_DEEPBIND and dlsym "
                        "users", auditor);
    free(auditor);
}

/* Follows `program` through PATH and #! lines to the file the kernel runs, into `path`.
 * Returns 0, or an exit code (with the verdict said) when it cannot be run. */
static int find_binary(const char *program, char path[PATH_MAX], const char **hint)
{
    if (!resolve_command(program, path)) {
        say("program:", "%s: not found%s (the launcher would exit 127)", program,
            strchr(program, '/') ? "" : " on PATH");
        return not_reached("no such program");
    }
    if (strcmp(program, path) == 0)
        say("program:", "%s", path);
    else
        say("program:", "%s: %s", program, path);
    for (int depth = 0;; depth++) {
        if (!is_executable_file(path)) {
            say("program:", "%s is not an executable file (the launcher would exit 126)", path);
            return not_reached("it cannot be run");
        }
        char interp[PATH_MAX], arg[PATH_MAX];
        if (!read_shebang(path, interp, arg)) {
            if (!is_elf_file(path)) {
                /* execvp runs a file it cannot exec (ENOEXEC) with /bin/sh. */
                say("script:", "no #! line and not ELF: execvp runs it with /bin/sh");
                snprintf(path, PATH_MAX, "/bin/sh");
                *hint = module_hint(path);
                continue;
            }
            return 0;
        }
        if (depth == MAX_SCRIPT_DEPTH)
            return not_reached("#! lines nested deeper than the kernel follows");
        struct stat st;
        if (stat(path, &st) == 0 && (st.st_mode & (S_ISUID | S_ISGID)))
            say("note:", "set-ID bits on a script are ignored by Linux");
        say("script:", "#!%s%s%s", interp, arg[0] ? " " : "", arg);
        char cmd[PATH_MAX];
        const char *base = strrchr(interp, '/');
        if (strcmp(base ? base + 1 : interp, "env") == 0 && env_command(arg, cmd)) {
            if (!resolve_command(cmd, path)) {
                say("runs:", "%s, through env: not found on PATH", cmd);
                return not_reached("the script's interpreter is not found");
            }
        } else if (realpath(interp, path) == NULL) {
            say("runs:", "%s: not found", interp);
            return not_reached("the script's interpreter is not found");
        }
        say("runs:", "%s", path);
        *hint = module_hint(path) ? module_hint(path) : "its extension modules, loaded at run time, decide";
        say("note:", "programs the script runs inherit LD_PRELOAD and LD_AUDIT: check them too");
    }
}

int check_program(const char *program, bool audit)
{
    char *library = locate_library();
    if (library == NULL) {
        say("library:", "libpqdedup.so not found; looked in:");
        locate_print_candidates(stdout, "            ");
        return not_reached("the launcher has no library to preload (it would exit 125)");
    }
    say("library:", "%s", library);

    char path[PATH_MAX];
    const char *hint = NULL;
    int rc = find_binary(program, path, &hint);
    if (rc != 0) {
        free(library);
        return rc;
    }
    if (hint == NULL)
        hint = module_hint(path);

    struct stat st;
    char why[256];
    if (stat(path, &st) == 0 && secure_execution(path, &st, why, sizeof why)) {
        say("set-ID:", "%s", why);
        free(library);
        return not_reached("the loader runs it in secure-execution mode");
    }

    struct elf_info info, self;
    if (elfinfo_read(path, &info) != 0) {
        say("ELF:", "%s cannot be read: %s", path, strerror(errno));
        free(library);
        return not_reached("its file cannot be read");
    }
    if (!info.is_elf) {
        say("ELF:", "%s is not an ELF file", path); /* /bin/sh, replaced by something else */
        free(library);
        return not_reached("no program the loader runs");
    }
    elfinfo_read("/proc/self/exe", &self);
    rc = CHECK_REACHED;
    char real_interp[PATH_MAX], real_self[PATH_MAX];
    if (!info.native) {
        say("ELF:", "%d-bit %s, not this launcher's %s: the loader skips libpqdedup.so",
            info.elf_class == 2 ? 64 : 32, elfinfo_machine_name(info.machine),
            elfinfo_machine_name(self.machine));
        rc = not_reached("pqdedup is built for another kind of program");
    } else if (!info.has_interp) {
        say("ELF:", "statically linked%s: no loader runs, so LD_PRELOAD and LD_AUDIT do nothing",
            info.has_dynamic ? " (static-pie)" : "");
        rc = not_reached("a static program: a libpq in it is out of reach");
    } else if (!self.has_interp || realpath(info.interp, real_interp) == NULL ||
               realpath(self.interp, real_self) == NULL || strcmp(real_interp, real_self) != 0) {
        say("ELF:", "dynamic, but its loader %s is not this system's %s", info.interp, self.interp);
        rc = not_reached("another C library's loader would not load libpqdedup.so");
    }
    if (rc != CHECK_REACHED) {
        elfinfo_free(&info);
        elfinfo_free(&self);
        free(library);
        return rc;
    }

    bool direct = false;
    for (size_t i = 0; i < info.n_needed; i++)
        direct = direct || strncmp(info.needed[i], "libpq.so", 8) == 0;
    say("ELF:", "dynamically linked, loader %s", info.interp);

    /* Which libpq the program loads by itself, and which one it gets under pqdedup. */
    static char list[MAX_LIST_OUTPUT];
    char own[PATH_MAX] = "", under[PATH_MAX] = "";
    int list_rc = loader_list(self.interp, path, NULL, list, sizeof list);
    bool own_listed = list_rc == 0 && listed_library(list, "libpq.so", own);
    if (list_rc != 0)
        say("libraries:", "the loader's --list failed (status %d): %s", list_rc, list);
    if (direct)
        say("libpq:", "linked directly (DT_NEEDED %s)", own_listed ? basename(own) : "libpq.so");
    else if (own_listed)
        say("libpq:", "loaded at start through another of its libraries");
    else
        say("libpq:", "not loaded at start");
    if (loader_list(self.interp, path, library, list, sizeof list) == 0 && listed_library(list, "libpq.so", under))
        say("under it:", "libpq is %s", under);
    if (strstr(list, "not found") != NULL)
        say("note:", "some of its libraries are not found: %s", list);
    if (hint != NULL)
        say("modules:", "%s", hint);
    report_auditor(library, audit);
    const char *disable = getenv("PQDEDUP_DISABLE");
    if (disable != NULL && disable[0] != '\0' && strcmp(disable, "0") != 0)
        say("note:", "PQDEDUP_DISABLE is set: the library would be loaded and pass every call to libpq");

    if (direct || own_listed)
        say("verdict:", "reached: libpq is loaded at start and libpqdedup.so is preloaded");
    else
        say("verdict:", "decided at run time: libpq is not loaded at start; when the program loads it "
                        "(an extension module, dlopen), libpqdedup.so%s reaches it",
            audit ? " with its auditor" : "");
    elfinfo_free(&info);
    elfinfo_free(&self);
    free(library);
    return CHECK_REACHED;
}
