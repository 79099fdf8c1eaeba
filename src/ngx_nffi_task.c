/*
 * Tasks: one per call.  They live in slabs that are never freed while the
 * worker runs, so that a runtime holding a stale task pointer (a second
 * answer) touches pooled memory, never freed memory, and the state check
 * turns it into an [alert].  Free tasks are reused oldest first, which
 * keeps such a stale pointer away from a new call for as long as possible.
 *
 * This file also holds the runtime-side ABI of nonblocking_ffi.h.
 */

#include "ngx_nffi.h"


#define NGX_NFFI_TASKS_PER_SLAB   64

/* request buffers above this size are not kept for the next call */
#define NGX_NFFI_KEEP_BUF_SIZE    65536

#define NGX_NFFI_POLL_BATCH_MAX   1024


typedef struct ngx_nffi_slab_s  ngx_nffi_slab_t;

struct ngx_nffi_slab_s {
    ngx_nffi_slab_t     *next;
    ngx_nffi_task_t      tasks[NGX_NFFI_TASKS_PER_SLAB];
};


static ngx_nffi_task_t *ngx_nffi_task_of(void *tsk, const char *caller);


static ngx_nffi_slab_t    *ngx_nffi_slabs;
static ngx_nffi_node_t    *ngx_nffi_free_head;
static ngx_nffi_node_t    *ngx_nffi_free_tail;


#define ngx_nffi_task_from_node(n)                                            \
    ((ngx_nffi_task_t *) ((u_char *) (n) - offsetof(ngx_nffi_task_t, node)))


ngx_nffi_task_t *
ngx_nffi_task_get(void)
{
    ngx_uint_t        i;
    ngx_nffi_node_t  *node;
    ngx_nffi_slab_t  *slab;

    if (ngx_nffi_free_head == NULL) {
        slab = ngx_calloc(sizeof(ngx_nffi_slab_t), ngx_nffi_worker.log);
        if (slab == NULL) {
            return NULL;
        }

        slab->next = ngx_nffi_slabs;
        ngx_nffi_slabs = slab;

        for (i = 0; i < NGX_NFFI_TASKS_PER_SLAB; i++) {
            slab->tasks[i].magic = NGX_NFFI_TASK_MAGIC;
            slab->tasks[i].node.next = (i + 1 < NGX_NFFI_TASKS_PER_SLAB)
                                       ? &slab->tasks[i + 1].node : NULL;
        }

        ngx_nffi_free_head = &slab->tasks[0].node;
        ngx_nffi_free_tail = &slab->tasks[NGX_NFFI_TASKS_PER_SLAB - 1].node;
    }

    node = ngx_nffi_free_head;
    ngx_nffi_free_head = node->next;

    if (ngx_nffi_free_head == NULL) {
        ngx_nffi_free_tail = NULL;
    }

    node->next = NULL;

    return ngx_nffi_task_from_node(node);
}


