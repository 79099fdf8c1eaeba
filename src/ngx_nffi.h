/*
 * lua-resty-nonblocking-ffi: definitions shared by the module's files.
 *
 *   ngx_nffi_module.c   module glue: worker start and exit
 *   ngx_nffi_runtime.c  loading, calling and unloading runtimes (Lua side)
 *   ngx_nffi_task.c     tasks, their pool, and the runtime-side ABI
 *   ngx_nffi_event.c    the eventfd bridge back into the event loop
 *   ngx_nffi_signal.c   signal masks and handlers around runtime threads
 *   ngx_nffi_queue.c    the queues (no nginx dependency)
 */

#ifndef _NGX_NFFI_H_INCLUDED_
#define _NGX_NFFI_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_nffi_queue.h"
#include "nonblocking_ffi.h"


#define NGX_NFFI_TASK_MAGIC     0x6e666654  /* "nffT" */
#define NGX_NFFI_RUNTIME_MAGIC  0x6e666652  /* "nffR" */

/* why an answer cannot be delivered (Lua has the messages) */
#define NGX_NFFI_BAD_ANSWER_NONE             0
#define NGX_NFFI_BAD_ANSWER_NEGATIVE_LENGTH  1
#define NGX_NFFI_BAD_ANSWER_TOO_LONG         2

/* task states; a task moves through them in this order */
#define NGX_NFFI_TASK_FREE      0
#define NGX_NFFI_TASK_QUEUED    1
#define NGX_NFFI_TASK_POLLED    2
#define NGX_NFFI_TASK_ANSWERED  3


typedef struct ngx_nffi_runtime_s  ngx_nffi_runtime_t;
typedef struct ngx_nffi_task_s     ngx_nffi_task_t;


struct ngx_nffi_task_s {
    /*
     * The first five fields are read by lib/resty/nonblocking_ffi.lua
     * through the FFI (ngx_nffi_task_t there): keep both in step.  Plain
     * integers tell what the answer holds, so that the caller reads a
     * pointer field only when there is something behind it.
     */
    void                  *sem;
    char                  *rsp;
    int                    rc;
    int                    rsp_len;     /* -1: no response (NULL) */
    int                    bad_answer;  /* NGX_NFFI_BAD_ANSWER_* */

    ngx_nffi_node_t        node;
    unsigned               magic;
    int                    state;       /* atomic */
    int                    cancelled;   /* atomic */

    /* the two references; both change on the worker's main thread only */
    unsigned               lua_ref:1;
    unsigned               runtime_ref:1;

    ngx_nffi_runtime_t    *runtime;

    /* method name, NUL, request, NUL */
    char                  *buf;
    size_t                 buf_size;
    int                    method_len;
    int                    req_len;
    unsigned               has_req:1;
};


struct ngx_nffi_runtime_s {
    unsigned               magic;
    ngx_nffi_queue_t       queue;

    /* posted and not yet answered: bounded by max_queue */
    ngx_uint_t             outstanding;
    ngx_uint_t             max_queue;

    /* event-loop rounds to poll for answers after a call (opts.spin) */
    ngx_uint_t             spin;

    unsigned               unloaded:1;
    unsigned               wake_pending:1;

    /*
     * Answers the caller has read, freed by the runtime's own poll threads:
     * free() of memory malloc'ed on another thread costs the event loop an
     * arena lock that the runtime's malloc() holds as often as not.  A
     * poll thread that sleeps frees nothing: at most answers_held_max
     * bytes wait for it, the event loop frees the rest itself.
     */
    ngx_nffi_stack_t       answers_read;
    size_t                 answers_held;    /* atomic */

    ngx_nffi_runtime_t    *next;
    ngx_nffi_runtime_t    *next_to_wake;
    char                  *lib;
};


/* lua-nginx-module's semaphore functions, found at worker start */
typedef struct {
    int                  (*sema_new)(void **psem, int n, char **errmsg);
    int                  (*sema_post)(void *sem, int n);
    int                  (*sema_count)(void *sem);
    void                 (*sema_gc)(void *sem);
} ngx_nffi_lua_api_t;


typedef struct {
    /* set between worker start and exit, on the main thread */
    ngx_flag_t             active;
    ngx_flag_t             exiting;
    const char            *inactive_reason;
    ngx_log_t             *log;
    ngx_nffi_lua_api_t     lua;
    ngx_nffi_runtime_t    *runtimes;
    /* calls posted and not yet answered, all runtimes together */
    ngx_uint_t             outstanding;
} ngx_nffi_worker_t;


extern ngx_nffi_worker_t  ngx_nffi_worker;


/* ngx_nffi_module.c */
void ngx_nffi_worker_start(ngx_cycle_t *cycle);

/* ngx_nffi_task.c */
ngx_nffi_task_t *ngx_nffi_task_get(void);
void ngx_nffi_task_free(ngx_nffi_task_t *t);
ngx_int_t ngx_nffi_task_set_request(ngx_nffi_task_t *t, const char *method,
    size_t method_len, const char *req, size_t req_len);
void ngx_nffi_task_answered(ngx_nffi_task_t *t);
void ngx_nffi_task_release_semaphores(void);

/* ngx_nffi_event.c */
ngx_int_t ngx_nffi_event_init(ngx_cycle_t *cycle);
void ngx_nffi_event_done(void);
void ngx_nffi_event_push_done(ngx_nffi_task_t *t);
void ngx_nffi_event_wake_runtime(ngx_nffi_runtime_t *rt);
void ngx_nffi_event_expect_answer(ngx_uint_t rounds);
void ngx_nffi_event_log(int level, const char *msg, size_t len);

/* ngx_nffi_runtime.c */
void ngx_nffi_runtime_discard_answer(ngx_nffi_runtime_t *rt, char *rsp);
void ngx_nffi_runtime_free_answers_read(ngx_nffi_runtime_t *rt);
void ngx_nffi_runtime_unload_all(void);

/* ngx_nffi_signal.c */
void ngx_nffi_signal_init(void);
void ngx_nffi_signal_block(sigset_t *saved);
void ngx_nffi_signal_restore(sigset_t *saved);
void ngx_nffi_signal_take_back(void);


#endif /* _NGX_NFFI_H_INCLUDED_ */
