/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * The bridge from runtime threads back into the worker's event loop.
 *
 * Runtime threads push answered tasks and stream chunks on the done stack
 * (and log messages on a stack of their own) and write the worker's eventfd
 * only when a stack goes from empty to non-empty; the read handler takes
 * everything in one go.  In the other direction, runtimes that sleep are
 * woken once per event-loop iteration by a posted event, however many
 * calls were posted to them in it; the same event pushes, under one lock
 * of the queue's mutex, the calls posted while others were in flight.
 *
 * A sleeping event loop costs a wake-up per answer (tens of microseconds on
 * a VM).  So after a call is posted, the loop polls the done stack for a
 * few rounds through an event posted to ngx_posted_next_events, which makes
 * epoll_wait() return at once; while it polls, runtimes skip the eventfd
 * write.  The number of rounds is the runtime's opts.loop_spin, cut by a
 * budget that the worker adapts between 0 and the largest loop_spin of its
 * loaded runtimes: a window that saw no answer halves it, an answer seen
 * while polling, or one that came through the eventfd soon after its call,
 * grows it again.  A worker on one CPU never polls.
 */

#include "ngx_nffi.h"

#include <sys/eventfd.h>


/* messages waiting beyond this are dropped (and counted) */
#define NGX_NFFI_LOG_MAX_PENDING  10000

/*
 * nginx cuts an error log entry at NGX_MAX_ERROR_STR bytes, its time, level
 * and pid included: longer messages (tracebacks) are written in pieces of
 * at most this size, cut after a line end where there is one.
 */
#define NGX_NFFI_LOG_PIECE        (NGX_MAX_ERROR_STR - 148)


typedef struct {
    ngx_nffi_node_t      node;
    int                  level;
    size_t               len;
    u_char               msg[1];
} ngx_nffi_log_entry_t;


static void ngx_nffi_event_wake_worker(void);
static void ngx_nffi_event_read_handler(ngx_event_t *ev);
static ngx_uint_t ngx_nffi_event_take_done(void);
static void ngx_nffi_event_write_logs(void);
static void ngx_nffi_event_write_log(ngx_nffi_log_entry_t *entry);
static void ngx_nffi_event_list_runtime(ngx_nffi_runtime_t *rt);
static void ngx_nffi_event_hand_over(ngx_event_t *ev);
static void ngx_nffi_event_poll_answers(ngx_event_t *ev);


static ngx_nffi_stack_t     ngx_nffi_done;
static ngx_nffi_stack_t     ngx_nffi_logs;
static int                  ngx_nffi_logs_pending;
static int                  ngx_nffi_logs_dropped;

/* the eventfd; the mutex keeps a late writer off a closed descriptor */
static pthread_mutex_t      ngx_nffi_wake_mutex = PTHREAD_MUTEX_INITIALIZER;
static int                  ngx_nffi_wake_fd = -1;
static ngx_connection_t    *ngx_nffi_wake_conn;

static ngx_event_t          ngx_nffi_hand_over_event;
static ngx_nffi_runtime_t  *ngx_nffi_runtimes_listed;

/* an answer this soon after its call would have been caught by polling */
#define NGX_NFFI_SHORT_WAIT_NS  200000

/* the loop polls for answers: runtimes need not write the eventfd */
static ngx_event_t          ngx_nffi_poll_event;
static ngx_uint_t           ngx_nffi_poll_rounds;
static ngx_uint_t           ngx_nffi_poll_budget;
static ngx_uint_t           ngx_nffi_poll_max;
static ngx_flag_t           ngx_nffi_poll_found;
static long long            ngx_nffi_last_post_ticks;
static ngx_nffi_flag_t      ngx_nffi_polling;


ngx_int_t
ngx_nffi_event_init(ngx_cycle_t *cycle)
{
    int                fd;
    ngx_connection_t  *c;

    fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "nonblocking_ffi: eventfd() failed");
        return NGX_ERROR;
    }

    c = ngx_get_connection(fd, cycle->log);
    if (c == NULL) {
        close(fd);
        return NGX_ERROR;
    }

    c->log = cycle->log;
    c->read->handler = ngx_nffi_event_read_handler;
    c->read->log = cycle->log;
    c->write->log = cycle->log;

    if (ngx_add_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
        ngx_free_connection(c);
        close(fd);
        return NGX_ERROR;
    }

    ngx_nffi_hand_over_event.handler = ngx_nffi_event_hand_over;
    ngx_nffi_hand_over_event.log = cycle->log;
    ngx_nffi_runtimes_listed = NULL;

    ngx_nffi_poll_event.handler = ngx_nffi_event_poll_answers;
    ngx_nffi_poll_event.log = cycle->log;

    pthread_mutex_lock(&ngx_nffi_wake_mutex);
    ngx_nffi_wake_fd = fd;
    pthread_mutex_unlock(&ngx_nffi_wake_mutex);

    ngx_nffi_wake_conn = c;

    return NGX_OK;
}


