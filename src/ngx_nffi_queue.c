/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Request queue and done stack; see ngx_nffi_queue.h.
 */

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "ngx_nffi_queue.h"


/* a sleep shorter than this means a spin would have found the task */
#define NGX_NFFI_SHORT_PARK_NS  200000

/* calls left behind by a take this recently: they come in bursts */
#define NGX_NFFI_BURST_NS       1000000

/* how long ngx_nffi_clock_init() measures the time-stamp counter's rate */
#define NGX_NFFI_CLOCK_CALIBRATION_NS  1000000


static int ngx_nffi_queue_take(ngx_nffi_queue_t *q, ngx_nffi_node_t **nodes,
    int max);
static void ngx_nffi_queue_signal(ngx_nffi_queue_t *q, int readable);
static int ngx_nffi_queue_open_wait_fd(ngx_nffi_queue_t *q);
static void ngx_nffi_queue_give(ngx_nffi_queue_t *q, unsigned most);
static void ngx_nffi_queue_unlock(ngx_nffi_queue_t *q);
static void ngx_nffi_queue_spin(ngx_nffi_queue_t *q, int budget);
static void ngx_nffi_queue_spin_wasted(ngx_nffi_queue_t *q);
static void ngx_nffi_queue_spin_wanted(ngx_nffi_queue_t *q);
#if defined(__x86_64__)
static int ngx_nffi_clock_kernel_uses_tsc(void);
static void ngx_nffi_clock_read_both(long long *ticks, long long *ns);
#endif


int            ngx_nffi_clock_tsc;
static double  ngx_nffi_clock_ns_per_tick = 1.0;


int
ngx_nffi_queue_init(ngx_nffi_queue_t *q, int spin_max)
{
    int                  rc;
    pthread_mutexattr_t  attr;

    if (pthread_mutexattr_init(&attr) != 0) {
        return -1;
    }

#if defined(__GLIBC__)
    /*
     * Held for a few instructions at a time: a main thread that found it
     * taken slept in the kernel (futex) until a poller let go, where a
     * short spin would have had it.
     */
    (void) pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif

    rc = pthread_mutex_init(&q->mutex, &attr);
    pthread_mutexattr_destroy(&attr);

    if (rc != 0) {
        return -1;
    }

    if (pthread_cond_init(&q->cond, NULL) != 0) {
        pthread_mutex_destroy(&q->mutex);
        return -1;
    }

    q->head = NULL;
    q->tail = NULL;
    q->length = 0;
    q->length_max = 0;
    q->sleepers = 0;
    q->spinners = 0;
    q->closed = 0;
    q->fd = -1;
    q->signalled = 0;
    q->wait_fd = -1;
    q->armed = 0;
    q->wakeups_given = 0;
    q->armed_ns = 0;
    q->burst_ns = 0;
    q->spin_max = spin_max < 0 ? 0 : spin_max;
    q->spin_budget = q->spin_max;

    return 0;
}


void
ngx_nffi_queue_destroy(ngx_nffi_queue_t *q)
{
    if (q->fd != -1) {
        close(q->fd);
    }

    if (q->wait_fd != -1) {
        close(q->wait_fd);
    }

    pthread_cond_destroy(&q->cond);
    pthread_mutex_destroy(&q->mutex);
}


int
ngx_nffi_queue_push(ngx_nffi_queue_t *q, ngx_nffi_node_t *node)
{
    return ngx_nffi_queue_push_chain(q, node, node, 1);
}


int
ngx_nffi_queue_push_chain(ngx_nffi_queue_t *q, ngx_nffi_node_t *first,
    ngx_nffi_node_t *last, unsigned n)
{
    int  sleeping;

    last->next = NULL;

    pthread_mutex_lock(&q->mutex);

    if (q->tail) {
        q->tail->next = first;

    } else {
        /* spinning consumers read head without the mutex */
        __atomic_store_n(&q->head, first, __ATOMIC_RELEASE);
    }

    q->tail = last;
    __atomic_store_n(&q->length, q->length + n, __ATOMIC_RELAXED);

    if (q->length > q->length_max) {
        __atomic_store_n(&q->length_max, q->length, __ATOMIC_RELAXED);
    }

    /*
     * A spinner takes the node: it looks at head again under the mutex
     * before it sleeps, and wakes a sleeper to help when it leaves nodes.
     * Waking a spare poller (Go keeps one) on every call would cost a futex
     * wake and the mutex at the end of the event-loop iteration.
     */
    sleeping = ((q->sleepers > 0 || q->armed > 0) && q->spinners == 0)
               || (q->fd != -1 && !q->signalled);

    pthread_mutex_unlock(&q->mutex);

    return sleeping;
}


