/* finish.c: PQfinish of a handle: its server connection goes back to the pool, the handle away. */
#include "handle.h"
#include "log.h"
#include "pool.h"
#include "real.h"
#include "socket.h"

#include <errno.h>

#define EXPORT __attribute__((visibility("default")))

/* A bound handle's server connection is rolled back, reset and kept for the next handle, or
 * closed (pool.c); nothing of the app is called on it again. A second PQfinish of the same
 * handle is logged and ignored. Preserves errno. */
EXPORT void PQfinish(PGconn *conn)
{
    struct handle *h = handle_of(conn);
    if (h == NULL) {
        real.PQfinish(conn);
        return;
    }
    int saved_errno = errno;
    pthread_mutex_lock(&h->lock);
    if (h->depth++ == 0)
        h->owner = pthread_self();
    if (h->state == HANDLE_FREE) {
        h->depth--;
        pthread_mutex_unlock(&h->lock);
        log_msg(LOG_WARN, "PQfinish of a connection that was already finished; ignored");
        errno = saved_errno;
        return;
    }
    pool_keep_socket_copy(h); /* a bound handle's copy of the socket goes with its connection */
    socket_close(h); /* first: the server socket must not outlive libpq's close through it */
    pool_finish(h);
    handle_forget_view(h);
    handle_forget_session(h);
    handle_release(h);
    errno = saved_errno;
}
