/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * The Python loader: lib_nonblocking_ffi_python3.so.
 *
 *   local rt = ngx.load_nonblocking_ffi("/path/lib_nonblocking_ffi_python3.so",
 *                                       "/srv/app/handlers.py,init,{...}",
 *                                       { is_global = true })
 *
 * cfg is "module[?],function[,rest]": only the first two commas split.
 * module is a module name ("app.handlers") or a path with slashes
 * ("/srv/app/handlers.py"), whose folder goes to the front of sys.path; a
 * trailing "?" imports the module afresh even if it was imported before.
 * The function is called as function(rest, tq): rest is the str after the
 * second comma (None without one), tq the int of the runtime's queue.  It
 * starts threads that poll tq (nonblocking_ffi.serve() does) and returns.
 *
 * The interpreter starts once per worker, on the first load, without
 * signal handlers (nginx owns the signals), and the GIL is released between
 * calls.  It is never finalized: at worker exit the poll threads see the
 * end of their queues, and the process ends with them.
 *
 * The loading itself (import, call, the rc of a failure and the traceback
 * in the nginx error log) is nonblocking_ffi/_loader.py.
 */

#include "nffi_python.h"
#include "nffi_shim_cfg.h"

#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


/* the interpreter the loader was built against, by the Makefile */
#ifndef NFFI_PY_EXECUTABLE
#define NFFI_PY_EXECUTABLE  "/usr/bin/python3"
#endif


#define NFFI_PY_NOT_STARTED  0
#define NFFI_PY_RUNNING      1
#define NFFI_PY_FAILED       2




static int nffi_py_parse_cfg(const char *cfg, nffi_shim_cfg_t *parsed);
static int nffi_py_start(void);
static void nffi_py_promote_libpython(void);
static int nffi_py_configure(PyConfig *config);
static int nffi_py_bootstrap(void);
static int nffi_py_call_load(nffi_shim_cfg_t *parsed, void *tq);
static void nffi_py_log_exception(const char *what);


static int        nffi_py_state = NFFI_PY_NOT_STARTED;
static PyObject  *nffi_py_load;     /* nonblocking_ffi._loader.load */

/* the main thread's state while it runs nginx, not Python */
static PyThreadState  *nffi_py_main_state;


int
lib_nonblocking_ffi_init(char *cfg, void *tq)
{
    int               rc;
    nffi_shim_cfg_t     parsed;
    PyGILState_STATE  gil;

    if (nffi_py_parse_cfg(cfg, &parsed) != 0) {
        ngx_http_lua_nonblocking_ffi_init_error(tq, "bad cfg: expected "
                                                "\"module[?],function[,rest]\"",
                                                0);
        return NFFI_PY_RC_CFG;
    }

    if (nffi_py_start() != 0) {
        return NFFI_PY_RC_START;
    }

    gil = PyGILState_Ensure();

    if (nffi_py_queue_add(tq) != 0) {
        nffi_py_log_exception("cannot register the queue");
        rc = NFFI_PY_RC_START;

    } else {
        rc = nffi_py_call_load(&parsed, tq);
    }

    PyGILState_Release(gil);

    return rc;
}


static int
nffi_py_parse_cfg(const char *cfg, nffi_shim_cfg_t *parsed)
{
    switch (nffi_shim_cfg_parse(cfg, parsed)) {

    case NFFI_SHIM_CFG_OK:
        return 0;

    case NFFI_SHIM_CFG_NIL:
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                      "nonblocking_ffi python: cfg is nil: expected "
                      "\"module[?],function[,rest]\"");
        return -1;

    case NFFI_SHIM_CFG_NO_COMMA:
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                      "nonblocking_ffi python: malformed cfg \"%.512s\": "
                      "expected \"module[?],function[,rest]\"", cfg);
        return -1;

    default:
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                      "nonblocking_ffi python: malformed cfg \"%.512s\": "
                      "the %s is empty, expected "
                      "\"module[?],function[,rest]\"", cfg,
                      parsed->target_len ? "function" : "module");
        return -1;
    }
}


/* on the worker's main thread, once: returns without the GIL */

