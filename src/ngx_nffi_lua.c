/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * What lib/resty/nonblocking_ffi.lua calls through the FFI, in the order of
 * its ffi.cdef.  All of it runs on the worker's main thread.  The Lua side
 * checks types; everything that reaches C is checked again here, so that a
 * caller of these exported functions cannot get past a bound.
 */

#include "ngx_nffi.h"

#include <ngx_http.h>


/*
 * A runtime's figures for runtime:__stats(); ngx_nffi_lua_stats_t in the
 * Lua library's ffi.cdef: keep both in step.  Doubles, which Lua reads as
 * numbers (exact up to 2^53).
 */
typedef struct {
    const char            *lib;
    const char            *cfg;
    double                 loaded_at;
    int                    loaded;
    double                 posted;
    double                 answered_ok;
    double                 answered_error;
    double                 late;
    double                 unclaimed;
    double                 failures[NGX_NFFI_FAILURES];
    double                 bytes_in;
    double                 bytes_out;
    double                 latency[NGX_NFFI_LATENCY_BUCKETS];
    double                 latency_seconds;
    double                 pending;
    double                 queued;
    double                 queued_max;
    double                 sleeping;
    double                 spinning;
} ngx_nffi_lua_stats_t;


ngx_nffi_runtime_t *ngx_nffi_lua_load(const char *lib, size_t lib_len,
    const char *cfg, size_t cfg_len, int is_global, int max_queue, int spin,
    int loop_spin, int window, u_char *err, size_t *errlen);
ngx_nffi_task_t *ngx_nffi_lua_post(void *runtime, const char *method,
    size_t method_len, const char *req, size_t req_len, int window,
    const char **err);
int ngx_nffi_lua_abandon(ngx_nffi_task_t *t, int timed_out);
void ngx_nffi_lua_release(ngx_nffi_task_t *t);
void ngx_nffi_lua_gc(ngx_nffi_task_t *t);
void ngx_nffi_lua_unload(void *runtime);
int ngx_nffi_lua_pending(void *runtime);
void ngx_nffi_lua_failed(void *runtime, int failure);
ngx_nffi_chunk_t *ngx_nffi_lua_stream_next(ngx_nffi_task_t *t, int *state);
int ngx_nffi_lua_stream_attach(ngx_nffi_task_t *t, ngx_http_request_t *r);
void ngx_nffi_lua_stream_cancel(ngx_nffi_task_t *t, int timed_out);
int ngx_nffi_lua_stream_write(ngx_nffi_task_t *t, const char *data,
    size_t len);
void ngx_nffi_lua_stream_close_write(ngx_nffi_task_t *t);
int ngx_nffi_lua_stats(void *runtime, ngx_nffi_lua_stats_t *out);
void *ngx_nffi_lua_next_runtime(void *runtime);


static void ngx_nffi_lua_timed_out(ngx_nffi_task_t *t);


#define ngx_nffi_lua_error(...)                                               \
    *errlen = ngx_snprintf(err, *errlen, __VA_ARGS__) - err


ngx_nffi_runtime_t *
ngx_nffi_lua_load(const char *lib, size_t lib_len, const char *cfg,
    size_t cfg_len, int is_global, int max_queue, int spin, int loop_spin,
    int window, u_char *err, size_t *errlen)
{
    ngx_nffi_worker_start((ngx_cycle_t *) ngx_cycle);

    if (!ngx_nffi_worker.active) {
        ngx_nffi_lua_error("%s", ngx_nffi_worker.inactive_reason);
        return NULL;
    }

    /* a NUL would cut the path or the cfg without a word */
    if (lib == NULL || lib_len == 0 || ngx_strlen(lib) != lib_len) {
        ngx_nffi_lua_error("bad lib: non-empty string without NUL bytes "
                           "expected");
        return NULL;
    }

    if (cfg && ngx_strlen(cfg) != cfg_len) {
        ngx_nffi_lua_error("bad cfg: string without NUL bytes or nil "
                           "expected");
        return NULL;
    }

    if (max_queue < 1) {
        ngx_nffi_lua_error("bad opts.max_queue: integer from 1 to %d "
                           "expected", NGX_MAX_INT32_VALUE);
        return NULL;
    }

    if (spin < 0 || spin > NGX_NFFI_SPIN_MAX) {
        ngx_nffi_lua_error("bad opts.spin: integer from 0 to %d expected",
                           NGX_NFFI_SPIN_MAX);
        return NULL;
    }

    if (loop_spin < 0 || loop_spin > NGX_NFFI_SPIN_MAX) {
        ngx_nffi_lua_error("bad opts.loop_spin: integer from 0 to %d "
                           "expected", NGX_NFFI_SPIN_MAX);
        return NULL;
    }

    if (window < 1) {
        ngx_nffi_lua_error("bad opts.window: integer from 1 to %d expected",
                           NGX_MAX_INT32_VALUE);
        return NULL;
    }

    return ngx_nffi_runtime_load(lib, cfg, is_global != 0,
                                 (ngx_uint_t) max_queue, spin,
                                 (ngx_uint_t) loop_spin, (size_t) window,
                                 err, errlen);
}


