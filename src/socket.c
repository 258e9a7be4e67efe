/* socket.c: PQsocket: a descriptor of the handle's own that follows whatever it waits on. */
#define _GNU_SOURCE
#include "socket.h"
#include "log.h"
#include "pool.h"
#include "real.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* One end of a socket pair whose other end is kept open and never read or written, with its
 * own send buffer filled: never readable, never writable. A socket, as some clients require of
 * PQsocket (Ruby's pg wraps it with BasicSocket.for_fd). One per process (a forked child
 * shares it, harmlessly). -1 when the system refuses. */
static pthread_once_t quiet_once = PTHREAD_ONCE_INIT;
static int quiet_fd = -1;

static void make_quiet_fd(void)
{
    int ends[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, ends) < 0)
        return;
    int smallest = 1; /* the kernel rounds it up to its minimum */
    setsockopt(ends[0], SOL_SOCKET, SO_SNDBUF, &smallest, sizeof smallest);
    char fill[4096] = { 0 };
    while (send(ends[0], fill, sizeof fill, MSG_DONTWAIT | MSG_NOSIGNAL) > 0)
        ;
    while (send(ends[0], fill, 1, MSG_DONTWAIT | MSG_NOSIGNAL) > 0)
        ;
    quiet_fd = ends[0];
}

static int quiet_descriptor(void)
{
    pthread_once(&quiet_once, make_quiet_fd);
    return quiet_fd;
}

/* What h's descriptor should point at now: the socket of the connection its calls go to
 * (bound, connecting, preparing, or outside the pool), its wake while it waits for one, the
 * quiet socket while unbound. -1 when there is none (a failed connection: PQsocket is then -1,
 * as with libpq). */
static int target_of(const struct handle *h)
{
    switch (h->state) {
    case HANDLE_WAITING:
    case HANDLE_QUEUED:
        return h->wait.fd;
    case HANDLE_UNBOUND:
        return quiet_descriptor();
    case HANDLE_FREE:
        return -1;
    default:
        return h->conn != NULL ? real.PQsocket(h->conn) : -1;
    }
}

void socket_follow(struct handle *h)
{
    if (h->fd < 0)
        return;
    int saved_errno = errno;
    int target = target_of(h);
    if (target < 0)
        target = quiet_descriptor(); /* nothing to wait on: never readable, as a closed one is not */
    if (target >= 0 && target != h->fd && dup3(target, h->fd, O_CLOEXEC) < 0) {
        log_msg(LOG_WARN, "cannot point a connection's descriptor at its new socket (%m)");
        target = -1;
    }
    h->fd_copies = target;
    errno = saved_errno;
}

void socket_close_descriptor(int *fd)
{
    if (*fd >= 0) {
        int saved_errno = errno;
        close(*fd);
        *fd = -1;
        errno = saved_errno;
    }
}

void socket_close(struct handle *h)
{
    socket_close_descriptor(&h->fd);
}

/* From the first call on, a number of the handle's own that stays valid until PQfinish and
 * always names a socket: while it connects, the socket libpq or the pool polls (it may change
 * behind the number, as libpq's own may during a connect), or one that turns readable when a
 * waiting connect should poll again; once connected, its bound server connection's socket, or
 * a quiet one while it is unbound. So event loops that keep it (Ruby's pg memoizes its IO
 * object and closes it at every connect poll) never watch, or close, another handle's
 * connection. A failed connection reads -1, as with libpq. */
EXPORT int PQsocket(const PGconn *conn)
{
    struct handle *h = handle_of(conn);
    if (h == NULL)
        return real.PQsocket(conn);
    handle_enter(h, false);
    int target = target_of(h);
    int fd = -1;
    if (target >= 0) {
        if (h->fd < 0) {
            if ((h->fd = pool_take_socket_copy(h)) < 0) {
                int saved_errno = errno;
                h->fd = fcntl(target, F_DUPFD_CLOEXEC, 0);
                errno = saved_errno;
            }
            h->fd_copies = h->fd >= 0 ? target : -1;
        }
        fd = h->fd >= 0 ? h->fd : target; /* out of descriptors: the real one, as libpq gives */
    }
    handle_leave(h, true);
    return fd;
}
