/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Streams: the chunks of a runtime:__stream() call, both ways, bounded by a
 * window of unread bytes in each direction (the struct, in ngx_nffi.h,
 * says what its fields mean and who writes them).
 *
 * The main thread owns the Lua side: it delivers the chunks a runtime sent
 * (they came through the done stack), hands them to Lua one at a time,
 * takes Lua's chunks, and wakes the coroutine that waits for either.  Runtime
 * threads call ngx_nffi_stream_send(), _read() and _fd() through the ABI
 * (ngx_nffi_abi.c), which pushes what they return on the done stack: this
 * file calls nothing above it.
 */

#include "ngx_nffi.h"

#include <sys/eventfd.h>


/* the done stack tells chunks from tasks by the magic after the node */
typedef char ngx_nffi_chunk_layout_check[
    (offsetof(ngx_nffi_chunk_t, magic) - offsetof(ngx_nffi_chunk_t, node)
     == offsetof(ngx_nffi_task_t, magic) - offsetof(ngx_nffi_task_t, node))
    ? 1 : -1];


static void ngx_nffi_stream_wake_lua(ngx_nffi_task_t *t, ngx_uint_t reader,
    ngx_uint_t writer);
static void ngx_nffi_stream_wake_runtime(ngx_nffi_stream_t *s,
    ngx_uint_t room, ngx_uint_t data);
static void ngx_nffi_stream_sleep(ngx_nffi_stream_t *s);
static void ngx_nffi_stream_drain_fd(ngx_nffi_stream_t *s, ngx_uint_t room,
    ngx_uint_t data);
static void ngx_nffi_stream_detach(ngx_nffi_stream_t *s);
static void ngx_nffi_stream_free_chunks(ngx_nffi_chunk_t *c);


/* the worker's streams whose Lua side is still there */
static ngx_queue_t  ngx_nffi_streams_open;


ngx_int_t
ngx_nffi_stream_open(ngx_nffi_task_t *t, size_t window)
{
    ngx_nffi_stream_t  *s;

    s = ngx_calloc(sizeof(ngx_nffi_stream_t), ngx_nffi_worker.log);
    if (s == NULL) {
        return NGX_ERROR;
    }

    if (pthread_mutex_init(&s->mutex, NULL) != 0) {
        ngx_free(s);
        return NGX_ERROR;
    }

    if (pthread_cond_init(&s->cond, NULL) != 0) {
        pthread_mutex_destroy(&s->mutex);
        ngx_free(s);
        return NGX_ERROR;
    }

    s->window = window;
    s->fd = -1;
    s->room.magic = NGX_NFFI_CHUNK_MAGIC;
    s->room.kind = NGX_NFFI_CHUNK_ROOM;
    s->room.task = t;

    if (ngx_nffi_streams_open.next == NULL) {
        ngx_queue_init(&ngx_nffi_streams_open);
    }

    ngx_queue_insert_tail(&ngx_nffi_streams_open, &s->open);

    t->stream = s;

    return NGX_OK;
}


/*
 * A chunk of either direction (on any thread), around malloc'ed data;
 * NULL without memory: data is still the caller's.
 */

ngx_nffi_chunk_t *
ngx_nffi_stream_new_chunk(ngx_nffi_task_t *t, char *data, size_t len)
{
    ngx_nffi_chunk_t  *c;

    c = calloc(1, sizeof(ngx_nffi_chunk_t));
    if (c == NULL) {
        return NULL;
    }

    c->magic = NGX_NFFI_CHUNK_MAGIC;
    c->kind = NGX_NFFI_CHUNK_DATA;
    c->task = t;
    c->data = data;
    c->len = len;

    return c;
}


/* a chunk a runtime sent, or a ROOM notice, taken from the done stack */

void
ngx_nffi_stream_deliver(ngx_nffi_chunk_t *c)
{
    ngx_nffi_task_t    *t;
    ngx_nffi_stream_t  *s;

    t = c->task;
    s = t->stream;

    if (c->kind == NGX_NFFI_CHUNK_ROOM) {
        pthread_mutex_lock(&s->mutex);
        s->room_in_flight = 0;
        pthread_mutex_unlock(&s->mutex);

        ngx_nffi_stream_wake_lua(t, 0, 1);
        return;
    }

    if (!t->lua_ref || s->closed) {
        /* nobody reads it; the runtime's next send sees the stream closed */
        ngx_nffi_stream_free_chunks(c);
        return;
    }

    t->runtime->stats.bytes_out += c->len;

    c->next = NULL;

    if (s->out_tail) {
        s->out_tail->next = c;

    } else {
        s->out_head = c;
    }

    s->out_tail = c;

    ngx_nffi_stream_wake_lua(t, 1, 0);
}


