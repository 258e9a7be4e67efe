/* stat_format.c: prints a snapshot of the live stats (stat_reader.h) as text for people, JSON
 * for scripts, or the Prometheus text exposition format for node_exporter's textfile
 * collector. Counter names, units and help come from stats.h's list, state names from
 * handle_states.h. */
#define _GNU_SOURCE
#include "stat_reader.h"

#include <string.h>
#include <strings.h>

static const char *const state_names[] = {
#define STAT_STATE_NAME(name, doc) #name,
    HANDLE_STATES(STAT_STATE_NAME)
#undef STAT_STATE_NAME
};

static const struct {
    const char *name, *metric, *help;
    enum stats_scope scope;
    enum stats_unit unit;
} counters[STAT_COUNTERS] = {
#define STAT_COUNTER_INFO(name, scope, unit, metric, help) \
    [STAT_##name] = { #name, metric, help, STATS_SCOPE_##scope, STATS_UNIT_##unit },
    STATS_COUNTERS(STAT_COUNTER_INFO)
#undef STAT_COUNTER_INFO
};

/* A counter's value in its display unit (seconds for times). */
static double counter_value(unsigned i, uint64_t raw)
{
    return counters[i].unit == STATS_UNIT_NS ? (double) raw / 1e9 : (double) raw;
}

/* A counter's name for people and JSON: times in seconds ("wait_ns" -> "wait_seconds"). */
static const char *counter_name(unsigned i, char *buf, size_t size)
{
    const char *name = counters[i].name;
    if (counters[i].unit == STATS_UNIT_NS)
        snprintf(buf, size, "%.*s_seconds", (int) strlen(name) - 3, name);
    else
        snprintf(buf, size, "%s", name);
    return buf;
}

/* "850ms", "12.3s", "3m05s", "2h07m", "3d04h". */
static const char *duration(double s, char *buf, size_t size)
{
    if (s < 1)
        snprintf(buf, size, "%.0fms", s * 1000);
    else if (s < 60)
        snprintf(buf, size, "%.1fs", s);
    else if (s < 3600)
        snprintf(buf, size, "%dm%02ds", (int) s / 60, (int) s % 60);
    else if (s < 86400)
        snprintf(buf, size, "%dh%02dm", (int) s / 3600, (int) s % 3600 / 60);
    else
        snprintf(buf, size, "%dd%02dh", (int) (s / 86400), (int) s % 86400 / 3600);
    return buf;
}

/* A key worth showing: the overflow record only when something landed there. */
static bool key_shown(const struct stat_process *p, unsigned i)
{
    const struct stat_key *k = &p->keys[i];
    if (i != 0)
        return true;
    for (unsigned c = 0; c < STAT_COUNTERS; c++)
        if (k->counters[c] != 0)
            return true;
    return k->handles_open > 0 || k->waiting > 0;
}

/* "module:function" of a site. */
static const char *site_text(const struct stat_process *p, unsigned site, char *buf, size_t size)
{
    const struct stat_site *s = &p->sites[site < p->nsites ? site : 0];
    if (s->function[0] != '\0')
        snprintf(buf, size, "%s:%s", s->module, s->function);
    else
        snprintf(buf, size, "%s", s->module);
    return buf;
}

/* A command line with passwords masked: the value of any password=... (PGPASSWORD=,
 * sslpassword=) and the password of a URI's user:password@. */
static const char *masked_command(const char *command, char *buf, size_t size)
{
    size_t o = 0;
    for (const char *p = command; *p != '\0' && o + 8 < size;) {
        if (strncasecmp(p, "password=", 9) == 0) {
            memcpy(buf + o, p, 9);
            o += 9;
            p += 9;
            size_t n = strcspn(p, " '\"&");
            if (n > 0) {
                memcpy(buf + o, "***", 3);
                o += 3;
                p += n;
            }
            continue;
        }
        if (strncmp(p, "://", 3) == 0) {
            memcpy(buf + o, p, 3);
            o += 3;
            p += 3;
            const char *at = p + strcspn(p, "@ /");
            const char *colon = memchr(p, ':', (size_t) (at - p));
            if (*at == '@' && colon != NULL && o + (size_t) (colon + 1 - p) + 8 < size) {
                memcpy(buf + o, p, (size_t) (colon + 1 - p));
                o += (size_t) (colon + 1 - p);
                memcpy(buf + o, "***", 3);
                o += 3;
                p = at;
            }
            continue;
        }
        buf[o++] = *p++;
    }
    buf[o] = '\0';
    return buf;
}

/* ---- text ----------------------------------------------------------------------------- */

static void print_counters_line(FILE *out, const uint64_t *values, bool per_key, const char *indent)
{
    int width = 0;
    fputs(indent, out);
    for (unsigned c = 0; c < STAT_COUNTERS; c++) {
        if (per_key && counters[c].scope != STATS_SCOPE_KEY)
            continue;
        char name[48], text[96];
        if (counters[c].unit == STATS_UNIT_NS)
            snprintf(text, sizeof text, "%s %.3f", counter_name(c, name, sizeof name),
                     counter_value(c, values[c]));
        else
            snprintf(text, sizeof text, "%s %llu", counters[c].name, (unsigned long long) values[c]);
        if (width > 0 && width + (int) strlen(text) + 2 > 96) {
            fprintf(out, "\n%s", indent);
            width = 0;
        }
        width += fprintf(out, "%s%s", width > 0 ? "  " : "", text);
    }
    fputc('\n', out);
}

void stat_print_text(FILE *out, const struct stat_snapshot *snap)
{
    if (snap->nprocesses == 0) {
        fprintf(out, "no process under pqdedup with live stats (in %s)\n", snap->dir);
        return;
    }
    for (unsigned i = 0; i < snap->nprocesses; i++) {
        const struct stat_process *p = &snap->processes[i];
        char up[32], command[sizeof p->command];
        fprintf(out, "%sPID %ld  %s  up %s  %s\n", i > 0 ? "\n" : "", p->pid, p->program,
                duration(p->uptime_s, up, sizeof up), masked_command(p->command, command, sizeof command));
        fprintf(out, "  settings: %s\n", p->settings);
        fprintf(out, "  process since start:\n");
        print_counters_line(out, p->counters, false, "    ");
        for (unsigned k = 0; k < p->nkeys; k++) {
            if (!key_shown(p, k))
                continue;
            const struct stat_key *key = &p->keys[k];
            char wait[32];
            fprintf(out, "  key %s\n", key->label);
            fprintf(out, "    handles now: %u open (%u bound, %u unbound, %u other); %u waiting%s%s\n",
                    key->handles_open, key->handles_bound, key->handles[HANDLE_UNBOUND],
                    key->handles_open - key->handles_bound - key->handles[HANDLE_UNBOUND], key->waiting,
                    key->waiting > 0 ? ", longest " : "",
                    key->waiting > 0 ? duration(key->longest_wait_s, wait, sizeof wait) : "");
            fprintf(out, "    server connections now: %ld open (%ld bound, %ld free, %ld being reset or checked)\n",
                    key->server_open, key->server_bound, key->server_free, key->server_busy);
            fprintf(out, "    since start:\n");
            print_counters_line(out, key->counters, true, "      ");
        }
        if (p->ngroups == 0) {
            fprintf(out, "  unfinished handles: none\n");
            continue;
        }
        fprintf(out, "  unfinished handles (open, not finished), by key and where they were opened:\n");
        fprintf(out, "    %6s  %-8s %-8s %-9s %-9s  %-34s  %s\n", "count", "oldest", "newest", "idle max", "idle min",
                "opened at", "key");
        for (unsigned g = 0; g < p->ngroups; g++) {
            const struct stat_group *grp = &p->groups[g];
            char a[32], b[32], c[32], d[32], site[160];
            fprintf(out, "    %6u  %-8s %-8s %-9s %-9s  %-34s  %s\n", grp->count, duration(grp->oldest_s, a, sizeof a),
                    duration(grp->newest_s, b, sizeof b), duration(grp->max_idle_s, c, sizeof c),
                    duration(grp->min_idle_s, d, sizeof d), site_text(p, grp->site, site, sizeof site),
                    p->keys[grp->key].label);
        }
    }
}

/* ---- JSON ----------------------------------------------------------------------------- */

/* A JSON string. */
static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *c = (const unsigned char *) s; *c != '\0'; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(out, "\\%c", *c);
        else if (*c < 0x20 || *c == 0x7f)
            fprintf(out, "\\u%04x", *c);
        else
            fputc(*c, out);
    }
    fputc('"', out);
}

