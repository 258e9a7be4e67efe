/* linked_libpq.c: a program linked with -lpq for test_check.sh; it leaves a mark if any of its code runs. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>

/* Runs at load, before main: `pqdedup --check` must never get this far. */
__attribute__((constructor)) static void leave_mark(void)
{
    const char *mark = getenv("PQD_CHECK_MARK");
    FILE *f = mark != NULL ? fopen(mark, "w") : NULL;
    if (f != NULL)
        fclose(f);
}

int main(void)
{
    printf("libpq %d\n", PQlibVersion());
    return 0;
}
