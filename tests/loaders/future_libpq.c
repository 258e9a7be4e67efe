/* future_libpq.c: the one function a "newer libpq" exports beyond libpq 15's (future_libpq.sh
 * links it into a libpq.so.5 with the whole of Debian's libpq.a). It takes a PGconn *, like a
 * function a later libpq could add: pqdedup cannot know whether it would be handed a handle, so
 * it must then pass every call through. */
#include <libpq-fe.h>

int PQfutureThing(PGconn *conn);
int PQfutureThing(PGconn *conn)
{
    return conn != NULL && PQstatus(conn) == CONNECTION_OK;
}