static int
nffi_py_start(void)
{
    PyConfig     config;
    PyStatus     status;
    PyPreConfig  preconfig;

    if (nffi_py_state == NFFI_PY_RUNNING) {
        return 0;
    }

    if (nffi_py_state == NFFI_PY_FAILED) {
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                      "nonblocking_ffi python: the interpreter failed to "
                      "start in this worker before (see above)");
        return -1;
    }

    nffi_py_state = NFFI_PY_FAILED;

    if (Py_IsInitialized()) {
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                      "nonblocking_ffi python: another module of this worker "
                      "already started a Python interpreter");
        return -1;
    }

    nffi_py_promote_libpython();

    if (PyImport_AppendInittab("_nonblocking_ffi", nffi_py_module_init)
        != 0)
    {
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR, "nonblocking_ffi python: "
                      "PyImport_AppendInittab() failed");
        return -1;
    }

    /*
     * UTF-8 mode, and the process's locale left alone: the worker's
     * environment has no LANG, and nginx and LuaJIT share the locale.
     */
    PyPreConfig_InitPythonConfig(&preconfig);
    preconfig.utf8_mode = 1;
    preconfig.configure_locale = 0;

    status = Py_PreInitialize(&preconfig);
    if (PyStatus_Exception(status)) {
        goto failed;
    }

    PyConfig_InitPythonConfig(&config);

    if (nffi_py_configure(&config) != 0) {
        PyConfig_Clear(&config);
        return -1;
    }

    status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);

    if (PyStatus_Exception(status)) {
        goto failed;
    }

    if (nffi_py_bootstrap() != 0) {
        /* the interpreter runs, but without its package it is no use */
        nffi_py_main_state = PyEval_SaveThread();
        return -1;
    }

    nffi_py_main_state = PyEval_SaveThread();
    nffi_py_state = NFFI_PY_RUNNING;

    return 0;

failed:

    nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                  "nonblocking_ffi python: the interpreter did not start: "
                  "%s%s%s", status.func ? status.func : "",
                  status.func ? ": " : "",
                  status.err_msg ? status.err_msg : "unknown error");
    return -1;
}


/*
 * C extension modules (the standard library's _decimal, numpy...) find
 * libpython's symbols in the global scope only: make it global even when
 * the loader was not loaded with { is_global = true }.
 */

static void
nffi_py_promote_libpython(void)
{
    Dl_info  info;

    if (dladdr((void *) Py_InitializeFromConfig, &info) != 0
        && info.dli_fname
        && dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL))
    {
        return;
    }

    nffi_shim_log(NONBLOCKING_FFI_LOG_WARN,
                  "nonblocking_ffi python: could not make libpython global "
                  "(load the loader with { is_global = true }): %s",
                  dlerror());
}


/*
 * No signal handlers; no command line.  The worker has no PATH to find
 * the interpreter with: sys.executable is the virtualenv's python when
 * VIRTUAL_ENV is set (nginx.conf: "env VIRTUAL_ENV;"), which also makes
 * its site-packages importable, else the python the loader was built for.
 * PYTHONPATH, PYTHONHOME and the other PYTHON* variables work as usual
 * when nginx.conf passes them to workers with "env".
 */

static int
nffi_py_configure(PyConfig *config)
{
    char         path[PATH_MAX];
    PyStatus     status;
    const char  *venv, *executable;

    config->install_signal_handlers = 0;
    config->parse_argv = 0;

    executable = NULL;
    venv = getenv("VIRTUAL_ENV");

    if (venv && *venv) {
        if ((size_t) snprintf(path, sizeof(path), "%s/bin/python", venv)
                < sizeof(path)
            && access(path, X_OK) == 0)
        {
            executable = path;

        } else {
            nffi_shim_log(NONBLOCKING_FFI_LOG_WARN,
                          "nonblocking_ffi python: VIRTUAL_ENV \"%.512s\" has "
                          "no bin/python: ignored", venv);
        }
    }

    if (executable == NULL && access(NFFI_PY_EXECUTABLE, X_OK) == 0) {
        executable = NFFI_PY_EXECUTABLE;
    }

    if (executable == NULL) {
        return 0;
    }

    status = PyConfig_SetBytesString(config, &config->executable,
                                     executable);
    if (PyStatus_Exception(status)) {
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                      "nonblocking_ffi python: cannot configure the "
                      "interpreter: %s",
                      status.err_msg ? status.err_msg : "unknown error");
        return -1;
    }

    return 0;
}


/*
 * With the GIL: puts the package beside the loader (python/) at the front
 * of sys.path, imports nonblocking_ffi._loader and runs its bootstrap().
 */

