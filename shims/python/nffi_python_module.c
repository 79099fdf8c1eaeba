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
 *   Task.stream, .send(), .read(), iter(task)       streams, blocking
 *   Task.try_send(), .try_read(), .stream_fd()      streams, for event loops
 *   Task.asend(), .aread(), async for               (coroutines of _stream.py)
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
    int         fd;         /* the stream's fd, -1 until asked for */
    unsigned    stream:1;   /* from runtime:__stream() */
    /* a thread waits in a send or a read with the GIL released: the task
     * must not be answered under it, nor sent on or read by another */
    unsigned    sending:1;
    unsigned    reading:1;
} nffi_py_task_t;


static int nffi_py_queue_of(PyObject *arg, void **tq);
static PyObject *nffi_py_task_new(void *task);
static PyObject *nffi_py_method_str(const char *method, int len);
static void nffi_py_answer_text(void *task, int rc, const char *text);
static void nffi_py_task_dealloc(nffi_py_task_t *self);
static PyObject *nffi_py_task_repr(nffi_py_task_t *self);
static PyObject *nffi_py_task_respond(nffi_py_task_t *self, PyObject *args,
    PyObject *kwargs);
static void *nffi_py_task_answer(nffi_py_task_t *self, PyObject *data,
    char **rsp, Py_ssize_t *len);
static PyObject *nffi_py_task_request(nffi_py_task_t *self, void *closure);
static PyObject *nffi_py_task_method(nffi_py_task_t *self, void *closure);
static PyObject *nffi_py_task_answered(nffi_py_task_t *self, void *closure);
static PyObject *nffi_py_task_cancelled(nffi_py_task_t *self,
    void *closure);
static PyObject *nffi_py_task_stream(nffi_py_task_t *self, void *closure);
static int nffi_py_data_copy(PyObject *data, const char *what, char **copy,
    Py_ssize_t *len);
static int nffi_py_stream_usable(nffi_py_task_t *self, int use);
static PyObject *nffi_py_stream_result(int rc);
static int nffi_py_stream_fd(nffi_py_task_t *self);
static PyObject *nffi_py_stream_send(nffi_py_task_t *self, PyObject *data,
    int wait);
static PyObject *nffi_py_stream_read(nffi_py_task_t *self, int wait);
static PyObject *nffi_py_task_send(nffi_py_task_t *self, PyObject *data);
static PyObject *nffi_py_task_try_send(nffi_py_task_t *self,
    PyObject *data);
static PyObject *nffi_py_task_read(nffi_py_task_t *self,
    PyObject *unused);
static PyObject *nffi_py_task_try_read(nffi_py_task_t *self,
    PyObject *unused);
static PyObject *nffi_py_task_next(nffi_py_task_t *self);
static PyObject *nffi_py_task_stream_fd(nffi_py_task_t *self,
    PyObject *unused);
static PyObject *nffi_py_task_aread(nffi_py_task_t *self, PyObject *unused);
static PyObject *nffi_py_task_asend(nffi_py_task_t *self, PyObject *data);
static PyObject *nffi_py_task_anext(nffi_py_task_t *self);
static PyObject *nffi_py_set_async(PyObject *module, PyObject *args);
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
static PyObject *nffi_py_answer_take(PyObject *module, PyObject *const *args,
    Py_ssize_t nargs);
static int nffi_py_readable(int fd);


/* the queues handed out by the loader; they live as long as the process */
static void       **nffi_py_queues;
static Py_ssize_t   nffi_py_nqueues;

/* nonblocking_ffi.StreamClosed, a ConnectionError */
static PyObject    *nffi_py_stream_closed;

/*
 * The coroutines of aread(), __anext__() and asend(), from the package's
 * _stream.py: waiting on the stream's fd needs the running event loop,
 * which is Python's to find.
 */
static PyObject    *nffi_py_aread_fn;
static PyObject    *nffi_py_anext_fn;
static PyObject    *nffi_py_asend_fn;


