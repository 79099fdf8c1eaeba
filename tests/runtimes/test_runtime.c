/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * The runtime of the integration tests: libnffi_test_runtime.so.  Readers
 * who want a runtime to copy start from examples/c/example.c instead.
 *
 *   local rt = ngx.load_nonblocking_ffi(RUNTIME, "threads=2")
 *   local ok, res = rt:echo("hello")
 *
 * cfg is a comma-separated list of settings (or nil); other settings are
 * ignored, so a test can make a separate runtime with any new cfg:
 *   threads=N   poll threads (default 1, 0 to 64)
 *   loops=N     event-loop threads (default 0, 0 to 64): each waits on the
 *               queue's fd with epoll and takes tasks without waiting
 *   armed=N     threads that take or arm (default 0, 0 to 64), and wait
 *               on the queue's wait fd with poll() when armed, as Go's
 *               pollers do
 *   batch=N     poll up to N tasks at once (the batch extension)
 *   fail=RC     init fails, returning RC; a "why=TEXT" at the end of cfg
 *               is the reason it gives (init_error())
 *
 * The method name (runtime:NAME(req)) chooses what happens; see the table
 * at the end.  Besides ordinary answers, methods answer late, twice,
 * never, with a bad length, from another thread, spawn a child process,
 * log, watch for cancellation and report counters.
 */

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nonblocking_ffi.h"


typedef struct {
    void   *tq;
    int     batch;
} test_rt_runtime_t;


typedef struct {
    void   *task;
    int     delay_ms;
    /* the answer; NULL answers the delay as text */
    char   *answer;
    int     answer_len;
} test_rt_delayed_t;


typedef void (*test_rt_method_pt)(void *task, const char *req, int len);


typedef struct {
    const char         *name;
    test_rt_method_pt   handler;
} test_rt_method_t;


/* tasks held by "gather" until there are enough of them */
static pthread_mutex_t  test_rt_gather_mutex = PTHREAD_MUTEX_INITIALIZER;
static void            *test_rt_gathered[NONBLOCKING_FFI_POLL_BATCH_MAX];
static int              test_rt_gathered_n;

/* counters of this worker process, reported by the "stats" method */
static int  test_rt_polled;
static int  test_rt_pollers_ended;
static int  test_rt_cancels_seen;
static int  test_rt_loop_wakes;
/* streams: chunks sent, sends waiting now, CLOSED results seen */
static int  test_rt_chunks_sent;
static int  test_rt_sends_waiting;
static int  test_rt_closed_seen;
/* the queue of the last init, for "take_misuse" */
static void *test_rt_last_tq;


static char *
test_rt_copy(const char *data, int len)
{
    char  *copy;

    copy = malloc(len + 1);
    if (copy == NULL) {
        return NULL;
    }

    memcpy(copy, data, len);
    copy[len] = '\0';

    return copy;
}


static void
test_rt_sleep_ms(int ms)
{
    struct timespec  ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long) (ms % 1000) * 1000000;

    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
        /* the rest of the sleep */
    }
}


static void
test_rt_answer_text(void *task, int rc, const char *text)
{
    ngx_http_lua_nonblocking_ffi_respond(task, rc, strdup(text), 0);
}


static void
test_rt_echo(void *task, const char *req, int len)
{
    /* binary-safe: the length is given, NUL bytes pass */
    ngx_http_lua_nonblocking_ffi_respond(task, 0,
                                         req ? test_rt_copy(req, len) : NULL,
                                         len);
}


static void
test_rt_error(void *task, const char *req, int len)
{
    int   rc;
    char  text[64];

    rc = req ? atoi(req) : 0;
    if (rc == 0) {
        rc = 1;
    }

    snprintf(text, sizeof(text), "error %d", rc);
    test_rt_answer_text(task, rc, text);
}


static void
test_rt_error_nil(void *task, const char *req, int len)
{
    ngx_http_lua_nonblocking_ffi_respond(task, 2, NULL, 0);
}


static void
test_rt_null(void *task, const char *req, int len)
{
    ngx_http_lua_nonblocking_ffi_respond(task, 0, NULL, 0);
}


static void
test_rt_cstring(void *task, const char *req, int len)
{
    test_rt_answer_text(task, 0, "a NUL-terminated answer");
}


