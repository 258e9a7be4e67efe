/* cancel.c: cancel objects of handles, which only ever cancel their own handle's query. */
#define _GNU_SOURCE
#include "handle.h"
#include "log.h"
#include "pool.h"
#include "real.h"
#include "slots.h"

#include <string.h>

#define EXPORT __attribute__((visibility("default")))

/*
 * PQgetCancel on a handle gives a cancel object of pqdedup's that names the handle, not a
 * backend: PQcancel sends libpq's cancel to the backend of the server connection the handle
 * is bound to at that moment, and nothing when it has none (then no query of it runs). While
 * the cancel is under way the handle cannot lose its connection (pool.c waits for
 * `cancelling` to drop), so a cancel never reaches a query of another handle that got the
 * connection since. PQcancel may run in a signal handler: it takes no lock and allocates
 * nothing; its objects live in a reserved range so it can tell them from libpq's.
 */
struct handle_cancel {
    struct handle *handle;
    uint32_t generation; /* of the handle when the object was made */
};

static struct slots cancel_slots = SLOTS_INIT(64, 65536, 64);
_Static_assert(sizeof(struct handle_cancel) <= 64, "struct handle_cancel outgrew its slot");

EXPORT PGcancel *PQgetCancel(PGconn *conn)
{
    struct handle *h = handle_of(conn);
    if (h == NULL)
        return real.PQgetCancel(conn);
    PGconn *server = handle_enter(h, false);
    PGcancel *result = NULL;
    switch (h->state) {
    case HANDLE_BOUND:
    case HANDLE_STARTED:
    case HANDLE_UNBOUND:
    case HANDLE_QUEUED:
    case HANDLE_RESETTING: {
        bool fresh;
        struct handle_cancel *c = slots_take(&cancel_slots, &fresh);
        if (c == NULL) {
            /* No slot left: a plain one for the backend it has now (unbound: none). */
            result = server != NULL ? real.PQgetCancel(server) : NULL;
            break;
        }
        c->handle = h;
        c->generation = atomic_load(&h->generation);
        pool_make_cancel_target(h);
        result = (PGcancel *) (void *) c;
        break;
    }
    default: /* connecting, or outside the pool: libpq's own */
        result = real.PQgetCancel(server);
        break;
    }
    handle_leave(h, true);
    return result;
}

/* Sends the cancel for h's current query, if it has a server connection. Signal-safe. */
static int cancel_handle(struct handle *h, uint32_t generation, char *errbuf, int errbufsize)
{
    int result = 1;
    atomic_fetch_add(&h->cancelling, 1);
    if (atomic_load(&h->generation) == generation) {
        PGcancel *target = atomic_load(&h->cancel_target);
        if (target != NULL)
            result = real.PQcancel(target, errbuf, errbufsize);
        else if (errbuf != NULL && errbufsize > 0)
            errbuf[0] = '\0';
    }
    atomic_fetch_sub(&h->cancelling, 1);
    return result;
}

EXPORT int PQcancel(PGcancel *cancel, char *errbuf, int errbufsize)
{
    struct handle_cancel *c = slots_find(&cancel_slots, cancel);
    if (c == NULL)
        return real.PQcancel(cancel, errbuf, errbufsize);
    return cancel_handle(c->handle, c->generation, errbuf, errbufsize);
}

EXPORT void PQfreeCancel(PGcancel *cancel)
{
    struct handle_cancel *c = slots_find(&cancel_slots, cancel);
    if (c == NULL) {
        real.PQfreeCancel(cancel);
        return;
    }
    c->handle = NULL;
    slots_give_back(&cancel_slots, c);
}

/* Deprecated, and not safe to call from a signal handler in libpq either; cancels the
 * handle's current query the same way, without taking its lock (another thread is usually
 * inside a call on it). */
EXPORT int PQrequestCancel(PGconn *conn)
{
    struct handle *h = handle_of(conn);
    if (h == NULL)
        return real.PQrequestCancel(conn);
    char errbuf[256];
    return cancel_handle(h, atomic_load(&h->generation), errbuf, sizeof errbuf);
}