static PyMethodDef  nffi_py_task_methods[] = {
    { "respond", (PyCFunction) (void (*)(void)) nffi_py_task_respond,
      METH_VARARGS | METH_KEYWORDS,
      "respond(rc, data=None)\n--\n\n"
      "Answers the call, once: rc 0 is success (Lua sees true, data),\n"
      "any other rc an error (Lua sees false, rc, data).  data is bytes\n"
      "(or any bytes-like object), str (sent as UTF-8) or None (nil)." },
    { "send", (PyCFunction) (void (*)(void)) nffi_py_task_send, METH_O,
      "send(chunk)\n--\n\n"
      "Sends a chunk of the answer of a stream (bytes-like, or str sent as\n"
      "UTF-8; an empty one sends nothing), waiting with the GIL released\n"
      "while the stream's window is full.  Raises StreamClosed once the Lua\n"
      "side gave up (answer the task all the same)." },
    { "try_send", (PyCFunction) (void (*)(void)) nffi_py_task_try_send, METH_O,
      "try_send(chunk)\n--\n\n"
      "send() that never waits: raises BlockingIOError when the window is\n"
      "full (send it again once stream_fd() is readable)." },
    { "read", (PyCFunction) (void (*)(void)) nffi_py_task_read, METH_NOARGS,
      "read()\n--\n\n"
      "The next chunk Lua wrote to the stream (bytes), waiting for it with\n"
      "the GIL released; None once Lua called close_write() (at once for\n"
      "an ordinary call).  Raises StreamClosed once the Lua side gave up." },
    { "try_read", (PyCFunction) (void (*)(void)) nffi_py_task_try_read,
      METH_NOARGS,
      "try_read()\n--\n\n"
      "read() that never waits: raises BlockingIOError when no chunk is\n"
      "there yet (read again once stream_fd() is readable)." },
    { "stream_fd", (PyCFunction) (void (*)(void)) nffi_py_task_stream_fd,
      METH_NOARGS,
      "stream_fd()\n--\n\n"
      "A file descriptor that turns readable when what try_send() or\n"
      "try_read() raised BlockingIOError for may have come, or the Lua\n"
      "side gave up.  Never read or close it; stop watching it before the\n"
      "task is answered." },
    { "aread", (PyCFunction) (void (*)(void)) nffi_py_task_aread, METH_NOARGS,
      "aread()\n--\n\n"
      "read() as a coroutine, for the running asyncio event loop." },
    { "asend", (PyCFunction) (void (*)(void)) nffi_py_task_asend, METH_O,
      "asend(chunk)\n--\n\n"
      "send() as a coroutine, for the running asyncio event loop." },
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
    { "stream", (getter) nffi_py_task_stream, NULL,
      "True for a call of runtime:__stream(), which may be answered in "
      "chunks", NULL },
    { NULL, NULL, NULL, NULL, NULL }
};


static PyAsyncMethods  nffi_py_task_async = {
    .am_aiter = PyObject_SelfIter,
    .am_anext = (unaryfunc) nffi_py_task_anext,
};