static void *
test_rt_delayed_answer(void *arg)
{
    test_rt_delayed_t  *d = arg;
    char                text[32];

    test_rt_sleep_ms(d->delay_ms);

    if (d->answer) {
        ngx_http_lua_nonblocking_ffi_respond(d->task, 0, d->answer,
                                             d->answer_len);

    } else {
        snprintf(text, sizeof(text), "%d", d->delay_ms);
        test_rt_answer_text(d->task, 0, text);
    }

    free(d);

    return NULL;
}


static void
test_rt_answer_later(void *task, int delay_ms, char *answer, int answer_len)
{
    pthread_t           thread;
    pthread_attr_t      attr;
    test_rt_delayed_t  *d;

    d = malloc(sizeof(test_rt_delayed_t));
    if (d == NULL) {
        free(answer);
        test_rt_answer_text(task, 1, "no memory");
        return;
    }

    d->task = task;
    d->delay_ms = delay_ms;
    d->answer = answer;
    d->answer_len = answer_len;

    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

    if (pthread_create(&thread, &attr, test_rt_delayed_answer, d) != 0) {
        free(answer);
        free(d);
        test_rt_answer_text(task, 1, "pthread_create() failed");
    }

    pthread_attr_destroy(&attr);
}


/* answers with req after req milliseconds, from a thread of its own */

static void
test_rt_delay(void *task, const char *req, int len)
{
    test_rt_answer_later(task, req ? atoi(req) : 0, NULL, 0);
}


/* echoes from a thread of its own, after 0 to 6 ms depending on len */

static void
test_rt_delay_echo(void *task, const char *req, int len)
{
    char  *copy;

    copy = test_rt_copy(req ? req : "", len);
    if (copy == NULL) {
        test_rt_answer_text(task, 1, "no memory");
        return;
    }

    test_rt_answer_later(task, len % 7, copy, len);
}


/* keeps the poll thread busy for req milliseconds, then echoes */

static void
test_rt_block(void *task, const char *req, int len)
{
    test_rt_sleep_ms(req ? atoi(req) : 0);
    test_rt_echo(task, req, len);
}


/*
 * Holds calls until req of them arrived, then answers them all, the last
 * one first (req at most NONBLOCKING_FFI_POLL_BATCH_MAX), each with its
 * own request.
 */

static void
test_rt_gather(void *task, const char *req, int len)
{
    int     i, n, want, lens[NONBLOCKING_FFI_POLL_BATCH_MAX];
    char   *reqs[NONBLOCKING_FFI_POLL_BATCH_MAX];
    void   *tasks[NONBLOCKING_FFI_POLL_BATCH_MAX];

    want = req ? atoi(req) : 0;

    if (want < 1 || want > NONBLOCKING_FFI_POLL_BATCH_MAX) {
        test_rt_answer_text(task, 1, "gather wants 1 to 1024 calls");
        return;
    }

    pthread_mutex_lock(&test_rt_gather_mutex);

    test_rt_gathered[test_rt_gathered_n++] = task;
    n = test_rt_gathered_n;

    if (n >= want) {
        memcpy(tasks, test_rt_gathered, n * sizeof(void *));
        test_rt_gathered_n = 0;
    }

    pthread_mutex_unlock(&test_rt_gather_mutex);

    if (n < want) {
        return;
    }

    for (i = n - 1; i >= 0; i--) {
        reqs[i] = ngx_http_lua_nonblocking_ffi_get_req(tasks[i], &lens[i]);
        test_rt_echo(tasks[i], reqs[i], lens[i]);
    }
}


static void
test_rt_twice(void *task, const char *req, int len)
{
    test_rt_answer_text(task, 0, "first");
    test_rt_answer_text(task, 0, "second");
}


static void
test_rt_never(void *task, const char *req, int len)
{
    /* a runtime bug on purpose: the caller can only time out */
}


static void
test_rt_bad_length(void *task, const char *req, int len)
{
    ngx_http_lua_nonblocking_ffi_respond(task, 0, strdup("x"), -1);
}


/*
 * Answers as req says, for tests/fuzz_nginx.py: "RC MODE SIZE LEN NUL TWICE"
 * with MODE 0 for a NULL answer and 1 for SIZE bytes of malloc'ed memory
 * ('a', 'b', ... and a NUL at NUL and at the end) answered with rsp_len
 * LEN, and TWICE 1 to answer a second time (a runtime bug the module must
 * refuse).
 */