/* window 0: an ordinary call; else a stream with that window */

ngx_nffi_task_t *
ngx_nffi_lua_post(void *runtime, const char *method, size_t method_len,
    const char *req, size_t req_len, int window, const char **err)
{
    ngx_nffi_task_t     *t;
    ngx_nffi_runtime_t  *rt;

    rt = ngx_nffi_runtime_of(runtime);

    if (rt == NULL) {
        *err = "not a runtime";
        return NULL;
    }

    if (!ngx_nffi_worker.active) {
        *err = ngx_nffi_worker.inactive_reason;
        return NULL;
    }

    if (!rt->loaded) {
        ngx_nffi_runtime_failed(rt, NGX_NFFI_FAILURE_UNLOADED);
        *err = "unloaded";
        return NULL;
    }

    if (rt->pending >= rt->max_queue) {
        ngx_nffi_runtime_failed(rt, NGX_NFFI_FAILURE_QUEUE_FULL);
        *err = "queue full";
        return NULL;
    }

    if (req_len > NGX_MAX_INT32_VALUE - 1
        || method_len > NGX_MAX_INT32_VALUE - 1)
    {
        *err = "request too large";
        return NULL;
    }

    if (window < 0) {
        *err = "bad window";
        return NULL;
    }

    t = ngx_nffi_task_get();
    if (t == NULL) {
        *err = "no memory";
        return NULL;
    }

    if (ngx_nffi_task_set_request(t, method, method_len, req, req_len)
        != NGX_OK
        || (window && ngx_nffi_stream_open(t, (size_t) window) != NGX_OK))
    {
        ngx_nffi_task_free(t);
        *err = "no memory";
        return NULL;
    }

    ngx_nffi_runtime_post(rt, t);

    return t;
}


/*
 * The caller's wait failed (timed out, or lua-nginx-module refused it).
 * Returns 1 when the answer came meanwhile: the caller then reads it and
 * releases the task as usual.
 */

int
ngx_nffi_lua_abandon(ngx_nffi_task_t *t, int timed_out)
{
    if (!t->runtime_ref) {
        return 1;
    }

    if (timed_out) {
        ngx_nffi_lua_timed_out(t);
    }

    ngx_nffi_task_release_lua(t, 1);

    return 0;
}


void
ngx_nffi_lua_release(ngx_nffi_task_t *t)
{
    ngx_nffi_task_release_lua(t, 0);
}


/* the finalizer of a call whose coroutine died while it waited */

void
ngx_nffi_lua_gc(ngx_nffi_task_t *t)
{
    ngx_nffi_task_release_lua(t, 1);
}


void
ngx_nffi_lua_unload(void *runtime)
{
    ngx_nffi_runtime_t  *rt;

    rt = ngx_nffi_runtime_of(runtime);

    if (rt) {
        ngx_nffi_runtime_unload(rt);
    }
}


int
ngx_nffi_lua_pending(void *runtime)
{
    ngx_nffi_runtime_t  *rt;

    rt = ngx_nffi_runtime_of(runtime);

    return rt ? (int) rt->pending : -1;
}


/* a call that failed in Lua before it reached C: counted all the same */

void
ngx_nffi_lua_failed(void *runtime, int failure)
{
    ngx_nffi_runtime_t  *rt;

    rt = ngx_nffi_runtime_of(runtime);

    if (rt && (failure == NGX_NFFI_FAILURE_UNLOADED
               || failure == NGX_NFFI_FAILURE_CANNOT_YIELD))
    {
        ngx_nffi_runtime_failed(rt, (ngx_uint_t) failure);
    }
}


