/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Unit tests for src/ngx_nffi_queue.c: the request queue (any number of
 * producers and consumers, adaptive spinning) and the done stack (any
 * number of producers, one consumer).  Meant to run under ThreadSanitizer;
 * a SIGALRM watchdog fails a test that hangs.
 */

/* usleep(), sigaction() and clock_gettime() with -std=c99 too */
#define _GNU_SOURCE

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ngx_nffi_queue.h"


#ifndef TEST_WATCHDOG_S
#define TEST_WATCHDOG_S      60
#endif
#define TEST_MAX_REPORTS     20

#define SPSC_ITEMS           50000

#define MPMC_PRODUCERS       4
#define MPMC_CONSUMERS       3
#define MPMC_ITEMS           50000
#define MPMC_ROUNDS          4
#define MPMC_BATCH_MAX       16
/* producers with an odd id defer their wakes over this many pushes */
#define MPMC_WAKE_BATCH      8
/* producers with an id of 2 or more push chains of 1 to this many nodes */
#define MPMC_CHAIN_MAX       7

/* how an mpmc consumer waits */
#define MPMC_BLOCKING        0
/* takes without waiting and waits on the eventfd, as event loops do */
#define MPMC_EVENT_LOOP      1
/* takes or arms, and waits on the wait fd, as Go's pollers do */
#define MPMC_ARMED           2

/* a wait on the eventfd this long means a lost wakeup */
#define EVENT_LOOP_WAIT_MS   10000
#define FD_WAITERS           3

#define CLOSE_CONSUMERS      3
#define CLOSE_ITEMS          1000

#define PING_PONG_ROUNDS     10000

#define SPREAD_CONSUMERS     3
/* how long a consumer holding a node waits for the others to get one */
#define SPREAD_WAIT_MS       5000

#define STACK_PRODUCERS      4
#define STACK_ITEMS          100000
#define STACK_ROUNDS         3


#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            test_fail(__FILE__, __LINE__, #cond);                             \
        }                                                                     \
    } while (0)


typedef struct {
    ngx_nffi_node_t      node;      /* first: a node is its item */
    int                  producer;
    int                  seq;
} test_item_t;

#define test_item(n)                                                          \
    ((test_item_t *) ((char *) (n) - offsetof(test_item_t, node)))


typedef struct {
    const char          *name;
    void               (*run)(void);
} test_t;


typedef struct {
    ngx_nffi_queue_t    *q;
    test_item_t         *items;
    int                  count;
} spsc_producer_t;


typedef struct {
    ngx_nffi_queue_t    *q;
    int                  max;
    int                  received;
} spsc_consumer_t;


typedef struct {
    ngx_nffi_queue_t    *q;
    test_item_t         *items;     /* this producer's */
    int                  id;
    int                  count;
    int                  batched_wake;
    int                  chains;
} mpmc_producer_t;


typedef struct {
    ngx_nffi_queue_t    *q;
    unsigned            *seen;      /* [producer * per_producer + seq] */
    int                  producers;
    int                  per_producer;
    unsigned             seed;
    int                  received;
    int                  after_end;
    /* how it waits: MPMC_BLOCKING, MPMC_EVENT_LOOP or MPMC_ARMED */
    int                  event_loop;
    long                 wakes_for_nothing;
} mpmc_consumer_t;


typedef struct {
    ngx_nffi_queue_t    *in;
    ngx_nffi_queue_t    *out;
    int                  echoed;
} ping_pong_t;


typedef struct {
    ngx_nffi_queue_t    *q;
    int                 *holding;
    int                 *finished;
    int                  together;
    int                  after_end;
} spread_t;


typedef struct {
    ngx_nffi_queue_t    *q;
    int                 *waiting;
    int                  saw_end;
} fd_waiter_t;


typedef struct {
    ngx_nffi_stack_t    *s;
    test_item_t         *items;     /* this producer's */
    unsigned char       *pushed_empty;
    int                  id;
    int                  count;
} stack_producer_t;


typedef struct {
    ngx_nffi_stack_t    *s;
    test_item_t         *items;     /* all of them */
    unsigned char       *first;     /* the oldest node of a batch */
    unsigned char       *seen;
    int                 *done;
    int                  producers;
    int                  per_producer;
    int                  received;
    long                 batches;
} stack_consumer_t;


static void test_fail(const char *file, int line, const char *what);
static void test_watchdog(int signo);
static double test_now(void);
static unsigned test_random(unsigned *state);
static int test_wait_sleepers(ngx_nffi_queue_t *q, unsigned n);
static int test_spin_budget_sane(ngx_nffi_queue_t *q);

static void *spsc_producer(void *data);
static void *spsc_consumer(void *data);
static void spsc_run(int spin_max, int max);
static void *mpmc_producer(void *data);
static void *mpmc_consumer(void *data);
static int event_loop_pop(mpmc_consumer_t *c, ngx_nffi_node_t **nodes,
    int max);
static int fd_readable(int fd, int timeout_ms);
static void *fd_waiter(void *data);
static int armed_pop(mpmc_consumer_t *c, ngx_nffi_node_t **nodes, int max);
static void mpmc_run(int spin_max, unsigned seed, int event_loops,
    int armed);
static int mpmc_join(pthread_t *ct, mpmc_consumer_t *c, int consumers,
    unsigned *seen, int total);
static void close_run(int spin_max, int items);
static void *ping_pong_echo(void *data);
static void ping_pong_run(int spin_max);
static void *spread_consumer(void *data);
static void *stack_producer(void *data);
static void *stack_consumer(void *data);
static void stack_mpsc_run(void);

static void test_pop_in_order(ngx_nffi_queue_t *q, int count);
static void test_queue_fifo_sequential(void);
static void test_queue_spsc_spin0(void);
static void test_queue_spsc_spin50(void);
static void test_queue_mpmc_spin0(void);
static void test_queue_mpmc_spin50(void);
static void test_queue_close_drains_sequential(void);
static void test_queue_close_wakes_sleepers(void);
static void test_queue_close_wakes_spinners(void);
static void test_queue_close_drains_threads(void);
static void test_queue_wake_spreads(void);
static void test_queue_ping_pong_spin0(void);
static void test_queue_ping_pong_spin50(void);
static void *huge_spin_consumer(void *data);
static void test_queue_huge_spin_grows_safely(void);
static void test_queue_close_stops_a_huge_spin(void);
static void test_queue_push_asks_no_wake_while_one_spins(void);
static void test_queue_reopen(void);
static void test_queue_fd_level(void);
static void test_queue_fd_mixed_pollers(void);
static void test_queue_fd_close_wakes_waiters(void);
static int wait_fd_count(int fd);
static void test_queue_armed_wakeups(void);
static void *armed_spinner(void *data);
static void test_queue_armed_no_write_while_one_spins(void);
static void *armed_waiter(void *data);
static void test_queue_armed_close_wakes_waiters(void);
static void test_queue_armed_mpmc(void);
static int wait_spinning(ngx_nffi_queue_t *q, unsigned n);
static void test_queue_armed_spinners_follow_bursts(void);
static void test_stack_sequential(void);
static void test_stack_mpsc(void);
static int clock_agrees_with_clock_gettime(void);
static void test_clock_modes(void);


static int          test_failures;
static const char  *test_current = "";


static const test_t  tests[] = {
    { "queue_fifo_sequential", test_queue_fifo_sequential },
    { "queue_spsc_spin0", test_queue_spsc_spin0 },
    { "queue_spsc_spin50", test_queue_spsc_spin50 },
    { "queue_mpmc_spin0", test_queue_mpmc_spin0 },
    { "queue_mpmc_spin50", test_queue_mpmc_spin50 },
    { "queue_close_drains_sequential", test_queue_close_drains_sequential },
    { "queue_close_wakes_sleepers", test_queue_close_wakes_sleepers },
    { "queue_close_wakes_spinners", test_queue_close_wakes_spinners },
    { "queue_close_drains_threads", test_queue_close_drains_threads },
    { "queue_wake_spreads", test_queue_wake_spreads },
    { "queue_ping_pong_spin0", test_queue_ping_pong_spin0 },
    { "queue_ping_pong_spin50", test_queue_ping_pong_spin50 },
    { "queue_huge_spin_grows_safely", test_queue_huge_spin_grows_safely },
    { "queue_close_stops_a_huge_spin", test_queue_close_stops_a_huge_spin },
    { "queue_push_asks_no_wake_while_one_spins",
      test_queue_push_asks_no_wake_while_one_spins },
    { "queue_reopen", test_queue_reopen },
    { "queue_fd_level", test_queue_fd_level },
    { "queue_fd_mixed_pollers", test_queue_fd_mixed_pollers },
    { "queue_fd_close_wakes_waiters", test_queue_fd_close_wakes_waiters },
    { "queue_armed_wakeups", test_queue_armed_wakeups },
    { "queue_armed_no_write_while_one_spins",
      test_queue_armed_no_write_while_one_spins },
    { "queue_armed_close_wakes_waiters",
      test_queue_armed_close_wakes_waiters },
    { "queue_armed_mpmc", test_queue_armed_mpmc },
    { "queue_armed_spinners_follow_bursts",
      test_queue_armed_spinners_follow_bursts },
    { "stack_sequential", test_stack_sequential },
    { "stack_mpsc", test_stack_mpsc },
    { "clock_modes", test_clock_modes },
};