/*
 * At worker exit, after the runtimes were told to stop: answers still in
 * the queue are taken (their callers are gone), the eventfd is closed
 * under the mutex so that a late answer finds no descriptor to write.
 */

void
ngx_nffi_event_done(void)
{
    if (ngx_nffi_wake_conn == NULL) {
        return;
    }

    if (ngx_nffi_hand_over_event.posted) {
        ngx_delete_posted_event(&ngx_nffi_hand_over_event);
    }

    if (ngx_nffi_poll_event.posted) {
        ngx_delete_posted_event(&ngx_nffi_poll_event);
    }

    __atomic_store_n(&ngx_nffi_polling.on, 0, __ATOMIC_SEQ_CST);

    pthread_mutex_lock(&ngx_nffi_wake_mutex);
    ngx_nffi_wake_fd = -1;
    pthread_mutex_unlock(&ngx_nffi_wake_mutex);

    ngx_close_connection(ngx_nffi_wake_conn);
    ngx_nffi_wake_conn = NULL;

    ngx_nffi_event_take_done();
    ngx_nffi_event_write_logs();
}


/* an answered task, or a stream's chunk */

void
ngx_nffi_event_push_done(ngx_nffi_node_t *node)
{
    if (!ngx_nffi_stack_push(&ngx_nffi_done, node)) {
        return;
    }

    /* pairs with the fence in ngx_nffi_event_poll_answers() */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);

    if (!__atomic_load_n(&ngx_nffi_polling.on, __ATOMIC_SEQ_CST)) {
        ngx_nffi_event_wake_worker();
    }
}


void
ngx_nffi_event_log(int level, const char *msg, size_t len)
{
    ngx_nffi_log_entry_t  *entry;

    if (len == 0) {
        len = strlen(msg);
    }

    if (__atomic_add_fetch(&ngx_nffi_logs_pending, 1, __ATOMIC_RELAXED)
        > NGX_NFFI_LOG_MAX_PENDING)
    {
        __atomic_sub_fetch(&ngx_nffi_logs_pending, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&ngx_nffi_logs_dropped, 1, __ATOMIC_RELAXED);
        return;
    }

    entry = malloc(sizeof(ngx_nffi_log_entry_t) + len);
    if (entry == NULL) {
        __atomic_sub_fetch(&ngx_nffi_logs_pending, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&ngx_nffi_logs_dropped, 1, __ATOMIC_RELAXED);
        return;
    }

    entry->level = level;
    entry->len = len;
    memcpy(entry->msg, msg, len);

    if (ngx_nffi_stack_push(&ngx_nffi_logs, &entry->node)) {
        ngx_nffi_event_wake_worker();
    }
}


void
ngx_nffi_event_wake_runtime(ngx_nffi_runtime_t *rt)
{
    rt->wake_wanted = 1;
    ngx_nffi_event_list_runtime(rt);
}


/*
 * A call posted while others are in flight: callers woken by one batch of
 * answers post their next calls in the same pass over the posted events,
 * and one lock of the queue's mutex for all of them costs the main thread
 * less than one per call (at 64 concurrent calls into the C echo the
 * mutex was 18 % of its time: docs/benchmark.md).
 */

void
ngx_nffi_event_push_later(ngx_nffi_runtime_t *rt, ngx_nffi_node_t *node)
{
    node->next = NULL;

    if (rt->to_push_last) {
        rt->to_push_last->next = node;

    } else {
        rt->to_push = node;
    }

    rt->to_push_last = node;
    rt->to_push_n++;

    ngx_nffi_event_list_runtime(rt);
}


/* before the queue closes, and from the posted event */

