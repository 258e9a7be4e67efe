/* docs_settings.c: prints every pqdedup setting and its default as src/settings.c has them, for the documentation drift test (test_docs.sh).
 *
 * Output: one "NAME<TAB>DEFAULT" line per setting_table row, then the settings read outside
 * that table (extra_settings below). Defaults are the values `settings` starts with, written
 * the way the documentation writes them: durations in whole s or ms, booleans 0/1. */
#include "../src/settings.c"

#include <stdio.h>

/* Settings read with getenv outside setting_table, and their defaults. test_docs.sh fails
 * when src/ names a PQDEDUP_ variable that is in neither list. */
static const struct { const char *name, *default_text; } extra_settings[] = {
    { "PQDEDUP_AUDIT", "1" }, /* src/gotsweep.c and the launcher */
};

/* Writes the default of table row `s` as the documentation writes it. */
static void print_default(const struct setting *s)
{
    static const char *const levels[] = { "off", "error", "warn", "info", "debug" };
    switch (s->kind) {
    case KIND_BOOL:
        printf("%d", *(const bool *) s->target ? 1 : 0);
        return;
    case KIND_COUNT:
        printf("%d", *(const int *) s->target);
        return;
    case KIND_DURATION: {
        int64_t ns = *(const int64_t *) s->target;
        if (ns == 0)
            printf("0");
        else if (ns % NS_PER_SEC == 0)
            printf("%llds", (long long) (ns / NS_PER_SEC));
        else
            printf("%lldms", (long long) (ns / NS_PER_MS));
        return;
    }
    case KIND_STRING: {
        const char *text = *(const char *const *) s->target;
        /* A NULL log file is standard error (log.c); a NULL stats directory is chosen by
         * stats_file_dir (src/stats_dir.c). */
        printf("%s", text != NULL                                  ? text
                     : s->target == (void *) &settings.log_file  ? "stderr"
                     : s->target == (void *) &settings.stats_dir ? "auto"
                                                                 : "(none)");
        return;
    }
    case KIND_LEVEL:
        printf("%s", levels[*(const enum log_level *) s->target]);
        return;
    case KIND_RESET_MODE:
        printf("%s", *(const bool *) s->target ? "dirty" : "always");
        return;
    }
    printf("(a kind docs_settings.c does not know)");
}

int main(void)
{
    for (size_t i = 0; i < sizeof setting_table / sizeof setting_table[0]; i++) {
        printf("%s\t", setting_table[i].name);
        print_default(&setting_table[i]);
        printf("\n");
    }
    for (size_t i = 0; i < sizeof extra_settings / sizeof extra_settings[0]; i++)
        printf("%s\t%s\n", extra_settings[i].name, extra_settings[i].default_text);
    return 0;
}
