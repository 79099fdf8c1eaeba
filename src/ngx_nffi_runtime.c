/*
 * Runtimes, and the functions lib/resty/nonblocking_ffi.lua calls through
 * the FFI.  All of them run on the worker's main thread.
 *
 * A runtime is never freed: its threads may still call task_poll() on it
 * after it was unloaded (they get NULL), and its library is never closed
 * (Go and the JVM cannot be unloaded).
 */

#include "ngx_nffi.h"

#include <dlfcn.h>
#include <malloc.h>


typedef int (*ngx_nffi_init_pt)(char *cfg, void *tq);


/* answers read and not yet freed by a poll thread, per runtime */
#define NGX_NFFI_ANSWERS_HELD_MAX  (1024 * 1024)


static ngx_int_t ngx_nffi_runtime_init(ngx_nffi_runtime_t *rt,
    const char *lib, const char *cfg, int is_global, u_char *err,
    size_t *errlen);
static void ngx_nffi_runtime_pin_module(void);
static ngx_nffi_runtime_t *ngx_nffi_runtime_of(void *p);


ngx_nffi_runtime_t *ngx_nffi_lua_load(const char *lib, const char *cfg,
    int is_global, int max_queue, int spin, u_char *err, size_t *errlen);
ngx_nffi_task_t *ngx_nffi_lua_post(void *runtime, const char *method,
    size_t method_len, const char *req, size_t req_len, const char **err);
int ngx_nffi_lua_abandon(ngx_nffi_task_t *t);
void ngx_nffi_lua_release(ngx_nffi_task_t *t);
void ngx_nffi_lua_gc(ngx_nffi_task_t *t);
void ngx_nffi_lua_unload(void *runtime);
int ngx_nffi_lua_outstanding(void *runtime);


ngx_nffi_runtime_t *
ngx_nffi_lua_load(const char *lib, const char *cfg, int is_global,
    int max_queue, int spin, u_char *err, size_t *errlen)
{
    ngx_nffi_runtime_t  *rt;

    ngx_nffi_worker_start((ngx_cycle_t *) ngx_cycle);

    if (!ngx_nffi_worker.active) {
        *errlen = ngx_snprintf(err, *errlen, "%s",
                               ngx_nffi_worker.inactive_reason)
                  - err;
        return NULL;
    }

    if (max_queue < 1) {
        *errlen = ngx_snprintf(err, *errlen, "bad max_queue %d", max_queue)
                  - err;
        return NULL;
    }

    rt = ngx_calloc(sizeof(ngx_nffi_runtime_t), ngx_nffi_worker.log);
    if (rt == NULL) {
        *errlen = ngx_snprintf(err, *errlen, "no memory") - err;
        return NULL;
    }

    rt->lib = strdup(lib);

    if (rt->lib == NULL || ngx_nffi_queue_init(&rt->queue, spin) != 0) {
        free(rt->lib);
        ngx_free(rt);
        *errlen = ngx_snprintf(err, *errlen, "no memory") - err;
        return NULL;
    }

    rt->magic = NGX_NFFI_RUNTIME_MAGIC;
    rt->max_queue = (ngx_uint_t) max_queue;
    rt->spin = (ngx_uint_t) spin;

    ngx_nffi_runtime_pin_module();

    /* from here on the runtime's threads may hold rt: it is never freed */
    rt->next = ngx_nffi_worker.runtimes;
    ngx_nffi_worker.runtimes = rt;

    if (ngx_nffi_runtime_init(rt, lib, cfg, is_global, err, errlen)
        != NGX_OK)
    {
        rt->unloaded = 1;
        ngx_nffi_queue_close(&rt->queue);
        return NULL;
    }

    ngx_log_error(NGX_LOG_INFO, ngx_nffi_worker.log, 0,
                  "nonblocking_ffi: loaded runtime %s", lib);

    return rt;
}


