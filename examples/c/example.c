/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * A runtime in C to copy from: build/libnffi_example.so, cfg "threads=N".
 *
 *   local rt = ngx.load_nonblocking_ffi("/path/to/libnffi_example.so",
 *                                       "threads=2")
 *   rt:echo("hi")     true, "hi"       rt:echo() gives true, nil
 *   rt:error("7")     false, 7, "error 7"
 *   rt:delay("300")   true, "300", after 300 ms, from a thread of its own
 *   rt:other()        false, 404, "unknown method other"
 *
 *   local s = rt:__stream("count", "3")   a stream: s:read() gives "1\n",
 *                                         "2\n", "3\n" 100 ms apart, then
 *                                         nil, 0
 */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nonblocking_ffi.h"


static void
example_answer(void *task, int rc, const char *text)
{
    /* the module frees the answer; rsp_len 0 means NUL-terminated */
    ngx_http_lua_nonblocking_ffi_respond(task, rc, strdup(text), 0);
}


/* a slow job runs on a thread of its own, so the pollers keep polling */

static void *
example_delay(void *task)
{
    int              ms;
    char            *req, text[16];
    struct timespec  ts;

    /* the request stays valid until the task is answered */
    req = ngx_http_lua_nonblocking_ffi_get_req(task, NULL);
    ms = req ? atoi(req) : 0;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);

    snprintf(text, sizeof(text), "%d", ms);
    example_answer(task, 0, text);      /* any thread may answer */

    return NULL;
}


/* a stream: chunks sent one by one, the final answer ends it */

static void *
example_count(void *task)
{
    int    i, n;
    char  *req, text[16];

    req = ngx_http_lua_nonblocking_ffi_get_req(task, NULL);
    n = req ? atoi(req) : 0;

    for (i = 1; i <= n; i++) {
        snprintf(text, sizeof(text), "%d\n", i);

        /* waits while Lua has a window's worth unread; fails once Lua
         * gave up (timeout, client gone, stream closed) */
        if (ngx_http_lua_nonblocking_ffi_stream_send(task, strdup(text), 0)
            != NONBLOCKING_FFI_STREAM_OK)
        {
            break;
        }

        nanosleep(&(struct timespec) { 0, 100000000L }, NULL);
    }

    ngx_http_lua_nonblocking_ffi_respond(task, 0, NULL, 0);

    return NULL;
}


static void
example_handle(void *task)
{
    int          len, rc;
    char        *req, *rsp, text[96];
    pthread_t    tid;
    const char  *method;

    req = ngx_http_lua_nonblocking_ffi_get_req(task, &len);
    method = ngx_http_lua_nonblocking_ffi_get_method(task, NULL);

    if (strcmp(method, "echo") == 0) {
        /* binary-safe: len bytes; the NUL is for "", whose len 0 would
         * otherwise mean "read up to a NUL" */
        rsp = req ? malloc(len + 1) : NULL;

        if (req && rsp == NULL) {
            example_answer(task, 1, "no memory");
            return;
        }

        if (rsp) {
            memcpy(rsp, req, len);
            rsp[len] = '\0';
        }

        ngx_http_lua_nonblocking_ffi_respond(task, 0, rsp, len);

    } else if (strcmp(method, "error") == 0) {
        /* rc != 0: Lua gets false, rc, answer (rc 0 would be success) */
        rc = req ? atoi(req) : 0;
        rc = rc ? rc : 1;
        snprintf(text, sizeof(text), "error %d", rc);
        example_answer(task, rc, text);

    } else if (strcmp(method, "delay") == 0
               || (strcmp(method, "count") == 0
                   && ngx_http_lua_nonblocking_ffi_task_is_stream(task)))
    {
        if (pthread_create(&tid, NULL, method[0] == 'd' ? example_delay
                                                        : example_count,
                           task)
            == 0)
        {
            pthread_detach(tid);

        } else {
            example_answer(task, 1, "pthread_create() failed");
        }

    } else {
        snprintf(text, sizeof(text), "unknown method %.64s", method);
        example_answer(task, 404, text);
    }
}


static void *
example_poll(void *tq)
{
    void  *task;

    /* NULL: the runtime was unloaded (or the worker exits) and drained */
    while ((task = ngx_http_lua_nonblocking_ffi_task_poll(tq)) != NULL) {
        example_handle(task);
    }

    return NULL;
}


/* runs once per (lib, cfg) in each worker; cfg is valid only meanwhile */

int
lib_nonblocking_ffi_init(char *cfg, void *tq)
{
    int        i, threads;
    pthread_t  tid;

    threads = 1;

    if ((cfg && sscanf(cfg, "threads=%d", &threads) != 1)
        || threads < 1 || threads > 64)
    {
        /* Lua sees nil, "<lib>: ...() failed with rc 1: <this reason>" */
        ngx_http_lua_nonblocking_ffi_init_error(tq,
            "cfg: nil or \"threads=N\" with N from 1 to 64 expected", 0);
        return 1;                       /* fails the load with rc 1 */
    }

    for (i = 0; i < threads; i++) {
        if (pthread_create(&tid, NULL, example_poll, tq) != 0) {
            ngx_http_lua_nonblocking_ffi_init_error(tq,
                                                    "pthread_create() failed",
                                                    0);
            return 1;       /* a failed load closes tq: pollers get NULL */
        }

        pthread_detach(tid);
    }

    return 0;
}
