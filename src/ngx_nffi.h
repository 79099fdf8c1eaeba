/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * lua-resty-nonblocking-ffi: the module's map and the definitions its files
 * share.
 *
 * Files, each calling only files below it (no two call each other):
 *
 *   ngx_nffi_lua.c      what lib/resty/nonblocking_ffi.lua calls, in the
 *                       order of its ffi.cdef: load, post, abandon, release,
 *                       gc, unload, pending, failed, stream next, write,
 *                       close write, stats, next runtime
 *   ngx_nffi_module.c   module glue: worker start and exit
 *   ngx_nffi_abi.c      everything include/nonblocking_ffi.h declares, in
 *                       its order: what runtime threads call
 *   ngx_nffi_runtime.c  runtimes: load (dlopen, init), the registry of a
 *                       worker's runtimes, posting a task on a runtime's
 *                       queue, local failures counted and logged, unload
 *   ngx_nffi_event.c    the way back into the event loop: the done stack,
 *                       the worker's eventfd, polling for answers after a
 *                       call, runtime log messages, waking sleeping runtimes
 *   ngx_nffi_task.c     tasks: their pool, lifecycle, request memory and
 *                       answer memory
 *   ngx_nffi_stream.c   streams: chunks both ways, the window, waking the
 *                       side that waits
 *   ngx_nffi_signal.c   signal masks and handlers around runtime threads
 *   ngx_nffi_queue.c    the request queue and the lock-free stack (plain C,
 *                       no nginx: tests/unit runs them under TSan)
 *
 * One call: lua post -> runtime post -> queue; a runtime thread takes it
 * (abi poll) and answers (abi respond) -> event done stack -> eventfd or
 * loop polling -> task answered -> the caller's semaphore -> lua release.
 */

#ifndef _NGX_NFFI_H_INCLUDED_
#define _NGX_NFFI_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_nffi_queue.h"
/* the module reads lib_nonblocking_ffi_abi_built of runtimes: no own copy */
#define NONBLOCKING_FFI_NO_ABI_BUILT
#include "nonblocking_ffi.h"


/* the project's version (CHANGELOG.md; the Lua library has the same) */
#define NGX_NFFI_VERSION        "0.5.3"

#define NGX_NFFI_TASK_MAGIC     0x6e666654  /* "nffT" */
#define NGX_NFFI_RUNTIME_MAGIC  0x6e666652  /* "nffR" */
#define NGX_NFFI_CHUNK_MAGIC    0x6e666643  /* "nffC" */

/* opts.window: the default, and the bound of each stream direction */
#define NGX_NFFI_WINDOW_DEFAULT (1024 * 1024)

/* bounds of opts.spin and opts.loop_spin (README, Lua API) */
#define NGX_NFFI_SPIN_MAX       100000

/* why an answer cannot be delivered (Lua has the messages) */
#define NGX_NFFI_BAD_ANSWER_NONE             0
#define NGX_NFFI_BAD_ANSWER_NEGATIVE_LENGTH  1
#define NGX_NFFI_BAD_ANSWER_TOO_LONG         2

/* task states; a task moves through them in this order, then back to FREE */
#define NGX_NFFI_TASK_FREE      0
#define NGX_NFFI_TASK_QUEUED    1
#define NGX_NFFI_TASK_TAKEN     2
#define NGX_NFFI_TASK_ANSWERED  3

/*
 * Calls that failed here, not in the runtime, counted per runtime; the
 * first NGX_NFFI_FAILURES_REPORTED kinds are also logged, rate-limited.
 */
#define NGX_NFFI_FAILURE_TIMEOUT       0
#define NGX_NFFI_FAILURE_QUEUE_FULL    1
#define NGX_NFFI_FAILURE_UNLOADED      2
#define NGX_NFFI_FAILURE_CANNOT_YIELD  3
#define NGX_NFFI_FAILURE_BAD_ANSWER    4
#define NGX_NFFI_FAILURES              5
#define NGX_NFFI_FAILURES_REPORTED     2