static PyTypeObject  nffi_py_task_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nonblocking_ffi.Task",
    .tp_basicsize = sizeof(nffi_py_task_t),
    .tp_dealloc = (destructor) nffi_py_task_dealloc,
    .tp_repr = (reprfunc) nffi_py_task_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A call from Lua, taken from a queue by poll().  Iterating\n"
              "it reads the chunks Lua writes to its stream.",
    .tp_as_async = &nffi_py_task_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc) nffi_py_task_next,
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
    { "_answer_take", (PyCFunction) (void (*)(void)) nffi_py_answer_take,
      METH_FASTCALL,
      "_answer_take(task, data, tq, fd, rounds)\n--\n\n"
      "task.respond(0, data) unless task is None or answered, then the\n"
      "next call waiting on tq as a Task, spinning up to rounds\n"
      "sched_yield() rounds for tq's fd, queue_fd(tq), while none waits\n"
      "(GIL released once for both); None when none came, and at the end\n"
      "of the runtime (take() says which)." },
    { "_init_error", nffi_py_init_error, METH_VARARGS,
      "_init_error(tq, reason)\n--\n\n"
      "Gives reason to the Lua caller of a load that is failing." },
    { "_set_async", nffi_py_set_async, METH_VARARGS,
      "_set_async(aread, anext, asend)\n--\n\n"
      "The coroutine functions behind Task.aread(), __anext__(), asend()." },
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

    if (nffi_py_stream_closed == NULL) {
        nffi_py_stream_closed = PyErr_NewExceptionWithDoc(
            "nonblocking_ffi.StreamClosed",
            "The Lua side of the stream gave up (timeout, close(), client "
            "gone):\nstop, and answer the task all the same.",
            PyExc_ConnectionError, NULL);
        if (nffi_py_stream_closed == NULL) {
            return NULL;
        }
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

    /* the exception outlives the module: a reference of its own */
    Py_INCREF(nffi_py_stream_closed);

    if (PyModule_AddObject(m, "StreamClosed", nffi_py_stream_closed) < 0) {
        Py_DECREF(nffi_py_stream_closed);
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
    self->fd = -1;
    self->stream = ngx_http_lua_nonblocking_ffi_task_is_stream(task) != 0;
    self->sending = 0;
    self->reading = 0;

    req = ngx_http_lua_nonblocking_ffi_get_req(task, &len);

    if (req == NULL) {
        Py_INCREF(Py_None);
        self->request = Py_None;

    } else {
        self->request = PyBytes_FromStringAndSize(req, len);
    }

    method = ngx_http_lua_nonblocking_ffi_get_method(task, &len);

    self->method = nffi_py_method_str(method ? method : "", len);

    if (self->request == NULL || self->method == NULL) {
        Py_DECREF(self);
        return NULL;
    }

    return (PyObject *) self;
}


/*
 * The str of a method name.  Calls mostly repeat a few methods: the last
 * name's str (if short) is kept and shared by the next call of that name,
 * instead of a new str per call.  The GIL guards it.
 */

static PyObject *
nffi_py_method_str(const char *method, int len)
{
    PyObject         *str;
    static char       last[64];
    static int        last_len = -1;
    static PyObject  *last_str;

    if (len == last_len && memcmp(method, last, len) == 0) {
        Py_INCREF(last_str);
        return last_str;
    }

    str = PyUnicode_DecodeUTF8(method, len, "surrogateescape");

    if (str != NULL && len >= 0 && len <= (int) sizeof(last)) {
        memcpy(last, method, len);
        last_len = len;
        Py_INCREF(str);
        Py_XSETREF(last_str, str);
    }

    return str;
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
    Py_ssize_t    len;
    static char  *kwlist[] = { "rc", "data", NULL };

    data = Py_None;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i|O:respond", kwlist,
                                     &rc, &data))
    {
        return NULL;
    }

    task = nffi_py_task_answer(self, data, &rsp, &len);
    if (task == NULL) {
        return NULL;
    }

    Py_BEGIN_ALLOW_THREADS
    ngx_http_lua_nonblocking_ffi_respond(task, rc, rsp, (int) len);
    Py_END_ALLOW_THREADS

    Py_RETURN_NONE;
}


/*
 * The checks and the copy of an answer: the module's task, which is the
 * caller's to respond to from here on (the Task counts as answered, also
 * for other threads waiting for the GIL), or NULL with an exception.
 */

static void *
nffi_py_task_answer(nffi_py_task_t *self, PyObject *data, char **rsp,
    Py_ssize_t *len)
{
    void  *task;

    if (self->task == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "task already answered");
        return NULL;
    }

    if (self->sending || self->reading) {
        PyErr_SetString(PyExc_RuntimeError, "another thread waits in a send "
                        "or read of this task: answer once it returned");
        return NULL;
    }

    *rsp = NULL;
    *len = 0;

    if (data != Py_None
        && nffi_py_data_copy(data, "data must be bytes, str or None", rsp,
                             len) < 0)
    {
        return NULL;
    }

    task = self->task;
    self->task = NULL;

    return task;
}


/*
 * data (bytes-like or str) in memory from malloc(), NUL-terminated if
 * empty; what says what data must be when it is neither
 */

