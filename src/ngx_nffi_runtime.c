/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Runtimes: loading a library and running its init, the registry of the
 * worker's runtimes, posting a task on a runtime's queue, local failures
 * counted and reported, and unloading.  All of it runs on the worker's main
 * thread; runtime threads only poll the queue (ngx_nffi_abi.c).
 *
 * A runtime whose init ran is never freed: its threads may still call
 * task_poll() on it after it was unloaded (they get NULL), and its library
 * is never closed (Go and the JVM cannot be unloaded).  One whose init
 * failed is kept too, and reused when the same library and cfg are loaded
 * again, so that a load retried on every request does not grow the worker.
 */

#include "ngx_nffi.h"

#include <dlfcn.h>


typedef int (*ngx_nffi_init_pt)(char *cfg, void *tq);


/* at most one report of local failures per runtime in this time */
#define NGX_NFFI_FAILURES_REPORT_INTERVAL  1000


static void *ngx_nffi_runtime_open(const char *lib, int is_global,
    ngx_nffi_init_pt *init, const char **symbol, u_char *err, size_t *errlen);
static ngx_nffi_runtime_t *ngx_nffi_runtime_get(const char *lib,
    const char *cfg, int spin);
static ngx_nffi_runtime_t *ngx_nffi_runtime_find_failed(const char *lib,
    const char *cfg);
static void ngx_nffi_runtime_pin_module(void);
static void ngx_nffi_runtime_update_loop_spin(void);
static void ngx_nffi_runtime_report_failures(ngx_event_t *ev);


static const char  *ngx_nffi_failure_names[NGX_NFFI_FAILURES_REPORTED] = {
    "timed out",
    "refused (queue full)"
};


ngx_nffi_runtime_t *
ngx_nffi_runtime_load(const char *lib, const char *cfg, int is_global,
    ngx_uint_t max_queue, int spin, ngx_uint_t loop_spin, size_t window,
    u_char *err, size_t *errlen)
{
    int                  rc;
    char                *cfg_copy, *reason;
    sigset_t             saved;
    const char          *symbol;
    ngx_nffi_init_pt     init;
    ngx_nffi_runtime_t  *rt;

    cfg_copy = NULL;

    if (cfg) {
        /* init may keep or change it: it gets a copy of its own */
        cfg_copy = strdup(cfg);
        if (cfg_copy == NULL) {
            *errlen = ngx_snprintf(err, *errlen, "no memory") - err;
            return NULL;
        }
    }

    /* constructors may start threads (Go's do): they inherit this mask */
    ngx_nffi_signal_block(&saved);

    rt = NULL;

    if (ngx_nffi_runtime_open(lib, is_global, &init, &symbol, err, errlen)
        != NULL)
    {
        rt = ngx_nffi_runtime_get(lib, cfg, spin);

        if (rt == NULL) {
            *errlen = ngx_snprintf(err, *errlen, "no memory") - err;
        }
    }

    if (rt) {
        rt->max_queue = max_queue;
        rt->loop_spin = loop_spin;
        rt->window = window;
        rt->failed = 0;

        ngx_nffi_runtime_pin_module();

        ngx_log_debug3(NGX_LOG_DEBUG_CORE, ngx_nffi_worker.log, 0,
                       "nonblocking_ffi: runtime %p: %s() of %s",
                       rt, symbol, lib);

        /* a late reason from an earlier init of this queue is not ours */
        free(__atomic_exchange_n(&rt->init_error, NULL, __ATOMIC_ACQ_REL));

        rc = init(cfg_copy, rt);
    }

    ngx_nffi_signal_restore(&saved);
    ngx_nffi_signal_take_back();
    free(cfg_copy);

    if (rt == NULL) {
        return NULL;
    }

    reason = __atomic_exchange_n(&rt->init_error, NULL, __ATOMIC_ACQ_REL);

    if (rc != 0) {
        rt->failed = 1;
        ngx_nffi_queue_close(&rt->queue);
        *errlen = ngx_snprintf(err, *errlen, "%s: %s() failed with rc %d%s%s",
                               lib, symbol, rc, reason ? ": " : "",
                               reason ? reason : "")
                  - err;
        free(reason);
        return NULL;
    }

    free(reason);

    rt->loaded = 1;
    rt->loaded_at = ngx_time();
    ngx_nffi_runtime_update_loop_spin();

    ngx_log_error(NGX_LOG_INFO, ngx_nffi_worker.log, 0,
                  "nonblocking_ffi: loaded runtime %s", lib);

    return rt;
}


