/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * The runtime-side ABI: everything include/nonblocking_ffi.h declares, in
 * its order, then the lua-resty-ffi names.  Runtime threads call these, any
 * of them at any time: nothing here touches nginx structures, and a misuse
 * (a pointer that is no task or queue, a second answer) is logged as
 * [alert] through the main thread, never followed.
 */

#include "ngx_nffi.h"


#if (NGX_DEBUG)
static void ngx_nffi_abi_trace(const char *fmt, ...);
/* not the log itself: it is freed with the cycle while runtimes still run */
#define ngx_nffi_abi_debug(...)                                               \
    do {                                                                      \
        if (__atomic_load_n(&ngx_nffi_traced.on, __ATOMIC_RELAXED)) {         \
            ngx_nffi_abi_trace(__VA_ARGS__);                                  \
        }                                                                     \
    } while (0)
#else
#define ngx_nffi_abi_debug(...)
#endif

/* how ngx_nffi_abi_take() takes */
#define NGX_NFFI_TAKE_NOW     0
#define NGX_NFFI_TAKE_WAIT    1
#define NGX_NFFI_TAKE_OR_ARM  2

static ngx_nffi_runtime_t *ngx_nffi_abi_runtime(void *tq, const char *what);
static int ngx_nffi_abi_take(void *tq, void **tasks, int max, int how);
static ngx_nffi_task_t *ngx_nffi_abi_stream_task(void *tsk, const char *what);
static int ngx_nffi_abi_send(void *tsk, char *chunk, int len, int wait);
static int ngx_nffi_abi_read(void *tsk, char **chunk, int *len, int wait);
static void ngx_nffi_abi_alert(const char *msg);


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

    t = ngx_nffi_task_of(tsk);

    if (t == NULL) {
        ngx_nffi_abi_alert("get_req on something that is not a task");
    }

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