static ngx_int_t
ngx_nffi_runtime_init(ngx_nffi_runtime_t *rt, const char *lib,
    const char *cfg, int is_global, u_char *err, size_t *errlen)
{
    int                rc;
    char              *cfg_copy, *dlerr;
    void              *handle;
    sigset_t           saved;
    const char        *symbol;
    ngx_nffi_init_pt   init;

    cfg_copy = NULL;

    if (cfg) {
        cfg_copy = strdup(cfg);
        if (cfg_copy == NULL) {
            *errlen = ngx_snprintf(err, *errlen, "no memory") - err;
            return NGX_ERROR;
        }
    }

    ngx_nffi_signal_block(&saved);

    handle = dlopen(lib, RTLD_NOW | (is_global ? RTLD_GLOBAL : RTLD_LOCAL));

    if (handle == NULL) {
        ngx_nffi_signal_restore(&saved);
        free(cfg_copy);
        dlerr = dlerror();
        *errlen = ngx_snprintf(err, *errlen, "failed to load %s: %s", lib,
                               dlerr ? dlerr : "unknown error")
                  - err;
        return NGX_ERROR;
    }

    symbol = "lib_nonblocking_ffi_init";
    init = (ngx_nffi_init_pt) dlsym(handle, symbol);

    if (init == NULL) {
        symbol = "libffi_init";
        init = (ngx_nffi_init_pt) dlsym(handle, symbol);
    }

    if (init == NULL) {
        /* its constructors ran: they may have started threads (Go does) */
        ngx_nffi_signal_restore(&saved);
        ngx_nffi_signal_take_back();
        free(cfg_copy);
        *errlen = ngx_snprintf(err, *errlen,
                               "%s exports neither lib_nonblocking_ffi_init "
                               "nor libffi_init", lib)
                  - err;
        return NGX_ERROR;
    }

    rc = init(cfg_copy, rt);

    ngx_nffi_signal_restore(&saved);
    ngx_nffi_signal_take_back();
    free(cfg_copy);

    if (rc != 0) {
        *errlen = ngx_snprintf(err, *errlen, "%s: %s() failed with rc %d",
                               lib, symbol, rc)
                  - err;
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Runtime threads run code of this module (poll, respond) until the process
 * ends; nginx closes its modules when it frees a cycle.
 */

static void
ngx_nffi_runtime_pin_module(void)
{
    Dl_info            info;
    static ngx_flag_t  pinned;

    if (pinned) {
        return;
    }

    if (dladdr((void *) ngx_nffi_runtime_pin_module, &info) != 0
        && info.dli_fname
        && dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE))
    {
        pinned = 1;
        return;
    }

    ngx_log_error(NGX_LOG_WARN, ngx_nffi_worker.log, 0,
                  "nonblocking_ffi: could not pin the module in memory: %s",
                  dlerror());
}


static ngx_nffi_runtime_t *
ngx_nffi_runtime_of(void *p)
{
    ngx_nffi_runtime_t  *rt = p;

    if (rt == NULL || rt->magic != NGX_NFFI_RUNTIME_MAGIC) {
        return NULL;
    }

    return rt;
}


ngx_nffi_task_t *
ngx_nffi_lua_post(void *runtime, const char *method, size_t method_len,
    const char *req, size_t req_len, const char **err)
{
    char                *errmsg;
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

    if (rt->unloaded) {
        *err = "unloaded";
        return NULL;
    }

    if (rt->outstanding >= rt->max_queue) {
        *err = "queue full";
        return NULL;
    }

    if (req_len > NGX_MAX_INT32_VALUE - 1
        || method_len > NGX_MAX_INT32_VALUE - 1)
    {
        *err = "request too large";
        return NULL;
    }

    t = ngx_nffi_task_get();
    if (t == NULL) {
        *err = "no memory";
        return NULL;
    }

    if (t->sem == NULL
        && ngx_nffi_worker.lua.sema_new(&t->sem, 0, &errmsg) != NGX_OK)
    {
        t->sem = NULL;
        ngx_nffi_task_free(t);
        *err = "no memory for a semaphore";
        return NULL;
    }

    if (ngx_nffi_task_set_request(t, method, method_len, req, req_len)
        != NGX_OK)
    {
        ngx_nffi_task_free(t);
        *err = "no memory";
        return NULL;
    }

    t->runtime = rt;
    t->rc = 0;
    t->rsp = NULL;
    t->rsp_len = -1;
    t->bad_answer = NGX_NFFI_BAD_ANSWER_NONE;
    t->lua_ref = 1;
    t->runtime_ref = 1;
    __atomic_store_n(&t->cancelled, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&t->state, NGX_NFFI_TASK_QUEUED, __ATOMIC_RELAXED);

    rt->outstanding++;
    ngx_nffi_worker.outstanding++;

    if (ngx_nffi_queue_push(&rt->queue, &t->node)) {
        ngx_nffi_event_wake_runtime(rt);
    }

    ngx_nffi_event_expect_answer(rt->spin);

    return t;
}


/*
 * The caller stopped waiting (timeout).  Returns 1 when the answer came
 * meanwhile: the caller then reads it and releases the task as usual.
 */

int
ngx_nffi_lua_abandon(ngx_nffi_task_t *t)
{
    if (!t->runtime_ref) {
        return 1;
    }

    t->lua_ref = 0;
    __atomic_store_n(&t->cancelled, 1, __ATOMIC_RELEASE);

    return 0;
}


void
ngx_nffi_lua_release(ngx_nffi_task_t *t)
{
    t->lua_ref = 0;

    if (!t->runtime_ref) {
        ngx_nffi_task_free(t);
    }
}


/* the finalizer of a call whose coroutine died while it waited */

void
ngx_nffi_lua_gc(ngx_nffi_task_t *t)
{
    __atomic_store_n(&t->cancelled, 1, __ATOMIC_RELEASE);
    ngx_nffi_lua_release(t);
}


/* on the main thread, for an answer its caller has read */

void
ngx_nffi_runtime_discard_answer(ngx_nffi_runtime_t *rt, char *rsp)
{
    size_t  size;

    size = malloc_usable_size(rsp);

    /* the answer's own memory links it: a tiny one cannot */
    if (rt == NULL || rt->unloaded || size < sizeof(ngx_nffi_node_t)
        || __atomic_load_n(&rt->answers_held, __ATOMIC_RELAXED) + size
           > NGX_NFFI_ANSWERS_HELD_MAX)
    {
        free(rsp);
        return;
    }

    __atomic_add_fetch(&rt->answers_held, size, __ATOMIC_RELAXED);
    ngx_nffi_stack_push(&rt->answers_read, (ngx_nffi_node_t *) rsp);
}


/* on a poll thread, or on the main thread once nobody polls any more */

void
ngx_nffi_runtime_free_answers_read(ngx_nffi_runtime_t *rt)
{
    size_t            freed;
    ngx_nffi_node_t  *node, *next;

    freed = 0;

    for (node = ngx_nffi_stack_take_all(&rt->answers_read); node; node = next)
    {
        next = node->next;
        freed += malloc_usable_size(node);
        free(node);
    }

    if (freed) {
        __atomic_sub_fetch(&rt->answers_held, freed, __ATOMIC_RELAXED);
    }
}


void
ngx_nffi_lua_unload(void *runtime)
{
    ngx_nffi_runtime_t  *rt;

    rt = ngx_nffi_runtime_of(runtime);

    if (rt == NULL || rt->unloaded) {
        return;
    }

    /* from here on, answers read are freed at once */
    rt->unloaded = 1;
    ngx_nffi_queue_close(&rt->queue);
    ngx_nffi_runtime_free_answers_read(rt);

    ngx_log_error(NGX_LOG_INFO, ngx_nffi_worker.log, 0,
                  "nonblocking_ffi: unloaded runtime %s", rt->lib);
}


int
ngx_nffi_lua_outstanding(void *runtime)
{
    ngx_nffi_runtime_t  *rt;

    rt = ngx_nffi_runtime_of(runtime);

    return rt ? (int) rt->outstanding : -1;
}


void
ngx_nffi_runtime_unload_all(void)
{
    ngx_nffi_runtime_t  *rt;

    for (rt = ngx_nffi_worker.runtimes; rt; rt = rt->next) {
        ngx_nffi_lua_unload(rt);
    }
}