static void *
ngx_nffi_runtime_open(const char *lib, int is_global, ngx_nffi_init_pt *init,
    const char **symbol, u_char *err, size_t *errlen)
{
    void         *handle;
    const int    *abi;
    const char   *dlerr;
    struct stat   st;

    /* dlopen() of a FIFO blocks the worker until someone writes to it */
    if (ngx_strchr(lib, '/') && stat(lib, &st) == 0 && !S_ISREG(st.st_mode))
    {
        *errlen = ngx_snprintf(err, *errlen, "failed to load %s: not a "
                               "regular file", lib)
                  - err;
        return NULL;
    }

    handle = dlopen(lib, RTLD_NOW | (is_global ? RTLD_GLOBAL : RTLD_LOCAL));

    if (handle == NULL) {
        dlerr = dlerror();
        *errlen = ngx_snprintf(err, *errlen, "failed to load %s: %s", lib,
                               dlerr ? dlerr : "unknown error")
                  - err;
        return NULL;
    }

    /* a runtime built for a newer ABI may call what this module lacks */
    abi = dlsym(handle, NONBLOCKING_FFI_ABI_BUILT_SYMBOL);

    if (abi != NULL && *abi > NONBLOCKING_FFI_ABI_VERSION) {
        *errlen = ngx_snprintf(err, *errlen,
                               "%s was built for ABI version %d, newer than "
                               "the ABI version %d of this "
                               "ngx_http_lua_nonblocking_ffi_module "
                               "(%s): upgrade the module, or build the "
                               "runtime against the module's "
                               "nonblocking_ffi.h",
                               lib, *abi, NONBLOCKING_FFI_ABI_VERSION,
                               NGX_NFFI_VERSION)
                  - err;
        return NULL;
    }

    *symbol = "lib_nonblocking_ffi_init";
    *init = (ngx_nffi_init_pt) dlsym(handle, *symbol);

    if (*init == NULL) {
        *symbol = "libffi_init";
        *init = (ngx_nffi_init_pt) dlsym(handle, *symbol);
    }

    if (*init == NULL) {
        *errlen = ngx_snprintf(err, *errlen,
                               "%s exports neither lib_nonblocking_ffi_init "
                               "nor libffi_init", lib)
                  - err;
        return NULL;
    }

    return handle;
}


/* a runtime to run init with: the failed one of the same key, or a new one */

static ngx_nffi_runtime_t *
ngx_nffi_runtime_get(const char *lib, const char *cfg, int spin)
{
    ngx_nffi_runtime_t  *rt;

    rt = ngx_nffi_runtime_find_failed(lib, cfg);

    if (rt) {
        ngx_nffi_queue_reopen(&rt->queue, spin);
        return rt;
    }

    rt = ngx_memalign(NGX_CPU_CACHE_LINE, sizeof(ngx_nffi_runtime_t),
                      ngx_nffi_worker.log);
    if (rt == NULL) {
        return NULL;
    }

    ngx_memzero(rt, sizeof(ngx_nffi_runtime_t));

    rt->lib = strdup(lib);
    rt->cfg = cfg ? strdup(cfg) : NULL;

    if (rt->lib == NULL || (cfg && rt->cfg == NULL)
        || ngx_nffi_queue_init(&rt->queue, spin) != 0)
    {
        free(rt->lib);
        free(rt->cfg);
        ngx_free(rt);
        return NULL;
    }

    rt->magic = NGX_NFFI_RUNTIME_MAGIC;
    rt->failures_event.handler = ngx_nffi_runtime_report_failures;
    rt->failures_event.data = rt;
    rt->failures_event.log = ngx_nffi_worker.log;
    rt->failures_event.cancelable = 1;

    rt->next = ngx_nffi_worker.runtimes;
    ngx_nffi_worker.runtimes = rt;

    return rt;
}


