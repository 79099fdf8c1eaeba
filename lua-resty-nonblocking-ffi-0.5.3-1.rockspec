-- SPDX-License-Identifier: BSD-2-Clause
-- The Lua library only: the nginx module (ngx_http_lua_nonblocking_ffi_module)
-- comes from make install, the Debian package or an nginx/OpenResty build
-- with --add-dynamic-module (README).  Tested: luarocks make into a local
-- tree (tests/test_packaging.py).

rockspec_format = "3.0"
package = "lua-resty-nonblocking-ffi"
version = "0.5.3-1"

source = {
    url = "git+https://github.com/lua-resty-nonblocking-ffi/lua-resty-nonblocking-ffi.git",
    tag = "v0.5.3",
}

description = {
    summary = "Call Go, Python, Java, Rust and C runtimes from nginx Lua "
              .. "without blocking the worker",
    detailed = [[
ngx.load_nonblocking_ffi(lib, cfg, opts) loads a runtime (a shared library
with a C ABI) into each nginx worker; runtime:method(req) posts the request
to the runtime's threads and yields until the answer arrives.  Needs
lua-nginx-module with lua-resty-core and the nginx module of the same
version.]],
    license = "BSD-2-Clause",
    labels = { "nginx", "openresty", "ffi" },
}

dependencies = {
    "lua == 5.1",
}

build = {
    type = "builtin",
    modules = {
        ["resty.nonblocking_ffi"] = "lib/resty/nonblocking_ffi.lua",
        ["resty.nonblocking_ffi.prometheus"] =
            "lib/resty/nonblocking_ffi/prometheus.lua",
        ["resty_ffi"] = "lib/resty_ffi.lua",
    },
}