static void
test_fail(const char *file, int line, const char *what)
{
    int  n;

    n = __atomic_fetch_add(&test_failures, 1, __ATOMIC_RELAXED);

    if (n < TEST_MAX_REPORTS) {
        fprintf(stderr, "%s:%d: %s: check failed: %s\n",
                file, line, test_current, what);
    }
}


static void
test_watchdog(int signo)
{
    static const char  head[] = "FAILED: watchdog: ";
    static const char  tail[] = " hung (deadlock or lost wakeup)\n";
    ssize_t            rc;

    (void) signo;

    rc = write(STDERR_FILENO, head, sizeof(head) - 1);
    rc = write(STDERR_FILENO, test_current, strlen(test_current));
    rc = write(STDERR_FILENO, tail, sizeof(tail) - 1);
    (void) rc;

    _exit(1);
}


static double
test_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static unsigned
test_random(unsigned *state)
{
    unsigned  x;

    x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;

    return x;
}


/* waits up to 10 s for n consumers to sleep in the queue's condvar */

static int
test_wait_sleepers(ngx_nffi_queue_t *q, unsigned n)
{
    int       i;
    unsigned  sleepers;

    for (i = 0; i < 10000; i++) {
        pthread_mutex_lock(&q->mutex);
        sleepers = q->sleepers;
        pthread_mutex_unlock(&q->mutex);

        if (sleepers >= n) {
            return 1;
        }

        usleep(1000);
    }

    return 0;
}


static int
test_spin_budget_sane(ngx_nffi_queue_t *q)
{
    int  budget;

    budget = __atomic_load_n(&q->spin_budget, __ATOMIC_RELAXED);

    return budget >= 0 && budget <= q->spin_max;
}


/* one producer, one consumer */

static void *
spsc_producer(void *data)
{
    spsc_producer_t  *p = data;

    int  i;

    for (i = 0; i < p->count; i++) {
        p->items[i].producer = 0;
        p->items[i].seq = i;

        if (ngx_nffi_queue_push(p->q, &p->items[i].node)) {
            ngx_nffi_queue_wake(p->q);
        }
    }

    return NULL;
}


static void *
spsc_consumer(void *data)
{
    spsc_consumer_t  *c = data;

    int               i, n, expect;
    ngx_nffi_node_t  *nodes[MPMC_BATCH_MAX];

    expect = 0;

    for ( ;; ) {
        n = ngx_nffi_queue_pop(c->q, nodes, c->max);

        if (n == 0) {
            break;
        }

        if (n < 0 || n > c->max) {
            CHECK(n > 0 && n <= c->max);
            break;
        }

        for (i = 0; i < n; i++) {
            CHECK(nodes[i]->next == NULL);

            if (test_item(nodes[i])->seq != expect) {
                CHECK(test_item(nodes[i])->seq == expect);
                c->received = expect;
                return NULL;
            }

            expect++;
        }
    }

    c->received = expect;

    return NULL;
}


static void
spsc_run(int spin_max, int max)
{
    pthread_t          pt, ct;
    test_item_t       *items;
    spsc_consumer_t    c;
    spsc_producer_t    p;
    ngx_nffi_queue_t   q;

    items = calloc(SPSC_ITEMS, sizeof(test_item_t));
    CHECK(items != NULL);
    if (items == NULL) {
        return;
    }

    CHECK(ngx_nffi_queue_init(&q, spin_max) == 0);

    p.q = &q;
    p.items = items;
    p.count = SPSC_ITEMS;

    c.q = &q;
    c.max = max;
    c.received = -1;

    CHECK(pthread_create(&ct, NULL, spsc_consumer, &c) == 0);
    CHECK(pthread_create(&pt, NULL, spsc_producer, &p) == 0);

    pthread_join(pt, NULL);
    ngx_nffi_queue_close(&q);
    pthread_join(ct, NULL);

    CHECK(c.received == SPSC_ITEMS);
    CHECK(test_spin_budget_sane(&q));

    ngx_nffi_queue_destroy(&q);
    free(items);
}


/* several producers, several consumers */

static void *
mpmc_producer(void *data)
{
    mpmc_producer_t  *p = data;

    int  i, n, j, pending, sleeping;

    pending = 0;

    for (i = 0; i < p->count; i += n) {
        n = 1;

        if (p->chains) {
            n = 1 + i % MPMC_CHAIN_MAX;
            n = n < p->count - i ? n : p->count - i;
        }

        for (j = i; j < i + n; j++) {
            p->items[j].producer = p->id;
            p->items[j].seq = j;
            p->items[j].node.next = (j + 1 < i + n) ? &p->items[j + 1].node
                                                    : NULL;
        }

        if (n == 1) {
            sleeping = ngx_nffi_queue_push(p->q, &p->items[i].node);

        } else {
            sleeping = ngx_nffi_queue_push_chain(p->q, &p->items[i].node,
                                                 &p->items[i + n - 1].node,
                                                 (unsigned) n);
        }

        if (sleeping) {
            if (p->batched_wake) {
                pending = 1;

            } else {
                ngx_nffi_queue_wake(p->q);
            }
        }

        if (pending
            && ((i + n) / MPMC_WAKE_BATCH != i / MPMC_WAKE_BATCH
                || i + n == p->count))
        {
            ngx_nffi_queue_wake(p->q);
            pending = 0;
        }
    }

    return NULL;
}


static void *
mpmc_consumer(void *data)
{
    mpmc_consumer_t  *c = data;

    int               i, n, max, last[MPMC_PRODUCERS];
    test_item_t      *item;
    ngx_nffi_node_t  *nodes[MPMC_BATCH_MAX];

    for (i = 0; i < MPMC_PRODUCERS; i++) {
        last[i] = -1;
    }

    for ( ;; ) {
        max = 1 + test_random(&c->seed) % MPMC_BATCH_MAX;

        switch (c->event_loop) {

        case MPMC_EVENT_LOOP:
            n = event_loop_pop(c, nodes, max);
            break;

        case MPMC_ARMED:
            n = armed_pop(c, nodes, max);
            break;

        default:
            n = ngx_nffi_queue_pop(c->q, nodes, max);
        }

        if (n == 0) {
            break;
        }

        if (n < 0 || n > max) {
            CHECK(n > 0 && n <= max);
            break;
        }

        for (i = 0; i < n; i++) {
            item = test_item(nodes[i]);

            CHECK(nodes[i]->next == NULL);

            if (item->producer < 0 || item->producer >= c->producers
                || item->seq < 0 || item->seq >= c->per_producer)
            {
                CHECK(!"node out of range");
                continue;
            }

            /* FIFO per producer, as seen by this consumer */
            CHECK(item->seq > last[item->producer]);
            last[item->producer] = item->seq;

            __atomic_fetch_add(&c->seen[item->producer * c->per_producer
                                        + item->seq],
                               1, __ATOMIC_RELAXED);
            c->received++;
        }
    }

    /* the end is sticky */
    if (c->event_loop == MPMC_EVENT_LOOP) {
        c->after_end = ngx_nffi_queue_try_pop(c->q, nodes, MPMC_BATCH_MAX)
                       + 1;

    } else if (c->event_loop == MPMC_ARMED) {
        c->after_end = ngx_nffi_queue_take_or_arm(c->q, nodes,
                                                  MPMC_BATCH_MAX) + 1;

    } else {
        c->after_end = ngx_nffi_queue_pop(c->q, nodes, MPMC_BATCH_MAX);
    }

    return NULL;
}


/*
 * ngx_nffi_queue_pop() the way an event loop does it: take without
 * waiting, wait on the eventfd when there was nothing.  A wait that times
 * out is a lost wakeup.  Returns 0 at the end, as pop does.
 */