static void
test_rt_respond_as(void *task, const char *req, int len)
{
    int    i, rc, mode, size, rsp_len, nul, twice;
    char  *rsp;

    if (req == NULL
        || sscanf(req, "%d %d %d %d %d %d", &rc, &mode, &size, &rsp_len,
                  &nul, &twice) != 6
        || size < 1 || size > 1 << 20)
    {
        test_rt_answer_text(task, 1, "respond_as: bad request");
        return;
    }

    rsp = NULL;

    if (mode == 1) {
        rsp = malloc(size);
        if (rsp == NULL) {
            test_rt_answer_text(task, 1, "no memory");
            return;
        }

        for (i = 0; i < size; i++) {
            rsp[i] = 'a' + i % 26;
        }

        rsp[size - 1] = '\0';

        if (nul >= 0 && nul < size) {
            rsp[nul] = '\0';
        }
    }

    ngx_http_lua_nonblocking_ffi_respond(task, rc, rsp, rsp_len);

    if (twice) {
        ngx_http_lua_nonblocking_ffi_respond(task, rc, strdup("again"), 0);
    }
}


/* runs req with /bin/sh from this runtime thread and reports its status */

static void
test_rt_spawn(void *task, const char *req, int len)
{
    int    status;
    char   text[128];
    pid_t  pid;

    pid = fork();

    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", req ? req : "true", (char *) NULL);
        _exit(127);
    }

    if (pid == -1) {
        snprintf(text, sizeof(text), "fork: %s", strerror(errno));
        test_rt_answer_text(task, 1, text);
        return;
    }

    while (waitpid(pid, &status, 0) == -1) {
        if (errno != EINTR) {
            snprintf(text, sizeof(text), "waitpid: %s", strerror(errno));
            test_rt_answer_text(task, 1, text);
            return;
        }
    }

    snprintf(text, sizeof(text), "exit %d",
             WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    test_rt_answer_text(task, 0, text);
}


/* req is "LEVEL message": writes message to the nginx error log */

static void
test_rt_log(void *task, const char *req, int len)
{
    int    level;
    char  *msg;

    level = req ? (int) strtol(req, &msg, 10) : NONBLOCKING_FFI_LOG_ERR;
    msg = (req && *msg == ' ') ? msg + 1 : "(no message)";

    ngx_http_lua_nonblocking_ffi_log(level, msg, 0);
    test_rt_answer_text(task, 0, "logged");
}


/* waits (up to 10 s) until the caller gives up */

static void
test_rt_wait_cancel(void *task, const char *req, int len)
{
    int  i;

    for (i = 0; i < 10000; i++) {
        if (ngx_http_lua_nonblocking_ffi_task_cancelled(task)) {
            __atomic_add_fetch(&test_rt_cancels_seen, 1, __ATOMIC_RELAXED);
            test_rt_answer_text(task, 0, "cancelled");
            return;
        }

        test_rt_sleep_ms(1);
    }

    test_rt_answer_text(task, 0, "not cancelled");
}


/* this task's place among those taken: with one poller, the queue's order */

static void
test_rt_taken_as(void *task, const char *req, int len)
{
    char  text[32];

    snprintf(text, sizeof(text), "%d",
             __atomic_load_n(&test_rt_polled, __ATOMIC_RELAXED));
    test_rt_answer_text(task, 0, text);
}


static void
test_rt_stats(void *task, const char *req, int len)
{
    char  text[256];

    snprintf(text, sizeof(text),
             "polled=%d pollers_ended=%d cancels_seen=%d abi=%d "
             "loop_wakes=%d chunks_sent=%d sends_waiting=%d closed_seen=%d",
             __atomic_load_n(&test_rt_polled, __ATOMIC_RELAXED),
             __atomic_load_n(&test_rt_pollers_ended, __ATOMIC_RELAXED),
             __atomic_load_n(&test_rt_cancels_seen, __ATOMIC_RELAXED),
             ngx_http_lua_nonblocking_ffi_abi_version(),
             __atomic_load_n(&test_rt_loop_wakes, __ATOMIC_RELAXED),
             __atomic_load_n(&test_rt_chunks_sent, __ATOMIC_SEQ_CST),
             __atomic_load_n(&test_rt_sends_waiting, __ATOMIC_SEQ_CST),
             __atomic_load_n(&test_rt_closed_seen, __ATOMIC_SEQ_CST));
    test_rt_answer_text(task, 0, text);
}


/* the event-loop calls with bad arguments: each answers -1 */