/*
 * stream:read(): the next chunk the runtime sent, or NULL with *state 0
 * (wait on the task's semaphore, then call again), 1 (the answer is in the
 * task) or 2 (closed).
 */

ngx_nffi_chunk_t *
ngx_nffi_lua_stream_next(ngx_nffi_task_t *t, int *state)
{
    if (t == NULL || t->stream == NULL || state == NULL) {
        if (state) {
            *state = 2;
        }

        return NULL;
    }

    return ngx_nffi_stream_next(t, state);
}


/* the request (or timer) that opened the stream: it closes it at its end */

int
ngx_nffi_lua_stream_attach(ngx_nffi_task_t *t, ngx_http_request_t *r)
{
    if (t == NULL || t->stream == NULL || r == NULL || r->pool == NULL) {
        return NGX_ERROR;
    }

    return ngx_nffi_task_attach_request(t, r->pool);
}


/*
 * stream:close(), or its overall timeout: the runtime's sends and reads
 * fail from now on, and every coroutine waiting on the stream is woken.
 * The caller's reference stays until those coroutines are out of their
 * wait (ngx_nffi_lua_release() then).
 */

void
ngx_nffi_lua_stream_cancel(ngx_nffi_task_t *t, int timed_out)
{
    if (t == NULL || t->stream == NULL || !t->lua_ref) {
        return;
    }

    if (timed_out && t->runtime_ref) {
        ngx_nffi_lua_timed_out(t);
    }

    ngx_nffi_task_cancel(t);
}


/* stream:write(): see ngx_nffi_stream_write() */

int
ngx_nffi_lua_stream_write(ngx_nffi_task_t *t, const char *data, size_t len)
{
    if (t == NULL || t->stream == NULL || (data == NULL && len)) {
        return -1;
    }

    return ngx_nffi_stream_write(t, data, len);
}


void
ngx_nffi_lua_stream_close_write(ngx_nffi_task_t *t)
{
    if (t && t->stream) {
        ngx_nffi_stream_close_write(t);
    }
}


int
ngx_nffi_lua_stats(void *runtime, ngx_nffi_lua_stats_t *out)
{
    ngx_uint_t              i;
    ngx_nffi_stats_t       *st;
    ngx_nffi_runtime_t     *rt;
    ngx_nffi_queue_stats_t  qs;

    rt = ngx_nffi_runtime_of(runtime);

    if (rt == NULL || out == NULL) {
        return NGX_ERROR;
    }

    st = &rt->stats;
    ngx_nffi_queue_stats(&rt->queue, &qs);

    out->lib = rt->lib;
    out->cfg = rt->cfg;
    out->loaded_at = (double) rt->loaded_at;
    out->loaded = rt->loaded;
    out->posted = (double) st->posted;
    out->answered_ok = (double) st->answered_ok;
    out->answered_error = (double) st->answered_error;
    out->late = (double) st->late;
    out->unclaimed = (double) st->unclaimed;

    for (i = 0; i < NGX_NFFI_FAILURES; i++) {
        out->failures[i] = (double) st->failures[i];
    }

    out->bytes_in = (double) st->bytes_in;
    out->bytes_out = (double) st->bytes_out;

    for (i = 0; i < NGX_NFFI_LATENCY_BUCKETS; i++) {
        out->latency[i] = (double) st->latency[i];
    }

    out->latency_seconds = (double) st->latency_ns / 1e9;
    out->pending = (double) rt->pending;
    out->queued = qs.queued;
    out->queued_max = qs.queued_max;
    out->sleeping = qs.sleeping;
    out->spinning = qs.spinning;

    return NGX_OK;
}


/* the runtimes of this worker that were ever loaded, newest first */

void *
ngx_nffi_lua_next_runtime(void *runtime)
{
    ngx_nffi_runtime_t  *rt;

    if (runtime == NULL) {
        return ngx_nffi_runtime_next_loaded(NULL);
    }

    rt = ngx_nffi_runtime_of(runtime);

    return rt ? ngx_nffi_runtime_next_loaded(rt) : NULL;
}


/* a call or a stream gave up waiting: its late answer counts as late */

static void
ngx_nffi_lua_timed_out(ngx_nffi_task_t *t)
{
    t->timed_out = 1;
    ngx_nffi_runtime_failed(t->runtime, NGX_NFFI_FAILURE_TIMEOUT);
}
