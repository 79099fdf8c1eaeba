/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * _nonblocking_ffi: the C half of the nonblocking_ffi package, built into
 * the loader and registered before the interpreter starts.
 *
 *   poll(tq) -> Task or None        waits for the next call, GIL released
 *   poll_batch(tq, max=64) -> list  up to max calls at once, [] at the end
 *   queue_fd(tq) -> int             readable while calls wait (event loops)
 *   take(tq, max=64) -> list|None   the calls waiting now, never waits;
 *                                   None at the end
 *   Task.request, .method, .answered, .cancelled, .respond(rc, data=None)
 *   log(level, message)             into the nginx error log, any thread
 *
 * A queue (tq) is the int handed to the configured function.  Only queues
 * that the loader handed out are accepted: the module would dereference
 * anything else.  A Task that is dropped without an answer answers itself
 * with rc 1, so that no caller waits for its timeout.
 */

#include "nffi_python.h"

#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>




typedef struct {
    PyObject_HEAD
    void       *task;       /* NULL once answered */
    PyObject   *request;    /* bytes, or None when Lua passed nil */
    PyObject   *method;     /* str */
} nffi_py_task_t;


static int nffi_py_queue_of(PyObject *arg, void **tq);
static PyObject *nffi_py_task_new(void *task);
static void nffi_py_answer_text(void *task, int rc, const char *text);
static void nffi_py_task_dealloc(nffi_py_task_t *self);
static PyObject *nffi_py_task_repr(nffi_py_task_t *self);
static PyObject *nffi_py_task_respond(nffi_py_task_t *self, PyObject *args,
    PyObject *kwargs);
static PyObject *nffi_py_task_request(nffi_py_task_t *self, void *closure);
static PyObject *nffi_py_task_method(nffi_py_task_t *self, void *closure);
static PyObject *nffi_py_task_answered(nffi_py_task_t *self, void *closure);
static PyObject *nffi_py_task_cancelled(nffi_py_task_t *self,
    void *closure);
static PyObject *nffi_py_poll(PyObject *module, PyObject *arg);
static PyObject *nffi_py_poll_batch(PyObject *module, PyObject *args,
    PyObject *kwargs);
static PyObject *nffi_py_queue_fd(PyObject *module, PyObject *arg);
static PyObject *nffi_py_take(PyObject *module, PyObject *args,
    PyObject *kwargs);
static int nffi_py_batch_args(PyObject *args, PyObject *kwargs,
    const char *format, void **tq, int *max);
static PyObject *nffi_py_task_list(void **tasks, int n);
static PyObject *nffi_py_log_message(PyObject *module, PyObject *args);
static PyObject *nffi_py_abi_version(PyObject *module, PyObject *unused);
static PyObject *nffi_py_check_queue(PyObject *module, PyObject *arg);
static PyObject *nffi_py_init_error(PyObject *module, PyObject *args);
static PyObject *nffi_py_spin_until_readable(PyObject *module,
    PyObject *args);


/* the queues handed out by the loader; they live as long as the process */
static void       **nffi_py_queues;
static Py_ssize_t   nffi_py_nqueues;


static PyMethodDef  nffi_py_task_methods[] = {
    { "respond", (PyCFunction) (void (*)(void)) nffi_py_task_respond,
      METH_VARARGS | METH_KEYWORDS,
      "respond(rc, data=None)\n--\n\n"
      "Answers the call, once: rc 0 is success (Lua sees true, data),\n"
      "any other rc an error (Lua sees false, rc, data).  data is bytes\n"
      "(or any bytes-like object), str (sent as UTF-8) or None (nil)." },
    { NULL, NULL, 0, NULL }
};


static PyGetSetDef  nffi_py_task_getset[] = {
    { "request", (getter) nffi_py_task_request, NULL,
      "the request: bytes, or None when Lua passed nil", NULL },
    { "method", (getter) nffi_py_task_method, NULL,
      "the method name of the call: \"foo\" for runtime:foo(req)", NULL },
    { "answered", (getter) nffi_py_task_answered, NULL,
      "True once respond() was called", NULL },
    { "cancelled", (getter) nffi_py_task_cancelled, NULL,
      "True when nobody waits for the answer any more (the call timed "
      "out, or its request went away); it must be answered all the same",
      NULL },
    { NULL, NULL, NULL, NULL, NULL }
};