void
ngx_nffi_queue_wake(ngx_nffi_queue_t *q)
{
    pthread_mutex_lock(&q->mutex);

    if (q->sleepers > 1 && q->length > 1) {
        pthread_cond_broadcast(&q->cond);

    } else if (q->sleepers > 0 && q->length > 0) {
        pthread_cond_signal(&q->cond);
    }

    if (q->length > 0) {
        ngx_nffi_queue_signal(q, 1);

        if (q->spinners == 0) {
            ngx_nffi_queue_give(q, q->length);
        }
    }

    ngx_nffi_queue_unlock(q);
}


int
ngx_nffi_queue_pop(ngx_nffi_queue_t *q, ngx_nffi_node_t **nodes, int max)
{
    int        n, budget;
    long long  parked;

    pthread_mutex_lock(&q->mutex);

    for ( ;; ) {
        if (q->head) {
            n = ngx_nffi_queue_take(q, nodes, max);
            ngx_nffi_queue_unlock(q);
            return n;
        }

        if (q->closed) {
            /* the other sleepers see it too: everyone gets the end */
            pthread_cond_broadcast(&q->cond);
            pthread_mutex_unlock(&q->mutex);
            return 0;
        }

        budget = __atomic_load_n(&q->spin_budget, __ATOMIC_RELAXED);

        if (budget > 0) {
            ngx_nffi_queue_spin(q, budget);

            if (q->head) {
                n = ngx_nffi_queue_take(q, nodes, max);
                ngx_nffi_queue_unlock(q);
                ngx_nffi_queue_spin_wanted(q);
                return n;
            }

            ngx_nffi_queue_spin_wasted(q);

            if (q->closed) {
                continue;
            }
        }

        parked = ngx_nffi_monotonic_ns();

        __atomic_store_n(&q->sleepers, q->sleepers + 1, __ATOMIC_RELAXED);
        pthread_cond_wait(&q->cond, &q->mutex);
        __atomic_store_n(&q->sleepers, q->sleepers - 1, __ATOMIC_RELAXED);

        if (q->head
            && ngx_nffi_monotonic_ns() - parked < NGX_NFFI_SHORT_PARK_NS)
        {
            ngx_nffi_queue_spin_wanted(q);
        }
    }
}


int
ngx_nffi_queue_try_pop(ngx_nffi_queue_t *q, ngx_nffi_node_t **nodes, int max)
{
    int  n;

    pthread_mutex_lock(&q->mutex);

    if (q->head) {
        n = ngx_nffi_queue_take(q, nodes, max);

    } else {
        n = q->closed ? -1 : 0;
    }

    ngx_nffi_queue_unlock(q);

    return n;
}


int
ngx_nffi_queue_take_or_arm(ngx_nffi_queue_t *q, ngx_nffi_node_t **nodes,
    int max)
{
    int  n, budget;

    pthread_mutex_lock(&q->mutex);

    if (ngx_nffi_queue_open_wait_fd(q) == -1) {
        pthread_mutex_unlock(&q->mutex);
        return -1;
    }

    budget = __atomic_load_n(&q->spin_budget, __ATOMIC_RELAXED);

    /* a consumer woken this soon after it armed: spinning would have done */
    if (q->head && budget < q->spin_max && q->armed_ns != 0
        && ngx_nffi_monotonic_ns() - q->armed_ns < NGX_NFFI_SHORT_PARK_NS)
    {
        q->armed_ns = 0;
        ngx_nffi_queue_spin_wanted(q);
    }

    /*
     * One spinner is enough for calls that come one at a time: the others
     * arm at once.  (In Go, two pollers waiting in C would hold both Ps
     * of a 2-CPU machine, and the scheduler's monitor would take them
     * back every 20 us.)  Calls that come in bursts are taken faster by
     * more spinners than through wake-ups.
     */
    if (q->head == NULL && !q->closed && budget > 0
        && (q->spinners == 0
            || ngx_nffi_monotonic_ns() - q->burst_ns < NGX_NFFI_BURST_NS))
    {
        ngx_nffi_queue_spin(q, budget);

        if (q->head) {
            ngx_nffi_queue_spin_wanted(q);

        } else {
            ngx_nffi_queue_spin_wasted(q);
        }
    }

    if (q->head) {
        n = ngx_nffi_queue_take(q, nodes, max);

    } else if (q->closed) {
        n = -1;

    } else {
        __atomic_store_n(&q->armed, q->armed + 1, __ATOMIC_RELAXED);
        q->armed_ns = ngx_nffi_monotonic_ns();
        n = 0;
    }

    ngx_nffi_queue_unlock(q);

    return n;
}


