/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Tasks: one per call; the lifecycle is written down in ngx_nffi.h, where
 * the struct is.  This file holds all of a task's memory: the pool, the
 * request buffer and the answer.
 *
 * Tasks live in slabs that are never freed while the worker runs, so that
 * a runtime holding a stale task pointer (a second answer) touches pooled
 * memory, never freed memory, and the state check turns it into an
 * [alert].  Free tasks are reused oldest first, which keeps such a stale
 * pointer away from a new call for as long as possible.  Each task keeps
 * its semaphore, and its request buffer within a bound, for the next call.
 *
 * Everything here runs on the worker's main thread, except
 * ngx_nffi_task_free_read_answers(), which poll threads call.
 */

#include "ngx_nffi.h"

#include <malloc.h>


#define NGX_NFFI_TASKS_PER_SLAB     64

/* request buffers above this size are not kept for the next call */
#define NGX_NFFI_KEPT_BUF_SIZE      65536

/*
 * Request buffers kept by free tasks, all together: a burst of large
 * concurrent calls must not stay held by the pool.  Memory freed beyond
 * this is handed back to the system by a trim shortly after the burst.
 */
#define NGX_NFFI_KEPT_BUFS_MAX      (4 * 1024 * 1024)
#define NGX_NFFI_TRIM_DELAY         1000

/* answers read and not yet freed by a poll thread, per runtime */
#define NGX_NFFI_READ_ANSWERS_MAX   (1024 * 1024)

/*
 * Read answers go to the poll threads in batches: a push per answer cost
 * the main thread the cache line the poll threads had just drained.
 */
#define NGX_NFFI_READ_BATCH         16
#define NGX_NFFI_READ_BATCH_SIZE    (64 * 1024)


typedef struct ngx_nffi_slab_s  ngx_nffi_slab_t;

struct ngx_nffi_slab_s {
    ngx_nffi_slab_t     *next;
    ngx_nffi_task_t      tasks[NGX_NFFI_TASKS_PER_SLAB];
};


static ngx_int_t ngx_nffi_task_new_slab(void);
static ngx_int_t ngx_nffi_task_new_semaphore(ngx_nffi_task_t *t);
static void ngx_nffi_task_reset_semaphore(ngx_nffi_task_t *t);
static void ngx_nffi_task_keep_buffer(ngx_nffi_task_t *t);
static void ngx_nffi_task_trim(ngx_event_t *ev);
static void ngx_nffi_task_discard_answer(ngx_nffi_task_t *t);
static size_t ngx_nffi_task_free_answers(ngx_nffi_node_t *node);
static void ngx_nffi_task_request_done(void *data);


static ngx_nffi_slab_t    *ngx_nffi_slabs;
static ngx_nffi_node_t    *ngx_nffi_free_head;
static ngx_nffi_node_t    *ngx_nffi_free_tail;

/* bytes of request buffers that free tasks keep */
static size_t              ngx_nffi_kept_bufs;
static ngx_event_t         ngx_nffi_trim_event;


/* a free task, ready for a call: both references held, no answer */

ngx_nffi_task_t *
ngx_nffi_task_get(void)
{
    ngx_nffi_node_t  *node;
    ngx_nffi_task_t  *t;

    if (ngx_nffi_free_head == NULL && ngx_nffi_task_new_slab() != NGX_OK) {
        return NULL;
    }

    node = ngx_nffi_free_head;
    ngx_nffi_free_head = node->next;

    if (ngx_nffi_free_head == NULL) {
        ngx_nffi_free_tail = NULL;
    }

    node->next = NULL;
    t = ngx_nffi_task_from_node(node);

    ngx_nffi_kept_bufs -= t->buf_size;

    if (t->sem == NULL && ngx_nffi_task_new_semaphore(t) != NGX_OK) {
        ngx_nffi_task_free(t);
        return NULL;
    }

    t->id = ++ngx_nffi_worker.last_task_id;
    t->rc = 0;
    t->rsp = NULL;
    t->rsp_len = -1;
    t->bad_answer = NGX_NFFI_BAD_ANSWER_NONE;
    t->lua_ref = 1;
    t->runtime_ref = 1;
    t->timed_out = 0;
    __atomic_store_n(&t->cancelled, 0, __ATOMIC_RELAXED);

    return t;
}