/*
 * Latency from post to answer: bucket i counts calls answered within 2^i
 * microseconds, the last one everything slower (2^26 us is about 67 s).
 */
#define NGX_NFFI_LATENCY_BUCKETS       28


typedef struct ngx_nffi_runtime_s  ngx_nffi_runtime_t;
typedef struct ngx_nffi_task_s     ngx_nffi_task_t;
typedef struct ngx_nffi_stream_s   ngx_nffi_stream_t;
typedef struct ngx_nffi_chunk_s    ngx_nffi_chunk_t;


/*
 * A runtime's counters.  Plain integers: only the worker's main thread
 * writes or reads them (answers are counted when the main thread takes
 * them from the done stack), so the call path has no atomic operation and
 * no lock for them.
 */
typedef struct {
    uint64_t               posted;
    uint64_t               answered_ok;      /* rc 0 */
    uint64_t               answered_error;   /* rc != 0 */
    uint64_t               late;             /* after the caller timed out */
    uint64_t               unclaimed;        /* caller gone otherwise */
    uint64_t               failures[NGX_NFFI_FAILURES];
    uint64_t               bytes_in;         /* requests */
    uint64_t               bytes_out;        /* answers delivered */
    uint64_t               latency[NGX_NFFI_LATENCY_BUCKETS];
    uint64_t               latency_ns;       /* sum */
} ngx_nffi_stats_t;


/*
 * A task is one call.  Its lifecycle, and who moves it:
 *
 *   FREE      in the pool (ngx_nffi_task.c), owned by the main thread.
 *   QUEUED    posted (ngx_nffi_runtime_post): both references set, on the
 *             runtime's request queue.  Main thread, plain stores, then the
 *             queue's mutex publishes the task to the runtime threads.
 *   TAKEN     a poll thread took it (ngx_nffi_abi.c); atomic store.
 *   ANSWERED  a runtime thread answered it: a compare-and-swap TAKEN ->
 *             ANSWERED, so a second answer finds ANSWERED (or FREE, QUEUED)
 *             and is refused with an [alert].  The task then goes on the
 *             done stack (release), whose drain on the main thread
 *             (acquire) sees the answer.
 *   FREE      when both references are gone; atomic store on the main
 *             thread.
 *
 * The two references change on the main thread only, so they are plain
 * bits: lua_ref is dropped when the caller has read the answer, gave up
 * (timeout) or its coroutine was collected; runtime_ref when the answer
 * is taken from the done stack.  Whoever drops the last one frees.
 *
 * cancelled is set (atomic, release) on the main thread when the caller
 * gives up or is collected, and read (acquire) by runtime threads through
 * ngx_http_lua_nonblocking_ffi_task_cancelled(): the answer is still owed.
 */

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

    unsigned               lua_ref:1;
    unsigned               runtime_ref:1;
    unsigned               timed_out:1;

    /* ngx_nffi_clock_ticks() when posted: the latency statistics */
    long long              posted_ticks;

    /* for the debug log: the n-th call of this worker */
    ngx_uint_t             id;

    ngx_nffi_runtime_t    *runtime;

    /* method name, NUL, request, NUL */
    char                  *buf;
    size_t                 buf_size;
    int                    method_len;
    int                    req_len;
    /* not a bit beside the references: runtime threads read it */
    int                    has_req;

    /* runtime:__stream() calls only, else NULL */
    ngx_nffi_stream_t     *stream;

    /*
     * Whole cache lines: the answer (above node) and what the main thread
     * alone writes (below) on lines of their own, and no line shared with
     * the next task, which a runtime thread may be answering.
     */
} __attribute__((aligned(NGX_CPU_CACHE_LINE)));


/*
 * The chunk of a done stack node, or NULL for a task (the magic after the
 * node tells; inline: the worker asks it of every answer it takes).
 */
#define ngx_nffi_chunk_of(n)                                                  \
    (((ngx_nffi_chunk_t *) (n))->magic == NGX_NFFI_CHUNK_MAGIC                \
     ? (ngx_nffi_chunk_t *) (n) : NULL)