int
ngx_nffi_queue_wait_fd(ngx_nffi_queue_t *q)
{
    int  fd;

    pthread_mutex_lock(&q->mutex);
    fd = ngx_nffi_queue_open_wait_fd(q);
    pthread_mutex_unlock(&q->mutex);

    return fd;
}


/* under the mutex */

static int
ngx_nffi_queue_open_wait_fd(ngx_nffi_queue_t *q)
{
    if (q->wait_fd == -1) {
        q->wait_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC | EFD_SEMAPHORE);
    }

    return q->wait_fd;
}


/*
 * Under the mutex: wakes up to "most" armed consumers (one per node to
 * take) once the mutex is let go (ngx_nffi_queue_unlock()).  A wake-up may
 * find the node taken by a spinner; the consumer then arms again.
 */

static void
ngx_nffi_queue_give(ngx_nffi_queue_t *q, unsigned most)
{
    unsigned  wakeups;

    wakeups = q->armed < most ? q->armed : most;

    __atomic_store_n(&q->armed, q->armed - wakeups, __ATOMIC_RELAXED);
    q->wakeups_given += wakeups;
}


/*
 * Lets go of the mutex, then writes the wake-ups given under it: a
 * consumer woken while the mutex was still held found it taken and slept
 * in the kernel for it (futex), for a few Go calls in a hundred.
 */

static void
ngx_nffi_queue_unlock(ngx_nffi_queue_t *q)
{
    int       fd;
    ssize_t   n;
    uint64_t  count;

    count = q->wakeups_given;
    q->wakeups_given = 0;
    /* set once, before anybody armed: the same after the unlock */
    fd = q->wait_fd;

    pthread_mutex_unlock(&q->mutex);

    if (count == 0) {
        return;
    }

    do {
        n = write(fd, &count, sizeof(count));
    } while (n == -1 && errno == EINTR);
}


int
ngx_nffi_queue_fd(ngx_nffi_queue_t *q)
{
    int  fd;

    pthread_mutex_lock(&q->mutex);

    if (q->fd == -1) {
        q->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

        if (q->head || q->closed) {
            ngx_nffi_queue_signal(q, 1);
        }
    }

    fd = q->fd;

    pthread_mutex_unlock(&q->mutex);

    return fd;
}


void
ngx_nffi_queue_close(ngx_nffi_queue_t *q)
{
    pthread_mutex_lock(&q->mutex);
    __atomic_store_n(&q->closed, 1, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&q->cond);
    /* readable for good: every event loop waiting on it sees the end */
    ngx_nffi_queue_signal(q, 1);

    /* armed consumers wait on the wait fd: each gets its wake-up */
    ngx_nffi_queue_give(q, q->armed);
    ngx_nffi_queue_unlock(q);
}


void
ngx_nffi_queue_reopen(ngx_nffi_queue_t *q, int spin_max)
{
    pthread_mutex_lock(&q->mutex);
    __atomic_store_n(&q->closed, 0, __ATOMIC_RELAXED);
    spin_max = spin_max < 0 ? 0 : spin_max;
    __atomic_store_n(&q->spin_max, spin_max, __ATOMIC_RELAXED);
    __atomic_store_n(&q->spin_budget, spin_max, __ATOMIC_RELAXED);
    __atomic_store_n(&q->armed, 0, __ATOMIC_RELAXED);

    if (q->head == NULL) {
        ngx_nffi_queue_signal(q, 0);
    }

    pthread_mutex_unlock(&q->mutex);
}


