/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * The two queues between a worker and its runtimes.  Plain C and pthreads,
 * no nginx headers, so that tests/unit can run them under ThreadSanitizer.
 *
 * ngx_nffi_queue_t  a runtime's request queue: FIFO, any number of
 *                   producers and consumers; consumers spin adaptively,
 *                   then sleep, or wait on the queue's eventfd in their
 *                   own event loop and take without waiting.
 * ngx_nffi_stack_t  a lock-free stack: any thread pushes, one thread
 *                   takes everything at once, in push order (a worker's
 *                   done stack, a runtime's read answers).
 */

#ifndef _NGX_NFFI_QUEUE_H_INCLUDED_
#define _NGX_NFFI_QUEUE_H_INCLUDED_


#include <pthread.h>


typedef struct ngx_nffi_node_s  ngx_nffi_node_t;

struct ngx_nffi_node_s {
    ngx_nffi_node_t     *next;
};


typedef struct {
    pthread_mutex_t      mutex;
    pthread_cond_t       cond;
    ngx_nffi_node_t     *head;
    ngx_nffi_node_t     *tail;
    /* written under the mutex, read without it for statistics: atomic */
    unsigned             length;
    unsigned             length_max;
    unsigned             sleepers;
    unsigned             spinners;
    int                  closed;      /* atomic: spinners read it */
    /*
     * The eventfd of event-loop consumers, -1 until one asks for it.
     * Under the mutex it is readable exactly when signalled is set, and
     * signalled is set when (and after a deferred wake, as soon as) the
     * queue is closed or not empty.
     */
    int                  fd;
    int                  signalled;
    /*
     * The semaphore eventfd of consumers that arm, -1 until one asks for
     * it; armed counts the consumers that armed and were not yet given a
     * wake-up (a count written to it, which they read).
     */
    int                  wait_fd;
    unsigned             armed;
    /* wake-ups for armed consumers, written when the mutex is let go */
    unsigned             wakeups_given;
    long long            armed_ns;    /* when one last armed */
    long long            burst_ns;    /* when a take last left nodes */
    /* sched_yield() rounds a consumer may spin before sleeping */
    int                  spin_max;
    int                  spin_budget;
} ngx_nffi_queue_t;


typedef struct {
    ngx_nffi_node_t     *top;
} ngx_nffi_stack_t;


int ngx_nffi_queue_init(ngx_nffi_queue_t *q, int spin_max);
void ngx_nffi_queue_destroy(ngx_nffi_queue_t *q);

/*
 * Appends a node (or, under one lock, a chain of n nodes linked by next,
 * first to last); returns 1 when a consumer sleeps (on the condition
 * variable, and none spins; or on the eventfd) and should be woken with
 * ngx_nffi_queue_wake(), which the caller may defer to batch wakes.
 */
int ngx_nffi_queue_push(ngx_nffi_queue_t *q, ngx_nffi_node_t *node);
int ngx_nffi_queue_push_chain(ngx_nffi_queue_t *q, ngx_nffi_node_t *first,
    ngx_nffi_node_t *last, unsigned n);
void ngx_nffi_queue_wake(ngx_nffi_queue_t *q);

/*
 * Takes up to max nodes, waiting until there is one.  Returns 0 once the
 * queue is closed and empty.
 */
int ngx_nffi_queue_pop(ngx_nffi_queue_t *q, ngx_nffi_node_t **nodes,
    int max);

/*
 * Takes up to max nodes that are queued now, never waits.  Returns 0 when
 * none is, -1 once the queue is closed and empty.
 */
int ngx_nffi_queue_try_pop(ngx_nffi_queue_t *q, ngx_nffi_node_t **nodes,
    int max);

/*
 * The queue's eventfd (created on the first call, kept until destroy):
 * readable while nodes are queued or the queue is closed.  -1 with errno
 * when it cannot be created.
 */
int ngx_nffi_queue_fd(ngx_nffi_queue_t *q);

/*
 * The semaphore eventfd (created on the first call, kept until destroy)
 * of consumers that wait with ngx_nffi_queue_take_or_arm(): every wake-up
 * given to an armed consumer adds one to its counter; the consumer reads
 * it.  -1 with errno when it cannot be created.
 */
int ngx_nffi_queue_wait_fd(ngx_nffi_queue_t *q);

/*
 * Takes up to max nodes that are queued now.  When none is, and no other
 * consumer spins (or nodes came in bursts in the last millisecond: a take
 * left some behind), spins first as ngx_nffi_queue_pop() does; when none is
 * then, arms: the next node pushed while no consumer spins (or a node left
 * behind by a taker, or the close) gives one wake-up on the wait fd.
 * Returns the number taken, 0 when armed, -1 once the queue is closed and
 * empty (or the wait fd cannot be created).
 */
int ngx_nffi_queue_take_or_arm(ngx_nffi_queue_t *q, ngx_nffi_node_t **nodes,
    int max);

/* No more pushes: consumers drain what is queued, then get 0. */
void ngx_nffi_queue_close(ngx_nffi_queue_t *q);

/* Opens a closed, empty queue again, with a new spin_max. */
void ngx_nffi_queue_reopen(ngx_nffi_queue_t *q, int spin_max);


/* For statistics, from any thread: a moment's figures, not a snapshot. */
typedef struct {
    unsigned             queued;
    unsigned             queued_max;
    unsigned             sleeping;    /* armed consumers included */
    unsigned             spinning;
} ngx_nffi_queue_stats_t;

void ngx_nffi_queue_stats(ngx_nffi_queue_t *q, ngx_nffi_queue_stats_t *st);


/* CLOCK_MONOTONIC in nanoseconds */
long long ngx_nffi_monotonic_ns(void);


/*
 * The main thread's clock for latencies: two readings per call.  It is
 * the CPU's time-stamp counter where the kernel keeps time with it (x86-64,
 * clocksource "tsc": constant rate, synchronised across CPUs), 15 ns a
 * reading on the project's VM against 36 ns for clock_gettime(), which it
 * is everywhere else.  ngx_nffi_clock_init() chooses (use_tsc: 1 when it
 * can be used, 0 never, -1 as the kernel does) and measures the counter's
 * rate against CLOCK_MONOTONIC for a millisecond; it returns 1 when ticks
 * are the counter's.
 */
int ngx_nffi_clock_init(int use_tsc);
long long ngx_nffi_clock_ns(long long ticks);

extern int     ngx_nffi_clock_tsc;

static inline long long
ngx_nffi_clock_ticks(void)
{
#if defined(__x86_64__)
    unsigned  lo, hi;

    if (ngx_nffi_clock_tsc) {
        __asm__ volatile ("rdtsc" : "=a" (lo), "=d" (hi));
        return (long long) ((unsigned long long) hi << 32 | lo);
    }
#endif

    return ngx_nffi_monotonic_ns();
}


/* Returns 1 when the stack was empty before this push. */
int ngx_nffi_stack_push(ngx_nffi_stack_t *s, ngx_nffi_node_t *node);

/* Pushes a chain linked by next, first to last, as if last came first. */
int ngx_nffi_stack_push_chain(ngx_nffi_stack_t *s, ngx_nffi_node_t *first,
    ngx_nffi_node_t *last);

/* Takes every node, oldest first (a list linked by next). */
ngx_nffi_node_t *ngx_nffi_stack_take_all(ngx_nffi_stack_t *s);


#endif /* _NGX_NFFI_QUEUE_H_INCLUDED_ */