static int
nffi_py_data_copy(PyObject *data, const char *what, char **copy,
    Py_ssize_t *len)
{
    char        *p;
    Py_buffer    view;
    const char  *bytes;

    view.obj = NULL;

    if (PyUnicode_Check(data)) {
        bytes = PyUnicode_AsUTF8AndSize(data, len);
        if (bytes == NULL) {
            return -1;
        }

    } else if (PyObject_CheckBuffer(data)) {
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            return -1;
        }

        bytes = view.buf;
        *len = view.len;

    } else {
        PyErr_Format(PyExc_TypeError, "%s, not %.100s", what,
                     Py_TYPE(data)->tp_name);
        return -1;
    }

    if (*len > INT_MAX - 1) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "data larger than 2 GB");
        return -1;
    }

    /* an empty answer is an empty NUL-terminated string */
    p = malloc(*len ? *len : 1);
    if (p == NULL) {
        PyBuffer_Release(&view);
        PyErr_NoMemory();
        return -1;
    }

    if (*len) {
        memcpy(p, bytes, *len);

    } else {
        p[0] = '\0';
    }

    PyBuffer_Release(&view);

    *copy = p;

    return 0;
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
nffi_py_task_stream(nffi_py_task_t *self, void *closure)
{
    return PyBool_FromLong(self->stream);
}


#define NFFI_PY_CHUNK  "a chunk must be bytes or str"


/* what a stream call is about to do with the task */
#define NFFI_PY_SEND  0
#define NFFI_PY_READ  1
#define NFFI_PY_FD    2


/*
 * Whether a stream call may use the task now: it is not answered, it is a
 * stream (reads of an ordinary call find its end), and no other thread
 * sends or reads on it.  Checked here rather than left to the module,
 * which logs an [alert] for misuse.
 */

static int
nffi_py_stream_usable(nffi_py_task_t *self, int use)
{
    if (self->task == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "task already answered");
        return -1;
    }

    if (use != NFFI_PY_READ && !self->stream) {
        PyErr_SetString(PyExc_RuntimeError, "not a stream: this call came "
                        "from runtime:method(), answer it with respond() (or "
                        "return the answer)");
        return -1;
    }

    if ((use == NFFI_PY_SEND && self->sending)
        || (use == NFFI_PY_READ && self->reading))
    {
        PyErr_Format(PyExc_RuntimeError, "another thread %s this task's "
                     "stream", use == NFFI_PY_SEND ? "sends on" : "reads");
        return -1;
    }

    return 0;
}


/* what send() and try_send() return or raise for the module's rc */

static PyObject *
nffi_py_stream_result(int rc)
{
    switch (rc) {

    case NONBLOCKING_FFI_STREAM_OK:
        Py_RETURN_NONE;

    case NONBLOCKING_FFI_STREAM_AGAIN:
        PyErr_SetString(PyExc_BlockingIOError, "the stream's window is "
                        "full: wait until stream_fd() is readable");
        return NULL;

    case NONBLOCKING_FFI_STREAM_CLOSED:
        PyErr_SetString(nffi_py_stream_closed, "the Lua side closed the "
                        "stream");
        return NULL;

    default:
        PyErr_Format(PyExc_RuntimeError, "the stream call failed with %d "
                     "(see the error log)", rc);
        return NULL;
    }
}


/* send() and try_send() */

static PyObject *
nffi_py_stream_send(nffi_py_task_t *self, PyObject *data, int wait)
{
    int          rc;
    char        *chunk;
    Py_ssize_t   len;

    if (nffi_py_stream_usable(self, NFFI_PY_SEND) < 0
        || nffi_py_data_copy(data, NFFI_PY_CHUNK, &chunk, &len) < 0)
    {
        return NULL;
    }

    if (len == 0) {
        free(chunk);
        Py_RETURN_NONE;
    }

    if (!wait && nffi_py_stream_fd(self) == -1) {
        free(chunk);
        return NULL;
    }

    if (wait) {
        self->sending = 1;

        Py_BEGIN_ALLOW_THREADS
        rc = ngx_http_lua_nonblocking_ffi_stream_send(self->task, chunk,
                                                      (int) len);
        Py_END_ALLOW_THREADS

        self->sending = 0;

    } else {
        rc = ngx_http_lua_nonblocking_ffi_stream_try_send(self->task, chunk,
                                                          (int) len);

        if (rc == NONBLOCKING_FFI_STREAM_AGAIN) {
            /* still ours: a retry copies the data again */
            free(chunk);
        }
    }

    return nffi_py_stream_result(rc);
}


