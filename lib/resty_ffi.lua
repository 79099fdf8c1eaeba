-- SPDX-License-Identifier: BSD-2-Clause

-- lua-resty-ffi compatibility: require "resty_ffi" installs ngx.load_ffi,
-- the same loader as ngx.load_nonblocking_ffi (libraries exporting
-- libffi_init and calling ngx_http_lua_ffi_* run unchanged).

local nonblocking_ffi = require "resty.nonblocking_ffi"

ngx.load_ffi = nonblocking_ffi.load

return nonblocking_ffi
