/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * A runtime written for lua-resty-ffi: libffi_init and the
 * ngx_http_lua_ffi_* names.  It must run unchanged.
 */

#include <pthread.h>
#include <stdlib.h>
#include <string.h>


void *ngx_http_lua_ffi_task_poll(void *tq);
char *ngx_http_lua_ffi_get_req(void *tsk, int *len);
void ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp, int rsp_len);


static void *
legacy_loop(void *tq)
{
    int    len;
    char  *req, *rsp;
    void  *task;

    while ((task = ngx_http_lua_ffi_task_poll(tq)) != NULL) {
        req = ngx_http_lua_ffi_get_req(task, &len);
        rsp = malloc(len + 8);
        memcpy(rsp, "legacy:", 7);
        memcpy(rsp + 7, req, len);
        ngx_http_lua_ffi_respond(task, 0, rsp, len + 7);
    }

    return NULL;
}


int
libffi_init(char *cfg, void *tq)
{
    pthread_t  thread;

    if (pthread_create(&thread, NULL, legacy_loop, tq) != 0) {
        return 1;
    }

    pthread_detach(thread);

    return 0;
}