/* the task whose node (on a queue or a stack) this is */
#define ngx_nffi_task_from_node(n)                                            \
    ((ngx_nffi_task_t *) ((u_char *) (n) - offsetof(ngx_nffi_task_t, node)))


/*
 * A chunk of a stream.  Those a runtime sends go on the done stack like
 * answers, so that one drain delivers a stream's chunks and its answer in
 * the order they were sent; node and magic sit as in ngx_nffi_task_t, and
 * the magic tells them apart there.  A ROOM chunk (one per stream, never
 * freed on its own) tells the main thread that the runtime read what Lua
 * wrote, so that a write waiting for room in the window may go on.
 */

#define NGX_NFFI_CHUNK_DATA     0
#define NGX_NFFI_CHUNK_ROOM     1

struct ngx_nffi_chunk_s {
    ngx_nffi_node_t        node;
    unsigned               magic;
    int                    kind;         /* NGX_NFFI_CHUNK_* */
    ngx_nffi_task_t       *task;
    ngx_nffi_chunk_t      *next;         /* in a stream's lists */
    /*
     * data and len are read by lib/resty/nonblocking_ffi.lua
     * (ngx_nffi_chunk_t there): keep both in step
     */
    char                  *data;         /* malloc'ed */
    size_t                 len;
};


/*
 * A stream: the state both sides of a runtime:__stream() call share.
 *
 * Answer chunks (runtime -> Lua) travel on the done stack; the main thread
 * keeps them in out until Lua reads them.  Request chunks (Lua -> runtime)
 * wait in in until a runtime thread reads them.  Each direction counts its
 * unread bytes against the window under the mutex; runtime threads that
 * wait (for room, or for a chunk) sleep on cond, event-loop runtimes on fd.
 * A side that waits is woken by the other side's progress: runtime threads
 * through cond or fd, the Lua side through the task's semaphore, posted
 * on the main thread once per coroutine waiting (one may read while
 * another writes).
 *
 * closed is set (under the mutex) when the Lua side gives up; from then on
 * every send and read of the runtime fails at once.
 */

struct ngx_nffi_stream_s {
    pthread_mutex_t        mutex;
    pthread_cond_t         cond;
    size_t                 window;

    /* under the mutex */
    size_t                 out_unread;    /* sent, not read by Lua yet */
    ngx_nffi_chunk_t      *in_head;
    ngx_nffi_chunk_t      *in_tail;
    size_t                 in_unread;     /* written, not read by runtime */
    unsigned               in_ended:1;    /* stream:close_write() */
    unsigned               lua_wants_room:1;
    unsigned               room_in_flight:1;
    unsigned               runtime_wants_room:1;  /* armed by try_send */
    unsigned               runtime_wants_data:1;  /* armed by try_read */
    /* what the fd says, per direction: each try call takes its own */
    unsigned               room_signalled:1;
    unsigned               data_signalled:1;
    unsigned               closed_signalled:1;
    unsigned               fd_readable:1;
    int                    runtime_waiting;       /* threads on cond */
    int                    fd;                    /* -1 until asked */
    /* written under the mutex on the main thread, which reads it freely */
    int                    closed;

    /* main thread only */
    ngx_nffi_chunk_t      *out_head;
    ngx_nffi_chunk_t      *out_tail;
    ngx_nffi_chunk_t      *out_read;      /* read by Lua, freed next time */
    /* a coroutine waits on the task's semaphore to read, or to write */
    unsigned               lua_reading:1;
    unsigned               lua_writing:1;
    ngx_nffi_chunk_t       room;          /* NGX_NFFI_CHUNK_ROOM */
    ngx_queue_t            open;          /* in the worker's open streams */
    /* closes the stream when the request that opened it ends */
    ngx_pool_cleanup_t    *cleanup;
};


/*
 * Three parts, each on cache lines of its own: what is written at load
 * and unload only (magic, which every call and every take checks, among
 * it); what the main thread writes for every call; what runtime threads
 * write too.  Fields of the first two on one line made pollers miss on
 * magic, and pollers draining read_answers made the main thread miss on
 * pending and the statistics (in one perf profile of 64 concurrent calls,
 * half of the module's samples).  Allocated aligned to a cache line.
 */

