/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * lua-resty-nonblocking-ffi: the Python loader, lib_nonblocking_ffi_python3.so.
 *
 *   nffi_python_loader.c   lib_nonblocking_ffi_init(): cfg, interpreter,
 *                          import and call of the configured function
 *   nffi_python_module.c   _nonblocking_ffi, the C half of the
 *                          nonblocking_ffi package: poll, Task, log
 *
 * The Python half of the package lives in nonblocking_ffi/ and is installed
 * beside the loader, in python/nonblocking_ffi/.
 */

#ifndef NFFI_PYTHON_H_INCLUDED
#define NFFI_PYTHON_H_INCLUDED


#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "nonblocking_ffi.h"
#include "nffi_shim_log.h"


/* the rc of a failed load; nonblocking_ffi/_loader.py uses the same */
#define NFFI_PY_RC_CFG       2    /* cfg nil or malformed */
#define NFFI_PY_RC_START     3    /* the interpreter or package failed */
#define NFFI_PY_RC_IMPORT    4    /* the module could not be imported */
#define NFFI_PY_RC_FUNCTION  5    /* no such function, or not callable */
#define NFFI_PY_RC_RAISED    6    /* the function raised */


/* nffi_python_module.c */
PyObject *nffi_py_module_init(void);
int nffi_py_queue_add(void *tq);             /* with the GIL held */
void nffi_py_log_text(int level, const char *text, size_t len);


#endif /* NFFI_PYTHON_H_INCLUDED */