static void
test_rt_take_misuse(void *task, const char *req, int len)
{
    char   text[64];
    void  *tasks[1];

    void  *tq;

    tq = __atomic_load_n(&test_rt_last_tq, __ATOMIC_RELAXED);

    snprintf(text, sizeof(text), "%d %d %d %d %d %d",
             ngx_http_lua_nonblocking_ffi_queue_fd(task),
             ngx_http_lua_nonblocking_ffi_task_take(task, tasks, 1),
             ngx_http_lua_nonblocking_ffi_task_take(tq, NULL, 1),
             ngx_http_lua_nonblocking_ffi_queue_wait_fd(task),
             ngx_http_lua_nonblocking_ffi_task_take_or_arm(task, tasks, 1),
             ngx_http_lua_nonblocking_ffi_task_take_or_arm(tq, tasks, 0));
    test_rt_answer_text(task, 0, text);
}


/* --- streams: each runs on a thread of its own, as its calls block */


typedef struct {
    void   *task;
    char   *req;
    void  *(*run)(void *task, const char *req);
} test_rt_streamer_t;


static void *
test_rt_streamer(void *arg)
{
    test_rt_streamer_t  *st = arg;

    st->run(st->task, st->req);
    free(st->req);
    free(st);

    return NULL;
}


static void
test_rt_stream_on_thread(void *task, const char *req, int len,
    void *(*run)(void *task, const char *req))
{
    pthread_t            thread;
    pthread_attr_t       attr;
    test_rt_streamer_t  *st;

    st = malloc(sizeof(test_rt_streamer_t));
    if (st == NULL) {
        test_rt_answer_text(task, 1, "no memory");
        return;
    }

    st->task = task;
    st->req = test_rt_copy(req ? req : "", req ? len : 0);
    st->run = run;

    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

    if (st->req == NULL
        || pthread_create(&thread, &attr, test_rt_streamer, st) != 0)
    {
        free(st->req);
        free(st);
        test_rt_answer_text(task, 1, "cannot start a stream thread");
    }

    pthread_attr_destroy(&attr);
}


/* a send, counted: the tests see how far a runtime got, and whether it
 * waits for the window */

static int
test_rt_send(void *task, char *chunk, int len)
{
    int  rc;

    __atomic_add_fetch(&test_rt_sends_waiting, 1, __ATOMIC_SEQ_CST);
    rc = ngx_http_lua_nonblocking_ffi_stream_send(task, chunk, len);
    __atomic_sub_fetch(&test_rt_sends_waiting, 1, __ATOMIC_SEQ_CST);

    if (rc == NONBLOCKING_FFI_STREAM_OK) {
        __atomic_add_fetch(&test_rt_chunks_sent, 1, __ATOMIC_SEQ_CST);

    } else if (rc == NONBLOCKING_FFI_STREAM_CLOSED) {
        __atomic_add_fetch(&test_rt_closed_seen, 1, __ATOMIC_SEQ_CST);
    }

    return rc;
}


/* req "N,SIZE[,DELAY_MS[,LAST]]": N chunks of SIZE bytes ('a' for the
 * first, 'b' for the second...), DELAY_MS apart, then LAST as the answer */

static void *
test_rt_count_run(void *task, const char *req)
{
    int          i, n, size, delay, used;
    char        *chunk;
    const char  *last;

    n = 0;
    size = 1;
    delay = 0;
    used = 0;
    sscanf(req, "%d,%d,%d,%n", &n, &size, &delay, &used);
    last = used ? req + used : NULL;

    for (i = 0; i < n; i++) {
        if (delay) {
            test_rt_sleep_ms(delay);
        }

        chunk = malloc(size + 1);
        if (chunk == NULL) {
            test_rt_answer_text(task, 1, "no memory");
            return NULL;
        }

        memset(chunk, 'a' + i % 26, size);
        chunk[size] = '\0';

        if (test_rt_send(task, chunk, size) != NONBLOCKING_FFI_STREAM_OK) {
            test_rt_answer_text(task, 0, "closed");
            return NULL;
        }
    }

    if (last && *last) {
        test_rt_answer_text(task, 0, last);

    } else {
        ngx_http_lua_nonblocking_ffi_respond(task, 0, NULL, 0);
    }

    return NULL;
}


static void
test_rt_stream_count(void *task, const char *req, int len)
{
    test_rt_stream_on_thread(task, req, len, test_rt_count_run);
}


