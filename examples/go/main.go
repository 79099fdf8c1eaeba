// SPDX-License-Identifier: BSD-2-Clause

// Command lib_nonblocking_ffi_go is the one Go runtime library of the
// examples: build it with
//
//	go build -buildmode=c-shared -o lib_nonblocking_ffi_go.so .
//
// and choose a handler by cfg in Lua:
//
//	ngx.load_nonblocking_ffi("lib_nonblocking_ffi_go.so", "echo")
//	ngx.load_nonblocking_ffi("lib_nonblocking_ffi_go.so",
//	    'etcd,{"endpoints":["127.0.0.1:2379"]}')
//
// A process can hold one Go runtime only, so every Go handler a worker
// needs is registered into this one library.
package main

import (
	"github.com/lua-resty-nonblocking-ffi/lua-resty-nonblocking-ffi/examples/go/echo"
	"github.com/lua-resty-nonblocking-ffi/lua-resty-nonblocking-ffi/examples/go/etcd"
	"github.com/lua-resty-nonblocking-ffi/lua-resty-nonblocking-ffi/examples/go/selftest"
	"github.com/lua-resty-nonblocking-ffi/lua-resty-nonblocking-ffi/sdk/go/nffi"
)

func init() {
	nffi.Register("echo", echo.New)
	nffi.Register("etcd", etcd.New)
	nffi.Register("selftest", selftest.New)
}

// a c-shared library's main is never called
func main() {}