static int
event_loop_pop(mpmc_consumer_t *c, ngx_nffi_node_t **nodes, int max)
{
    int  n, fd, woken;

    fd = ngx_nffi_queue_fd(c->q);
    CHECK(fd != -1);
    woken = 0;

    for ( ;; ) {
        n = ngx_nffi_queue_try_pop(c->q, nodes, max);

        if (n != 0) {
            return n < 0 ? 0 : n;
        }

        c->wakes_for_nothing += woken;

        /* nothing taken: the fd is not readable until the next push */
        if (!fd_readable(fd, EVENT_LOOP_WAIT_MS)) {
            CHECK(!"lost wakeup: the eventfd stayed unreadable");
            return 0;
        }

        woken = 1;
    }
}


/*
 * ngx_nffi_queue_pop() the way Go's pollers do it: take or arm, and when
 * armed, wait for a wake-up on the wait fd and read it.  Another consumer
 * may read the wake-up first: then wait again, still armed.  A wait that
 * times out is a lost wakeup.  Returns 0 at the end, as pop does.
 */

static int
armed_pop(mpmc_consumer_t *c, ngx_nffi_node_t **nodes, int max)
{
    int       n, fd, woken;
    uint64_t  wakeup;

    fd = ngx_nffi_queue_wait_fd(c->q);
    CHECK(fd != -1);
    woken = 0;

    for ( ;; ) {
        n = ngx_nffi_queue_take_or_arm(c->q, nodes, max);

        if (n != 0) {
            return n < 0 ? 0 : n;
        }

        c->wakes_for_nothing += woken;

        do {
            if (!fd_readable(fd, EVENT_LOOP_WAIT_MS)) {
                CHECK(!"lost wakeup: the wait fd stayed unreadable");
                return 0;
            }

        } while (read(fd, &wakeup, sizeof(wakeup)) == -1
                 && (errno == EAGAIN || errno == EINTR));

        CHECK(wakeup == 1);
        woken = 1;
    }
}


static int
fd_readable(int fd, int timeout_ms)
{
    int            n;
    struct pollfd  pfd;

    pfd.fd = fd;
    pfd.events = POLLIN;
    pfd.revents = 0;

    do {
        n = poll(&pfd, 1, timeout_ms);
    } while (n == -1 && errno == EINTR);

    return n == 1 && (pfd.revents & POLLIN);
}


/* the first event_loops consumers wait on the eventfd, the armed next */

static void
mpmc_run(int spin_max, unsigned seed, int event_loops, int armed)
{
    int               i, total, bad;
    unsigned         *seen;
    pthread_t         pt[MPMC_PRODUCERS], ct[MPMC_CONSUMERS];
    test_item_t      *items;
    mpmc_consumer_t   c[MPMC_CONSUMERS];
    mpmc_producer_t   p[MPMC_PRODUCERS];
    ngx_nffi_queue_t  q;

    total = MPMC_PRODUCERS * MPMC_ITEMS;

    items = calloc(total, sizeof(test_item_t));
    seen = calloc(total, sizeof(unsigned));
    CHECK(items != NULL && seen != NULL);
    if (items == NULL || seen == NULL) {
        free(items);
        free(seen);
        return;
    }

    CHECK(ngx_nffi_queue_init(&q, spin_max) == 0);

    for (i = 0; i < MPMC_CONSUMERS; i++) {
        c[i].q = &q;
        c[i].seen = seen;
        c[i].producers = MPMC_PRODUCERS;
        c[i].per_producer = MPMC_ITEMS;
        c[i].seed = seed * 0x9e3779b9u * (i + 1) | 1;
        c[i].received = 0;
        c[i].after_end = -1;
        c[i].event_loop = i < event_loops ? MPMC_EVENT_LOOP
                          : i < event_loops + armed ? MPMC_ARMED
                          : MPMC_BLOCKING;
        c[i].wakes_for_nothing = 0;
        CHECK(pthread_create(&ct[i], NULL, mpmc_consumer, &c[i]) == 0);
    }

    for (i = 0; i < MPMC_PRODUCERS; i++) {
        p[i].q = &q;
        p[i].items = items + i * MPMC_ITEMS;
        p[i].id = i;
        p[i].count = MPMC_ITEMS;
        p[i].batched_wake = i & 1;
        p[i].chains = i >= 2;
        CHECK(pthread_create(&pt[i], NULL, mpmc_producer, &p[i]) == 0);
    }

    for (i = 0; i < MPMC_PRODUCERS; i++) {
        pthread_join(pt[i], NULL);
    }

    ngx_nffi_queue_close(&q);

    bad = mpmc_join(ct, c, MPMC_CONSUMERS, seen, total);
    if (bad) {
        fprintf(stderr, "  %d of %d nodes not received exactly once\n",
                bad, total);
    }

    /* no busy loop: a push wakes each event loop at most once */
    for (i = 0; i < event_loops + armed; i++) {
        CHECK(c[i].wakes_for_nothing <= total);
    }

    CHECK(test_spin_budget_sane(&q));

    ngx_nffi_queue_destroy(&q);
    free(items);
    free(seen);
}


/*
 * Consumers go to sleep on an empty queue; then "count" nodes are pushed
 * without a wake, and the queue is closed: close must wake them, and they
 * must take every node before they get 0.
 */

/*
 * Joins the consumers of a closed queue: each got the end once and nothing
 * after it, and every node arrived exactly once.  Returns how many did not.
 */

static int
mpmc_join(pthread_t *ct, mpmc_consumer_t *c, int consumers, unsigned *seen,
    int total)
{
    int  i, received, bad;

    received = 0;

    for (i = 0; i < consumers; i++) {
        pthread_join(ct[i], NULL);
        received += c[i].received;
        CHECK(c[i].after_end == 0);
    }

    CHECK(received == total);

    bad = 0;

    for (i = 0; i < total; i++) {
        if (seen[i] != 1) {
            bad++;
        }
    }

    CHECK(bad == 0);

    return bad;
}


static void
close_run(int spin_max, int count)
{
    int               i;
    unsigned         *seen;
    pthread_t         ct[CLOSE_CONSUMERS];
    test_item_t      *items;
    mpmc_consumer_t   c[CLOSE_CONSUMERS];
    ngx_nffi_queue_t  q;

    items = calloc(count + 1, sizeof(test_item_t));
    seen = calloc(count + 1, sizeof(unsigned));
    CHECK(items != NULL && seen != NULL);
    if (items == NULL || seen == NULL) {
        free(items);
        free(seen);
        return;
    }

    CHECK(ngx_nffi_queue_init(&q, spin_max) == 0);

    for (i = 0; i < CLOSE_CONSUMERS; i++) {
        c[i].q = &q;
        c[i].seen = seen;
        c[i].producers = 1;
        c[i].per_producer = count;
        c[i].seed = 0x2545f491u * (i + 1);
        c[i].received = 0;
        c[i].after_end = -1;
        c[i].event_loop = MPMC_BLOCKING;
        c[i].wakes_for_nothing = 0;
        CHECK(pthread_create(&ct[i], NULL, mpmc_consumer, &c[i]) == 0);
    }

    CHECK(test_wait_sleepers(&q, CLOSE_CONSUMERS));

    for (i = 0; i < count; i++) {
        items[i].producer = 0;
        items[i].seq = i;

        /* no wake: the consumers sleep on until the close */
        if (ngx_nffi_queue_push(&q, &items[i].node) != 1) {
            /* every consumer sleeps, barring a spurious wakeup */
            CHECK(i > 0);
        }
    }

    ngx_nffi_queue_close(&q);

    mpmc_join(ct, c, CLOSE_CONSUMERS, seen, count);

    ngx_nffi_queue_destroy(&q);
    free(items);
    free(seen);
}


/* every pop finds the queue empty: a lost wakeup hangs */

static void *
ping_pong_echo(void *data)
{
    ping_pong_t  *pp = data;

    int               n;
    ngx_nffi_node_t  *node;

    for ( ;; ) {
        n = ngx_nffi_queue_pop(pp->in, &node, 1);

        if (n == 0) {
            break;
        }

        CHECK(n == 1);
        if (n != 1) {
            break;
        }

        pp->echoed++;

        if (ngx_nffi_queue_push(pp->out, node)) {
            ngx_nffi_queue_wake(pp->out);
        }
    }

    return NULL;
}


