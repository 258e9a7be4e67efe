/* test_stats_forge.c: writes live stats files the library never writes, for test_stats.sh: a reused PID, a dead process's, a truncated one, garbage, another layout.
 *
 * Usage: test_stats_forge KIND DIR PID
 *   valid      a complete file for PID with its real start time (the process must exist)
 *   reused     the same, but the start time differs: PID now belongs to another process
 *   truncated  a correct header, then the file ends (1 KiB)
 *   garbage    4 KiB of bytes that are not a stats file
 *   layout     a complete file of layout version 99
 * The file is DIR/pqdedup-PID.stats, mode 0600, owned by the caller. Exit status 0 when
 * written, 1 otherwise. */
#define _GNU_SOURCE
#include "stats_file.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* PID's start time in clock ticks since boot, 0 when unknown. */
static uint64_t start_ticks(long pid)
{
    char path[64], stat[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = '\0';
    const char *p = strrchr(stat, ')');
    unsigned long long ticks = 0;
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                            &ticks) != 1)
        return 0;
    return ticks;
}

/* A header as the library writes it, for pid. */
static void fill_header(struct stats_file_header *h, long pid)
{
    memset(h, 0, sizeof *h);
    memcpy(h->magic, STATS_FILE_MAGIC, sizeof h->magic);
    h->version = STATS_FILE_VERSION;
    h->header_bytes = sizeof(struct stats_file_header);
    h->counters_bytes = sizeof(struct pqdedup_stats);
    h->key_bytes = sizeof(struct stats_file_key);
    h->site_bytes = sizeof(struct stats_file_site);
    h->handle_bytes = sizeof(struct stats_file_handle);
    h->keys = STATS_FILE_KEYS;
    h->sites = STATS_FILE_SITES;
    h->handles = STATS_FILE_HANDLES;
    h->file_bytes = STATS_FILE_BYTES;
    h->pid = (int32_t) pid;
    h->uid = (uint32_t) geteuid();
    h->start_ticks = start_ticks(pid);
    h->start_unix_ns = (int64_t) time(NULL) * 1000000000;
    atomic_init(&h->keys_used, 1);
    snprintf(h->program, sizeof h->program, "forged");
    snprintf(h->command, sizeof h->command, "forged by test_stats_forge");
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s valid|reused|truncated|garbage|layout DIR PID\n", argv[0]);
        return 1;
    }
    const char *kind = argv[1];
    long pid = atol(argv[3]);
    char path[4096];
    snprintf(path, sizeof path, "%s/" STATS_FILE_PREFIX "%ld" STATS_FILE_SUFFIX, argv[2], pid);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    struct stats_file_header h;
    fill_header(&h, pid);
    int ok = 1;
    if (strcmp(kind, "garbage") == 0) {
        char junk[4096];
        for (size_t i = 0; i < sizeof junk; i++)
            junk[i] = (char) (i * 7 + 13);
        ok = write(fd, junk, sizeof junk) == (ssize_t) sizeof junk;
    } else if (strcmp(kind, "truncated") == 0) {
        char part[1024] = { 0 };
        memcpy(part, &h, sizeof h < sizeof part ? sizeof h : sizeof part);
        ok = write(fd, part, sizeof part) == (ssize_t) sizeof part;
    } else {
        if (strcmp(kind, "reused") == 0)
            h.start_ticks += 12345;
        else if (strcmp(kind, "layout") == 0)
            h.version = 99;
        else if (strcmp(kind, "valid") != 0) {
            fprintf(stderr, "unknown kind %s\n", kind);
            ok = 0;
        }
        ok = ok && ftruncate(fd, (off_t) STATS_FILE_BYTES) == 0 && pwrite(fd, &h, sizeof h, 0) == (ssize_t) sizeof h;
        struct stats_file_key k;
        memset(&k, 0, sizeof k);
        snprintf(k.name, sizeof k.name, "(other keys)");
        ok = ok && pwrite(fd, &k, sizeof k, (off_t) STATS_FILE_KEYS_AT) == (ssize_t) sizeof k;
    }
    close(fd);
    return ok ? 0 : 1;
}