void
ngx_nffi_event_push_now(ngx_nffi_runtime_t *rt)
{
    if (rt->to_push == NULL) {
        return;
    }

    if (ngx_nffi_queue_push_chain(&rt->queue, rt->to_push, rt->to_push_last,
                                  rt->to_push_n))
    {
        rt->wake_wanted = 1;
    }

    rt->to_push = NULL;
    rt->to_push_last = NULL;
    rt->to_push_n = 0;
}


static void
ngx_nffi_event_list_runtime(ngx_nffi_runtime_t *rt)
{
    if (rt->listed) {
        return;
    }

    rt->listed = 1;
    rt->next_listed = ngx_nffi_runtimes_listed;
    ngx_nffi_runtimes_listed = rt;

    if (!ngx_nffi_hand_over_event.posted) {
        ngx_post_event(&ngx_nffi_hand_over_event, &ngx_posted_events);
    }
}


void
ngx_nffi_event_expect_answer(ngx_uint_t loop_spin)
{
#if (nginx_version >= 1017005)
    ngx_uint_t  rounds;

    if (ngx_nffi_poll_budget < ngx_nffi_poll_max) {
        ngx_nffi_last_post_ticks = ngx_nffi_clock_ticks();
    }

    rounds = ngx_min(loop_spin, ngx_nffi_poll_budget);

    if (rounds == 0) {
        return;
    }

    if (ngx_nffi_poll_rounds < rounds) {
        ngx_nffi_poll_rounds = rounds;
    }

    if (!ngx_nffi_poll_event.posted) {
        __atomic_store_n(&ngx_nffi_polling.on, 1, __ATOMIC_SEQ_CST);
        ngx_post_event(&ngx_nffi_poll_event, &ngx_posted_next_events);
    }
#else
    /* no ngx_posted_next_events before nginx 1.17.5: no polling */
#endif
}


/* the largest opts.loop_spin of the loaded runtimes, as they change */

void
ngx_nffi_event_loop_spin_max(ngx_uint_t loop_spin)
{
    /*
     * On one CPU the runtime threads cannot answer while the loop polls:
     * polling held each answer back until the scheduler preempted the
     * loop, 4-5 times slower than the eventfd (docs/benchmark.md).
     */
    if (ngx_nffi_worker.cpus == 1) {
        loop_spin = 0;
    }

    if (ngx_nffi_poll_budget > loop_spin
        || ngx_nffi_poll_budget == ngx_nffi_poll_max)
    {
        ngx_nffi_poll_budget = loop_spin;
    }

    ngx_nffi_poll_max = loop_spin;
}


static void
ngx_nffi_event_poll_answers(ngx_event_t *ev)
{
#if (nginx_version >= 1017005)
    if (ngx_nffi_event_take_done()) {
        ngx_nffi_poll_found = 1;
        ngx_nffi_poll_budget = ngx_nffi_poll_max;
    }

    if (ngx_nffi_worker.pending > 0 && --ngx_nffi_poll_rounds > 0) {
        ngx_post_event(ev, &ngx_posted_next_events);
        return;
    }

    if (!ngx_nffi_poll_found && ngx_nffi_worker.pending > 0) {
        /* the answers take longer than polling is worth */
        ngx_nffi_poll_budget /= 2;
    }

    ngx_nffi_poll_found = 0;
    ngx_nffi_poll_rounds = 0;
    __atomic_store_n(&ngx_nffi_polling.on, 0, __ATOMIC_SEQ_CST);

    /* an answer pushed while the loop polled wrote no eventfd */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    ngx_nffi_event_take_done();
#endif
}


static void
ngx_nffi_event_wake_worker(void)
{
    uint64_t  one = 1;

    pthread_mutex_lock(&ngx_nffi_wake_mutex);

    /* EAGAIN only when the counter is near 2^64: a wake is pending */
    if (ngx_nffi_wake_fd != -1
        && write(ngx_nffi_wake_fd, &one, sizeof(one)) == -1
        && ngx_errno != NGX_EAGAIN)
    {
        /* nginx's own thread pools log from their threads too */
        ngx_log_error(NGX_LOG_ALERT, ngx_nffi_worker.log, ngx_errno,
                      "nonblocking_ffi: write() to eventfd failed");
    }

    pthread_mutex_unlock(&ngx_nffi_wake_mutex);
}