static void
ping_pong_run(int spin_max)
{
    int               i, n;
    pthread_t         t;
    ping_pong_t       pp;
    test_item_t       item;
    ngx_nffi_node_t  *node;
    ngx_nffi_queue_t  in, out;

    CHECK(ngx_nffi_queue_init(&in, spin_max) == 0);
    CHECK(ngx_nffi_queue_init(&out, spin_max) == 0);

    pp.in = &in;
    pp.out = &out;
    pp.echoed = 0;

    CHECK(pthread_create(&t, NULL, ping_pong_echo, &pp) == 0);

    item.producer = 0;

    for (i = 0; i < PING_PONG_ROUNDS; i++) {
        item.seq = i;

        if (ngx_nffi_queue_push(&in, &item.node)) {
            ngx_nffi_queue_wake(&in);
        }

        n = ngx_nffi_queue_pop(&out, &node, 1);

        CHECK(n == 1);
        if (n != 1) {
            break;
        }

        CHECK(node == &item.node);
        CHECK(test_item(node)->seq == i);
    }

    ngx_nffi_queue_close(&in);
    pthread_join(t, NULL);

    CHECK(pp.echoed == PING_PONG_ROUNDS);
    CHECK(test_spin_budget_sane(&in));
    CHECK(test_spin_budget_sane(&out));

    ngx_nffi_queue_destroy(&in);
    ngx_nffi_queue_destroy(&out);
}


/*
 * Takes one node, then holds it until every other consumer holds one too
 * (as a runtime busy with a long call would): the queued nodes must reach
 * the sleeping consumers without more pushes, wakes or a close.
 */

static void *
spread_consumer(void *data)
{
    spread_t  *sp = data;

    int               i, n;
    ngx_nffi_node_t  *node;

    n = ngx_nffi_queue_pop(sp->q, &node, 1);
    CHECK(n == 1);

    __atomic_fetch_add(sp->holding, 1, __ATOMIC_ACQ_REL);

    sp->together = 0;

    for (i = 0; i < SPREAD_WAIT_MS; i++) {
        if (__atomic_load_n(sp->holding, __ATOMIC_ACQUIRE)
            == SPREAD_CONSUMERS)
        {
            sp->together = 1;
            break;
        }

        usleep(1000);
    }

    __atomic_fetch_add(sp->finished, 1, __ATOMIC_ACQ_REL);

    sp->after_end = ngx_nffi_queue_pop(sp->q, &node, 1);

    return NULL;
}


static void *
stack_producer(void *data)
{
    stack_producer_t  *p = data;

    int  i;

    for (i = 0; i < p->count; i++) {
        p->items[i].producer = p->id;
        p->items[i].seq = i;

        p->pushed_empty[i] = (unsigned char)
                             ngx_nffi_stack_push(p->s, &p->items[i].node);
    }

    return NULL;
}


static void *
stack_consumer(void *data)
{
    stack_consumer_t  *c = data;

    int               done, last[STACK_PRODUCERS], total, in_batch, index;
    test_item_t      *item;
    ngx_nffi_node_t  *node, *next;

    for (index = 0; index < STACK_PRODUCERS; index++) {
        last[index] = -1;
    }

    total = c->producers * c->per_producer;

    for ( ;; ) {
        /* done is set after every push, so a take after it sees them all */
        done = __atomic_load_n(c->done, __ATOMIC_ACQUIRE);

        node = ngx_nffi_stack_take_all(c->s);

        if (node == NULL) {
            if (done) {
                break;
            }

            sched_yield();
            continue;
        }

        c->batches++;
        c->first[test_item(node) - c->items] = 1;

        for (in_batch = 0; node; in_batch++) {
            next = node->next;
            item = test_item(node);

            if (c->received + in_batch >= total) {
                CHECK(!"more nodes than pushed, or a cycle");
                return NULL;
            }

            if (item->producer < 0 || item->producer >= c->producers
                || item->seq < 0 || item->seq >= c->per_producer)
            {
                CHECK(!"node out of range");
                return NULL;
            }

            /*
             * a producer's nodes come in push order, within a batch and
             * across batches, and none is skipped
             */
            if (item->seq != last[item->producer] + 1) {
                CHECK(item->seq == last[item->producer] + 1);
                return NULL;
            }

            last[item->producer] = item->seq;
            c->seen[item - c->items]++;

            node = next;
        }

        c->received += in_batch;
    }

    return NULL;
}


/* takes count nodes, 8 at a time, expecting seq 0 to count - 1 */

static void
test_pop_in_order(ngx_nffi_queue_t *q, int count)
{
    int               i, n, next, expect;
    ngx_nffi_node_t  *nodes[8];

    for (next = 0; next < count; next += n) {
        n = ngx_nffi_queue_pop(q, nodes, 8);
        expect = count - next < 8 ? count - next : 8;
        CHECK(n == expect);
        if (n != expect) {
            return;
        }

        for (i = 0; i < n; i++) {
            CHECK(test_item(nodes[i])->seq == next + i);
            CHECK(nodes[i]->next == NULL);
        }
    }

    CHECK(q->length == 0 && q->head == NULL && q->tail == NULL);
}


static void
test_queue_fifo_sequential(void)
{
    int               i, n;
    test_item_t       items[100];
    ngx_nffi_node_t  *nodes[8];
    ngx_nffi_queue_t  q;

    CHECK(ngx_nffi_queue_init(&q, 0) == 0);

    for (i = 0; i < 100; i++) {
        items[i].producer = 0;
        items[i].seq = i;
        /* no consumer sleeps */
        CHECK(ngx_nffi_queue_push(&q, &items[i].node) == 0);
    }

    CHECK(q.length == 100);

    for (i = 0; i < 100; i++) {
        n = ngx_nffi_queue_pop(&q, nodes, 1);
        CHECK(n == 1);
        if (n != 1) {
            return;
        }

        CHECK(test_item(nodes[0])->seq == i);
        CHECK(nodes[0]->next == NULL);
    }

    CHECK(q.length == 0 && q.head == NULL && q.tail == NULL);

    for (i = 0; i < 100; i++) {
        CHECK(ngx_nffi_queue_push(&q, &items[i].node) == 0);
    }

    test_pop_in_order(&q, 100);

    /* a partial take keeps the tail right for later pushes */

    for (i = 0; i < 3; i++) {
        CHECK(ngx_nffi_queue_push(&q, &items[i].node) == 0);
    }

    n = ngx_nffi_queue_pop(&q, nodes, 2);
    CHECK(n == 2);
    CHECK(n == 2 && test_item(nodes[0])->seq == 0
          && test_item(nodes[1])->seq == 1);
    CHECK(q.length == 1);

    for (i = 3; i < 5; i++) {
        CHECK(ngx_nffi_queue_push(&q, &items[i].node) == 0);
    }

    n = ngx_nffi_queue_pop(&q, nodes, 8);
    CHECK(n == 3);
    if (n == 3) {
        for (i = 0; i < 3; i++) {
            CHECK(test_item(nodes[i])->seq == i + 2);
        }
    }

    CHECK(q.length == 0 && q.head == NULL && q.tail == NULL);

    /* a chain goes in behind what is queued, and keeps the tail right */

    CHECK(ngx_nffi_queue_push(&q, &items[0].node) == 0);

    for (i = 1; i < 10; i++) {
        items[i].node.next = (i < 9) ? &items[i + 1].node : &items[0].node;
    }

    /* the chain's last next is the queue's to set */
    CHECK(ngx_nffi_queue_push_chain(&q, &items[1].node, &items[9].node, 9)
          == 0);
    CHECK(q.length == 10 && q.tail == &items[9].node);
    CHECK(ngx_nffi_queue_push(&q, &items[10].node) == 0);
    CHECK(q.length == 11);

    test_pop_in_order(&q, 11);

    ngx_nffi_queue_destroy(&q);

    /* a negative spin_max means no spinning */
    CHECK(ngx_nffi_queue_init(&q, -5) == 0);
    CHECK(q.spin_max == 0 && q.spin_budget == 0);
    ngx_nffi_queue_destroy(&q);
}


static void
test_queue_spsc_spin0(void)
{
    spsc_run(0, 1);
    spsc_run(0, 8);
}


static void
test_queue_spsc_spin50(void)
{
    spsc_run(50, 1);
    spsc_run(50, 8);
}


static void
test_queue_mpmc_spin0(void)
{
    unsigned  round;

    for (round = 1; round <= MPMC_ROUNDS; round++) {
        mpmc_run(0, round, 0, 0);
    }
}