/*
 * The final answer of a stream came: whoever of the Lua side waits is
 * woken, and finds it.
 */

void
ngx_nffi_stream_answered(ngx_nffi_task_t *t)
{
    ngx_nffi_stream_wake_lua(t, 1, 1);
}


/*
 * For Lua's stream:read(): the next chunk (valid until the next call), or
 * NULL with *state 0 (nothing yet: the caller waits on the task's
 * semaphore), 1 (the answer came: the task holds it) or 2 (closed).
 */

ngx_nffi_chunk_t *
ngx_nffi_stream_next(ngx_nffi_task_t *t, int *state)
{
    ngx_nffi_chunk_t   *c;
    ngx_nffi_stream_t  *s;

    s = t->stream;

    if (s->out_read) {
        ngx_nffi_stream_free_chunks(s->out_read);
        s->out_read = NULL;
    }

    c = s->out_head;

    if (c) {
        s->out_head = c->next;

        if (s->out_head == NULL) {
            s->out_tail = NULL;
        }

        c->next = NULL;
        s->out_read = c;

        pthread_mutex_lock(&s->mutex);
        s->out_unread -= c->len;
        ngx_nffi_stream_wake_runtime(s, 1, 0);
        pthread_mutex_unlock(&s->mutex);

        *state = 0;
        return c;
    }

    if (s->closed) {
        *state = 2;

    } else if (!t->runtime_ref) {
        *state = 1;

    } else {
        s->lua_reading = 1;
        *state = 0;
    }

    return NULL;
}


/*
 * For Lua's stream:write(): 0 when the chunk was taken, 1 when the window
 * is full (the caller waits on the task's semaphore and tries again), -1
 * when the stream is over (answered or closed), -2 without memory, -3
 * after close_write().
 */

int
ngx_nffi_stream_write(ngx_nffi_task_t *t, const char *data, size_t len)
{
    int                 rc;
    char               *copy;
    ngx_nffi_chunk_t   *c;
    ngx_nffi_stream_t  *s;

    s = t->stream;

    if (s->closed || !t->runtime_ref) {
        return -1;
    }

    if (len == 0) {
        return s->in_ended ? -3 : 0;
    }

    /* the runtime frees it with free(): plain malloc(), NUL-terminated */
    copy = malloc(len + 1);
    if (copy == NULL) {
        return -2;
    }

    ngx_memcpy(copy, data, len);
    copy[len] = '\0';

    c = ngx_nffi_stream_new_chunk(t, copy, len);
    if (c == NULL) {
        free(copy);
        return -2;
    }

    pthread_mutex_lock(&s->mutex);

    if (s->in_ended) {
        rc = -3;

    } else if (s->in_unread > 0 && s->in_unread + len > s->window) {
        s->lua_wants_room = 1;
        rc = 1;

    } else {
        if (s->in_tail) {
            s->in_tail->next = c;

        } else {
            s->in_head = c;
        }

        s->in_tail = c;
        s->in_unread += len;
        c = NULL;
        rc = 0;

        ngx_nffi_stream_wake_runtime(s, 0, 1);
    }

    pthread_mutex_unlock(&s->mutex);

    if (c) {
        ngx_nffi_stream_free_chunks(c);

    } else {
        t->runtime->stats.bytes_in += len;
    }

    if (rc == 1) {
        s->lua_writing = 1;
    }

    return rc;
}


void
ngx_nffi_stream_close_write(ngx_nffi_task_t *t)
{
    ngx_nffi_stream_t  *s;

    s = t->stream;

    pthread_mutex_lock(&s->mutex);
    s->in_ended = 1;
    ngx_nffi_stream_wake_runtime(s, 0, 1);
    pthread_mutex_unlock(&s->mutex);
}


/* the Lua side gave up: the runtime's sends and reads fail from now on */

void
ngx_nffi_stream_close(ngx_nffi_task_t *t)
{
    ngx_nffi_stream_t  *s;

    s = t->stream;

    if (s->closed) {
        return;
    }

    pthread_mutex_lock(&s->mutex);
    s->closed = 1;
    ngx_nffi_stream_wake_runtime(s, 1, 1);
    pthread_mutex_unlock(&s->mutex);

    ngx_queue_remove(&s->open);

    ngx_nffi_stream_free_chunks(s->out_head);
    s->out_head = NULL;
    s->out_tail = NULL;

    ngx_nffi_stream_detach(s);

    /* a coroutine of the same request may wait on it */
    ngx_nffi_stream_wake_lua(t, 1, 1);
}


/* the task is done: nobody uses the stream any more */