static void json_counters(FILE *out, const uint64_t *values, bool per_key)
{
    fputc('{', out);
    bool first = true;
    for (unsigned c = 0; c < STAT_COUNTERS; c++) {
        if (per_key && counters[c].scope != STATS_SCOPE_KEY)
            continue;
        char name[48];
        fprintf(out, "%s\"%s\": ", first ? "" : ", ", counter_name(c, name, sizeof name));
        if (counters[c].unit == STATS_UNIT_NS)
            fprintf(out, "%.6f", counter_value(c, values[c]));
        else
            fprintf(out, "%llu", (unsigned long long) values[c]);
        first = false;
    }
    fputc('}', out);
}

void stat_print_json(FILE *out, const struct stat_snapshot *snap)
{
    fprintf(out, "{\"dir\": ");
    json_string(out, snap->dir);
    fprintf(out, ", \"processes\": [");
    for (unsigned i = 0; i < snap->nprocesses; i++) {
        const struct stat_process *p = &snap->processes[i];
        char command[sizeof p->command];
        fprintf(out, "%s\n  {\"pid\": %ld, \"uid\": %u, \"program\": ", i > 0 ? "," : "", p->pid, p->uid);
        json_string(out, p->program);
        fprintf(out, ", \"command\": ");
        json_string(out, masked_command(p->command, command, sizeof command));
        fprintf(out, ", \"file\": ");
        json_string(out, p->path);
        fprintf(out, ", \"start_time_unix\": %.3f, \"uptime_seconds\": %.3f, \"settings\": ", p->start_unix_s,
                p->uptime_s);
        json_string(out, p->settings);
        fprintf(out, ",\n   \"counters\": ");
        json_counters(out, p->counters, false);
        fprintf(out, ",\n   \"keys\": [");
        bool first = true;
        for (unsigned k = 0; k < p->nkeys; k++) {
            if (!key_shown(p, k))
                continue;
            const struct stat_key *key = &p->keys[k];
            fprintf(out, "%s\n    {\"key\": ", first ? "" : ",");
            json_string(out, key->label);
            fprintf(out, ", \"id\": \"%016llx\",\n     \"handles\": {\"open\": %u, \"bound\": %u, \"unbound\": %u, "
                         "\"waiting\": %u, \"longest_wait_seconds\": %.3f, \"states\": {",
                    (unsigned long long) key->id, key->handles_open, key->handles_bound, key->handles[HANDLE_UNBOUND],
                    key->waiting, key->longest_wait_s);
            for (unsigned s = 1; s < HANDLE_STATE_COUNT; s++)
                fprintf(out, "%s\"%s\": %u", s > 1 ? ", " : "", state_names[s], key->handles[s]);
            fprintf(out, "}},\n     \"server_connections\": {\"open\": %ld, \"bound\": %ld, \"free\": %ld, "
                         "\"busy\": %ld},\n     \"counters\": ",
                    key->server_open, key->server_bound, key->server_free, key->server_busy);
            json_counters(out, key->counters, true);
            fputc('}', out);
            first = false;
        }
        fprintf(out, "],\n   \"unfinished\": [");
        for (unsigned g = 0; g < p->ngroups; g++) {
            const struct stat_group *grp = &p->groups[g];
            const struct stat_site *site = &p->sites[grp->site];
            fprintf(out, "%s\n    {\"key\": ", g > 0 ? "," : "");
            json_string(out, p->keys[grp->key].label);
            fprintf(out, ", \"module\": ");
            json_string(out, site->module);
            fprintf(out, ", \"function\": ");
            json_string(out, site->function);
            fprintf(out, ", \"count\": %u, \"in_call\": %u, \"oldest_age_seconds\": %.3f, \"newest_age_seconds\": %.3f, "
                         "\"max_idle_seconds\": %.3f, \"min_idle_seconds\": %.3f, \"states\": {",
                    grp->count, grp->in_call, grp->oldest_s, grp->newest_s, grp->max_idle_s, grp->min_idle_s);
            for (unsigned s = 1; s < HANDLE_STATE_COUNT; s++)
                fprintf(out, "%s\"%s\": %u", s > 1 ? ", " : "", state_names[s], grp->handles[s]);
            fprintf(out, "}}");
        }
        fprintf(out, "]}");
    }
    fprintf(out, "],\n \"notes\": [");
    for (unsigned i = 0; i < snap->nnotes; i++) {
        fprintf(out, "%s\n  ", i > 0 ? "," : "");
        json_string(out, snap->notes[i]);
    }
    fprintf(out, "]}\n");
}