static PyObject *
nffi_py_task_send(nffi_py_task_t *self, PyObject *data)
{
    return nffi_py_stream_send(self, data, 1);
}


static PyObject *
nffi_py_task_try_send(nffi_py_task_t *self, PyObject *data)
{
    return nffi_py_stream_send(self, data, 0);
}


/* read() and try_read(): bytes, None at the end, NULL with an exception */

static PyObject *
nffi_py_stream_read(nffi_py_task_t *self, int wait)
{
    int        rc, len;
    char      *chunk;
    PyObject  *bytes;

    if (nffi_py_stream_usable(self, NFFI_PY_READ) < 0) {
        return NULL;
    }

    /* an ordinary call has nothing after its request */
    if (!self->stream) {
        Py_RETURN_NONE;
    }

    chunk = NULL;
    len = 0;

    if (wait) {
        self->reading = 1;

        Py_BEGIN_ALLOW_THREADS
        rc = ngx_http_lua_nonblocking_ffi_stream_read(self->task, &chunk,
                                                      &len);
        Py_END_ALLOW_THREADS

        self->reading = 0;

    } else {
        if (nffi_py_stream_fd(self) == -1) {
            return NULL;
        }

        rc = ngx_http_lua_nonblocking_ffi_stream_try_read(self->task, &chunk,
                                                          &len);
    }

    switch (rc) {

    case NONBLOCKING_FFI_STREAM_OK:
        bytes = PyBytes_FromStringAndSize(chunk, len);
        free(chunk);
        return bytes;

    case NONBLOCKING_FFI_STREAM_END:
        Py_RETURN_NONE;

    case NONBLOCKING_FFI_STREAM_AGAIN:
        PyErr_SetString(PyExc_BlockingIOError, "no chunk yet: wait until "
                        "stream_fd() is readable");
        return NULL;

    default:
        return nffi_py_stream_result(rc);
    }
}


static PyObject *
nffi_py_task_read(nffi_py_task_t *self, PyObject *unused)
{
    return nffi_py_stream_read(self, 1);
}


static PyObject *
nffi_py_task_try_read(nffi_py_task_t *self, PyObject *unused)
{
    return nffi_py_stream_read(self, 0);
}


/* for chunk in task: the chunks Lua writes, until close_write() */

static PyObject *
nffi_py_task_next(nffi_py_task_t *self)
{
    PyObject  *chunk;

    chunk = nffi_py_stream_read(self, 1);

    if (chunk == Py_None) {
        /* NULL without an exception: the end of the iteration */
        Py_DECREF(chunk);
        return NULL;
    }

    return chunk;
}


/*
 * The stream's fd, made before the first try_send() or try_read(): the
 * module does not replay for an fd made later what that call waited for
 * and came in between.  -1 with an exception.
 */

static int
nffi_py_stream_fd(nffi_py_task_t *self)
{
    if (self->fd == -1) {
        self->fd = ngx_http_lua_nonblocking_ffi_stream_fd(self->task);

        if (self->fd == -1) {
            PyErr_SetFromErrno(PyExc_OSError);
        }
    }

    return self->fd;
}


static PyObject *
nffi_py_task_stream_fd(nffi_py_task_t *self, PyObject *unused)
{
    if (nffi_py_stream_usable(self, NFFI_PY_FD) < 0
        || nffi_py_stream_fd(self) == -1)
    {
        return NULL;
    }

    return PyLong_FromLong(self->fd);
}


static PyObject *
nffi_py_task_aread(nffi_py_task_t *self, PyObject *unused)
{
    if (nffi_py_aread_fn == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "import nonblocking_ffi first");
        return NULL;
    }

    return PyObject_CallOneArg(nffi_py_aread_fn, (PyObject *) self);
}


static PyObject *
nffi_py_task_anext(nffi_py_task_t *self)
{
    if (nffi_py_anext_fn == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "import nonblocking_ffi first");
        return NULL;
    }

    return PyObject_CallOneArg(nffi_py_anext_fn, (PyObject *) self);
}