void
ngx_nffi_stream_free(ngx_nffi_task_t *t)
{
    ngx_nffi_stream_t  *s;

    s = t->stream;
    t->stream = NULL;

    if (!s->closed) {
        ngx_queue_remove(&s->open);
    }

    ngx_nffi_stream_detach(s);

    ngx_nffi_stream_free_chunks(s->out_head);
    ngx_nffi_stream_free_chunks(s->out_read);
    ngx_nffi_stream_free_chunks(s->in_head);

    if (s->fd != -1 && close(s->fd) == -1) {
        ngx_log_error(NGX_LOG_ALERT, ngx_nffi_worker.log, ngx_errno,
                      "nonblocking_ffi: close() of a stream's eventfd "
                      "failed");
    }

    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mutex);
    ngx_free(s);
}


/* at worker exit: no runtime thread may stay blocked on a stream */

void
ngx_nffi_stream_close_all(void)
{
    ngx_queue_t        *q;
    ngx_nffi_stream_t  *s;

    if (ngx_nffi_streams_open.next == NULL) {
        return;
    }

    while (!ngx_queue_empty(&ngx_nffi_streams_open)) {
        q = ngx_queue_head(&ngx_nffi_streams_open);
        s = ngx_queue_data(q, ngx_nffi_stream_t, open);
        ngx_nffi_stream_close(s->room.task);
    }
}


/* --- runtime threads (through ngx_nffi_abi.c) */


/*
 * Reserves room for chunk c in the answer's window, waiting for it when
 * wait is set.  On NONBLOCKING_FFI_STREAM_OK the caller pushes c on the
 * done stack; on ..._AGAIN c stays the caller's; on ..._CLOSED c is freed.
 */

int
ngx_nffi_stream_send(ngx_nffi_task_t *t, ngx_nffi_chunk_t *c, int wait)
{
    int                 rc;
    ngx_nffi_stream_t  *s;

    s = t->stream;

    pthread_mutex_lock(&s->mutex);

    ngx_nffi_stream_drain_fd(s, 1, 0);

    for ( ;; ) {
        if (s->closed) {
            rc = NONBLOCKING_FFI_STREAM_CLOSED;
            break;
        }

        /* a chunk larger than the window passes alone */
        if (s->out_unread == 0 || s->out_unread + c->len <= s->window) {
            s->out_unread += c->len;
            rc = NONBLOCKING_FFI_STREAM_OK;
            break;
        }

        if (!wait) {
            s->runtime_wants_room = 1;
            rc = NONBLOCKING_FFI_STREAM_AGAIN;
            break;
        }

        ngx_nffi_stream_sleep(s);
    }

    pthread_mutex_unlock(&s->mutex);

    if (rc == NONBLOCKING_FFI_STREAM_CLOSED) {
        ngx_nffi_stream_free_chunks(c);
    }

    return rc;
}


/*
 * Takes the next chunk Lua wrote.  *room gets the stream's ROOM notice when
 * Lua waits to write more: the caller pushes it on the done stack.
 */

int
ngx_nffi_stream_read(ngx_nffi_task_t *t, char **data, int *len, int wait,
    ngx_nffi_chunk_t **room)
{
    int                 rc;
    ngx_nffi_chunk_t   *c;
    ngx_nffi_stream_t  *s;

    s = t->stream;
    c = NULL;
    *room = NULL;

    pthread_mutex_lock(&s->mutex);

    ngx_nffi_stream_drain_fd(s, 0, 1);

    for ( ;; ) {
        if (s->closed) {
            rc = NONBLOCKING_FFI_STREAM_CLOSED;
            break;
        }

        if (s->in_head) {
            c = s->in_head;
            s->in_head = c->next;

            if (s->in_head == NULL) {
                s->in_tail = NULL;
            }

            s->in_unread -= c->len;

            if (s->lua_wants_room && !s->room_in_flight) {
                s->lua_wants_room = 0;
                s->room_in_flight = 1;
                *room = &s->room;
            }

            rc = NONBLOCKING_FFI_STREAM_OK;
            break;
        }

        if (s->in_ended) {
            rc = NONBLOCKING_FFI_STREAM_END;
            break;
        }

        if (!wait) {
            s->runtime_wants_data = 1;
            rc = NONBLOCKING_FFI_STREAM_AGAIN;
            break;
        }

        ngx_nffi_stream_sleep(s);
    }

    pthread_mutex_unlock(&s->mutex);

    if (c) {
        *data = c->data;
        *len = (int) c->len;
        free(c);

    } else {
        *data = NULL;
        *len = 0;
    }

    return rc;
}