static void
test_queue_mpmc_spin50(void)
{
    unsigned  round;

    for (round = 1; round <= MPMC_ROUNDS; round++) {
        mpmc_run(50, round, 0, 0);
    }
}


static void
test_queue_close_drains_sequential(void)
{
    int               i, n;
    test_item_t       items[10];
    ngx_nffi_node_t  *nodes[3];
    ngx_nffi_queue_t  q;

    CHECK(ngx_nffi_queue_init(&q, 50) == 0);

    for (i = 0; i < 10; i++) {
        items[i].producer = 0;
        items[i].seq = i;
        CHECK(ngx_nffi_queue_push(&q, &items[i].node) == 0);
    }

    ngx_nffi_queue_close(&q);

    for (i = 0; i < 9; i += 3) {
        n = ngx_nffi_queue_pop(&q, nodes, 3);
        CHECK(n == 3);
        if (n != 3) {
            return;
        }

        CHECK(test_item(nodes[0])->seq == i);
        CHECK(test_item(nodes[1])->seq == i + 1);
        CHECK(test_item(nodes[2])->seq == i + 2);
    }

    n = ngx_nffi_queue_pop(&q, nodes, 3);
    CHECK(n == 1);
    CHECK(n == 1 && test_item(nodes[0])->seq == 9);

    CHECK(ngx_nffi_queue_pop(&q, nodes, 3) == 0);
    CHECK(ngx_nffi_queue_pop(&q, nodes, 1) == 0);

    ngx_nffi_queue_destroy(&q);
}


static void
test_queue_close_wakes_sleepers(void)
{
    close_run(0, 0);
    close_run(50, 0);
}


/* consumers still spinning with a large budget when the queue closes */

static void
test_queue_close_wakes_spinners(void)
{
    int               i;
    pthread_t         ct[CLOSE_CONSUMERS];
    mpmc_consumer_t   c[CLOSE_CONSUMERS];
    ngx_nffi_queue_t  q;

    CHECK(ngx_nffi_queue_init(&q, 1000) == 0);

    for (i = 0; i < CLOSE_CONSUMERS; i++) {
        c[i].q = &q;
        c[i].seen = NULL;
        c[i].producers = 1;
        c[i].per_producer = 0;
        c[i].seed = 0x61c88647u * (i + 1);
        c[i].received = 0;
        c[i].after_end = -1;
        c[i].event_loop = MPMC_BLOCKING;
        c[i].wakes_for_nothing = 0;
        CHECK(pthread_create(&ct[i], NULL, mpmc_consumer, &c[i]) == 0);
    }

    ngx_nffi_queue_close(&q);

    for (i = 0; i < CLOSE_CONSUMERS; i++) {
        pthread_join(ct[i], NULL);
        CHECK(c[i].received == 0);
        CHECK(c[i].after_end == 0);
    }

    CHECK(test_spin_budget_sane(&q));

    ngx_nffi_queue_destroy(&q);
}


static void
test_queue_close_drains_threads(void)
{
    close_run(0, CLOSE_ITEMS);
    close_run(50, CLOSE_ITEMS);
}


static void
test_queue_wake_spreads(void)
{
    int               i, holding, finished;
    pthread_t         t[SPREAD_CONSUMERS];
    spread_t          sp[SPREAD_CONSUMERS];
    test_item_t       items[SPREAD_CONSUMERS];
    ngx_nffi_queue_t  q;

    CHECK(ngx_nffi_queue_init(&q, 0) == 0);

    holding = 0;
    finished = 0;

    for (i = 0; i < SPREAD_CONSUMERS; i++) {
        sp[i].q = &q;
        sp[i].holding = &holding;
        sp[i].finished = &finished;
        sp[i].together = -1;
        sp[i].after_end = -1;
        CHECK(pthread_create(&t[i], NULL, spread_consumer, &sp[i]) == 0);
    }

    CHECK(test_wait_sleepers(&q, SPREAD_CONSUMERS));

    for (i = 0; i < SPREAD_CONSUMERS; i++) {
        items[i].producer = 0;
        items[i].seq = i;
        (void) ngx_nffi_queue_push(&q, &items[i].node);
    }

    /* one deferred wake for the whole batch */
    ngx_nffi_queue_wake(&q);

    /*
     * The close wakes everyone: it waits till every consumer is done, or
     * the consumers left asleep are the failure.
     */
    for (i = 0; i < SPREAD_WAIT_MS + 1000; i++) {
        if (__atomic_load_n(&finished, __ATOMIC_ACQUIRE) == SPREAD_CONSUMERS) {
            break;
        }

        usleep(1000);
    }

    CHECK(__atomic_load_n(&finished, __ATOMIC_ACQUIRE) == SPREAD_CONSUMERS);

    ngx_nffi_queue_close(&q);

    for (i = 0; i < SPREAD_CONSUMERS; i++) {
        pthread_join(t[i], NULL);
        CHECK(sp[i].together == 1);
        CHECK(sp[i].after_end == 0);
    }

    ngx_nffi_queue_destroy(&q);
}


static void
test_queue_ping_pong_spin0(void)
{
    ping_pong_run(0);
}


static void
test_queue_ping_pong_spin50(void)
{
    ping_pong_run(50);
}


/* pops once with a spin of INT_MAX rounds; nodes[0] gets what it took */

typedef struct {
    ngx_nffi_queue_t  *q;
    ngx_nffi_node_t   *node;
    int                started;
    int                taken;
} huge_spin_t;


static void *
huge_spin_consumer(void *data)
{
    huge_spin_t  *h = data;

    __atomic_store_n(&h->started, 1, __ATOMIC_RELEASE);
    h->taken = ngx_nffi_queue_pop(h->q, &h->node, 1);

    return NULL;
}


/* a queue spinning INT_MAX rounds, and a consumer in its pop */

static void
huge_spin_start(ngx_nffi_queue_t *q, huge_spin_t *h, pthread_t *ct)
{
    CHECK(ngx_nffi_queue_init(q, 2147483647) == 0);

    h->q = q;
    h->node = NULL;
    h->started = 0;
    h->taken = -1;
    CHECK(pthread_create(ct, NULL, huge_spin_consumer, h) == 0);

    while (!__atomic_load_n(&h->started, __ATOMIC_ACQUIRE)) {
        sched_yield();
    }
}


/* a spin that finds a task grows the budget: never past INT_MAX */

static void
test_queue_huge_spin_grows_safely(void)
{
    pthread_t         ct;
    huge_spin_t       h;
    ngx_nffi_node_t   node;
    ngx_nffi_queue_t  q;

    huge_spin_start(&q, &h, &ct);

    ngx_nffi_queue_push(&q, &node);
    pthread_join(ct, NULL);

    CHECK(h.taken == 1 && h.node == &node);
    CHECK(test_spin_budget_sane(&q));

    ngx_nffi_queue_destroy(&q);
}


/*
 * One consumer asleep, one spinning: a push asks for no wake (the spinner
 * takes it); once only the sleeper is left, a push asks for one.
 */

static void
test_queue_push_asks_no_wake_while_one_spins(void)
{
    int                     i;
    pthread_t               sleeper_thread, spinner_thread;
    huge_spin_t             sleeper, spinner;
    ngx_nffi_node_t         first, second;
    ngx_nffi_queue_t        q;
    ngx_nffi_queue_stats_t  st;

    /* no spin: the first consumer sleeps; then the second one spins */
    CHECK(ngx_nffi_queue_init(&q, 0) == 0);
    sleeper.q = &q;
    sleeper.node = NULL;
    sleeper.taken = -1;
    CHECK(pthread_create(&sleeper_thread, NULL, huge_spin_consumer,
                         &sleeper) == 0);
    CHECK(test_wait_sleepers(&q, 1));

    __atomic_store_n(&q.spin_budget, 2147483647, __ATOMIC_RELAXED);
    spinner.q = &q;
    spinner.node = NULL;
    spinner.taken = -1;
    CHECK(pthread_create(&spinner_thread, NULL, huge_spin_consumer,
                         &spinner) == 0);

    for (i = 0; i < 10000; i++) {
        ngx_nffi_queue_stats(&q, &st);
        if (st.spinning == 1 && st.sleeping == 1) {
            break;
        }
        usleep(1000);
    }

    CHECK(st.spinning == 1 && st.sleeping == 1);
    CHECK(ngx_nffi_queue_push(&q, &first) == 0);
    pthread_join(spinner_thread, NULL);
    CHECK(spinner.taken == 1 && spinner.node == &first);

    CHECK(ngx_nffi_queue_push(&q, &second) == 1);
    ngx_nffi_queue_wake(&q);
    pthread_join(sleeper_thread, NULL);
    CHECK(sleeper.taken == 1 && sleeper.node == &second);

    ngx_nffi_queue_destroy(&q);
}