static ngx_int_t
ngx_nffi_task_new_slab(void)
{
    ngx_uint_t        i;
    ngx_nffi_slab_t  *slab;

    slab = ngx_memalign(NGX_CPU_CACHE_LINE, sizeof(ngx_nffi_slab_t),
                        ngx_nffi_worker.log);
    if (slab == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(slab, sizeof(ngx_nffi_slab_t));

    slab->next = ngx_nffi_slabs;
    ngx_nffi_slabs = slab;

    for (i = 0; i < NGX_NFFI_TASKS_PER_SLAB; i++) {
        slab->tasks[i].magic = NGX_NFFI_TASK_MAGIC;
        slab->tasks[i].node.next = (i + 1 < NGX_NFFI_TASKS_PER_SLAB)
                                   ? &slab->tasks[i + 1].node : NULL;
    }

    ngx_nffi_free_head = &slab->tasks[0].node;
    ngx_nffi_free_tail = &slab->tasks[NGX_NFFI_TASKS_PER_SLAB - 1].node;

    return NGX_OK;
}


static ngx_int_t
ngx_nffi_task_new_semaphore(ngx_nffi_task_t *t)
{
    char  *errmsg;

    errmsg = NULL;

    if (ngx_nffi_worker.lua.sema_new(&t->sem, 0, &errmsg) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_nffi_worker.log, 0,
                      "nonblocking_ffi: no semaphore for a call: %s",
                      errmsg ? errmsg : "unknown error");
        t->sem = NULL;
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_nffi_task_set_request(ngx_nffi_task_t *t, const char *method,
    size_t method_len, const char *req, size_t req_len)
{
    char    *buf;
    size_t   size;

    size = method_len + 1 + req_len + 1;

    if (size > t->buf_size) {
        buf = ngx_alloc(size, ngx_nffi_worker.log);
        if (buf == NULL) {
            return NGX_ERROR;
        }

        ngx_free(t->buf);
        t->buf = buf;
        t->buf_size = size;
    }

    ngx_memcpy(t->buf, method, method_len);
    t->buf[method_len] = '\0';
    t->method_len = (int) method_len;

    if (req_len) {
        ngx_memcpy(t->buf + method_len + 1, req, req_len);
    }

    t->buf[method_len + 1 + req_len] = '\0';
    t->req_len = (int) req_len;
    t->has_req = (req != NULL);

    return NGX_OK;
}


/* NULL unless tsk is a task of the pool: for pointers from runtimes */

ngx_nffi_task_t *
ngx_nffi_task_of(void *tsk)
{
    ngx_nffi_task_t  *t = tsk;

    if (t == NULL || t->magic != NGX_NFFI_TASK_MAGIC) {
        return NULL;
    }

    return t;
}


/*
 * The runtime's reference goes: the answer was taken from the done stack at
 * now_ticks.  It is counted here, where the main thread has it anyway.
 */

void
ngx_nffi_task_answered(ngx_nffi_task_t *t, long long now_ticks)
{
    uint64_t             ns, us;
    ngx_uint_t           bucket;
    ngx_nffi_stats_t    *stats;
    ngx_nffi_runtime_t  *rt;

    rt = t->runtime;
    stats = &rt->stats;

    t->runtime_ref = 0;
    rt->pending--;
    ngx_nffi_worker.pending--;

    if (t->bad_answer != NGX_NFFI_BAD_ANSWER_NONE) {
        stats->failures[NGX_NFFI_FAILURE_BAD_ANSWER]++;

    } else if (t->rc == 0) {
        stats->answered_ok++;

    } else {
        stats->answered_error++;
    }

    if (t->rsp_len > 0) {
        stats->bytes_out += t->rsp_len;
    }

    /* bucket i: within 2^i us, rounded up */
    ns = (now_ticks > t->posted_ticks)
         ? (uint64_t) ngx_nffi_clock_ns(now_ticks - t->posted_ticks) : 0;
    us = (ns + 999) / 1000;
    bucket = (us <= 1) ? 0 : 64 - __builtin_clzll(us - 1);

    stats->latency[ngx_min(bucket, NGX_NFFI_LATENCY_BUCKETS - 1)]++;
    stats->latency_ns += ns;

    ngx_log_debug4(NGX_LOG_DEBUG_CORE, ngx_nffi_worker.log, 0,
                   "nonblocking_ffi: task #%ui answer delivered, rc %d, "
                   "%d bytes, caller %s",
                   t->id, t->rc, t->rsp_len,
                   t->lua_ref ? "woken" : "gone");

    if (t->lua_ref && !ngx_nffi_worker.exiting) {
        if (t->stream) {
            ngx_nffi_stream_answered(t);

        } else {
            ngx_nffi_worker.lua.sema_post(t->sem, 1);
        }

        return;
    }

    if (t->lua_ref || !t->timed_out) {
        stats->unclaimed++;

    } else {
        stats->late++;
    }

    if (!t->lua_ref) {
        ngx_nffi_task_free(t);
    }
}


/*
 * A stream belongs to the request (or timer) that opened it: when that
 * ends, even with the stream object not yet collected, the runtime learns
 * at once that nobody reads any more.  The stream forgets the cleanup when
 * it closes first (ngx_nffi_stream.c).
 */

ngx_int_t
ngx_nffi_task_attach_request(ngx_nffi_task_t *t, ngx_pool_t *pool)
{
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_nffi_task_request_done;
    cln->data = t;
    t->stream->cleanup = cln;

    return NGX_OK;
}


static void
ngx_nffi_task_request_done(void *data)
{
    ngx_nffi_task_t  *t = data;

    t->stream->cleanup = NULL;

    ngx_log_debug1(NGX_LOG_DEBUG_CORE, ngx_nffi_worker.log, 0,
                   "nonblocking_ffi: task #%ui: its request ended", t->id);

    ngx_nffi_task_cancel(t);
}


/* nobody waits for the answer any more: the runtime may stop early */

void
ngx_nffi_task_cancel(ngx_nffi_task_t *t)
{
    if (__atomic_exchange_n(&t->cancelled, 1, __ATOMIC_RELEASE)) {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_CORE, ngx_nffi_worker.log, 0,
                   "nonblocking_ffi: task #%ui given up by its caller",
                   t->id);

    if (t->stream) {
        ngx_nffi_stream_close(t);
    }
}


/*
 * The caller's reference goes: it read the answer, or (cancel) nobody
 * waits for the answer any more.
 */

void
ngx_nffi_task_release_lua(ngx_nffi_task_t *t, ngx_uint_t cancel)
{
    if (cancel) {
        ngx_nffi_task_cancel(t);
    }

    t->lua_ref = 0;

    if (t->stream) {
        ngx_nffi_stream_close(t);
    }

    if (!t->runtime_ref) {
        ngx_nffi_task_free(t);
    }
}


void
ngx_nffi_task_free(ngx_nffi_task_t *t)
{
    ngx_log_debug1(NGX_LOG_DEBUG_CORE, ngx_nffi_worker.log, 0,
                   "nonblocking_ffi: task #%ui freed", t->id);

    if (t->rsp) {
        ngx_nffi_task_discard_answer(t);
    }

    if (t->stream) {
        ngx_nffi_stream_free(t);
    }

    if (t->sem) {
        ngx_nffi_task_reset_semaphore(t);
    }

    ngx_nffi_task_keep_buffer(t);

    t->runtime = NULL;
    __atomic_store_n(&t->state, NGX_NFFI_TASK_FREE, __ATOMIC_RELEASE);

    t->node.next = NULL;

    if (ngx_nffi_free_tail) {
        ngx_nffi_free_tail->next = &t->node;

    } else {
        ngx_nffi_free_head = &t->node;
    }

    ngx_nffi_free_tail = &t->node;
}


/*
 * An answer that came for a coroutine that had already gone (killed, or
 * timed out in the same event-loop iteration) left a count on the
 * semaphore, which would wake the next caller at once.  The count is taken
 * back rather than the semaphore freed: its event may still be posted, and
 * lua-nginx-module would hand the memory out again.
 *
 * The count is taken back with a negative post, which ngx.semaphore's Lua
 * API refuses but the C function it wraps does not check: it adds n to
 * the count and wakes waiters only while the count is positive and a
 * waiter is queued (lua-nginx-module 0.10.x, ngx_http_lua_semaphore.c).
 * Here nobody waits, so it only adds.  Should a version ever refuse it,
 * the count stays, and the semaphore is dropped rather than reused.
 */

static void
ngx_nffi_task_reset_semaphore(ngx_nffi_task_t *t)
{
    int                  count;
    ngx_nffi_lua_api_t  *lua = &ngx_nffi_worker.lua;

    count = lua->sema_count(t->sem);

    if (count > 0) {
        lua->sema_post(t->sem, -count);
        count = lua->sema_count(t->sem);
    }

    if (count == 0) {
        return;
    }

    /*
     * count < 0: a waiter is still queued: the wait raised ("attempt to
     * yield across C-call boundary", a call from a string.gsub callback)
     * and lua-nginx-module removes the waiter only when the request ends.
     * Either way the semaphore is not ours to reuse.
     */
    ngx_log_error(NGX_LOG_ERR, ngx_nffi_worker.log, 0,
                  "nonblocking_ffi: the semaphore of a finished call has "
                  "count %d, not reused", count);
    t->sem = NULL;
}


static void
ngx_nffi_task_keep_buffer(ngx_nffi_task_t *t)
{
    if (t->buf_size <= NGX_NFFI_KEPT_BUF_SIZE
        && ngx_nffi_kept_bufs + t->buf_size <= NGX_NFFI_KEPT_BUFS_MAX)
    {
        ngx_nffi_kept_bufs += t->buf_size;
        return;
    }

    ngx_free(t->buf);
    t->buf = NULL;
    t->buf_size = 0;

    /*
     * glibc keeps freed memory below the top of its heap until a trim: one
     * a second after the last buffer was dropped, so that steady large
     * calls do not pay a trim (which locks every arena) each second.
     */
    if (!ngx_nffi_worker.exiting) {
        ngx_nffi_trim_event.handler = ngx_nffi_task_trim;
        ngx_nffi_trim_event.log = ngx_nffi_worker.log;
        ngx_nffi_trim_event.cancelable = 1;
        ngx_add_timer(&ngx_nffi_trim_event, NGX_NFFI_TRIM_DELAY);
    }
}


static void
ngx_nffi_task_trim(ngx_event_t *ev)
{
#if (NGX_DEBUG)
    int  released;

    released = malloc_trim(0);

    ngx_log_debug1(NGX_LOG_DEBUG_CORE, ngx_nffi_worker.log, 0,
                   "nonblocking_ffi: malloc_trim() after a burst: %d",
                   released);
#else
    (void) malloc_trim(0);
#endif
}


/*
 * The answer of a task whose caller has read it, or never will.  It was
 * malloc'ed on a runtime thread: it goes back to that runtime's poll
 * threads, which free it the next time they poll, unless more than
 * NGX_NFFI_READ_ANSWERS_MAX bytes already wait there (a poll thread may
 * sleep a long time), or the runtime was unloaded.  It waits in the
 * runtime's batch until NGX_NFFI_READ_BATCH answers or
 * NGX_NFFI_READ_BATCH_SIZE bytes are there.
 */

static void
ngx_nffi_task_discard_answer(ngx_nffi_task_t *t)
{
    char                *rsp;
    size_t               size;
    ngx_nffi_node_t     *node;
    ngx_nffi_runtime_t  *rt;

    rsp = t->rsp;
    rt = t->runtime;
    t->rsp = NULL;

    size = malloc_usable_size(rsp);

    /* the answer's own memory links it: a tiny one cannot */
    if (!rt->loaded || size < sizeof(ngx_nffi_node_t)) {
        free(rsp);
        return;
    }

    node = (ngx_nffi_node_t *) rsp;
    node->next = rt->read_batch;

    if (rt->read_batch == NULL) {
        rt->read_batch_last = node;
    }

    rt->read_batch = node;
    rt->read_batch_size += size;

    if (++rt->read_batch_n >= NGX_NFFI_READ_BATCH
        || rt->read_batch_size >= NGX_NFFI_READ_BATCH_SIZE)
    {
        ngx_nffi_task_hand_back_answers(rt);
    }
}


/* the runtime's batch of read answers to its poll threads, or freed */

void
ngx_nffi_task_hand_back_answers(ngx_nffi_runtime_t *rt)
{
    if (rt->read_batch == NULL) {
        return;
    }

    if (rt->loaded
        && __atomic_load_n(&rt->read_answers_size, __ATOMIC_RELAXED)
           + rt->read_batch_size <= NGX_NFFI_READ_ANSWERS_MAX)
    {
        __atomic_add_fetch(&rt->read_answers_size, rt->read_batch_size,
                           __ATOMIC_RELAXED);
        ngx_nffi_stack_push_chain(&rt->read_answers, rt->read_batch,
                                  rt->read_batch_last);

    } else {
        (void) ngx_nffi_task_free_answers(rt->read_batch);
    }

    rt->read_batch = NULL;
    rt->read_batch_last = NULL;
    rt->read_batch_size = 0;
    rt->read_batch_n = 0;
}


/* on a poll thread, or on the main thread once nobody polls any more */

void
ngx_nffi_task_free_read_answers(ngx_nffi_runtime_t *rt)
{
    size_t  freed;

    freed = ngx_nffi_task_free_answers(
                ngx_nffi_stack_take_all(&rt->read_answers));

    if (freed) {
        __atomic_sub_fetch(&rt->read_answers_size, freed, __ATOMIC_RELAXED);
    }
}


/* frees a list of read answers linked by next; returns their bytes */

static size_t
ngx_nffi_task_free_answers(ngx_nffi_node_t *node)
{
    size_t            freed;
    ngx_nffi_node_t  *next;

    freed = 0;

    for ( /* void */ ; node; node = next) {
        next = node->next;
        freed += malloc_usable_size(node);
        free(node);
    }

    return freed;
}


/*
 * At worker exit: lua-nginx-module alerts about semaphores still allocated
 * when it frees them all, and no answer can wake anybody any more.
 */

void
ngx_nffi_task_release_semaphores(void)
{
    ngx_uint_t        i;
    ngx_nffi_slab_t  *slab;

    if (ngx_nffi_trim_event.timer_set) {
        ngx_del_timer(&ngx_nffi_trim_event);
    }

    for (slab = ngx_nffi_slabs; slab; slab = slab->next) {
        for (i = 0; i < NGX_NFFI_TASKS_PER_SLAB; i++) {
            if (slab->tasks[i].sem) {
                ngx_nffi_worker.lua.sema_gc(slab->tasks[i].sem);
                slab->tasks[i].sem = NULL;
            }
        }
    }
}