int
ngx_nffi_stream_fd(ngx_nffi_task_t *t)
{
    int                 fd;
    ngx_err_t           err;
    ngx_nffi_stream_t  *s;

    s = t->stream;
    err = 0;

    pthread_mutex_lock(&s->mutex);

    if (s->fd == -1) {
        s->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        err = ngx_errno;

        /*
         * What happened between a try call's AGAIN and this first fd is
         * not lost: the fd starts readable (at worst a spurious wake)
         */
        if (s->fd != -1) {
            ngx_nffi_stream_wake_runtime(s, 1, 1);
        }
    }

    fd = s->fd;

    pthread_mutex_unlock(&s->mutex);

    if (fd == -1) {
        errno = err;
    }

    return fd;
}


/* --- both sides */


/*
 * Main thread: when the reader or the writer waits for what happened, every
 * coroutine waiting on the task's semaphore is woken (a post wakes the
 * first in line, which may be the other one); each checks and waits again
 * if it must.
 */

static void
ngx_nffi_stream_wake_lua(ngx_nffi_task_t *t, ngx_uint_t reader,
    ngx_uint_t writer)
{
    int                 n;
    ngx_nffi_stream_t  *s;

    s = t->stream;

    if (!(reader && s->lua_reading) && !(writer && s->lua_writing)) {
        return;
    }

    n = s->lua_reading + s->lua_writing;
    s->lua_reading = 0;
    s->lua_writing = 0;

    if (t->lua_ref && !ngx_nffi_worker.exiting) {
        ngx_nffi_worker.lua.sema_post(t->sem, n);
    }
}


/*
 * Under the stream's mutex: threads blocked on the stream re-check, and an
 * event-loop runtime's fd turns readable when what a try call waited for
 * may have come (room, data, or the Lua side went).  Without an fd yet, the
 * wish stays: the fd starts readable when it is made.
 */

static void
ngx_nffi_stream_wake_runtime(ngx_nffi_stream_t *s, ngx_uint_t room,
    ngx_uint_t data)
{
    uint64_t    one = 1;
    ngx_uint_t  signal;

    if (s->runtime_waiting) {
        pthread_cond_broadcast(&s->cond);
    }

    if (s->fd == -1) {
        return;
    }

    signal = 0;

    if (room && s->runtime_wants_room) {
        s->runtime_wants_room = 0;
        s->room_signalled = 1;
        signal = 1;
    }

    if (data && s->runtime_wants_data) {
        s->runtime_wants_data = 0;
        s->data_signalled = 1;
        signal = 1;
    }

    if (s->closed && !s->closed_signalled) {
        s->closed_signalled = 1;
        signal = 1;
    }

    /*
     * Every signal is written, also to an fd that is readable already: an
     * edge-triggered watcher (EPOLLET, tokio's AsyncFd) is woken by writes,
     * not by a readable fd, and would miss a second direction's signal.
     */
    if (!signal) {
        return;
    }

    if (write(s->fd, &one, sizeof(one)) == -1) {
        ngx_log_error(NGX_LOG_ALERT, ngx_nffi_worker.log, ngx_errno,
                      "nonblocking_ffi: write() to a stream's eventfd "
                      "failed");
        return;
    }

    s->fd_readable = 1;
}


/* under the stream's mutex, on a runtime thread: until the other side moves */

static void
ngx_nffi_stream_sleep(ngx_nffi_stream_t *s)
{
    s->runtime_waiting++;
    pthread_cond_wait(&s->cond, &s->mutex);
    s->runtime_waiting--;
}


/*
 * Under the stream's mutex, on a runtime thread: a send takes the fd's
 * signal for room, a read its signal for data.  The fd is reset only when
 * neither is left, so that a reader and a sender waiting on it at once
 * cannot take each other's wake.
 */

static void
ngx_nffi_stream_drain_fd(ngx_nffi_stream_t *s, ngx_uint_t room,
    ngx_uint_t data)
{
    uint64_t  count;

    if (room) {
        s->room_signalled = 0;
    }

    if (data) {
        s->data_signalled = 0;
    }

    if (!s->fd_readable || s->room_signalled || s->data_signalled
        || s->closed)
    {
        return;
    }

    if (read(s->fd, &count, sizeof(count)) == -1 && ngx_errno != NGX_EAGAIN)
    {
        ngx_log_error(NGX_LOG_ALERT, ngx_nffi_worker.log, ngx_errno,
                      "nonblocking_ffi: read() from a stream's eventfd "
                      "failed");
    }

    s->fd_readable = 0;
}


/* the request's pool outlives the stream: its cleanup must not fire */

static void
ngx_nffi_stream_detach(ngx_nffi_stream_t *s)
{
    if (s->cleanup) {
        s->cleanup->handler = NULL;
        s->cleanup = NULL;
    }
}


static void
ngx_nffi_stream_free_chunks(ngx_nffi_chunk_t *c)
{
    ngx_nffi_chunk_t  *next;

    for ( /* void */ ; c; c = next) {
        next = c->next;
        free(c->data);
        free(c);
    }
}