void
ngx_http_lua_nonblocking_ffi_respond(void *tsk, int rc, char *rsp,
    int rsp_len)
{
    int               expected;
    size_t            len;
    ngx_nffi_task_t  *t;

    t = ngx_nffi_task_of(tsk);

    if (t == NULL) {
        ngx_nffi_abi_alert("respond on something that is not a task, answer "
                           "dropped");
        free(rsp);
        return;
    }

    expected = NGX_NFFI_TASK_TAKEN;

    if (!__atomic_compare_exchange_n(&t->state, &expected,
                                     NGX_NFFI_TASK_ANSWERED, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    {
        ngx_nffi_abi_alert("respond on a task that is not waiting for an "
                           "answer (answered twice?), answer dropped");
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

    ngx_nffi_abi_debug("nonblocking_ffi: task #%ui answered, rc %d, "
                       "%d bytes", t->id, rc, t->rsp_len);

    ngx_nffi_event_push_done(&t->node);
}


int
ngx_http_lua_nonblocking_ffi_abi_version(void)
{
    return NONBLOCKING_FFI_ABI_VERSION;
}


int
ngx_http_lua_nonblocking_ffi_task_poll_batch(void *tq, void **tasks, int max)
{
    int  n;

    n = ngx_nffi_abi_take(tq, tasks, max, NGX_NFFI_TAKE_WAIT);

    return n < 0 ? 0 : n;
}


const char *
ngx_http_lua_nonblocking_ffi_get_method(void *tsk, int *len)
{
    ngx_nffi_task_t  *t;

    t = ngx_nffi_task_of(tsk);

    if (t == NULL) {
        ngx_nffi_abi_alert("get_method on something that is not a task");

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

    t = ngx_nffi_task_of(tsk);

    if (t == NULL) {
        ngx_nffi_abi_alert("task_cancelled on something that is not a task");
        return 1;
    }

    return __atomic_load_n(&t->cancelled, __ATOMIC_ACQUIRE);
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


void
ngx_http_lua_nonblocking_ffi_init_error(void *tq, const char *msg, int len)
{
    char                *copy, *old;
    size_t               n;
    ngx_nffi_runtime_t  *rt;

    rt = ngx_nffi_runtime_of(tq);

    if (rt == NULL || msg == NULL) {
        ngx_nffi_abi_alert("init_error on something that is not a runtime "
                           "queue, or without a message");
        return;
    }

    n = len > 0 ? (size_t) len : strlen(msg);

    copy = malloc(n + 1);
    if (copy == NULL) {
        return;
    }

    ngx_memcpy(copy, msg, n);
    copy[n] = '\0';

    old = __atomic_exchange_n(&rt->init_error, copy, __ATOMIC_ACQ_REL);
    free(old);
}


int
ngx_http_lua_nonblocking_ffi_queue_fd(void *tq)
{
    ngx_nffi_runtime_t  *rt;

    rt = ngx_nffi_abi_runtime(tq, "queue_fd");

    return rt ? ngx_nffi_queue_fd(&rt->queue) : -1;
}


int
ngx_http_lua_nonblocking_ffi_task_take(void *tq, void **tasks, int max)
{
    return ngx_nffi_abi_take(tq, tasks, max, NGX_NFFI_TAKE_NOW);
}


int
ngx_http_lua_nonblocking_ffi_task_take_or_arm(void *tq, void **tasks,
    int max)
{
    return ngx_nffi_abi_take(tq, tasks, max, NGX_NFFI_TAKE_OR_ARM);
}


int
ngx_http_lua_nonblocking_ffi_queue_wait_fd(void *tq)
{
    ngx_nffi_runtime_t  *rt;

    rt = ngx_nffi_abi_runtime(tq, "queue_wait_fd");

    return rt ? ngx_nffi_queue_wait_fd(&rt->queue) : -1;
}


int
ngx_http_lua_nonblocking_ffi_task_is_stream(void *tsk)
{
    ngx_nffi_task_t  *t;

    t = ngx_nffi_task_of(tsk);

    if (t == NULL) {
        ngx_nffi_abi_alert("task_is_stream on something that is not a task");
        return 0;
    }

    return t->stream != NULL;
}


int
ngx_http_lua_nonblocking_ffi_stream_send(void *tsk, char *chunk, int len)
{
    return ngx_nffi_abi_send(tsk, chunk, len, 1);
}


int
ngx_http_lua_nonblocking_ffi_stream_try_send(void *tsk, char *chunk, int len)
{
    return ngx_nffi_abi_send(tsk, chunk, len, 0);
}


int
ngx_http_lua_nonblocking_ffi_stream_read(void *tsk, char **chunk, int *len)
{
    return ngx_nffi_abi_read(tsk, chunk, len, 1);
}


int
ngx_http_lua_nonblocking_ffi_stream_try_read(void *tsk, char **chunk,
    int *len)
{
    return ngx_nffi_abi_read(tsk, chunk, len, 0);
}


int
ngx_http_lua_nonblocking_ffi_stream_fd(void *tsk)
{
    ngx_nffi_task_t  *t;

    t = ngx_nffi_abi_stream_task(tsk, "stream_fd");

    if (t == NULL) {
        errno = EINVAL;
        return -1;
    }

    return ngx_nffi_stream_fd(t);
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


/* -1 once unloaded and drained, else the number of tasks taken */

static int
ngx_nffi_abi_take(void *tq, void **tasks, int max, int how)
{
    int                  i, n;
    ngx_nffi_node_t     *nodes[NONBLOCKING_FFI_POLL_BATCH_MAX];
    ngx_nffi_task_t     *t;
    ngx_nffi_runtime_t  *rt;

    rt = ngx_nffi_abi_runtime(tq, "task_poll or task_take");

    if (rt == NULL) {
        return -1;
    }

    if (tasks == NULL || max < 1) {
        ngx_nffi_abi_alert("task_poll or task_take without room for a "
                           "task");
        return -1;
    }

    if (max > NONBLOCKING_FFI_POLL_BATCH_MAX) {
        max = NONBLOCKING_FFI_POLL_BATCH_MAX;
    }

    if (!__atomic_load_n(&rt->polled, __ATOMIC_RELAXED)) {
        __atomic_store_n(&rt->polled, 1, __ATOMIC_RELAXED);
    }

    switch (how) {

    case NGX_NFFI_TAKE_WAIT:
        n = ngx_nffi_queue_pop(&rt->queue, nodes, max);
        n = (n == 0) ? -1 : n;
        break;

    case NGX_NFFI_TAKE_OR_ARM:
        n = ngx_nffi_queue_take_or_arm(&rt->queue, nodes, max);
        break;

    default: /* NGX_NFFI_TAKE_NOW */
        n = ngx_nffi_queue_try_pop(&rt->queue, nodes, max);
    }

    for (i = 0; i < n; i++) {
        t = ngx_nffi_task_from_node(nodes[i]);
        __atomic_store_n(&t->state, NGX_NFFI_TASK_TAKEN, __ATOMIC_RELEASE);
        tasks[i] = t;

        ngx_nffi_abi_debug("nonblocking_ffi: task #%ui taken by a poller of "
                           "%s", t->id, rt->lib);
    }

    /*
     * After the take, not before: a poller that has just answered must be
     * counted as spinning before the caller's next call comes, or that
     * call wakes an armed poller for nothing (and Go's scheduler with it).
     */
    ngx_nffi_task_free_read_answers(rt);

    return n;
}


/* the runtime of queue tq, or NULL (alerted, errno EINVAL) */

static ngx_nffi_runtime_t *
ngx_nffi_abi_runtime(void *tq, const char *what)
{
    u_char               buf[NGX_MAX_ERROR_STR], *p;
    ngx_nffi_runtime_t  *rt;

    rt = ngx_nffi_runtime_of(tq);

    if (rt == NULL) {
        p = ngx_snprintf(buf, sizeof(buf),
                         "%s on something that is not a runtime queue%Z",
                         what);
        (void) p;
        ngx_nffi_abi_alert((const char *) buf);
        errno = EINVAL;
    }

    return rt;
}


/* the task of a stream call that waits for its answer, or NULL (alerted) */

static ngx_nffi_task_t *
ngx_nffi_abi_stream_task(void *tsk, const char *what)
{
    u_char            buf[NGX_MAX_ERROR_STR], *p;
    ngx_nffi_task_t  *t;

    t = ngx_nffi_task_of(tsk);

    if (t != NULL
        && __atomic_load_n(&t->state, __ATOMIC_ACQUIRE) == NGX_NFFI_TASK_TAKEN
        && t->stream != NULL)
    {
        return t;
    }

    p = ngx_snprintf(buf, sizeof(buf),
                     "%s on something that is not a stream task waiting "
                     "for its answer%Z", what);
    (void) p;
    ngx_nffi_abi_alert((const char *) buf);

    return NULL;
}


static int
ngx_nffi_abi_send(void *tsk, char *chunk, int len, int wait)
{
    int                rc;
    size_t             n;
    ngx_nffi_task_t   *t;
    ngx_nffi_chunk_t  *c;

    t = ngx_nffi_abi_stream_task(tsk, wait ? "stream_send" : "stream_try_send");

    if (t == NULL || len < 0) {
        if (t) {
            ngx_nffi_abi_alert("stream_send with a negative length");
        }

        free(chunk);
        return NONBLOCKING_FFI_STREAM_ERROR;
    }

    if (chunk == NULL) {
        return NONBLOCKING_FFI_STREAM_OK;
    }

    n = len ? (size_t) len : strlen(chunk);

    if (n == 0) {
        free(chunk);
        return NONBLOCKING_FFI_STREAM_OK;
    }

    c = ngx_nffi_stream_new_chunk(t, chunk, n);
    if (c == NULL) {
        ngx_nffi_abi_alert("no memory for a stream chunk, chunk dropped");
        free(chunk);
        return NONBLOCKING_FFI_STREAM_ERROR;
    }

    rc = ngx_nffi_stream_send(t, c, wait);

    if (rc == NONBLOCKING_FFI_STREAM_OK) {
        ngx_nffi_abi_debug("nonblocking_ffi: task #%ui sent a chunk of %uz "
                           "bytes", t->id, n);
        ngx_nffi_event_push_done(&c->node);

    } else if (rc == NONBLOCKING_FFI_STREAM_AGAIN) {
        /* the chunk stays the caller's, its wrapper goes */
        free(c);
    }

    return rc;
}


static int
ngx_nffi_abi_read(void *tsk, char **chunk, int *len, int wait)
{
    int                rc;
    ngx_nffi_task_t   *t;
    ngx_nffi_chunk_t  *room;

    t = ngx_nffi_abi_stream_task(tsk, wait ? "stream_read" : "stream_try_read");

    if (t == NULL || chunk == NULL || len == NULL) {
        if (t) {
            ngx_nffi_abi_alert("stream_read without room for the chunk");
        }

        return NONBLOCKING_FFI_STREAM_ERROR;
    }

    rc = ngx_nffi_stream_read(t, chunk, len, wait, &room);

    if (room) {
        ngx_nffi_event_push_done(&room->node);
    }

    ngx_nffi_abi_debug("nonblocking_ffi: task #%ui read a chunk: %d, %d "
                       "bytes", t->id, rc, *len);

    return rc;
}


static void
ngx_nffi_abi_alert(const char *msg)
{
    u_char  buf[NGX_MAX_ERROR_STR], *p;

    p = ngx_snprintf(buf, sizeof(buf), "nonblocking_ffi: %s", msg);

    ngx_nffi_event_log(NGX_LOG_ALERT, (const char *) buf, p - buf);
}


#if (NGX_DEBUG)

/* through the main thread, like every line a runtime thread logs */

static void
ngx_nffi_abi_trace(const char *fmt, ...)
{
    u_char   buf[NGX_MAX_ERROR_STR], *p;
    va_list  args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf), fmt, args);
    va_end(args);

    ngx_nffi_event_log(NGX_LOG_DEBUG, (const char *) buf, p - buf);
}

#endif
