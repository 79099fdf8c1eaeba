/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * lua-resty-nonblocking-ffi: module glue.
 *
 * A core module with no directives: all it needs is the worker's start and
 * exit.  Everything per worker is created in init_process, after the fork,
 * because runtime threads do not survive fork().
 */

#include "ngx_nffi.h"

#include <dlfcn.h>


static ngx_int_t ngx_nffi_init_process(ngx_cycle_t *cycle);
static void ngx_nffi_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_nffi_find_lua_api(ngx_nffi_lua_api_t *lua);


static ngx_core_module_t  ngx_http_lua_nonblocking_ffi_module_ctx = {
    ngx_string("lua_nonblocking_ffi"),
    NULL,
    NULL
};


ngx_module_t  ngx_http_lua_nonblocking_ffi_module = {
    NGX_MODULE_V1,
    &ngx_http_lua_nonblocking_ffi_module_ctx,  /* module context */
    NULL,                                      /* module directives */
    NGX_CORE_MODULE,                           /* module type */
    NULL,                                      /* init master */
    NULL,                                      /* init module */
    ngx_nffi_init_process,                     /* init process */
    NULL,                                      /* init thread */
    NULL,                                      /* exit thread */
    ngx_nffi_exit_process,                     /* exit process */
    NULL,                                      /* exit master */
    NGX_MODULE_V1_PADDING
};


ngx_nffi_worker_t  ngx_nffi_worker = {
    0, 0,
    "runtimes are per worker process: load them in init_worker_by_lua* or "
    "later, not in init_by_lua* (threads do not survive fork)",
    NULL, { NULL, NULL, NULL, NULL }, NULL, 0, 0, 0
};


ngx_nffi_flag_t  ngx_nffi_traced;


static ngx_int_t
ngx_nffi_init_process(ngx_cycle_t *cycle)
{
    ngx_nffi_worker_start(cycle);

    return NGX_OK;
}


/*
 * Runs from init_process, or earlier from the first load: init_worker_by_lua
 * runs in lua-nginx-module's init_process, which comes before ours.  The
 * event module's init_process, which sets up connections, comes before both.
 */

void
ngx_nffi_worker_start(ngx_cycle_t *cycle)
{
    int        tsc;
    cpu_set_t  cpus;

    if (ngx_nffi_worker.active || ngx_nffi_worker.exiting
        || (ngx_process != NGX_PROCESS_WORKER
            && ngx_process != NGX_PROCESS_SINGLE)
        || cycle->connections == NULL)
    {
        return;
    }

    ngx_nffi_worker.log = cycle->log;
    __atomic_store_n(&ngx_nffi_traced.on,
                     (cycle->log->log_level & NGX_LOG_DEBUG_CORE) != 0,
                     __ATOMIC_RELAXED);

    ngx_log_debug0(NGX_LOG_DEBUG_CORE, cycle->log, 0,
                   "nonblocking_ffi: worker start");

    if (ngx_nffi_find_lua_api(&ngx_nffi_worker.lua) != NGX_OK) {
        ngx_nffi_worker.inactive_reason =
            "lua-nginx-module is not loaded: load ngx_http_lua_module "
            "before ngx_http_lua_nonblocking_ffi_module";
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0, "nonblocking_ffi: %s",
                      ngx_nffi_worker.inactive_reason);
        return;
    }

    /* nginx sets worker_cpu_affinity before any module's init_process */
    ngx_nffi_worker.cpus = sched_getaffinity(0, sizeof(cpus), &cpus) == 0
                           ? (ngx_uint_t) CPU_COUNT(&cpus) : 0;

    if (ngx_nffi_event_init(cycle) != NGX_OK) {
        /* a worker without runtimes is still a working worker */
        ngx_nffi_worker.inactive_reason =
            "the worker could not set up its wake-up channel (see the "
            "error log)";
        return;
    }

    ngx_nffi_signal_init();
    tsc = ngx_nffi_clock_init(-1);

    ngx_nffi_worker.active = 1;

    ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                  "nonblocking_ffi %s (ABI version %d) ready, latencies "
                  "timed with %s%s", NGX_NFFI_VERSION,
                  NONBLOCKING_FFI_ABI_VERSION,
                  tsc ? "the time-stamp counter" : "CLOCK_MONOTONIC",
                  ngx_nffi_worker.cpus == 1
                  ? ", one CPU: answers are waited for, not polled for" : "");
}


static void
ngx_nffi_exit_process(ngx_cycle_t *cycle)
{
    if (!ngx_nffi_worker.active) {
        return;
    }

    ngx_nffi_stream_close_all();
    ngx_nffi_runtime_unload_all();

    /* the log goes with the cycle: runtime threads stop tracing */
    __atomic_store_n(&ngx_nffi_traced.on, 0, __ATOMIC_RELAXED);
    ngx_nffi_worker.exiting = 1;
    ngx_nffi_worker.active = 0;
    ngx_nffi_worker.inactive_reason = "the worker is exiting";

    ngx_nffi_event_done();
    ngx_nffi_task_release_semaphores();
}


static ngx_int_t
ngx_nffi_find_lua_api(ngx_nffi_lua_api_t *lua)
{
    lua->sema_new = (int (*)(void **, int, char **))
                    dlsym(RTLD_DEFAULT, "ngx_http_lua_ffi_sema_new");
    lua->sema_post = (int (*)(void *, int))
                     dlsym(RTLD_DEFAULT, "ngx_http_lua_ffi_sema_post");
    lua->sema_count = (int (*)(void *))
                      dlsym(RTLD_DEFAULT, "ngx_http_lua_ffi_sema_count");
    lua->sema_gc = (void (*)(void *))
                   dlsym(RTLD_DEFAULT, "ngx_http_lua_ffi_sema_gc");

    if (lua->sema_new == NULL || lua->sema_post == NULL
        || lua->sema_count == NULL || lua->sema_gc == NULL)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}
