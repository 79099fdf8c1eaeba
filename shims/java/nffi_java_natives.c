/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * The native methods of nonblocking.ffi.Native, registered by the loader
 * once the JVM runs: the module's ABI, for Java threads.  Each thread
 * calling them is a Java thread with its own JNIEnv.  Task and queue
 * pointers travel as jlong; only the package's Queue and Task pass them,
 * with pointers the module handed out.
 */

#include "nffi_java.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>




static jlong JNICALL nffi_java_poll(JNIEnv *env, jclass cls, jlong tq);
static jint JNICALL nffi_java_poll_batch(JNIEnv *env, jclass cls, jlong tq,
    jlongArray out);
static jbyteArray JNICALL nffi_java_request(JNIEnv *env, jclass cls,
    jlong task);
static jbyteArray JNICALL nffi_java_method(JNIEnv *env, jclass cls,
    jlong task);
static jboolean JNICALL nffi_java_cancelled(JNIEnv *env, jclass cls,
    jlong task);
static void JNICALL nffi_java_respond(JNIEnv *env, jclass cls, jlong task,
    jint rc, jbyteArray data);
static void JNICALL nffi_java_log_message(JNIEnv *env, jclass cls,
    jint level, jbyteArray message);
static jint JNICALL nffi_java_abi_version(JNIEnv *env, jclass cls);
static void JNICALL nffi_java_init_error(JNIEnv *env, jclass cls,
    jlong queue, jbyteArray reason);
static jboolean JNICALL nffi_java_is_stream(JNIEnv *env, jclass cls,
    jlong task);
static void JNICALL nffi_java_stream_send(JNIEnv *env, jclass cls,
    jlong task, jbyteArray data, jint off, jint len);
static jbyteArray JNICALL nffi_java_stream_read(JNIEnv *env, jclass cls,
    jlong task);
static jbyteArray nffi_java_bytes(JNIEnv *env, const char *p, int len);
static void nffi_java_stream_failed(JNIEnv *env, int rc, const char *what);
static void nffi_java_throw(JNIEnv *env, const char *name,
    const char *message);


static JNINativeMethod  nffi_java_natives[] = {
    { "poll", "(J)J", (void *) nffi_java_poll },
    { "pollBatch", "(J[J)I", (void *) nffi_java_poll_batch },
    { "request", "(J)[B", (void *) nffi_java_request },
    { "method", "(J)[B", (void *) nffi_java_method },
    { "cancelled", "(J)Z", (void *) nffi_java_cancelled },
    { "respond", "(JI[B)V", (void *) nffi_java_respond },
    { "log", "(I[B)V", (void *) nffi_java_log_message },
    { "abiVersion", "()I", (void *) nffi_java_abi_version },
    { "initError", "(J[B)V", (void *) nffi_java_init_error },
    { "isStream", "(J)Z", (void *) nffi_java_is_stream },
    { "streamSend", "(J[BII)V", (void *) nffi_java_stream_send },
    { "streamRead", "(J)[B", (void *) nffi_java_stream_read },
};


int
nffi_java_register_natives(JNIEnv *env, jclass native)
{
    return (*env)->RegisterNatives(env, native, nffi_java_natives,
                                   sizeof(nffi_java_natives)
                                   / sizeof(nffi_java_natives[0]));
}


static jlong JNICALL
nffi_java_poll(JNIEnv *env, jclass cls, jlong tq)
{
    return (jlong) (intptr_t) ngx_http_lua_nonblocking_ffi_task_poll(
                                  (void *) (intptr_t) tq);
}