/* ---- Prometheus ------------------------------------------------------------------------ */

/* A label value: backslash, double quote and newline escaped. */
static void prom_value(FILE *out, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\' || *s == '"')
            fprintf(out, "\\%c", *s);
        else if (*s == '\n')
            fputs("\\n", out);
        else
            fputc(*s, out);
    }
}

/* The labels of a process, and of a key and a site when given. */
static void prom_labels(FILE *out, const struct stat_process *p, const struct stat_key *key, const char *site)
{
    char command[sizeof p->command];
    fputs("{process=\"", out);
    prom_value(out, p->program);
    fprintf(out, "\",pid=\"%ld\",command=\"", p->pid);
    prom_value(out, masked_command(p->command, command, sizeof command));
    fputc('"', out);
    if (key != NULL) {
        fputs(",key=\"", out);
        prom_value(out, key->label);
        fputc('"', out);
    }
    if (site != NULL) {
        fputs(",site=\"", out);
        prom_value(out, site);
        fputc('"', out);
    }
    fputc('}', out);
}

static void prom_family(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP pqdedup_%s %s\n# TYPE pqdedup_%s %s\n", name, help, name, type);
}

/* The per-key gauges: X(metric, help, expression of struct stat_key *k). Names follow
 * pgbouncer_exporter's pgbouncer_pools_* where the meaning is the same. */
