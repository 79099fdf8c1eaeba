/* SPDX-License-Identifier: BSD-2-Clause */

/* The VM loaders' log lines; see nffi_shim_log.h. */

#include <stdarg.h>
#include <stdio.h>

#include "nonblocking_ffi.h"
#include "nffi_shim_log.h"


void
nffi_shim_log(int level, const char *fmt, ...)
{
    int      n;
    char     msg[NFFI_SHIM_LOG_MAX];
    va_list  args;

    va_start(args, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, args);
    va_end(args);

    if (n < 0) {
        return;
    }

    if (n >= (int) sizeof(msg)) {
        n = sizeof(msg) - 1;
    }

    /* the module writes long messages as several error log entries */
    ngx_http_lua_nonblocking_ffi_log(level, n ? msg : "", n);
}