static PyTypeObject  nffi_py_task_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nonblocking_ffi.Task",
    .tp_basicsize = sizeof(nffi_py_task_t),
    .tp_dealloc = (destructor) nffi_py_task_dealloc,
    .tp_repr = (reprfunc) nffi_py_task_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A call from Lua, taken from a queue by poll().",
    .tp_methods = nffi_py_task_methods,
    .tp_getset = nffi_py_task_getset,
};


static PyMethodDef  nffi_py_methods[] = {
    { "poll", nffi_py_poll, METH_O,
      "poll(tq)\n--\n\n"
      "Waits for the next call on queue tq (the GIL is released while it\n"
      "waits) and returns it as a Task, or None once the runtime is\n"
      "unloaded and drained: stop polling then." },
    { "poll_batch", (PyCFunction) (void (*)(void)) nffi_py_poll_batch,
      METH_VARARGS | METH_KEYWORDS,
      "poll_batch(tq, max=64)\n--\n\n"
      "Like poll(), but returns a list of up to max Tasks (at least one),\n"
      "or [] once the runtime is unloaded and drained." },
    { "queue_fd", nffi_py_queue_fd, METH_O,
      "queue_fd(tq)\n--\n\n"
      "A file descriptor that is readable while calls wait on queue tq,\n"
      "and for good once the runtime is unloaded: watch it in an event\n"
      "loop (loop.add_reader) and call take() when it is readable.  Never\n"
      "read, write or close it." },
    { "take", (PyCFunction) (void (*)(void)) nffi_py_take,
      METH_VARARGS | METH_KEYWORDS,
      "take(tq, max=64)\n--\n\n"
      "The calls waiting on queue tq now, up to max, as a list of Tasks\n"
      "(empty when none waits); never waits.  None once the runtime is\n"
      "unloaded and drained: stop watching its fd then." },
    { "log", nffi_py_log_message, METH_VARARGS,
      "log(level, message)\n--\n\n"
      "Writes message to the nginx error log at level (LOG_EMERG ...\n"
      "LOG_DEBUG, as nginx filters them).  Any thread may call it." },
    { "abi_version", nffi_py_abi_version, METH_NOARGS,
      "abi_version()\n--\n\n"
      "The ABI version of the loaded nginx module." },
    { "_check_queue", nffi_py_check_queue, METH_O,
      "_check_queue(tq)\n--\n\n"
      "Raises TypeError or ValueError unless tq is a queue of this worker." },
    { "_spin_until_readable", nffi_py_spin_until_readable, METH_VARARGS,
      "_spin_until_readable(fd, rounds)\n--\n\n"
      "Up to rounds sched_yield() rounds, GIL released, until fd is\n"
      "readable; True if it became readable." },
    { "_init_error", nffi_py_init_error, METH_VARARGS,
      "_init_error(tq, reason)\n--\n\n"
      "Gives reason to the Lua caller of a load that is failing." },
    { NULL, NULL, 0, NULL }
};


static struct PyModuleDef  nffi_py_module = {
    PyModuleDef_HEAD_INIT,
    "_nonblocking_ffi",
    "The C half of the nonblocking_ffi package (import that instead).",
    -1,
    nffi_py_methods,
    NULL, NULL, NULL, NULL
};


PyObject *
nffi_py_module_init(void)
{
    PyObject  *m;

    if (PyType_Ready(&nffi_py_task_type) < 0) {
        return NULL;
    }

    m = PyModule_Create(&nffi_py_module);
    if (m == NULL) {
        return NULL;
    }

    if (PyModule_AddType(m, &nffi_py_task_type) < 0
        || PyModule_AddIntConstant(m, "LOG_EMERG", NONBLOCKING_FFI_LOG_EMERG)
        || PyModule_AddIntConstant(m, "LOG_ALERT", NONBLOCKING_FFI_LOG_ALERT)
        || PyModule_AddIntConstant(m, "LOG_CRIT", NONBLOCKING_FFI_LOG_CRIT)
        || PyModule_AddIntConstant(m, "LOG_ERR", NONBLOCKING_FFI_LOG_ERR)
        || PyModule_AddIntConstant(m, "LOG_WARN", NONBLOCKING_FFI_LOG_WARN)
        || PyModule_AddIntConstant(m, "LOG_NOTICE",
                                   NONBLOCKING_FFI_LOG_NOTICE)
        || PyModule_AddIntConstant(m, "LOG_INFO", NONBLOCKING_FFI_LOG_INFO)
        || PyModule_AddIntConstant(m, "LOG_DEBUG", NONBLOCKING_FFI_LOG_DEBUG)
        || PyModule_AddIntConstant(m, "POLL_BATCH_MAX",
                                   NONBLOCKING_FFI_POLL_BATCH_MAX))
    {
        Py_DECREF(m);
        return NULL;
    }

    return m;
}