static void
ngx_nffi_event_read_handler(ngx_event_t *ev)
{
    uint64_t           count;
    ngx_connection_t  *c = ev->data;

    /* the next write sets the counter again: read it before draining */
    if (read(c->fd, &count, sizeof(count)) == -1 && ngx_errno != NGX_EAGAIN) {
        ngx_log_error(NGX_LOG_ALERT, ngx_nffi_worker.log, ngx_errno,
                      "nonblocking_ffi: read() from eventfd failed");
    }

    if (ngx_nffi_event_take_done()
        && ngx_nffi_poll_budget < ngx_nffi_poll_max
        && ngx_nffi_clock_ns(ngx_nffi_clock_ticks()
                             - ngx_nffi_last_post_ticks)
           < NGX_NFFI_SHORT_WAIT_NS)
    {
        /* poll_max is at most NGX_NFFI_SPIN_MAX: this cannot overflow */
        ngx_nffi_poll_budget = ngx_min(ngx_nffi_poll_budget * 2 + 1,
                                       ngx_nffi_poll_max);
    }

    ngx_nffi_event_write_logs();
}


static ngx_uint_t
ngx_nffi_event_take_done(void)
{
    long long          now_ticks;
    ngx_uint_t         n;
    ngx_nffi_node_t   *node, *next;
    ngx_nffi_chunk_t  *c;

    node = ngx_nffi_stack_take_all(&ngx_nffi_done);

    /*
     * What runtime threads logged before they answered goes first, so that
     * the error log tells a call's story in order; taking the answers
     * first (acquire) makes those earlier log pushes visible here.
     */
    if (__atomic_load_n(&ngx_nffi_logs.top, __ATOMIC_RELAXED) != NULL) {
        ngx_nffi_event_write_logs();
    }

    if (node == NULL) {
        return 0;
    }

    /* one clock read for the whole batch: all of it is here now */
    now_ticks = ngx_nffi_clock_ticks();

    for (n = 0; node; node = next, n++) {
        next = node->next;
        c = ngx_nffi_chunk_of(node);

        if (c) {
            ngx_nffi_stream_deliver(c);

        } else {
            ngx_nffi_task_answered(ngx_nffi_task_from_node(node), now_ticks);
        }
    }

    return n;
}


static void
ngx_nffi_event_write_logs(void)
{
    int                    dropped;
    ngx_nffi_node_t       *node, *next;
    ngx_nffi_log_entry_t  *entry;

    for (node = ngx_nffi_stack_take_all(&ngx_nffi_logs); node; node = next) {
        next = node->next;
        entry = (ngx_nffi_log_entry_t *) node;

        ngx_nffi_event_write_log(entry);

        free(entry);
        __atomic_sub_fetch(&ngx_nffi_logs_pending, 1, __ATOMIC_RELAXED);
    }

    dropped = __atomic_exchange_n(&ngx_nffi_logs_dropped, 0,
                                  __ATOMIC_RELAXED);
    if (dropped) {
        ngx_log_error(NGX_LOG_WARN, ngx_nffi_worker.log, 0,
                      "nonblocking_ffi: %d runtime log messages dropped",
                      dropped);
    }
}


static void
ngx_nffi_event_write_log(ngx_nffi_log_entry_t *entry)
{
    u_char  *p, *end, *cut, *line_end;

    p = entry->msg;
    end = p + entry->len;

    do {
        cut = end;

        if (end - p > NGX_NFFI_LOG_PIECE) {
            cut = p + NGX_NFFI_LOG_PIECE;

            for (line_end = cut; line_end > p; line_end--) {
                if (line_end[-1] == '\n') {
                    cut = line_end;
                    break;
                }
            }
        }

        ngx_log_error((ngx_uint_t) entry->level, ngx_nffi_worker.log, 0,
                      "%*s",
                      (size_t) (cut - p - (cut > p && cut[-1] == '\n')), p);

        p = cut;

    } while (p < end);
}


static void
ngx_nffi_event_hand_over(ngx_event_t *ev)
{
    ngx_nffi_runtime_t  *rt;

    while (ngx_nffi_runtimes_listed) {
        rt = ngx_nffi_runtimes_listed;
        ngx_nffi_runtimes_listed = rt->next_listed;
        rt->listed = 0;

        ngx_nffi_event_push_now(rt);

        if (!rt->wake_wanted) {
            continue;
        }

        rt->wake_wanted = 0;

        ngx_log_debug1(NGX_LOG_DEBUG_CORE, ngx_nffi_worker.log, 0,
                       "nonblocking_ffi: waking the pollers of %s", rt->lib);

        ngx_nffi_queue_wake(&rt->queue);
    }
}