static jint JNICALL
nffi_java_poll_batch(JNIEnv *env, jclass cls, jlong tq, jlongArray out)
{
    int    i, n, max;
    void  *tasks[NONBLOCKING_FFI_POLL_BATCH_MAX];
    jlong  handles[NONBLOCKING_FFI_POLL_BATCH_MAX];

    max = (*env)->GetArrayLength(env, out);

    if (max > NONBLOCKING_FFI_POLL_BATCH_MAX) {
        max = NONBLOCKING_FFI_POLL_BATCH_MAX;
    }

    n = ngx_http_lua_nonblocking_ffi_task_poll_batch((void *) (intptr_t) tq,
                                                     tasks, max);

    for (i = 0; i < n; i++) {
        handles[i] = (jlong) (intptr_t) tasks[i];
    }

    if (n > 0) {
        (*env)->SetLongArrayRegion(env, out, 0, n, handles);
    }

    return n;
}


static jbyteArray
nffi_java_bytes(JNIEnv *env, const char *p, int len)
{
    jbyteArray  bytes;

    bytes = (*env)->NewByteArray(env, len);

    /* NULL: an OutOfMemoryError is pending and reaches the caller */
    if (bytes != NULL && len > 0) {
        (*env)->SetByteArrayRegion(env, bytes, 0, len, (const jbyte *) p);
    }

    return bytes;
}


static jbyteArray JNICALL
nffi_java_request(JNIEnv *env, jclass cls, jlong task)
{
    int    len;
    char  *req;

    req = ngx_http_lua_nonblocking_ffi_get_req((void *) (intptr_t) task,
                                               &len);
    if (req == NULL) {
        return NULL;
    }

    return nffi_java_bytes(env, req, len);
}


static jbyteArray JNICALL
nffi_java_method(JNIEnv *env, jclass cls, jlong task)
{
    int          len;
    const char  *method;

    method = ngx_http_lua_nonblocking_ffi_get_method(
                 (void *) (intptr_t) task, &len);

    return nffi_java_bytes(env, method ? method : "", method ? len : 0);
}


static jboolean JNICALL
nffi_java_cancelled(JNIEnv *env, jclass cls, jlong task)
{
    return ngx_http_lua_nonblocking_ffi_task_cancelled(
               (void *) (intptr_t) task) ? JNI_TRUE : JNI_FALSE;
}


static void JNICALL
nffi_java_respond(JNIEnv *env, jclass cls, jlong task, jint rc,
    jbyteArray data)
{
    int    len;
    char  *rsp;

    rsp = NULL;
    len = 0;

    if (data != NULL) {
        len = (*env)->GetArrayLength(env, data);

        /* an empty answer is an empty NUL-terminated string */
        rsp = malloc(len ? len : 1);

        if (rsp == NULL) {
            nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                          "nonblocking_ffi java: no memory for an answer of "
                          "%d bytes: answered with rc 1", len);
            ngx_http_lua_nonblocking_ffi_respond((void *) (intptr_t) task,
                                                 1, NULL, 0);
            return;
        }

        if (len) {
            (*env)->GetByteArrayRegion(env, data, 0, len, (jbyte *) rsp);

        } else {
            rsp[0] = '\0';
        }
    }

    ngx_http_lua_nonblocking_ffi_respond((void *) (intptr_t) task, rc, rsp,
                                         len);
}


static void JNICALL
nffi_java_log_message(JNIEnv *env, jclass cls, jint level,
    jbyteArray message)
{
    int    len;
    char  *text;

    len = (*env)->GetArrayLength(env, message);

    if (len == 0) {
        ngx_http_lua_nonblocking_ffi_log(level, "", 0);
        return;
    }

    text = malloc(len);
    if (text == NULL) {
        return;
    }

    (*env)->GetByteArrayRegion(env, message, 0, len, (jbyte *) text);
    ngx_http_lua_nonblocking_ffi_log(level, text, len);

    free(text);
}


static jint JNICALL
nffi_java_abi_version(JNIEnv *env, jclass cls)
{
    return ngx_http_lua_nonblocking_ffi_abi_version();
}


/* the loader's: why the load of queue fails, for the Lua caller */