static ngx_nffi_runtime_t *
ngx_nffi_runtime_find_failed(const char *lib, const char *cfg)
{
    ngx_nffi_runtime_t  *rt;

    /*
     * An unloaded runtime's threads were promised NULL forever, and one that
     * a thread of the failed init polled may be polled again: not those.
     */
    for (rt = ngx_nffi_worker.runtimes; rt; rt = rt->next) {
        if (rt->failed && !__atomic_load_n(&rt->polled, __ATOMIC_RELAXED)
            && ngx_strcmp(rt->lib, lib) == 0
            && (cfg ? rt->cfg && ngx_strcmp(rt->cfg, cfg) == 0
                    : rt->cfg == NULL))
        {
            return rt;
        }
    }

    return NULL;
}


/*
 * Runtime threads run code of this module (poll, respond) until the process
 * ends; nginx closes its modules when it frees a cycle.
 */

static void
ngx_nffi_runtime_pin_module(void)
{
    Dl_info            info;
    const char        *dlerr;
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

    /* dladdr() sets no dlerror() */
    dlerr = dlerror();

    ngx_log_error(NGX_LOG_WARN, ngx_nffi_worker.log, 0,
                  "nonblocking_ffi: could not pin the module in memory: %s",
                  dlerr ? dlerr : "dladdr() failed");
}


ngx_nffi_runtime_t *
ngx_nffi_runtime_of(void *p)
{
    ngx_nffi_runtime_t  *rt = p;

    if (rt == NULL || rt->magic != NGX_NFFI_RUNTIME_MAGIC) {
        return NULL;
    }

    return rt;
}


void
ngx_nffi_runtime_post(ngx_nffi_runtime_t *rt, ngx_nffi_task_t *t)
{
    t->runtime = rt;
    t->posted_ticks = ngx_nffi_clock_ticks();
    __atomic_store_n(&t->state, NGX_NFFI_TASK_QUEUED, __ATOMIC_RELAXED);

    rt->pending++;
    ngx_nffi_worker.pending++;
    rt->stats.posted++;
    rt->stats.bytes_in += t->req_len;

    ngx_log_debug5(NGX_LOG_DEBUG_CORE, ngx_nffi_worker.log, 0,
                   "nonblocking_ffi: task #%ui posted to %s: %s(), %d bytes, "
                   "%ui pending",
                   t->id, rt->lib, t->buf, t->req_len, rt->pending);

    /*
     * The queue's mutex publishes the task to the runtime's threads.  A
     * call alone in flight goes at once, for a spinning poller to start
     * on while this thread goes on; the others are pushed together.  Those
     * wait in posted order and come after it (it is pending until its
     * answer is taken): the queue stays first in, first out.
     */
    if (rt->pending == 1) {
        if (ngx_nffi_queue_push(&rt->queue, &t->node)) {
            ngx_nffi_event_wake_runtime(rt);
        }

    } else {
        ngx_nffi_event_push_later(rt, &t->node);
    }

    ngx_nffi_event_expect_answer(rt->loop_spin);
}


/*
 * A call that failed here, not in the runtime: counted, and reported at
 * warn at most once a second per runtime, with the count since the last
 * report, so that an operator sees a runtime that stopped answering.
 */

