/* wake.c: wake sockets for asynchronous connects that wait, and the one timer thread that
 * fires them at a deadline. */
#define _GNU_SOURCE
#include "wake.h"
#include "clock.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <utlist.h>

static pthread_mutex_t timer_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t timer_changed;        /* on CLOCK_MONOTONIC; made with the thread */
static struct wake *timed;                  /* wakes waiting for their time (guarded by timer_lock) */
static bool timer_running;                  /* guarded by timer_lock */

void wake_init(struct wake *w)
{
    w->fd = w->writer = -1;
    atomic_store(&w->fired, false);
    w->timed = false;
    w->at = 0;
    w->prev = w->next = NULL;
}

bool wake_open(struct wake *w)
{
    int ends[2];
    wake_init(w);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, ends) < 0)
        return false;
    w->fd = ends[0];
    w->writer = ends[1];
    return true;
}

void wake_fire(struct wake *w)
{
    if (w->writer < 0 || atomic_exchange(&w->fired, true))
        return;
    int saved_errno = errno;
    ssize_t ignored = send(w->writer, "!", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void) ignored;
    errno = saved_errno;
}

void wake_drain(struct wake *w)
{
    if (w->fd < 0)
        return;
    int saved_errno = errno;
    atomic_store(&w->fired, false);
    char buf[8];
    while (recv(w->fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
        ;
    errno = saved_errno;
}

/* The timer thread: fires each timed wake when its time comes; sleeps while none is timed. */
static void *run_timer(void *unused)
{
    (void) unused;
    pthread_mutex_lock(&timer_lock);
    for (;;) {
        int64_t now = monotonic_ns(), next = INT64_MAX;
        struct wake *w, *tmp;
        DL_FOREACH_SAFE(timed, w, tmp) {
            if (w->at <= now) {
                DL_DELETE(timed, w);
                w->timed = false;
                wake_fire(w);
            } else if (w->at < next) {
                next = w->at;
            }
        }
        if (next == INT64_MAX) {
            pthread_cond_wait(&timer_changed, &timer_lock);
        } else {
            struct timespec until = { .tv_sec = next / NS_PER_SEC, .tv_nsec = next % NS_PER_SEC };
            pthread_cond_timedwait(&timer_changed, &timer_lock, &until);
        }
    }
    return NULL;
}

/* Starts the timer thread (timer_lock held). Returns false when it cannot be started. */
static bool start_timer(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&timer_changed, &attr);
    pthread_condattr_destroy(&attr);

    /* The thread inherits this mask: no signal of the app's is ever delivered to it. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t thread_attr;
    pthread_attr_init(&thread_attr);
    pthread_attr_setdetachstate(&thread_attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&thread_attr, 64 * 1024);
    pthread_t thread;
    int error = pthread_create(&thread, &thread_attr, run_timer, NULL);
    pthread_attr_destroy(&thread_attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (error != 0) {
        log_msg(LOG_WARN, "cannot start the timer thread of waiting connects (%s); they poll at once",
                strerror(error));
        return false;
    }
    pthread_setname_np(thread, "pqdedup-timer");
    timer_running = true;
    return true;
}

void wake_at(struct wake *w, int64_t when)
{
    if (w->writer < 0)
        return;
    pthread_mutex_lock(&timer_lock);
    if (!timer_running && !start_timer()) {
        pthread_mutex_unlock(&timer_lock);
        wake_fire(w);
        return;
    }
    if (!w->timed)
        DL_APPEND(timed, w);
    w->timed = true;
    w->at = when;
    pthread_cond_signal(&timer_changed);
    pthread_mutex_unlock(&timer_lock);
}

void wake_close(struct wake *w)
{
    if (w->writer >= 0) {
        pthread_mutex_lock(&timer_lock);
        if (w->timed)
            DL_DELETE(timed, w);
        w->timed = false;
        pthread_mutex_unlock(&timer_lock);
    }
    int saved_errno = errno;
    if (w->fd >= 0)
        close(w->fd);
    if (w->writer >= 0)
        close(w->writer);
    errno = saved_errno;
    wake_init(w);
}

void wake_lock_for_fork(void)
{
    pthread_mutex_lock(&timer_lock);
}

void wake_unlock_after_fork(bool in_child)
{
    if (in_child)
        timer_running = false; /* its thread is not in the child; the next wake_at starts one */
    pthread_mutex_unlock(&timer_lock);
}