int
nffi_py_queue_add(void *tq)
{
    void  **queues;

    queues = PyMem_Realloc(nffi_py_queues,
                           (nffi_py_nqueues + 1) * sizeof(void *));
    if (queues == NULL) {
        PyErr_NoMemory();
        return -1;
    }

    queues[nffi_py_nqueues++] = tq;
    nffi_py_queues = queues;

    return 0;
}


void
nffi_py_log_text(int level, const char *text, size_t len)
{
    /* the module writes long messages as several error log entries */
    ngx_http_lua_nonblocking_ffi_log(level, len ? text : "", (int) len);
}


static int
nffi_py_queue_of(PyObject *arg, void **tq)
{
    void        *p;
    Py_ssize_t   i;

    if (!PyLong_Check(arg)) {
        PyErr_Format(PyExc_TypeError,
                     "tq must be the int given to the configured function, "
                     "not %.100s", Py_TYPE(arg)->tp_name);
        return -1;
    }

    p = PyLong_AsVoidPtr(arg);
    if (p == NULL && PyErr_Occurred()) {
        PyErr_Clear();
        p = NULL;
    }

    for (i = 0; i < nffi_py_nqueues; i++) {
        if (p != NULL && nffi_py_queues[i] == p) {
            *tq = p;
            return 0;
        }
    }

    PyErr_SetString(PyExc_ValueError,
                    "tq is not a queue of this worker: pass the int given "
                    "to the configured function");
    return -1;
}


static PyObject *
nffi_py_task_new(void *task)
{
    int              len;
    char            *req;
    const char      *method;
    nffi_py_task_t  *self;

    self = PyObject_New(nffi_py_task_t, &nffi_py_task_type);
    if (self == NULL) {
        nffi_py_answer_text(task, 1, "nonblocking_ffi: no memory for the "
                                     "Python task");
        return NULL;
    }

    /* fully set up before anything can fail: dealloc answers the task */
    self->task = task;
    self->request = NULL;
    self->method = NULL;

    req = ngx_http_lua_nonblocking_ffi_get_req(task, &len);

    if (req == NULL) {
        Py_INCREF(Py_None);
        self->request = Py_None;

    } else {
        self->request = PyBytes_FromStringAndSize(req, len);
    }

    method = ngx_http_lua_nonblocking_ffi_get_method(task, &len);

    self->method = PyUnicode_DecodeUTF8(method ? method : "", len,
                                        "surrogateescape");

    if (self->request == NULL || self->method == NULL) {
        Py_DECREF(self);
        return NULL;
    }

    return (PyObject *) self;
}


static void
nffi_py_answer_text(void *task, int rc, const char *text)
{
    /* rsp NULL (no memory) is answered as nil */
    ngx_http_lua_nonblocking_ffi_respond(task, rc, strdup(text), 0);
}


static void
nffi_py_task_dealloc(nffi_py_task_t *self)
{
    PyObject    *type, *value, *tb;
    const char  *method;

    if (self->task) {
        PyErr_Fetch(&type, &value, &tb);

        method = self->method ? PyUnicode_AsUTF8(self->method) : NULL;
        if (method == NULL) {
            PyErr_Clear();
            method = "?";
        }

        nffi_shim_log(NONBLOCKING_FFI_LOG_WARN,
                      "nonblocking_ffi python: a call of method \"%s\" was "
                      "dropped without an answer: answered with rc 1", method);

        nffi_py_answer_text(self->task, 1, "the Python runtime dropped the "
                                           "call without answering it");
        self->task = NULL;

        PyErr_Restore(type, value, tb);
    }

    Py_XDECREF(self->request);
    Py_XDECREF(self->method);

    PyObject_Free(self);
}


static PyObject *
nffi_py_task_repr(nffi_py_task_t *self)
{
    return PyUnicode_FromFormat("<nonblocking_ffi.Task method=%R "
                                "answered=%s>", self->method,
                                self->task ? "False" : "True");
}