/* every chunk Lua writes comes back; the end of Lua's chunks ends it */

static void *
test_rt_stream_echo_run(void *task, const char *req)
{
    int    rc, len;
    char  *chunk;

    for ( ;; ) {
        rc = ngx_http_lua_nonblocking_ffi_stream_read(task, &chunk, &len);

        if (rc == NONBLOCKING_FFI_STREAM_END) {
            ngx_http_lua_nonblocking_ffi_respond(task, 0, NULL, 0);
            return NULL;
        }

        if (rc != NONBLOCKING_FFI_STREAM_OK) {
            if (rc == NONBLOCKING_FFI_STREAM_CLOSED) {
                __atomic_add_fetch(&test_rt_closed_seen, 1,
                                   __ATOMIC_SEQ_CST);
            }

            test_rt_answer_text(task, 1, "read failed");
            return NULL;
        }

        /* the chunk read is plain malloc()'ed memory: it goes on */
        if (test_rt_send(task, chunk, len) != NONBLOCKING_FFI_STREAM_OK) {
            test_rt_answer_text(task, 1, "send failed");
            return NULL;
        }
    }
}


static void
test_rt_stream_echo(void *task, const char *req, int len)
{
    test_rt_stream_on_thread(task, req, len, test_rt_stream_echo_run);
}


/* reads Lua's chunks, DELAY_MS (req) apart; answers the bytes read */

static void *
test_rt_stream_sink_run(void *task, const char *req)
{
    int        rc, len, delay;
    char      *chunk, text[64];
    long long  total;

    delay = atoi(req);
    total = 0;

    for ( ;; ) {
        if (delay) {
            test_rt_sleep_ms(delay);
        }

        rc = ngx_http_lua_nonblocking_ffi_stream_read(task, &chunk, &len);

        if (rc != NONBLOCKING_FFI_STREAM_OK) {
            break;
        }

        total += len;
        free(chunk);
    }

    if (rc == NONBLOCKING_FFI_STREAM_CLOSED) {
        __atomic_add_fetch(&test_rt_closed_seen, 1, __ATOMIC_SEQ_CST);
    }

    snprintf(text, sizeof(text), "%lld", total);
    test_rt_answer_text(task, rc == NONBLOCKING_FFI_STREAM_END ? 0 : 1, text);

    return NULL;
}


static void
test_rt_stream_sink(void *task, const char *req, int len)
{
    test_rt_stream_on_thread(task, req, len, test_rt_stream_sink_run);
}


/* waits on the stream's fd as an event loop would, for at most 10 s */

static int
test_rt_stream_wait_fd(void *task, int *waits, int late_ms)
{
    struct pollfd  pfd;

    if (late_ms) {
        test_rt_sleep_ms(late_ms);
    }

    pfd.fd = ngx_http_lua_nonblocking_ffi_stream_fd(task);
    pfd.events = POLLIN;

    if (pfd.fd == -1) {
        return -1;
    }

    (*waits)++;

    return poll(&pfd, 1, 10000) == 1 ? 0 : -1;
}


/*
 * Reads every chunk Lua writes with the non-blocking form, counting its
 * bytes, waiting on the fd; *late (ms) delays the first wait, then is 0.
 * Returns how it ended: NONBLOCKING_FFI_STREAM_END, or a failure.
 */

static int
test_rt_try_read_all(void *task, long long *total, int *waits, int *late)
{
    int    rc, len;
    char  *chunk;

    for ( ;; ) {
        rc = ngx_http_lua_nonblocking_ffi_stream_try_read(task, &chunk, &len);

        if (rc == NONBLOCKING_FFI_STREAM_OK) {
            *total += len;
            free(chunk);
            continue;
        }

        if (rc != NONBLOCKING_FFI_STREAM_AGAIN
            || test_rt_stream_wait_fd(task, waits, *late) != 0)
        {
            return rc;
        }

        *late = 0;
    }
}


/* sends n chunks of size bytes ('a' for the first...) with the
 * non-blocking form, waiting on the fd as above; OK or a failure */