static int
ngx_nffi_queue_take(ngx_nffi_queue_t *q, ngx_nffi_node_t **nodes, int max)
{
    int               n;
    ngx_nffi_node_t  *node;

    for (n = 0; n < max && q->head; n++) {
        node = q->head;
        __atomic_store_n(&q->head, node->next, __ATOMIC_RELAXED);
        node->next = NULL;
        nodes[n] = node;
    }

    if (q->head == NULL) {
        q->tail = NULL;

        if (!q->closed) {
            ngx_nffi_queue_signal(q, 0);
        }
    }

    __atomic_store_n(&q->length, q->length - n, __ATOMIC_RELAXED);

    /* tasks left and a consumer asleep: let it help */
    if (q->head && q->sleepers > 0) {
        pthread_cond_signal(&q->cond);
    }

    /* only consumers that arm look at bursts */
    if (q->head && q->wait_fd != -1) {
        q->burst_ns = ngx_nffi_monotonic_ns();

        if (q->spinners == 0) {
            ngx_nffi_queue_give(q, q->length);
        }
    }

    return n;
}


/*
 * Under the mutex: makes the eventfd readable or not.  Its counter is 0
 * while signalled is clear, so one write and one read of 1 flip it.
 */

static void
ngx_nffi_queue_signal(ngx_nffi_queue_t *q, int readable)
{
    uint64_t  one;
    ssize_t   n;

    if (q->fd == -1 || q->signalled == readable) {
        return;
    }

    one = 1;

    do {
        n = readable ? write(q->fd, &one, sizeof(one))
                     : read(q->fd, &one, sizeof(one));
    } while (n == -1 && errno == EINTR);

    q->signalled = readable;
}


/*
 * Under the mutex, which it lets go meanwhile: spins up to budget
 * sched_yield() rounds, counted as a spinner, until a node or the close
 * comes.
 */

static void
ngx_nffi_queue_spin(ngx_nffi_queue_t *q, int budget)
{
    int  round;

    /* counted under the mutex it holds anyway: no atomic RMW */
    __atomic_store_n(&q->spinners, q->spinners + 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&q->mutex);

    for (round = 0; round < budget; round++) {
        sched_yield();

        if (__atomic_load_n(&q->head, __ATOMIC_ACQUIRE) != NULL
            || __atomic_load_n(&q->closed, __ATOMIC_RELAXED))
        {
            break;
        }
    }

    pthread_mutex_lock(&q->mutex);
    __atomic_store_n(&q->spinners, q->spinners - 1, __ATOMIC_RELAXED);
}


static void
ngx_nffi_queue_spin_wasted(ngx_nffi_queue_t *q)
{
    int  budget;

    budget = __atomic_load_n(&q->spin_budget, __ATOMIC_RELAXED);
    __atomic_store_n(&q->spin_budget, budget / 2, __ATOMIC_RELAXED);
}


static void
ngx_nffi_queue_spin_wanted(ngx_nffi_queue_t *q)
{
    int  budget, max;

    budget = __atomic_load_n(&q->spin_budget, __ATOMIC_RELAXED);
    max = __atomic_load_n(&q->spin_max, __ATOMIC_RELAXED);

    /* spin_max may be as large as INT_MAX: no doubling past it */
    budget = (budget >= max / 2) ? max : budget * 2 + 1;

    __atomic_store_n(&q->spin_budget, budget, __ATOMIC_RELAXED);
}


void
ngx_nffi_queue_stats(ngx_nffi_queue_t *q, ngx_nffi_queue_stats_t *st)
{
    st->queued = __atomic_load_n(&q->length, __ATOMIC_RELAXED);
    st->queued_max = __atomic_load_n(&q->length_max, __ATOMIC_RELAXED);
    st->sleeping = __atomic_load_n(&q->sleepers, __ATOMIC_RELAXED)
                   + __atomic_load_n(&q->armed, __ATOMIC_RELAXED);
    st->spinning = __atomic_load_n(&q->spinners, __ATOMIC_RELAXED);
}