static int
nffi_py_bootstrap(void)
{
    char      *dir, file[PATH_MAX];
    Dl_info    info;
    PyObject  *path, *sys_path, *loader, *rc;

    if (dladdr((void *) lib_nonblocking_ffi_init, &info) == 0
        || info.dli_fname == NULL
        || strlen(info.dli_fname) >= sizeof(file))
    {
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                      "nonblocking_ffi python: cannot find the loader's own "
                      "file: %s", dlerror());
        return -1;
    }

    strcpy(file, info.dli_fname);
    dir = dirname(file);

    path = PyUnicode_FromFormat("%s/python", dir);
    sys_path = PySys_GetObject("path");     /* borrowed */

    if (path == NULL || sys_path == NULL || !PyList_Check(sys_path)
        || PyList_Insert(sys_path, 0, path) != 0)
    {
        Py_XDECREF(path);
        nffi_py_log_exception("cannot extend sys.path");
        return -1;
    }

    Py_DECREF(path);

    loader = PyImport_ImportModule("nonblocking_ffi._loader");
    if (loader == NULL) {
        nffi_py_log_exception("cannot import the nonblocking_ffi package "
                              "(is python/ beside the loader?)");
        return -1;
    }

    rc = PyObject_CallMethod(loader, "bootstrap", NULL);

    if (rc == NULL) {
        Py_DECREF(loader);
        nffi_py_log_exception("nonblocking_ffi._loader.bootstrap() failed");
        return -1;
    }

    Py_DECREF(rc);

    nffi_py_load = PyObject_GetAttrString(loader, "load");
    Py_DECREF(loader);

    if (nffi_py_load == NULL) {
        nffi_py_log_exception("nonblocking_ffi._loader has no load()");
        return -1;
    }

    return 0;
}


/* with the GIL: nonblocking_ffi._loader.load() logs what goes wrong */

static int
nffi_py_call_load(nffi_shim_cfg_t *parsed, void *tq)
{
    long       rc;
    PyObject  *result;

    if (parsed->rest) {
        result = PyObject_CallFunction(nffi_py_load, "s#is#s#N",
                                       parsed->target,
                                       (Py_ssize_t) parsed->target_len,
                                       parsed->fresh, parsed->function,
                                       (Py_ssize_t) parsed->function_len,
                                       parsed->rest,
                                       (Py_ssize_t) strlen(parsed->rest),
                                       PyLong_FromVoidPtr(tq));

    } else {
        result = PyObject_CallFunction(nffi_py_load, "s#is#ON",
                                       parsed->target,
                                       (Py_ssize_t) parsed->target_len,
                                       parsed->fresh, parsed->function,
                                       (Py_ssize_t) parsed->function_len,
                                       Py_None, PyLong_FromVoidPtr(tq));
    }

    if (result == NULL) {
        nffi_py_log_exception("nonblocking_ffi._loader.load() failed");
        return NFFI_PY_RC_START;
    }

    rc = PyLong_AsLong(result);
    Py_DECREF(result);

    if (rc == -1 && PyErr_Occurred()) {
        nffi_py_log_exception("nonblocking_ffi._loader.load() returned no "
                              "int");
        return NFFI_PY_RC_START;
    }

    return (int) rc;
}


/* with the GIL: the current exception and its traceback, into the log */

static void
nffi_py_log_exception(const char *what)
{
    PyObject    *type, *value, *tb, *module, *lines, *empty, *joined, *text;
    Py_ssize_t   len;
    const char  *msg;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);

    lines = NULL;
    empty = NULL;
    joined = NULL;
    text = NULL;

    module = PyImport_ImportModule("traceback");

    if (module && type) {
        lines = PyObject_CallMethod(module, "format_exception", "OOO", type,
                                    value ? value : Py_None,
                                    tb ? tb : Py_None);
    }

    if (lines) {
        empty = PyUnicode_FromString("");
    }

    if (empty) {
        joined = PyUnicode_Join(empty, lines);
    }

    if (joined) {
        text = PyUnicode_FromFormat("nonblocking_ffi python: %s:\n%U", what,
                                    joined);
    }

    msg = text ? PyUnicode_AsUTF8AndSize(text, &len) : NULL;

    if (msg) {
        /* the traceback's last newline: nginx adds its own */
        while (len > 0 && msg[len - 1] == '\n') {
            len--;
        }

        nffi_py_log_text(NONBLOCKING_FFI_LOG_ERR, msg, len);

    } else {
        PyErr_Clear();
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR, "nonblocking_ffi python: %s "
                      "(the exception could not be formatted)", what);
    }

    Py_XDECREF(text);
    Py_XDECREF(joined);
    Py_XDECREF(empty);
    Py_XDECREF(lines);
    Py_XDECREF(module);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}