static int
test_rt_try_send_all(void *task, int n, int size, int *waits, int *late)
{
    int    i, rc;
    char  *chunk;

    for (i = 0; i < n; i++) {
        chunk = malloc(size);
        if (chunk == NULL) {
            return NONBLOCKING_FFI_STREAM_ERROR;
        }

        memset(chunk, 'a' + i % 26, size);

        for ( ;; ) {
            rc = ngx_http_lua_nonblocking_ffi_stream_try_send(task, chunk,
                                                              size);

            if (rc != NONBLOCKING_FFI_STREAM_AGAIN
                || test_rt_stream_wait_fd(task, waits, *late) != 0)
            {
                break;
            }

            *late = 0;
        }

        if (rc != NONBLOCKING_FFI_STREAM_OK) {
            if (rc == NONBLOCKING_FFI_STREAM_AGAIN) {
                free(chunk);
            }

            return rc;
        }
    }

    return NONBLOCKING_FFI_STREAM_OK;
}


/* the non-blocking forms: reads every chunk (the bytes are counted), then
 * sends N chunks of SIZE bytes (req "N,SIZE[,LATE_MS]"), waiting on the
 * fd; with LATE_MS, the first AGAIN is waited out LATE_MS before the fd
 * is first asked for */

static void *
test_rt_stream_try_run(void *task, const char *req)
{
    int        n, size, waits, late;
    char       text[96];
    long long  total;

    n = 0;
    size = 1;
    late = 0;
    sscanf(req, "%d,%d,%d", &n, &size, &late);
    total = 0;
    waits = 0;

    if (test_rt_try_read_all(task, &total, &waits, &late)
        != NONBLOCKING_FFI_STREAM_END)
    {
        test_rt_answer_text(task, 1, "try_read failed");
        return NULL;
    }

    if (test_rt_try_send_all(task, n, size, &waits, &late)
        != NONBLOCKING_FFI_STREAM_OK)
    {
        test_rt_answer_text(task, 1, "try_send failed");
        return NULL;
    }

    snprintf(text, sizeof(text), "read=%lld waits=%d", total, waits);
    test_rt_answer_text(task, 0, text);

    return NULL;
}


static void
test_rt_stream_try(void *task, const char *req, int len)
{
    test_rt_stream_on_thread(task, req, len, test_rt_stream_try_run);
}


/* the fd forms from two threads at once: one reads every chunk Lua
 * writes while the other sends N chunks of SIZE bytes (req "N,SIZE"); both
 * wait on the stream's one fd */

typedef struct {
    void       *task;
    long long   total;
    int         waits;
    int         rc;
} test_rt_duplex_t;


static void *
test_rt_duplex_reader(void *arg)
{
    int                late;
    test_rt_duplex_t  *d = arg;

    late = 0;
    d->rc = test_rt_try_read_all(d->task, &d->total, &d->waits, &late);

    return NULL;
}


static void *
test_rt_stream_duplex_run(void *task, const char *req)
{
    int               n, size, rc, waits, late;
    char              text[96];
    pthread_t         reader;
    test_rt_duplex_t  d;

    n = 0;
    size = 1;
    sscanf(req, "%d,%d", &n, &size);
    waits = 0;
    late = 0;

    memset(&d, 0, sizeof(d));
    d.task = task;

    if (pthread_create(&reader, NULL, test_rt_duplex_reader, &d) != 0) {
        test_rt_answer_text(task, 1, "pthread_create() failed");
        return NULL;
    }

    rc = test_rt_try_send_all(task, n, size, &waits, &late);

    /* the task is answered only once the reader is done with it */
    pthread_join(reader, NULL);

    snprintf(text, sizeof(text), "read=%lld", d.total);
    test_rt_answer_text(task,
                        rc == NONBLOCKING_FFI_STREAM_OK
                        && d.rc == NONBLOCKING_FFI_STREAM_END ? 0 : 1,
                        text);

    return NULL;
}


static void
test_rt_stream_duplex(void *task, const char *req, int len)
{
    test_rt_stream_on_thread(task, req, len, test_rt_stream_duplex_run);
}


/* one chunk, then a runtime error */

static void
test_rt_stream_error(void *task, const char *req, int len)
{
    ngx_http_lua_nonblocking_ffi_stream_send(task, strdup("partial"), 0);
    test_rt_answer_text(task, 7, "failed midway");
}


/* the stream calls misused: what each returns, on any task */

