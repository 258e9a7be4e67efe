/* socket.c: PQsocket: a descriptor of the handle's own that follows its server connection. */
#define _GNU_SOURCE
#include "socket.h"
#include "log.h"
#include "real.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* The read end of a pipe whose write end is kept open and never written: never readable,
 * never writable. One per process (a forked child shares it, harmlessly). */
static pthread_once_t quiet_once = PTHREAD_ONCE_INIT;
static int quiet_fd = -1;

static void make_quiet_fd(void)
{
    int ends[2];
    if (pipe2(ends, O_CLOEXEC) == 0)
        quiet_fd = ends[0];
}

static int quiet_descriptor(void)
{
    pthread_once(&quiet_once, make_quiet_fd);
    return quiet_fd;
}

/* What h's descriptor should point at now: its bound connection's socket, else the quiet one.
 * -1 when neither exists. */
static int target_of(const struct handle *h)
{
    if ((h->state == HANDLE_BOUND || h->state == HANDLE_STARTED) && h->conn != NULL) {
        int sock = real.PQsocket(h->conn);
        if (sock >= 0)
            return sock;
    }
    return quiet_descriptor();
}

void socket_follow(struct handle *h)
{
    if (h->fd < 0)
        return;
    int saved_errno = errno;
    int target = target_of(h);
    if (target >= 0 && target != h->fd && dup3(target, h->fd, O_CLOEXEC) < 0)
        log_msg(LOG_WARN, "cannot point a connection's descriptor at its new socket (%m)");
    errno = saved_errno;
}

void socket_close(struct handle *h)
{
    if (h->fd >= 0) {
        int saved_errno = errno;
        close(h->fd);
        h->fd = -1;
        errno = saved_errno;
    }
}

/* While connecting, and for connections outside the pool, libpq's own socket (it may change
 * during a connect, as libpq documents); while a connect waits for a server connection, a
 * descriptor that turns readable when one may be had. Once a handle is connected, a number of its own that
 * stays valid for the handle's life, so event loops that keep it (Ruby's pg memoizes the IO
 * object) never watch another handle's connection. A broken bound connection reads -1, as
 * with libpq. */
EXPORT int PQsocket(const PGconn *conn)
{
    struct handle *h = handle_of(conn);
    if (h == NULL)
        return real.PQsocket(conn);
    PGconn *server = handle_enter(h, false);
    int fd;
    switch (h->state) {
    case HANDLE_BOUND:
    case HANDLE_STARTED:
    case HANDLE_UNBOUND:
        if (server != NULL && real.PQsocket(server) < 0) {
            fd = -1;
            break;
        }
        if (h->fd < 0) {
            int saved_errno = errno;
            int target = target_of(h);
            h->fd = target >= 0 ? fcntl(target, F_DUPFD_CLOEXEC, 0) : -1;
            errno = saved_errno;
        }
        /* Out of descriptors: the connection's own, as plain libpq would give. */
        fd = h->fd >= 0 ? h->fd : server != NULL ? real.PQsocket(server) : -1;
        break;
    case HANDLE_WAITING:
        fd = h->wait_fd;
        break;
    default: /* CONNECTING, PREPARING (the connection's own, as it may change), DIRECT, FREE */
        fd = real.PQsocket(server);
        break;
    }
    handle_leave(h, true);
    return fd;
}