void
ngx_nffi_runtime_failed(ngx_nffi_runtime_t *rt, ngx_uint_t failure)
{
    ngx_msec_t  elapsed;

    rt->stats.failures[failure]++;

    if (failure >= NGX_NFFI_FAILURES_REPORTED) {
        return;
    }

    rt->failures_unlogged[failure]++;

    if (rt->failures_event.timer_set || ngx_nffi_worker.exiting) {
        return;
    }

    elapsed = ngx_current_msec - rt->failures_logged_at;

    if (rt->failures_logged_at == 0
        || elapsed >= NGX_NFFI_FAILURES_REPORT_INTERVAL)
    {
        ngx_nffi_runtime_report_failures(&rt->failures_event);
        return;
    }

    ngx_add_timer(&rt->failures_event,
                  NGX_NFFI_FAILURES_REPORT_INTERVAL - elapsed);
}


static void
ngx_nffi_runtime_report_failures(ngx_event_t *ev)
{
    ngx_uint_t           i;
    ngx_nffi_runtime_t  *rt = ev->data;

    rt->failures_logged_at = ngx_current_msec ? ngx_current_msec : 1;

    for (i = 0; i < NGX_NFFI_FAILURES_REPORTED; i++) {
        if (rt->failures_unlogged[i] == 0) {
            continue;
        }

        ngx_log_error(NGX_LOG_WARN, ngx_nffi_worker.log, 0,
                      "nonblocking_ffi: runtime %s%s%s: %ui calls %s since "
                      "the last report (%ui in all), %ui pending",
                      rt->lib, rt->cfg ? " & " : "", rt->cfg ? rt->cfg : "",
                      rt->failures_unlogged[i], ngx_nffi_failure_names[i],
                      rt->stats.failures[i], rt->pending);

        rt->failures_unlogged[i] = 0;
    }
}


/*
 * Graceful: the tasks queued so far are still taken and answered, then
 * every poller gets NULL.  Used by runtime:__unload() and at worker exit.
 */

void
ngx_nffi_runtime_unload(ngx_nffi_runtime_t *rt)
{
    if (!rt->loaded) {
        return;
    }

    /* from here on, answers read are freed at once */
    rt->loaded = 0;
    ngx_nffi_event_push_now(rt);
    ngx_nffi_queue_close(&rt->queue);
    ngx_nffi_task_hand_back_answers(rt);
    ngx_nffi_task_free_read_answers(rt);
    ngx_nffi_runtime_update_loop_spin();

    ngx_log_error(NGX_LOG_INFO, ngx_nffi_worker.log, 0,
                  "nonblocking_ffi: unloaded runtime %s, %ui calls pending",
                  rt->lib, rt->pending);
}


/* the runtimes after rt (from the first, for NULL) that were ever loaded */

ngx_nffi_runtime_t *
ngx_nffi_runtime_next_loaded(ngx_nffi_runtime_t *rt)
{
    rt = rt ? rt->next : ngx_nffi_worker.runtimes;

    while (rt && rt->failed) {
        rt = rt->next;
    }

    return rt;
}


void
ngx_nffi_runtime_unload_all(void)
{
    ngx_nffi_runtime_t  *rt;

    for (rt = ngx_nffi_worker.runtimes; rt; rt = rt->next) {
        ngx_nffi_runtime_unload(rt);

        if (rt->failures_event.timer_set) {
            ngx_del_timer(&rt->failures_event);
        }
    }
}


/* the event loop polls for answers as long as the loaded runtimes want */

static void
ngx_nffi_runtime_update_loop_spin(void)
{
    ngx_uint_t           max;
    ngx_nffi_runtime_t  *rt;

    max = 0;

    for (rt = ngx_nffi_worker.runtimes; rt; rt = rt->next) {
        if (rt->loaded && rt->loop_spin > max) {
            max = rt->loop_spin;
        }
    }

    ngx_nffi_event_loop_spin_max(max);
}