/* an idle poller spinning INT_MAX rounds sees the close at once */

static void
test_queue_close_stops_a_huge_spin(void)
{
    int               rc;
    pthread_t         ct;
    huge_spin_t       h;
    struct timespec   deadline;
    ngx_nffi_queue_t  q;

    huge_spin_start(&q, &h, &ct);

    ngx_nffi_queue_close(&q);

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    rc = pthread_timedjoin_np(ct, NULL, &deadline);
    CHECK(rc == 0);

    if (rc != 0) {
        /* the spinner would outlive the queue: stop here */
        test_watchdog(0);
    }

    CHECK(h.taken == 0);

    ngx_nffi_queue_destroy(&q);
}


/* a closed, drained queue opened again serves like a new one */

static void
test_queue_reopen(void)
{
    ngx_nffi_node_t   node, *taken;
    ngx_nffi_queue_t  q;

    CHECK(ngx_nffi_queue_init(&q, 0) == 0);

    ngx_nffi_queue_close(&q);
    CHECK(ngx_nffi_queue_pop(&q, &taken, 1) == 0);

    ngx_nffi_queue_reopen(&q, 50);
    CHECK(q.spin_max == 50 && q.spin_budget == 50);

    ngx_nffi_queue_push(&q, &node);
    CHECK(ngx_nffi_queue_pop(&q, &taken, 1) == 1 && taken == &node);

    ngx_nffi_queue_close(&q);
    CHECK(ngx_nffi_queue_pop(&q, &taken, 1) == 0);

    ngx_nffi_queue_destroy(&q);
}


/* readable exactly while nodes wait or once closed, also across a reopen */

static void
test_queue_fd_level(void)
{
    int               fd;
    ngx_nffi_node_t   nodes[2], *taken[2];
    ngx_nffi_queue_t  q;

    CHECK(ngx_nffi_queue_init(&q, 0) == 0);

    /* asked for while a node waits: readable from the start */
    CHECK(ngx_nffi_queue_push(&q, &nodes[0]) == 0);
    fd = ngx_nffi_queue_fd(&q);
    CHECK(fd != -1 && ngx_nffi_queue_fd(&q) == fd);
    CHECK(fd_readable(fd, 0));

    CHECK(ngx_nffi_queue_try_pop(&q, taken, 2) == 1 && taken[0] == &nodes[0]);
    CHECK(!fd_readable(fd, 0));
    CHECK(ngx_nffi_queue_try_pop(&q, taken, 2) == 0);
    CHECK(!fd_readable(fd, 0));

    /* a push between "took nothing" and "wait on the fd" is seen */
    CHECK(ngx_nffi_queue_push(&q, &nodes[0]) == 1);
    CHECK(!fd_readable(fd, 0));
    ngx_nffi_queue_wake(&q);
    CHECK(fd_readable(fd, 0));

    /* already readable: no wake is asked for */
    CHECK(ngx_nffi_queue_push(&q, &nodes[1]) == 0);
    CHECK(ngx_nffi_queue_try_pop(&q, taken, 1) == 1 && taken[0] == &nodes[0]);
    CHECK(fd_readable(fd, 0));

    /* a blocking poller empties the queue: the fd follows */
    CHECK(ngx_nffi_queue_pop(&q, taken, 2) == 1 && taken[0] == &nodes[1]);
    CHECK(!fd_readable(fd, 0));

    /* a wake with nothing queued (taken before it ran) signals nothing */
    CHECK(ngx_nffi_queue_push(&q, &nodes[0]) == 1);
    CHECK(ngx_nffi_queue_pop(&q, taken, 2) == 1);
    ngx_nffi_queue_wake(&q);
    CHECK(!fd_readable(fd, 0));

    /* closed: readable for good, the end is sticky */
    ngx_nffi_queue_close(&q);
    CHECK(fd_readable(fd, 0));
    CHECK(ngx_nffi_queue_try_pop(&q, taken, 2) == -1);
    CHECK(ngx_nffi_queue_try_pop(&q, taken, 2) == -1);
    CHECK(fd_readable(fd, 0));

    /* closed with a node left: it is taken first */
    ngx_nffi_queue_reopen(&q, 0);
    CHECK(!fd_readable(fd, 0));
    ngx_nffi_queue_push(&q, &nodes[0]);
    ngx_nffi_queue_close(&q);
    CHECK(ngx_nffi_queue_try_pop(&q, taken, 2) == 1);
    CHECK(fd_readable(fd, 0));
    CHECK(ngx_nffi_queue_try_pop(&q, taken, 2) == -1);

    ngx_nffi_queue_destroy(&q);
}


/* event loops and blocking consumers on one queue: nothing lost or twice */

static void
test_queue_fd_mixed_pollers(void)
{
    unsigned  round;

    for (round = 1; round <= MPMC_ROUNDS; round++) {
        mpmc_run(0, round, MPMC_CONSUMERS, 0);
        mpmc_run(0, round, 1, 0);
        mpmc_run(50, round, 2, 0);
    }
}


static void
test_queue_fd_close_wakes_waiters(void)
{
    int               i, waiting;
    pthread_t         wt[FD_WAITERS];
    fd_waiter_t       w[FD_WAITERS];
    ngx_nffi_queue_t  q;

    CHECK(ngx_nffi_queue_init(&q, 0) == 0);
    waiting = 0;

    for (i = 0; i < FD_WAITERS; i++) {
        w[i].q = &q;
        w[i].waiting = &waiting;
        w[i].saw_end = 0;
        CHECK(pthread_create(&wt[i], NULL, fd_waiter, &w[i]) == 0);
    }

    while (__atomic_load_n(&waiting, __ATOMIC_ACQUIRE) < FD_WAITERS) {
        sched_yield();
    }

    ngx_nffi_queue_close(&q);

    for (i = 0; i < FD_WAITERS; i++) {
        pthread_join(wt[i], NULL);
        CHECK(w[i].saw_end);
    }

    ngx_nffi_queue_destroy(&q);
}


static void *
fd_waiter(void *data)
{
    fd_waiter_t  *w = data;

    int               fd;
    ngx_nffi_node_t  *taken;

    fd = ngx_nffi_queue_fd(w->q);
    CHECK(ngx_nffi_queue_try_pop(w->q, &taken, 1) == 0);

    __atomic_add_fetch(w->waiting, 1, __ATOMIC_RELEASE);

    CHECK(fd_readable(fd, EVENT_LOOP_WAIT_MS));
    w->saw_end = ngx_nffi_queue_try_pop(w->q, &taken, 1) == -1;

    return NULL;
}


/* the wake-ups waiting on a wait fd, read (taken) one by one */

static int
wait_fd_count(int fd)
{
    int       n;
    uint64_t  wakeup;

    for (n = 0; read(fd, &wakeup, sizeof(wakeup)) == sizeof(wakeup); n++) {
        CHECK(wakeup == 1);
    }

    CHECK(errno == EAGAIN);

    return n;
}


/*
 * Armed consumers, one thread: a wake-up per armed consumer as nodes come
 * (after the deferred wake), one for a node a taker leaves behind, none
 * while no consumer is armed, and one for each at the close.
 */

