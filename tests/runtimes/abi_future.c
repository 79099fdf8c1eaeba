/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * A runtime built for an ABI one version newer than the module's: the
 * module must refuse it before its init runs (init would answer "init ran").
 */

#define NONBLOCKING_FFI_NO_ABI_BUILT
#include "nonblocking_ffi.h"


const int  lib_nonblocking_ffi_abi_built = NONBLOCKING_FFI_ABI_VERSION + 1;


int
lib_nonblocking_ffi_init(char *cfg, void *tq)
{
    ngx_http_lua_nonblocking_ffi_init_error(tq, "init ran", 0);

    return 1;
}