static void JNICALL
nffi_java_init_error(JNIEnv *env, jclass cls, jlong queue, jbyteArray reason)
{
    int    len;
    char  *text;

    len = (*env)->GetArrayLength(env, reason);

    /* the Lua error has room for a few hundred bytes of it anyway */
    if (len > 4096) {
        len = 4096;
    }

    text = len > 0 ? malloc(len) : NULL;
    if (text == NULL) {
        return;
    }

    (*env)->GetByteArrayRegion(env, reason, 0, len, (jbyte *) text);
    ngx_http_lua_nonblocking_ffi_init_error((void *) (intptr_t) queue, text,
                                            len);

    free(text);
}


static jboolean JNICALL
nffi_java_is_stream(JNIEnv *env, jclass cls, jlong task)
{
    return ngx_http_lua_nonblocking_ffi_task_is_stream(
               (void *) (intptr_t) task) ? JNI_TRUE : JNI_FALSE;
}


/*
 * One chunk of the answer: data[off, off + len), bounds checked by Task.
 * The bytes are copied before the send may block on the window, so no
 * array stays pinned and the garbage collector never waits for this.
 */

static void JNICALL
nffi_java_stream_send(JNIEnv *env, jclass cls, jlong task, jbyteArray data,
    jint off, jint len)
{
    int    rc;
    char  *chunk;

    /* len 0 with a chunk would mean a NUL-terminated string to the ABI */
    if (len <= 0) {
        return;
    }

    chunk = malloc(len);
    if (chunk == NULL) {
        nffi_java_throw(env, "java/lang/OutOfMemoryError",
                        "no memory for a chunk of a stream");
        return;
    }

    (*env)->GetByteArrayRegion(env, data, off, len, (jbyte *) chunk);

    /* an ArrayIndexOutOfBoundsException is pending: nothing to send */
    if ((*env)->ExceptionCheck(env)) {
        free(chunk);
        return;
    }

    /* the module owns chunk from here on, whatever the result */
    rc = ngx_http_lua_nonblocking_ffi_stream_send((void *) (intptr_t) task,
                                                  chunk, len);

    if (rc != NONBLOCKING_FFI_STREAM_OK) {
        nffi_java_stream_failed(env, rc, "send");
    }
}


/* the next chunk Lua wrote, or null once Lua called close_write() */

static jbyteArray JNICALL
nffi_java_stream_read(JNIEnv *env, jclass cls, jlong task)
{
    int         rc, len;
    char       *chunk;
    jbyteArray  bytes;

    chunk = NULL;
    len = 0;

    rc = ngx_http_lua_nonblocking_ffi_stream_read((void *) (intptr_t) task,
                                                  &chunk, &len);

    if (rc == NONBLOCKING_FFI_STREAM_END) {
        return NULL;
    }

    if (rc != NONBLOCKING_FFI_STREAM_OK) {
        nffi_java_stream_failed(env, rc, "read");
        return NULL;
    }

    bytes = nffi_java_bytes(env, chunk, len);
    free(chunk);

    return bytes;
}


/*
 * CLOSED is the caller's business (Lua gave up): a checked exception of
 * its own.  ERROR is a bug of the API (Task checks what the module would
 * refuse), so it is an IllegalStateException.
 */

static void
nffi_java_stream_failed(JNIEnv *env, int rc, const char *what)
{
    char  message[96];

    if (rc == NONBLOCKING_FFI_STREAM_CLOSED) {
        nffi_java_throw(env, "nonblocking/ffi/StreamClosedException",
                        "stream closed: the Lua side gave up (timeout, "
                        "client gone or stream:close())");
        return;
    }

    snprintf(message, sizeof(message),
             "nonblocking_ffi stream_%s failed with %d (see the error log)",
             what, rc);
    nffi_java_throw(env, "java/lang/IllegalStateException", message);
}


static void
nffi_java_throw(JNIEnv *env, const char *name, const char *message)
{
    jclass  cls;

    /* found through the class loader of Native, the caller */
    cls = (*env)->FindClass(env, name);

    /* NULL: a NoClassDefFoundError is pending instead */
    if (cls != NULL) {
        (*env)->ThrowNew(env, cls, message);
    }
}