static PyObject *
nffi_py_task_respond(nffi_py_task_t *self, PyObject *args, PyObject *kwargs)
{
    int           rc;
    char         *rsp;
    void         *task;
    PyObject     *data;
    Py_buffer     view;
    Py_ssize_t    len;
    const char   *bytes;
    static char  *kwlist[] = { "rc", "data", NULL };

    data = Py_None;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i|O:respond", kwlist,
                                     &rc, &data))
    {
        return NULL;
    }

    if (self->task == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "task already answered");
        return NULL;
    }

    rsp = NULL;
    len = 0;

    if (data != Py_None) {
        view.obj = NULL;

        if (PyUnicode_Check(data)) {
            bytes = PyUnicode_AsUTF8AndSize(data, &len);
            if (bytes == NULL) {
                return NULL;
            }

        } else if (PyObject_CheckBuffer(data)) {
            if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
                return NULL;
            }

            bytes = view.buf;
            len = view.len;

        } else {
            PyErr_Format(PyExc_TypeError,
                         "data must be bytes, str or None, not %.100s",
                         Py_TYPE(data)->tp_name);
            return NULL;
        }

        if (len > INT_MAX - 1) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_ValueError, "data larger than 2 GB");
            return NULL;
        }

        /* an empty answer is an empty NUL-terminated string */
        rsp = malloc(len ? len : 1);
        if (rsp == NULL) {
            PyBuffer_Release(&view);
            return PyErr_NoMemory();
        }

        if (len) {
            memcpy(rsp, bytes, len);

        } else {
            rsp[0] = '\0';
        }

        PyBuffer_Release(&view);
    }

    /* answered from here on, also for other threads waiting for the GIL */
    task = self->task;
    self->task = NULL;

    Py_BEGIN_ALLOW_THREADS
    ngx_http_lua_nonblocking_ffi_respond(task, rc, rsp, (int) len);
    Py_END_ALLOW_THREADS

    Py_RETURN_NONE;
}


static PyObject *
nffi_py_task_request(nffi_py_task_t *self, void *closure)
{
    Py_INCREF(self->request);
    return self->request;
}


static PyObject *
nffi_py_task_method(nffi_py_task_t *self, void *closure)
{
    Py_INCREF(self->method);
    return self->method;
}


static PyObject *
nffi_py_task_answered(nffi_py_task_t *self, void *closure)
{
    return PyBool_FromLong(self->task == NULL);
}


static PyObject *
nffi_py_task_cancelled(nffi_py_task_t *self, void *closure)
{
    /* an answered task is not ours to look at any more */
    return PyBool_FromLong(self->task != NULL
                  && ngx_http_lua_nonblocking_ffi_task_cancelled(self->task));
}


static PyObject *
nffi_py_poll(PyObject *module, PyObject *arg)
{
    void  *tq, *task;

    if (nffi_py_queue_of(arg, &tq) < 0) {
        return NULL;
    }

    Py_BEGIN_ALLOW_THREADS
    task = ngx_http_lua_nonblocking_ffi_task_poll(tq);
    Py_END_ALLOW_THREADS

    if (task == NULL) {
        Py_RETURN_NONE;
    }

    return nffi_py_task_new(task);
}


static PyObject *
nffi_py_poll_batch(PyObject *module, PyObject *args, PyObject *kwargs)
{
    int    n, max;
    void  *tq, *tasks[NONBLOCKING_FFI_POLL_BATCH_MAX];

    if (nffi_py_batch_args(args, kwargs, "O|i:poll_batch", &tq, &max) < 0) {
        return NULL;
    }

    Py_BEGIN_ALLOW_THREADS
    n = ngx_http_lua_nonblocking_ffi_task_poll_batch(tq, tasks, max);
    Py_END_ALLOW_THREADS

    return nffi_py_task_list(tasks, n);
}


static PyObject *
nffi_py_queue_fd(PyObject *module, PyObject *arg)
{
    int    fd;
    void  *tq;

    if (nffi_py_queue_of(arg, &tq) < 0) {
        return NULL;
    }

    fd = ngx_http_lua_nonblocking_ffi_queue_fd(tq);

    if (fd == -1) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }

    return PyLong_FromLong(fd);
}


static PyObject *
nffi_py_take(PyObject *module, PyObject *args, PyObject *kwargs)
{
    int    n, max;
    void  *tq, *tasks[NONBLOCKING_FFI_POLL_BATCH_MAX];

    if (nffi_py_batch_args(args, kwargs, "O|i:take", &tq, &max) < 0) {
        return NULL;
    }

    /* never waits: only the queue's mutex, held as briefly by others */
    n = ngx_http_lua_nonblocking_ffi_task_take(tq, tasks, max);

    if (n < 0) {
        Py_RETURN_NONE;
    }

    return nffi_py_task_list(tasks, n);
}