struct ngx_nffi_runtime_s {
    unsigned               magic;

    unsigned               loaded:1;     /* init returned 0, not unloaded */
    unsigned               failed:1;     /* init returned non-zero */

    ngx_uint_t             max_queue;

    /* event-loop rounds to poll for answers after a call (opts.loop_spin) */
    ngx_uint_t             loop_spin;

    /* the default window of its streams (opts.window) */
    size_t                 window;

    time_t                 loaded_at;
    ngx_nffi_runtime_t    *next;

    /* what it was loaded with: the library file and cfg (NULL for nil) */
    char                  *lib;
    char                  *cfg;

    /* posted and not yet answered: bounded by max_queue */
    ngx_uint_t             pending
                               __attribute__((aligned(NGX_CPU_CACHE_LINE)));

    /* statistics, all kept on the main thread: runtime:__stats() */
    ngx_nffi_stats_t       stats;

    /* local failures not logged yet, and when the last report was */
    ngx_uint_t             failures_unlogged[NGX_NFFI_FAILURES_REPORTED];
    ngx_msec_t             failures_logged_at;
    ngx_event_t            failures_event;

    /*
     * Listed for the end of the event-loop iteration's posted events:
     * calls to push there (posted while others were in flight), and
     * whether its pollers are to be woken then.
     */
    ngx_nffi_runtime_t    *next_listed;
    ngx_flag_t             listed;
    ngx_flag_t             wake_wanted;
    ngx_nffi_node_t       *to_push;
    ngx_nffi_node_t       *to_push_last;
    unsigned               to_push_n;

    /* answers read since the last push on read_answers, newest first */
    ngx_nffi_node_t       *read_batch;
    ngx_nffi_node_t       *read_batch_last;
    size_t                 read_batch_size;
    ngx_uint_t             read_batch_n;

    ngx_nffi_queue_t       queue
                               __attribute__((aligned(NGX_CPU_CACHE_LINE)));

    /*
     * Answers the caller has read, freed by the runtime's own poll threads:
     * free() of memory malloc'ed on another thread costs the event loop an
     * arena lock that the runtime's malloc() holds as often as not.  See
     * ngx_nffi_task_discard_answer().
     */
    ngx_nffi_stack_t       read_answers
                               __attribute__((aligned(NGX_CPU_CACHE_LINE)));
    size_t                 read_answers_size;   /* atomic */

    /* atomic: a poller took tasks from it, or waited, once */
    int                    polled;

    /* atomic: why init fails (init_error()), malloc'ed */
    char                  *init_error;
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
    /* the one log of the module, for the main thread */
    ngx_log_t             *log;
    ngx_nffi_lua_api_t     lua;
    ngx_nffi_runtime_t    *runtimes;
    /* calls posted and not yet answered, all runtimes together */
    ngx_uint_t             pending;
    ngx_uint_t             last_task_id;
    /* CPUs in the worker's affinity, inherited by its threads; 0: unknown */
    ngx_uint_t             cpus;
} ngx_nffi_worker_t;


extern ngx_nffi_worker_t  ngx_nffi_worker;

/*
 * A flag that runtime threads read for every task or answer: alone in its
 * cache line, away from what the main thread writes for every call.
 */
typedef struct {
    int                    on;     /* atomic */
} __attribute__((aligned(NGX_CPU_CACHE_LINE))) ngx_nffi_flag_t;

/* the log's debug level is on: runtime threads trace */
extern ngx_nffi_flag_t    ngx_nffi_traced;


/* ngx_nffi_module.c */
void ngx_nffi_worker_start(ngx_cycle_t *cycle);

/* ngx_nffi_runtime.c */
ngx_nffi_runtime_t *ngx_nffi_runtime_load(const char *lib, const char *cfg,
    int is_global, ngx_uint_t max_queue, int spin, ngx_uint_t loop_spin,
    size_t window, u_char *err, size_t *errlen);