#define PROM_KEY_GAUGES(X)                                                                                   \
    X("pools_client_connections", "Handles the program holds (connected, not finished).", k->handles_open)  \
    X("pools_client_active_connections", "Handles bound to a server connection.", k->handles_bound)        \
    X("pools_client_unbound_connections", "Handles idle without a server connection.",                      \
      k->handles[HANDLE_UNBOUND])                                                                           \
    X("pools_client_waiting_connections", "Connects and rebinds waiting for a server connection.",          \
      k->waiting)                                                                                           \
    X("pools_client_maxwait_seconds", "The longest of the current waits for a server connection.",          \
      k->longest_wait_s)                                                                                    \
    X("pools_server_connections", "Server connections open.", k->server_open)                              \
    X("pools_server_active_connections", "Server connections bound to a handle.", k->server_bound)         \
    X("pools_server_idle_connections", "Free server connections, kept for the next connect.", k->server_free) \
    X("pools_server_testing_connections", "Server connections being reset, checked or opened.", k->server_busy)

void stat_print_prometheus(FILE *out, const struct stat_snapshot *snap)
{
    prom_family(out, "process_start_time_seconds", "gauge",
                "Start time of a process under pqdedup, in seconds since the epoch.");
    for (unsigned i = 0; i < snap->nprocesses; i++) {
        const struct stat_process *p = &snap->processes[i];
        fputs("pqdedup_process_start_time_seconds", out);
        prom_labels(out, p, NULL, NULL);
        fprintf(out, " %.3f\n", p->start_unix_s);
    }
    for (unsigned c = 0; c < STAT_COUNTERS; c++) {
        char help[256];
        snprintf(help, sizeof help, "%c%s%s.", counters[c].help[0] - ('a' - 'A'), counters[c].help + 1,
                 counters[c].unit == STATS_UNIT_NS ? ", in seconds" : "");
        prom_family(out, counters[c].metric, "counter", help);
        for (unsigned i = 0; i < snap->nprocesses; i++) {
            const struct stat_process *p = &snap->processes[i];
            if (counters[c].scope == STATS_SCOPE_PROCESS) {
                fprintf(out, "pqdedup_%s", counters[c].metric);
                prom_labels(out, p, NULL, NULL);
                fprintf(out, " %.9g\n", counter_value(c, p->counters[c]));
                continue;
            }
            for (unsigned k = 0; k < p->nkeys; k++) {
                if (!key_shown(p, k))
                    continue;
                fprintf(out, "pqdedup_%s", counters[c].metric);
                prom_labels(out, p, &p->keys[k], NULL);
                fprintf(out, " %.9g\n", counter_value(c, p->keys[k].counters[c]));
            }
        }
    }
#define PROM_GAUGE(metric, help, expression)                                 \
    prom_family(out, metric, "gauge", help);                                 \
    for (unsigned i = 0; i < snap->nprocesses; i++) {                         \
        const struct stat_process *p = &snap->processes[i];                  \
        for (unsigned n = 0; n < p->nkeys; n++) {                             \
            const struct stat_key *k = &p->keys[n];                          \
            if (!key_shown(p, n))                                             \
                continue;                                                     \
            fputs("pqdedup_" metric, out);                                   \
            prom_labels(out, p, k, NULL);                                     \
            fprintf(out, " %.9g\n", (double) (expression));                  \
        }                                                                     \
    }
    PROM_KEY_GAUGES(PROM_GAUGE)
#undef PROM_GAUGE
    /* The leak report: open handles by key and by where the program opened them. */
    static const struct { const char *metric, *help; } leak[] = {
        { "unfinished_handles", "Handles the program opened and has not finished, by where it opened them." },
        { "unfinished_handles_oldest_age_seconds", "Age of the oldest of those handles." },
        { "unfinished_handles_max_idle_seconds", "The longest time since one of those handles was last used." },
    };
    for (unsigned m = 0; m < sizeof leak / sizeof leak[0]; m++) {
        prom_family(out, leak[m].metric, "gauge", leak[m].help);
        for (unsigned i = 0; i < snap->nprocesses; i++) {
            const struct stat_process *p = &snap->processes[i];
            for (unsigned g = 0; g < p->ngroups; g++) {
                const struct stat_group *grp = &p->groups[g];
                char site[160];
                fprintf(out, "pqdedup_%s", leak[m].metric);
                prom_labels(out, p, &p->keys[grp->key], site_text(p, grp->site, site, sizeof site));
                fprintf(out, " %.9g\n", m == 0 ? (double) grp->count : m == 1 ? grp->oldest_s : grp->max_idle_s);
            }
        }
    }
}
