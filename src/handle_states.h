/* handle_states.h: the one list of a handle's states, as an X-macro: X(NAME, what it means).
 * The enum comes from it (HANDLE_FREE first, = 0), handle.c the names it logs, the
 * live stats file stores the value and `pqdedup --stat` prints the name. Needs no other
 * header, so the launcher's reader includes it too. */
#ifndef PQDEDUP_HANDLE_STATES_H
#define PQDEDUP_HANDLE_STATES_H

#define HANDLE_STATES(X)                                                                        \
    X(FREE, "the slot is not in use (never connected, or finished)")                          \
    X(STARTED, "PQconnectStart* answered with a pooled server connection: bound, but until "   \
               "the app's first PQconnectPoll it reads CONNECTION_STARTED")                     \
    X(CONNECTING, "PQconnectStart* opening a new server connection: `conn` is libpq's "        \
                  "connection in progress, not yet in the pool (its bucket counts it)")         \
    X(PREPARING, "PQconnectStart* given a pooled connection whose reset or check is still in " \
                 "flight: bound, the app polls its socket")                                     \
    X(WAITING, "PQconnectStart* for which no server connection can be had now: the app polls " \
               "`wait` (a socket), which turns readable when one may be; `conn` is a failed "           \
               "connection saying why (the server's refusal), reported if none comes within "   \
               "PQDEDUP_MAX_WAIT")                                                              \
    X(BOUND, "`server` is bound: calls go to its connection")                                  \
    X(UNBOUND, "no server connection: reads are answered from `unbound`; the next call that "  \
               "needs the server binds one")                                                    \
    X(QUEUED, "a nonblocking handle sent a command (PQsend*) when no server connection could " \
              "be had without waiting: the command is kept (queued.c) and sent once one is; "   \
              "PQisBusy says busy, the app polls `wait` (a socket), which turns readable when " \
              "one may be, and at PQDEDUP_MAX_WAIT, when the command fails")                    \
    X(RESETTING, "a nonblocking handle's kept command (as QUEUED) got a server connection whose " \
                 "reset or check is still in flight: bound, the app polls its socket; the "      \
                 "command is sent once the reset is collected")                                  \
    X(DIRECT, "`conn` is a connection outside the pool for the rest of the handle's life: a "  \
              "connect or rebind that failed (status BAD, its error), or, in a forked child, "  \
              "the parent's connection that was in use at fork")

/* Every handle is in exactly one state; handle_set_state() (handle.c) is the one place that
 * changes it and checks the transition. */
enum handle_state {
#define HANDLE_STATE_ENUM(name, doc) HANDLE_##name,
    HANDLE_STATES(HANDLE_STATE_ENUM)
#undef HANDLE_STATE_ENUM
};

/* How many states there are. */
#define HANDLE_STATE_COUNT_ONE(name, doc) +1
#define HANDLE_STATE_COUNT (0 HANDLE_STATES(HANDLE_STATE_COUNT_ONE))

/* True for the states in which a handle holds a server connection of the pool. */
#define HANDLE_STATE_HOLDS_SERVER(state) \
    ((state) == HANDLE_BOUND || (state) == HANDLE_STARTED || (state) == HANDLE_PREPARING || \
     (state) == HANDLE_RESETTING)

#endif
