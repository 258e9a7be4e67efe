/* stats_dir.c: where the live stats files of this user go; shared by the library and the
 * launcher's reader (stats_file.h). */
#include "stats_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

char *stats_file_dir(const char *configured, char *buf, unsigned long size)
{
    const char *runtime = getenv("XDG_RUNTIME_DIR");
    if (configured != NULL && configured[0] != '\0')
        snprintf(buf, size, "%s", configured);
    else if (runtime != NULL && runtime[0] == '/')
        snprintf(buf, size, "%s/pqdedup", runtime);
    else if (geteuid() == 0)
        snprintf(buf, size, "/run/pqdedup");
    else
        snprintf(buf, size, "/tmp/pqdedup-%u", (unsigned) geteuid());
    return buf;
}
