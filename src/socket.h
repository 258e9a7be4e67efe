/* socket.h: the descriptor a handle gives the app for PQsocket, stable for the handle's life. */
#ifndef PQDEDUP_SOCKET_H
#define PQDEDUP_SOCKET_H

#include "handle.h"

/* Points h's descriptor, once the app has asked for one, at the socket of the connection h is
 * bound to, or at a descriptor that never becomes readable or writable while h has none
 * (dup3 onto the same number: poll and select see the change at their next call; an epoll
 * registration stays on the file it was made for). Caller holds h's lock. Preserves errno;
 * on failure the descriptor keeps what it pointed at. */
void socket_follow(struct handle *h);

/* Closes h's descriptor (at finish, before its connection may be closed: the server socket
 * must not outlive libpq's close through this copy). */
void socket_close(struct handle *h);

/* Closes *fd when it is open (>= 0) and sets it to -1; preserves errno. */
void socket_close_descriptor(int *fd);

#endif