long long
ngx_nffi_monotonic_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (long long) ts.tv_sec * 1000000000 + ts.tv_nsec;
}


int
ngx_nffi_clock_init(int use_tsc)
{
#if defined(__x86_64__)
    long long  ticks0, ns0, ticks1, ns1;

    ngx_nffi_clock_tsc = 0;
    ngx_nffi_clock_ns_per_tick = 1.0;

    if (use_tsc == 0 || (use_tsc < 0 && !ngx_nffi_clock_kernel_uses_tsc())) {
        return 0;
    }

    ngx_nffi_clock_tsc = 1;

    /* both clocks run while this thread is off the CPU: no harm there */
    ngx_nffi_clock_read_both(&ticks0, &ns0);

    do {
        ngx_nffi_clock_read_both(&ticks1, &ns1);
    } while (ns1 - ns0 < NGX_NFFI_CLOCK_CALIBRATION_NS);

    ngx_nffi_clock_ns_per_tick = (double) (ns1 - ns0) / (ticks1 - ticks0);

    /* from 10 MHz to 100 GHz; anything else is no usable counter */
    if (ticks1 <= ticks0
        || ngx_nffi_clock_ns_per_tick > 100.0
        || ngx_nffi_clock_ns_per_tick < 0.01)
    {
        ngx_nffi_clock_tsc = 0;
        ngx_nffi_clock_ns_per_tick = 1.0;
    }

    return ngx_nffi_clock_tsc;
#else
    (void) use_tsc;

    return 0;
#endif
}


long long
ngx_nffi_clock_ns(long long ticks)
{
    return (long long) (ticks * ngx_nffi_clock_ns_per_tick);
}


#if defined(__x86_64__)

static int
ngx_nffi_clock_kernel_uses_tsc(void)
{
    int      fd;
    char     name[8];
    ssize_t  n;

    fd = open("/sys/devices/system/clocksource/clocksource0/"
              "current_clocksource", O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        return 0;
    }

    n = read(fd, name, sizeof(name));
    close(fd);

    return n == 4 && memcmp(name, "tsc\n", 4) == 0;
}


/* the pair read closest together of a few: a preemption between spoils one */

static void
ngx_nffi_clock_read_both(long long *ticks, long long *ns)
{
    int        i;
    long long  before, now, after, gap, best;

    best = -1;

    for (i = 0; i < 5; i++) {
        before = ngx_nffi_monotonic_ns();
        now = ngx_nffi_clock_ticks();
        after = ngx_nffi_monotonic_ns();
        gap = after - before;

        if (best == -1 || gap < best) {
            best = gap;
            *ticks = now;
            *ns = before + gap / 2;
        }
    }
}

#endif


int
ngx_nffi_stack_push(ngx_nffi_stack_t *s, ngx_nffi_node_t *node)
{
    return ngx_nffi_stack_push_chain(s, node, node);
}


int
ngx_nffi_stack_push_chain(ngx_nffi_stack_t *s, ngx_nffi_node_t *first,
    ngx_nffi_node_t *last)
{
    ngx_nffi_node_t  *top;

    top = __atomic_load_n(&s->top, __ATOMIC_RELAXED);

    do {
        last->next = top;
    } while (!__atomic_compare_exchange_n(&s->top, &top, first, 1,
                                          __ATOMIC_RELEASE,
                                          __ATOMIC_RELAXED));

    return top == NULL;
}


ngx_nffi_node_t *
ngx_nffi_stack_take_all(ngx_nffi_stack_t *s)
{
    ngx_nffi_node_t  *node, *next, *oldest_first;

    /*
     * A load first: the event loop polls an empty stack, and an exchange
     * would take its cache line from the thread about to push each time.
     */
    if (__atomic_load_n(&s->top, __ATOMIC_RELAXED) == NULL) {
        return NULL;
    }

    node = __atomic_exchange_n(&s->top, NULL, __ATOMIC_ACQUIRE);
    oldest_first = NULL;

    while (node) {
        next = node->next;
        node->next = oldest_first;
        oldest_first = node;
        node = next;
    }

    return oldest_first;
}