ngx_nffi_runtime_t *ngx_nffi_runtime_of(void *p);
void ngx_nffi_runtime_post(ngx_nffi_runtime_t *rt, ngx_nffi_task_t *t);
void ngx_nffi_runtime_failed(ngx_nffi_runtime_t *rt, ngx_uint_t failure);
void ngx_nffi_runtime_unload(ngx_nffi_runtime_t *rt);
ngx_nffi_runtime_t *ngx_nffi_runtime_next_loaded(ngx_nffi_runtime_t *rt);
void ngx_nffi_runtime_unload_all(void);

/* ngx_nffi_event.c */
ngx_int_t ngx_nffi_event_init(ngx_cycle_t *cycle);
void ngx_nffi_event_done(void);
void ngx_nffi_event_push_done(ngx_nffi_node_t *node);
void ngx_nffi_event_wake_runtime(ngx_nffi_runtime_t *rt);
void ngx_nffi_event_push_later(ngx_nffi_runtime_t *rt, ngx_nffi_node_t *node);
void ngx_nffi_event_push_now(ngx_nffi_runtime_t *rt);
void ngx_nffi_event_expect_answer(ngx_uint_t loop_spin);
void ngx_nffi_event_loop_spin_max(ngx_uint_t loop_spin);
void ngx_nffi_event_log(int level, const char *msg, size_t len);

/* ngx_nffi_task.c */
ngx_nffi_task_t *ngx_nffi_task_get(void);
ngx_int_t ngx_nffi_task_set_request(ngx_nffi_task_t *t, const char *method,
    size_t method_len, const char *req, size_t req_len);
ngx_nffi_task_t *ngx_nffi_task_of(void *tsk);
void ngx_nffi_task_answered(ngx_nffi_task_t *t, long long now_ticks);
ngx_int_t ngx_nffi_task_attach_request(ngx_nffi_task_t *t, ngx_pool_t *pool);
void ngx_nffi_task_cancel(ngx_nffi_task_t *t);
void ngx_nffi_task_release_lua(ngx_nffi_task_t *t, ngx_uint_t cancel);
void ngx_nffi_task_free(ngx_nffi_task_t *t);
void ngx_nffi_task_free_read_answers(ngx_nffi_runtime_t *rt);
void ngx_nffi_task_hand_back_answers(ngx_nffi_runtime_t *rt);
void ngx_nffi_task_release_semaphores(void);

/* ngx_nffi_stream.c */
ngx_int_t ngx_nffi_stream_open(ngx_nffi_task_t *t, size_t window);
void ngx_nffi_stream_deliver(ngx_nffi_chunk_t *c);
void ngx_nffi_stream_answered(ngx_nffi_task_t *t);
ngx_nffi_chunk_t *ngx_nffi_stream_next(ngx_nffi_task_t *t, int *state);
int ngx_nffi_stream_write(ngx_nffi_task_t *t, const char *data, size_t len);
void ngx_nffi_stream_close_write(ngx_nffi_task_t *t);
void ngx_nffi_stream_close(ngx_nffi_task_t *t);
void ngx_nffi_stream_free(ngx_nffi_task_t *t);
void ngx_nffi_stream_close_all(void);
ngx_nffi_chunk_t *ngx_nffi_stream_new_chunk(ngx_nffi_task_t *t, char *data,
    size_t len);
int ngx_nffi_stream_send(ngx_nffi_task_t *t, ngx_nffi_chunk_t *c,
    int wait);
int ngx_nffi_stream_read(ngx_nffi_task_t *t, char **data, int *len,
    int wait, ngx_nffi_chunk_t **room);
int ngx_nffi_stream_fd(ngx_nffi_task_t *t);

/* ngx_nffi_signal.c */
void ngx_nffi_signal_init(void);
void ngx_nffi_signal_block(sigset_t *saved);
void ngx_nffi_signal_restore(sigset_t *saved);
void ngx_nffi_signal_take_back(void);


#endif /* _NGX_NFFI_H_INCLUDED_ */