static void
test_queue_armed_wakeups(void)
{
    int               fd;
    ngx_nffi_node_t   a, b, c, d, *nodes[4];
    ngx_nffi_queue_t  q;

    CHECK(ngx_nffi_queue_init(&q, 0) == 0);
    fd = ngx_nffi_queue_wait_fd(&q);
    CHECK(fd != -1);
    CHECK(ngx_nffi_queue_wait_fd(&q) == fd);

    /* nobody armed: a push asks no wake, the fd stays quiet */
    CHECK(ngx_nffi_queue_push(&q, &a) == 0);
    ngx_nffi_queue_wake(&q);
    CHECK(wait_fd_count(fd) == 0);
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 4) == 1 && nodes[0] == &a);

    /* one armed consumer: the push asks a wake, which gives one wake-up */
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 4) == 0);
    CHECK(q.armed == 1);
    CHECK(ngx_nffi_queue_push(&q, &a) == 1);
    CHECK(wait_fd_count(fd) == 0);
    ngx_nffi_queue_wake(&q);
    CHECK(wait_fd_count(fd) == 1);
    CHECK(q.armed == 0);
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 4) == 1 && nodes[0] == &a);

    /* two armed, one node: one wake-up; the next node wakes the other */
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 4) == 0);
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 4) == 0);
    CHECK(ngx_nffi_queue_push(&q, &a) == 1);
    ngx_nffi_queue_wake(&q);
    CHECK(wait_fd_count(fd) == 1);
    CHECK(ngx_nffi_queue_push(&q, &b) == 1);
    ngx_nffi_queue_wake(&q);
    CHECK(wait_fd_count(fd) == 1);
    CHECK(q.armed == 0);
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 4) == 2);
    CHECK(nodes[0] == &a && nodes[1] == &b);

    /* a taker that leaves nodes behind wakes an armed consumer */
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 4) == 0);
    CHECK(ngx_nffi_queue_push(&q, &a) == 1);
    CHECK(ngx_nffi_queue_push(&q, &b) == 1);
    CHECK(ngx_nffi_queue_push(&q, &c) == 1);
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 1) == 1 && nodes[0] == &a);
    CHECK(wait_fd_count(fd) == 1);
    CHECK(q.armed == 0);
    /* the deferred wake that follows finds nobody armed */
    ngx_nffi_queue_wake(&q);
    CHECK(wait_fd_count(fd) == 0);
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 4) == 2);

    /* the close wakes every armed consumer; the end is sticky */
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 4) == 0);
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 4) == 0);
    CHECK(ngx_nffi_queue_push(&q, &d) == 1);
    ngx_nffi_queue_close(&q);
    CHECK(wait_fd_count(fd) == 2);
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 4) == 1 && nodes[0] == &d);
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 4) == -1);
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 4) == -1);
    CHECK(wait_fd_count(fd) == 0);

    /* reopened: nobody is armed any more */
    ngx_nffi_queue_reopen(&q, 0);
    CHECK(q.armed == 0);
    CHECK(ngx_nffi_queue_push(&q, &a) == 0);
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 4) == 1);

    ngx_nffi_queue_destroy(&q);
}


static void *
armed_spinner(void *data)
{
    huge_spin_t  *h = data;

    __atomic_store_n(&h->started, 1, __ATOMIC_RELEASE);
    h->taken = ngx_nffi_queue_take_or_arm(h->q, &h->node, 1);

    return NULL;
}


/*
 * While one consumer spins in take_or_arm, another one arms at once (one
 * spinner is enough), and a push asks no wake: the spinner takes the node
 * and the armed one is not woken for nothing.
 */

static void
test_queue_armed_no_write_while_one_spins(void)
{
    int                     i, fd;
    pthread_t               spinner_thread;
    huge_spin_t             spinner;
    ngx_nffi_node_t         node, *nodes[1];
    ngx_nffi_queue_t        q;
    ngx_nffi_queue_stats_t  st;

    CHECK(ngx_nffi_queue_init(&q, 2147483647) == 0);
    fd = ngx_nffi_queue_wait_fd(&q);

    spinner.q = &q;
    spinner.node = NULL;
    spinner.started = 0;
    spinner.taken = -1;
    CHECK(pthread_create(&spinner_thread, NULL, armed_spinner, &spinner)
          == 0);

    for (i = 0; i < 10000; i++) {
        ngx_nffi_queue_stats(&q, &st);
        if (st.spinning == 1) {
            break;
        }
        usleep(1000);
    }

    CHECK(st.spinning == 1);
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 1) == 0);
    ngx_nffi_queue_stats(&q, &st);
    CHECK(st.sleeping == 1);

    CHECK(ngx_nffi_queue_push(&q, &node) == 0);
    ngx_nffi_queue_wake(&q);
    pthread_join(spinner_thread, NULL);
    CHECK(spinner.taken == 1 && spinner.node == &node);
    CHECK(wait_fd_count(fd) == 0);

    /* the armed consumer is woken by the next node */
    CHECK(ngx_nffi_queue_push(&q, &node) == 1);
    ngx_nffi_queue_wake(&q);
    CHECK(wait_fd_count(fd) == 1);

    ngx_nffi_queue_destroy(&q);
}


static void *
armed_waiter(void *data)
{
    huge_spin_t  *h = data;

    int       fd;
    uint64_t  wakeup;

    fd = ngx_nffi_queue_wait_fd(h->q);
    h->taken = ngx_nffi_queue_take_or_arm(h->q, &h->node, 1);
    __atomic_store_n(&h->started, 1, __ATOMIC_RELEASE);

    while (h->taken == 0) {
        do {
            if (!fd_readable(fd, EVENT_LOOP_WAIT_MS)) {
                CHECK(!"an armed waiter was not woken");
                return NULL;
            }

        } while (read(fd, &wakeup, sizeof(wakeup)) == -1);

        h->taken = ngx_nffi_queue_take_or_arm(h->q, &h->node, 1);
    }

    return NULL;
}


/* armed consumers waiting in poll() when the queue closes all see the end */

static void
test_queue_armed_close_wakes_waiters(void)
{
    int                     i;
    pthread_t               t[FD_WAITERS];
    huge_spin_t             w[FD_WAITERS];
    ngx_nffi_queue_t        q;
    ngx_nffi_queue_stats_t  st;

    CHECK(ngx_nffi_queue_init(&q, 50) == 0);

    for (i = 0; i < FD_WAITERS; i++) {
        w[i].q = &q;
        w[i].node = NULL;
        w[i].started = 0;
        w[i].taken = -2;
        CHECK(pthread_create(&t[i], NULL, armed_waiter, &w[i]) == 0);
    }

    for (i = 0; i < FD_WAITERS; i++) {
        while (!__atomic_load_n(&w[i].started, __ATOMIC_ACQUIRE)) {
            usleep(1000);
        }
    }

    /* armed consumers count as sleeping */
    for (i = 0; i < 10000; i++) {
        ngx_nffi_queue_stats(&q, &st);
        if (st.sleeping == FD_WAITERS) {
            break;
        }
        usleep(1000);
    }

    CHECK(st.sleeping == FD_WAITERS);
    ngx_nffi_queue_close(&q);

    for (i = 0; i < FD_WAITERS; i++) {
        pthread_join(t[i], NULL);
        CHECK(w[i].taken == -1);
    }

    ngx_nffi_queue_destroy(&q);
}


static int
wait_spinning(ngx_nffi_queue_t *q, unsigned n)
{
    int                     i;
    ngx_nffi_queue_stats_t  st;

    for (i = 0; i < 10000; i++) {
        ngx_nffi_queue_stats(q, &st);
        if (st.spinning == n) {
            return 1;
        }
        usleep(1000);
    }

    return 0;
}


/*
 * While calls come one at a time, a second consumer arms at once; once a
 * take left nodes behind (calls come in bursts), it spins too.
 */

static void
test_queue_armed_spinners_follow_bursts(void)
{
    pthread_t         t[2];
    huge_spin_t       h[2];
    ngx_nffi_node_t   a, b, c, *nodes[2];
    ngx_nffi_queue_t  q;

    CHECK(ngx_nffi_queue_init(&q, 2147483647) == 0);
    CHECK(ngx_nffi_queue_wait_fd(&q) != -1);

    h[0].q = &q;
    h[0].node = NULL;
    h[0].started = 0;
    h[0].taken = -2;
    CHECK(pthread_create(&t[0], NULL, armed_spinner, &h[0]) == 0);
    CHECK(wait_spinning(&q, 1));

    /* one at a time: no burst yet, so this one arms */
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 1) == 0);
    CHECK(q.burst_ns == 0);

    /* the spinner takes a, a taker leaves c behind: a burst */
    CHECK(ngx_nffi_queue_push(&q, &a) == 0);
    pthread_join(t[0], NULL);
    CHECK(h[0].taken == 1 && h[0].node == &a);
    CHECK(ngx_nffi_queue_push(&q, &b) == 1);
    CHECK(ngx_nffi_queue_push(&q, &c) == 1);
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 1) == 1 && nodes[0] == &b);
    CHECK(q.burst_ns != 0);
    CHECK(ngx_nffi_queue_take_or_arm(&q, nodes, 2) == 1 && nodes[0] == &c);

    /* within the burst (kept going for the test), two consumers spin */
    q.burst_ns = ngx_nffi_monotonic_ns() + 3600000000000LL;

    h[0].taken = -2;
    h[1] = h[0];
    CHECK(pthread_create(&t[0], NULL, armed_spinner, &h[0]) == 0);
    CHECK(wait_spinning(&q, 1));
    CHECK(pthread_create(&t[1], NULL, armed_spinner, &h[1]) == 0);
    CHECK(wait_spinning(&q, 2));

    ngx_nffi_queue_close(&q);
    pthread_join(t[0], NULL);
    pthread_join(t[1], NULL);
    CHECK(h[0].taken == -1 && h[1].taken == -1);

    ngx_nffi_queue_destroy(&q);
}