static int
nffi_py_batch_args(PyObject *args, PyObject *kwargs, const char *format,
    void **tq, int *max)
{
    PyObject     *arg;
    static char  *kwlist[] = { "tq", "max", NULL };

    *max = 64;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, format, kwlist, &arg,
                                     max))
    {
        return -1;
    }

    if (*max < 1 || *max > NONBLOCKING_FFI_POLL_BATCH_MAX) {
        PyErr_Format(PyExc_ValueError, "max must be 1 to %d",
                     NONBLOCKING_FFI_POLL_BATCH_MAX);
        return -1;
    }

    return nffi_py_queue_of(arg, tq);
}


/* Tasks for the n tasks taken; on failure each of them is answered */

static PyObject *
nffi_py_task_list(void **tasks, int n)
{
    int        i;
    PyObject  *list, *task;

    list = PyList_New(n);

    for (i = 0; i < n; i++) {
        task = list ? nffi_py_task_new(tasks[i]) : NULL;

        if (task == NULL) {
            /* a failed nffi_py_task_new() answered its own task */
            for (i += list ? 1 : 0; i < n; i++) {
                nffi_py_answer_text(tasks[i], 1, "nonblocking_ffi: no memory "
                                                 "for the Python task");
            }

            /* the tasks in the list answer when they are dropped */
            Py_XDECREF(list);
            return NULL;
        }

        PyList_SET_ITEM(list, i, task);
    }

    return list;
}


/*
 * What a blocking poller gains by spinning, for an event loop: the loop
 * calls this before it would sleep, so that a call arriving soon is seen
 * without the wake-up of a sleeping thread.
 */

static PyObject *
nffi_py_spin_until_readable(PyObject *module, PyObject *args)
{
    int            fd, rounds, i, n;
    struct pollfd  pfd;

    if (!PyArg_ParseTuple(args, "ii:_spin_until_readable", &fd, &rounds)) {
        return NULL;
    }

    pfd.fd = fd;
    pfd.events = POLLIN;
    n = 0;

    Py_BEGIN_ALLOW_THREADS

    for (i = 0; i < rounds; i++) {
        n = poll(&pfd, 1, 0);

        if (n != 0) {
            break;
        }

        sched_yield();
    }

    Py_END_ALLOW_THREADS

    return PyBool_FromLong(n > 0);
}


static PyObject *
nffi_py_log_message(PyObject *module, PyObject *args)
{
    int          level;
    PyObject    *message;
    Py_ssize_t   len;
    const char  *text;

    if (!PyArg_ParseTuple(args, "iU:log", &level, &message)) {
        return NULL;
    }

    if (level < NONBLOCKING_FFI_LOG_EMERG || level > NONBLOCKING_FFI_LOG_DEBUG)
    {
        PyErr_Format(PyExc_ValueError, "level must be LOG_EMERG (%d) to "
                     "LOG_DEBUG (%d), not %d", NONBLOCKING_FFI_LOG_EMERG,
                     NONBLOCKING_FFI_LOG_DEBUG, level);
        return NULL;
    }

    text = PyUnicode_AsUTF8AndSize(message, &len);
    if (text == NULL) {
        return NULL;
    }

    nffi_py_log_text(level, text, len);

    Py_RETURN_NONE;
}


static PyObject *
nffi_py_abi_version(PyObject *module, PyObject *unused)
{
    return PyLong_FromLong(ngx_http_lua_nonblocking_ffi_abi_version());
}


static PyObject *
nffi_py_check_queue(PyObject *module, PyObject *arg)
{
    void  *tq;

    if (nffi_py_queue_of(arg, &tq) < 0) {
        return NULL;
    }

    Py_RETURN_NONE;
}


/* the loader's: why the load of tq fails, for the Lua caller */

static PyObject *
nffi_py_init_error(PyObject *module, PyObject *args)
{
    void        *tq;
    PyObject    *arg, *reason;
    Py_ssize_t   len;
    const char  *text;

    if (!PyArg_ParseTuple(args, "OU:_init_error", &arg, &reason)
        || nffi_py_queue_of(arg, &tq) < 0)
    {
        return NULL;
    }

    text = PyUnicode_AsUTF8AndSize(reason, &len);
    if (text == NULL) {
        return NULL;
    }

    /* the Lua error has room for a few hundred bytes of it anyway */
    if (len > 4096) {
        len = 4096;
    }

    if (len > 0) {
        ngx_http_lua_nonblocking_ffi_init_error(tq, text, (int) len);
    }

    Py_RETURN_NONE;
}