static PyObject *
nffi_py_task_asend(nffi_py_task_t *self, PyObject *data)
{
    if (nffi_py_asend_fn == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "import nonblocking_ffi first");
        return NULL;
    }

    return PyObject_CallFunctionObjArgs(nffi_py_asend_fn, (PyObject *) self,
                                        data, NULL);
}


static PyObject *
nffi_py_set_async(PyObject *module, PyObject *args)
{
    PyObject  *aread, *anext, *asend;

    if (!PyArg_ParseTuple(args, "OOO:_set_async", &aread, &anext, &asend)) {
        return NULL;
    }

    Py_INCREF(aread);
    Py_INCREF(anext);
    Py_INCREF(asend);
    Py_XSETREF(nffi_py_aread_fn, aread);
    Py_XSETREF(nffi_py_anext_fn, anext);
    Py_XSETREF(nffi_py_asend_fn, asend);

    Py_RETURN_NONE;
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
    int  fd, rounds, i, readable;

    if (!PyArg_ParseTuple(args, "ii:_spin_until_readable", &fd, &rounds)) {
        return NULL;
    }

    readable = 0;

    Py_BEGIN_ALLOW_THREADS

    for (i = 0; i < rounds; i++) {
        readable = nffi_py_readable(fd);

        if (readable) {
            break;
        }

        sched_yield();
    }

    Py_END_ALLOW_THREADS

    return PyBool_FromLong(readable);
}


/* whether fd is readable now (poll() errors count as readable: the
 * caller's next step, a take(), sees what is wrong) */

static int
nffi_py_readable(int fd)
{
    struct pollfd  pfd;

    pfd.fd = fd;
    pfd.events = POLLIN;

    return poll(&pfd, 1, 0) != 0;
}


/*
 * An event loop's runner answers its call and takes the next one here, the
 * GIL released once for both.  It spins on the queue's fd, as the loop does
 * before it sleeps: poll() sees it without the queue's mutex, which the
 * worker's main thread takes for every call it posts.
 */

static PyObject *
nffi_py_answer_take(PyObject *module, PyObject *const *args,
    Py_ssize_t nargs)
{
    int              n, fd;
    long             rounds, i;
    char            *rsp;
    void            *tq, *task, *answered;
    Py_ssize_t       len;
    nffi_py_task_t  *self;

    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "_answer_take() takes 5 arguments "
                     "(%zd given)", nargs);
        return NULL;
    }

    self = (nffi_py_task_t *) args[0];

    if (args[0] != Py_None
        && !PyObject_TypeCheck(args[0], &nffi_py_task_type))
    {
        PyErr_Format(PyExc_TypeError, "task must be a Task or None, not "
                     "%.100s", Py_TYPE(args[0])->tp_name);
        return NULL;
    }

    if (nffi_py_queue_of(args[2], &tq) < 0) {
        return NULL;
    }

    fd = (int) PyLong_AsLong(args[3]);
    rounds = PyLong_AsLong(args[4]);

    if (PyErr_Occurred()) {
        return NULL;
    }

    answered = NULL;
    rsp = NULL;
    len = 0;

    /* a handler may have answered itself */
    if (args[0] != Py_None && self->task != NULL) {
        answered = nffi_py_task_answer(self, args[1], &rsp, &len);
        if (answered == NULL) {
            return NULL;
        }
    }

    n = 0;

    if (answered == NULL) {
        n = ngx_http_lua_nonblocking_ffi_task_take(tq, &task, 1);
    }

    if (answered != NULL || (n == 0 && rounds > 0)) {
        Py_BEGIN_ALLOW_THREADS

        if (answered != NULL) {
            ngx_http_lua_nonblocking_ffi_respond(answered, 0, rsp, (int) len);
            n = ngx_http_lua_nonblocking_ffi_task_take(tq, &task, 1);
        }

        /* a readable fd may find nothing: another poller was faster */
        for (i = 0; i < rounds && n == 0; i++) {
            sched_yield();

            if (nffi_py_readable(fd)) {
                n = ngx_http_lua_nonblocking_ffi_task_take(tq, &task, 1);
            }
        }

        Py_END_ALLOW_THREADS
    }

    if (n <= 0) {
        Py_RETURN_NONE;
    }

    return nffi_py_task_new(task);
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