static void
test_rt_stream_misuse(void *task, const char *req, int len)
{
    int    n;
    char  *chunk, text[96];

    snprintf(text, sizeof(text), "%d %d %d %d %d",
             ngx_http_lua_nonblocking_ffi_task_is_stream(task),
             ngx_http_lua_nonblocking_ffi_stream_send(task, strdup("x"), -1),
             ngx_http_lua_nonblocking_ffi_stream_read(task, NULL, &n),
             ngx_http_lua_nonblocking_ffi_stream_try_read(NULL, &chunk, &n),
             ngx_http_lua_nonblocking_ffi_task_is_stream(task)
             ? ngx_http_lua_nonblocking_ffi_stream_send(task, NULL, 0)
             : ngx_http_lua_nonblocking_ffi_stream_fd(task));
    test_rt_answer_text(task, 0, text);
}


static const test_rt_method_t  test_rt_methods[] = {
    { "echo", test_rt_echo },
    { "error", test_rt_error },
    { "error_nil", test_rt_error_nil },
    { "null", test_rt_null },
    { "cstring", test_rt_cstring },
    { "delay", test_rt_delay },
    { "delay_echo", test_rt_delay_echo },
    { "block", test_rt_block },
    { "gather", test_rt_gather },
    { "twice", test_rt_twice },
    { "never", test_rt_never },
    { "bad_length", test_rt_bad_length },
    { "respond_as", test_rt_respond_as },
    { "spawn", test_rt_spawn },
    { "log", test_rt_log },
    { "wait_cancel", test_rt_wait_cancel },
    { "stats", test_rt_stats },
    { "taken_as", test_rt_taken_as },
    { "take_misuse", test_rt_take_misuse },
    { "stream_count", test_rt_stream_count },
    { "stream_echo", test_rt_stream_echo },
    { "stream_sink", test_rt_stream_sink },
    { "stream_try", test_rt_stream_try },
    { "stream_duplex", test_rt_stream_duplex },
    { "stream_error", test_rt_stream_error },
    { "stream_misuse", test_rt_stream_misuse },
    { NULL, NULL }
};


static void
test_rt_handle(void *task)
{
    int                      len;
    char                    *req, text[128];
    const char              *method;
    const test_rt_method_t  *m;

    __atomic_add_fetch(&test_rt_polled, 1, __ATOMIC_RELAXED);

    req = ngx_http_lua_nonblocking_ffi_get_req(task, &len);
    method = ngx_http_lua_nonblocking_ffi_get_method(task, NULL);

    for (m = test_rt_methods; m->name; m++) {
        if (strcmp(m->name, method) == 0) {
            m->handler(task, req, len);
            return;
        }
    }

    snprintf(text, sizeof(text), "unknown method %.64s", method);
    test_rt_answer_text(task, 404, text);
}


static void *
test_rt_poll_loop(void *arg)
{
    int                 i, n;
    void               *tasks[64];
    test_rt_runtime_t  *rt = arg;

    for ( ;; ) {
        if (rt->batch > 1) {
            n = ngx_http_lua_nonblocking_ffi_task_poll_batch(rt->tq, tasks,
                                                             rt->batch);

        } else {
            tasks[0] = ngx_http_lua_nonblocking_ffi_task_poll(rt->tq);
            n = tasks[0] ? 1 : 0;
        }

        if (n == 0) {
            /* unloaded: every queued task was handed out before this */
            __atomic_add_fetch(&test_rt_pollers_ended, 1, __ATOMIC_RELAXED);
            free(rt);
            return NULL;
        }

        for (i = 0; i < n; i++) {
            test_rt_handle(tasks[i]);
        }
    }
}


/* what an event loop does: wait on the queue's fd, take what is there */

static void *
test_rt_event_loop(void *arg)
{
    int                  i, n, fd, ep;
    void                *tasks[64];
    test_rt_runtime_t   *rt = arg;
    struct epoll_event   ev;

    fd = ngx_http_lua_nonblocking_ffi_queue_fd(rt->tq);
    ep = epoll_create1(EPOLL_CLOEXEC);

    ev.events = EPOLLIN;
    ev.data.fd = fd;

    if (fd == -1 || ep == -1 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        ngx_http_lua_nonblocking_ffi_log(NONBLOCKING_FFI_LOG_ALERT,
                                         "test runtime: no event loop", 0);
        abort();
    }

    for ( ;; ) {
        n = ngx_http_lua_nonblocking_ffi_task_take(rt->tq, tasks, rt->batch);

        if (n < 0) {
            break;
        }

        if (n == 0) {
            while (epoll_wait(ep, &ev, 1, -1) == -1 && errno == EINTR) {
                /* void */
            }

            __atomic_add_fetch(&test_rt_loop_wakes, 1, __ATOMIC_RELAXED);
            continue;
        }

        for (i = 0; i < n; i++) {
            test_rt_handle(tasks[i]);
        }
    }

    close(ep);
    __atomic_add_fetch(&test_rt_pollers_ended, 1, __ATOMIC_RELAXED);
    free(rt);

    return NULL;
}


