/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Formatted lines into the nginx error log for the VM loaders, from any
 * thread (the module hands them to the worker's main thread).
 */

#ifndef NFFI_SHIM_LOG_H_INCLUDED
#define NFFI_SHIM_LOG_H_INCLUDED


/* messages longer than this are cut */
#define NFFI_SHIM_LOG_MAX  2048


void nffi_shim_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));


#endif /* NFFI_SHIM_LOG_H_INCLUDED */