/* armed consumers alone, and beside blocking ones and event loops */

static void
test_queue_armed_mpmc(void)
{
    unsigned  round;

    for (round = 1; round <= MPMC_ROUNDS; round++) {
        mpmc_run(0, round, 0, MPMC_CONSUMERS);
        mpmc_run(50, round, 0, MPMC_CONSUMERS);
        mpmc_run(0, round, 0, 2);
        mpmc_run(50, round, 1, 1);
    }
}


static void
test_stack_sequential(void)
{
    test_item_t       items[4];
    ngx_nffi_node_t  *list;
    ngx_nffi_stack_t  s;

    s.top = NULL;

    CHECK(ngx_nffi_stack_take_all(&s) == NULL);

    CHECK(ngx_nffi_stack_push(&s, &items[0].node) == 1);
    CHECK(ngx_nffi_stack_push(&s, &items[1].node) == 0);
    CHECK(ngx_nffi_stack_push(&s, &items[2].node) == 0);

    /* oldest first, NULL-terminated */
    list = ngx_nffi_stack_take_all(&s);
    CHECK(list == &items[0].node);
    CHECK(list && list->next == &items[1].node);
    CHECK(list && list->next && list->next->next == &items[2].node);
    CHECK(list && list->next && list->next->next
          && list->next->next->next == NULL);

    CHECK(s.top == NULL);
    CHECK(ngx_nffi_stack_take_all(&s) == NULL);

    /* empty again */
    CHECK(ngx_nffi_stack_push(&s, &items[3].node) == 1);

    list = ngx_nffi_stack_take_all(&s);
    CHECK(list == &items[3].node);
    CHECK(list && list->next == NULL);

    CHECK(ngx_nffi_stack_take_all(&s) == NULL);

    /* a chain, first to last, goes on as if last was pushed first */
    CHECK(ngx_nffi_stack_push(&s, &items[0].node) == 1);
    items[1].node.next = &items[2].node;
    CHECK(ngx_nffi_stack_push_chain(&s, &items[1].node, &items[2].node)
          == 0);
    CHECK(ngx_nffi_stack_push(&s, &items[3].node) == 0);

    list = ngx_nffi_stack_take_all(&s);
    CHECK(list == &items[0].node);
    CHECK(list && list->next == &items[2].node);
    CHECK(list && list->next && list->next->next == &items[1].node);
    CHECK(list && list->next && list->next->next
          && list->next->next->next == &items[3].node);
    CHECK(list && list->next && list->next->next && list->next->next->next
          && list->next->next->next->next == NULL);
}


/*
 * Producers push while one thread takes: every node arrives once, in push
 * order per producer; and a push returns 1 exactly for the nodes that are
 * the oldest of their batch.
 */

static void
test_stack_mpsc(void)
{
    int  round;

    for (round = 0; round < STACK_ROUNDS; round++) {
        stack_mpsc_run();
    }
}


static void
stack_mpsc_run(void)
{
    int                i, total, done, bad_seen, bad_first, empties;
    pthread_t          pt[STACK_PRODUCERS], ct;
    test_item_t       *items;
    unsigned char     *pushed_empty, *first, *seen;
    ngx_nffi_stack_t   s;
    stack_consumer_t   c;
    stack_producer_t   p[STACK_PRODUCERS];

    total = STACK_PRODUCERS * STACK_ITEMS;

    items = calloc(total, sizeof(test_item_t));
    pushed_empty = calloc(total, 1);
    first = calloc(total, 1);
    seen = calloc(total, 1);

    CHECK(items && pushed_empty && first && seen);
    if (items == NULL || pushed_empty == NULL || first == NULL
        || seen == NULL)
    {
        goto done;
    }

    s.top = NULL;
    done = 0;

    c.s = &s;
    c.items = items;
    c.first = first;
    c.seen = seen;
    c.done = &done;
    c.producers = STACK_PRODUCERS;
    c.per_producer = STACK_ITEMS;
    c.received = 0;
    c.batches = 0;

    CHECK(pthread_create(&ct, NULL, stack_consumer, &c) == 0);

    for (i = 0; i < STACK_PRODUCERS; i++) {
        p[i].s = &s;
        p[i].items = items + i * STACK_ITEMS;
        p[i].pushed_empty = pushed_empty + i * STACK_ITEMS;
        p[i].id = i;
        p[i].count = STACK_ITEMS;
        CHECK(pthread_create(&pt[i], NULL, stack_producer, &p[i]) == 0);
    }

    for (i = 0; i < STACK_PRODUCERS; i++) {
        pthread_join(pt[i], NULL);
    }

    __atomic_store_n(&done, 1, __ATOMIC_RELEASE);

    pthread_join(ct, NULL);

    CHECK(c.received == total);
    CHECK(ngx_nffi_stack_take_all(&s) == NULL);

    bad_seen = 0;
    bad_first = 0;
    empties = 0;

    for (i = 0; i < total; i++) {
        bad_seen += seen[i] != 1;
        bad_first += first[i] != pushed_empty[i];
        empties += pushed_empty[i];
    }

    CHECK(bad_seen == 0);
    CHECK(bad_first == 0);
    CHECK(empties == c.batches);

    if (bad_seen || bad_first || empties != c.batches) {
        fprintf(stderr, "  %d nodes not seen once, %d mismatched "
                "push-into-empty, %d pushes into empty, %ld batches\n",
                bad_seen, bad_first, empties, c.batches);
    }

done:

    free(items);
    free(pushed_empty);
    free(first);
    free(seen);
}


/*
 * Ticks over 50 ms, turned into nanoseconds, within 1 % of CLOCK_MONOTONIC;
 * three tries, since a preemption between the two clocks' readings skews
 * one.
 */

static int
clock_agrees_with_clock_gettime(void)
{
    int        try;
    long long  ticks0, ns0, ns1, took, measured;

    for (try = 0; try < 3; try++) {
        ticks0 = ngx_nffi_clock_ticks();
        ns0 = ngx_nffi_monotonic_ns();

        do {
            ns1 = ngx_nffi_monotonic_ns();
        } while (ns1 - ns0 < 50000000);

        measured = ngx_nffi_clock_ns(ngx_nffi_clock_ticks() - ticks0);
        took = ns1 - ns0;

        if (measured > took - took / 100 && measured < took + took / 100) {
            return 1;
        }

        printf("     clock: %lld ns measured over %lld ns\n", measured, took);
    }

    return 0;
}


static void
test_clock_modes(void)
{
    CHECK(ngx_nffi_clock_init(0) == 0);
    CHECK(ngx_nffi_clock_ticks() - ngx_nffi_monotonic_ns() <= 0);
    CHECK(clock_agrees_with_clock_gettime());

#if defined(__x86_64__)
    CHECK(ngx_nffi_clock_init(1) == 1);
    CHECK(clock_agrees_with_clock_gettime());
#endif

    /* as the worker starts: whatever the kernel keeps time with */
    ngx_nffi_clock_init(-1);
    CHECK(clock_agrees_with_clock_gettime());
}


int
main(void)
{
    int               passed, failed, before;
    size_t            i;
    double            start, took, total;
    struct sigaction  sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = test_watchdog;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);

    setvbuf(stdout, NULL, _IOLBF, 0);

    passed = 0;
    failed = 0;
    total = test_now();

    for (i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        test_current = tests[i].name;
        before = __atomic_load_n(&test_failures, __ATOMIC_RELAXED);

        alarm(TEST_WATCHDOG_S);
        start = test_now();

        tests[i].run();

        took = test_now() - start;
        alarm(0);

        if (__atomic_load_n(&test_failures, __ATOMIC_RELAXED) != before) {
            printf("FAIL %s (%.2f s)\n", tests[i].name, took);
            failed++;

        } else {
            printf("ok   %s (%.2f s)\n", tests[i].name, took);
            passed++;
        }
    }

    printf("total %.2f s\n", test_now() - total);
    printf("%d passed, %d failed\n", passed, failed);

    return failed ? 1 : 0;
}