void
ngx_nffi_task_free(ngx_nffi_task_t *t)
{
    int                  count;
    ngx_nffi_lua_api_t  *lua = &ngx_nffi_worker.lua;

    if (t->rsp) {
        ngx_nffi_runtime_discard_answer(t->runtime, t->rsp);
        t->rsp = NULL;
    }

    /*
     * An answer that came for a coroutine that had already gone (killed,
     * or timed out in the same event-loop iteration) left a count on the
     * semaphore, which would wake the next caller at once.  The count is
     * taken back rather than the semaphore freed: its event may still be
     * posted, and lua-nginx-module would hand the memory out again.
     */
    if (t->sem) {
        count = lua->sema_count(t->sem);

        if (count > 0) {
            lua->sema_post(t->sem, -count);

        } else if (count < 0) {
            /*
             * A waiter is still queued: the wait raised ("attempt to yield
             * across C-call boundary", a call from a string.gsub callback)
             * and lua-nginx-module removes the waiter only when the request
             * ends.  The semaphore is not ours to reuse.
             */
            ngx_log_error(NGX_LOG_ERR, ngx_nffi_worker.log, 0,
                          "nonblocking_ffi: the semaphore of a finished "
                          "call still has %d waiters, not reused", -count);
            t->sem = NULL;
        }
    }

    if (t->buf_size > NGX_NFFI_KEEP_BUF_SIZE) {
        ngx_free(t->buf);
        t->buf = NULL;
        t->buf_size = 0;
    }

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


/* on the main thread, for each task taken from the done queue */

void
ngx_nffi_task_answered(ngx_nffi_task_t *t)
{
    t->runtime_ref = 0;
    t->runtime->outstanding--;
    ngx_nffi_worker.outstanding--;

    if (t->lua_ref && !ngx_nffi_worker.exiting) {
        ngx_nffi_worker.lua.sema_post(t->sem, 1);
        return;
    }

    if (!t->lua_ref) {
        ngx_nffi_task_free(t);
    }
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

    for (slab = ngx_nffi_slabs; slab; slab = slab->next) {
        for (i = 0; i < NGX_NFFI_TASKS_PER_SLAB; i++) {
            if (slab->tasks[i].sem) {
                ngx_nffi_worker.lua.sema_gc(slab->tasks[i].sem);
                slab->tasks[i].sem = NULL;
            }
        }
    }
}


static ngx_nffi_task_t *
ngx_nffi_task_of(void *tsk, const char *caller)
{
    ngx_nffi_task_t  *t = tsk;

    if (t == NULL || t->magic != NGX_NFFI_TASK_MAGIC) {
        ngx_nffi_event_log(NGX_LOG_ALERT, caller, ngx_strlen(caller));
        return NULL;
    }

    return t;
}


/* the runtime-side ABI */


int
ngx_http_lua_nonblocking_ffi_abi_version(void)
{
    return NONBLOCKING_FFI_ABI_VERSION;
}


int
ngx_http_lua_nonblocking_ffi_task_poll_batch(void *tq, void **tasks, int max)
{
    int                  i, n;
    ngx_nffi_node_t     *nodes[NGX_NFFI_POLL_BATCH_MAX];
    ngx_nffi_task_t     *t;
    ngx_nffi_runtime_t  *rt = tq;

    if (rt == NULL || rt->magic != NGX_NFFI_RUNTIME_MAGIC) {
        ngx_nffi_event_log(NGX_LOG_ALERT,
                           "nonblocking_ffi: task_poll on something that is "
                           "not a runtime queue", 0);
        return 0;
    }

    if (tasks == NULL || max < 1) {
        ngx_nffi_event_log(NGX_LOG_ALERT,
                           "nonblocking_ffi: task_poll_batch without room "
                           "for a task", 0);
        return 0;
    }

    if (max > NGX_NFFI_POLL_BATCH_MAX) {
        max = NGX_NFFI_POLL_BATCH_MAX;
    }

    ngx_nffi_runtime_free_answers_read(rt);

    n = ngx_nffi_queue_pop(&rt->queue, nodes, max);

    for (i = 0; i < n; i++) {
        t = ngx_nffi_task_from_node(nodes[i]);
        __atomic_store_n(&t->state, NGX_NFFI_TASK_POLLED, __ATOMIC_RELEASE);
        tasks[i] = t;
    }

    return n;
}


void *
ngx_http_lua_nonblocking_ffi_task_poll(void *tq)
{
    void  *task;

    if (ngx_http_lua_nonblocking_ffi_task_poll_batch(tq, &task, 1) == 0) {
        return NULL;
    }

    return task;
}


char *
ngx_http_lua_nonblocking_ffi_get_req(void *tsk, int *len)
{
    ngx_nffi_task_t  *t;

    t = ngx_nffi_task_of(tsk, "nonblocking_ffi: get_req on something that "
                              "is not a task");

    if (t == NULL || !t->has_req) {
        if (len) {
            *len = 0;
        }

        return NULL;
    }

    if (len) {
        *len = t->req_len;
    }

    return t->buf + t->method_len + 1;
}


const char *
ngx_http_lua_nonblocking_ffi_get_method(void *tsk, int *len)
{
    ngx_nffi_task_t  *t;

    t = ngx_nffi_task_of(tsk, "nonblocking_ffi: get_method on something "
                              "that is not a task");

    if (t == NULL) {
        if (len) {
            *len = 0;
        }

        return NULL;
    }

    if (len) {
        *len = t->method_len;
    }

    return t->buf;
}


int
ngx_http_lua_nonblocking_ffi_task_cancelled(void *tsk)
{
    ngx_nffi_task_t  *t;

    t = ngx_nffi_task_of(tsk, "nonblocking_ffi: task_cancelled on something "
                              "that is not a task");

    return t == NULL ? 1 : __atomic_load_n(&t->cancelled, __ATOMIC_ACQUIRE);
}


void
ngx_http_lua_nonblocking_ffi_respond(void *tsk, int rc, char *rsp,
    int rsp_len)
{
    int               expected;
    size_t            len;
    ngx_nffi_task_t  *t;

    t = ngx_nffi_task_of(tsk, "nonblocking_ffi: respond on something that "
                              "is not a task, answer dropped");
    if (t == NULL) {
        free(rsp);
        return;
    }

    expected = NGX_NFFI_TASK_POLLED;

    if (!__atomic_compare_exchange_n(&t->state, &expected,
                                     NGX_NFFI_TASK_ANSWERED, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    {
        ngx_nffi_event_log(NGX_LOG_ALERT,
                           "nonblocking_ffi: respond on a task that is not "
                           "waiting for an answer (answered twice?), "
                           "answer dropped", 0);
        free(rsp);
        return;
    }

    t->rc = rc;
    t->rsp = NULL;
    t->rsp_len = -1;
    t->bad_answer = NGX_NFFI_BAD_ANSWER_NONE;

    if (rsp_len < 0) {
        free(rsp);
        t->bad_answer = NGX_NFFI_BAD_ANSWER_NEGATIVE_LENGTH;

    } else if (rsp) {
        len = rsp_len ? (size_t) rsp_len : strlen(rsp);

        if (len > NGX_MAX_INT32_VALUE) {
            free(rsp);
            t->bad_answer = NGX_NFFI_BAD_ANSWER_TOO_LONG;

        } else {
            t->rsp = rsp;
            t->rsp_len = (int) len;
        }
    }

    ngx_nffi_event_push_done(t);
}


void
ngx_http_lua_nonblocking_ffi_log(int level, const char *msg, int len)
{
    if (msg == NULL) {
        return;
    }

    if (level < NGX_LOG_EMERG || level > NGX_LOG_DEBUG) {
        level = NGX_LOG_ERR;
    }

    ngx_nffi_event_log(level, msg, len > 0 ? (size_t) len : strlen(msg));
}


/* lua-resty-ffi names */


void *
ngx_http_lua_ffi_task_poll(void *tq)
{
    return ngx_http_lua_nonblocking_ffi_task_poll(tq);
}


char *
ngx_http_lua_ffi_get_req(void *tsk, int *len)
{
    return ngx_http_lua_nonblocking_ffi_get_req(tsk, len);
}


void
ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp, int rsp_len)
{
    ngx_http_lua_nonblocking_ffi_respond(tsk, rc, rsp, rsp_len);
}