/* what Go's pollers do: take or arm, and wait on the wait fd when armed */

static void *
test_rt_armed_loop(void *arg)
{
    int                  i, n, fd;
    void                *tasks[64];
    uint64_t             wakeup;
    struct pollfd        pfd;
    test_rt_runtime_t   *rt = arg;

    fd = ngx_http_lua_nonblocking_ffi_queue_wait_fd(rt->tq);

    if (fd == -1) {
        ngx_http_lua_nonblocking_ffi_log(NONBLOCKING_FFI_LOG_ALERT,
                                         "test runtime: no wait fd", 0);
        abort();
    }

    pfd.fd = fd;
    pfd.events = POLLIN;

    for ( ;; ) {
        n = ngx_http_lua_nonblocking_ffi_task_take_or_arm(rt->tq, tasks,
                                                          rt->batch);

        if (n < 0) {
            break;
        }

        if (n == 0) {
            /* another waiter may read the wake-up first: wait again */
            while (read(fd, &wakeup, sizeof(wakeup)) == -1) {
                while (poll(&pfd, 1, -1) == -1 && errno == EINTR) {
                    /* void */
                }
            }

            __atomic_add_fetch(&test_rt_loop_wakes, 1, __ATOMIC_RELAXED);
            continue;
        }

        for (i = 0; i < n; i++) {
            test_rt_handle(tasks[i]);
        }
    }

    __atomic_add_fetch(&test_rt_pollers_ended, 1, __ATOMIC_RELAXED);
    free(rt);

    return NULL;
}


static int
test_rt_setting(const char *cfg, const char *name, int dflt)
{
    size_t       len;
    const char  *p;

    if (cfg == NULL) {
        return dflt;
    }

    len = strlen(name);

    for (p = cfg; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
        if (strncmp(p, name, len) == 0 && p[len] == '=') {
            return atoi(p + len + 1);
        }
    }

    return dflt;
}


/*
 * For a test that must see the pollers end before it lets the event loop
 * run (it calls this through LuaJIT's FFI): "stats" would need a call.
 */

int
nffi_test_pollers_ended(void)
{
    return __atomic_load_n(&test_rt_pollers_ended, __ATOMIC_RELAXED);
}


int
lib_nonblocking_ffi_init(char *cfg, void *tq)
{
    int                 i, threads, loops, armed, rc;
    char               *why;
    pthread_t           thread;
    void             *(*run)(void *arg);
    test_rt_runtime_t  *rt;

    rc = test_rt_setting(cfg, "fail", 0);
    if (rc != 0) {
        /* "why=..." at the end of cfg: the reason the Lua caller sees */
        why = cfg ? strstr(cfg, "why=") : NULL;

        if (why) {
            ngx_http_lua_nonblocking_ffi_init_error(tq, why + 4, 0);
        }

        return rc;
    }

    threads = test_rt_setting(cfg, "threads", 1);
    loops = test_rt_setting(cfg, "loops", 0);
    armed = test_rt_setting(cfg, "armed", 0);

    if (threads < 0 || threads > 64 || loops < 0 || loops > 64
        || armed < 0 || armed > 64 || threads + loops + armed == 0)
    {
        return -1;
    }

    __atomic_store_n(&test_rt_last_tq, tq, __ATOMIC_RELAXED);

    for (i = 0; i < threads + loops + armed; i++) {
        /* each poller frees its own copy when it sees the end */
        rt = malloc(sizeof(test_rt_runtime_t));
        if (rt == NULL) {
            return -1;
        }

        rt->tq = tq;
        rt->batch = test_rt_setting(cfg, "batch", 1);

        if (rt->batch < 1 || rt->batch > 64) {
            rt->batch = rt->batch < 1 ? 1 : 64;
        }

        run = i < threads ? test_rt_poll_loop
              : i < threads + loops ? test_rt_event_loop
              : test_rt_armed_loop;

        if (pthread_create(&thread, NULL, run, rt) != 0) {
            free(rt);
            return -1;
        }

        pthread_detach(thread);
    }

    return 0;
}
