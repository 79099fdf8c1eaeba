// SPDX-License-Identifier: BSD-2-Clause

// Package nffi writes lua-resty-nonblocking-ffi runtimes in Go.
//
// Lua code in nginx calls a runtime without blocking the worker:
//
//	local rt = ngx.load_nonblocking_ffi("/path/lib_nonblocking_ffi_go.so", "echo")
//	local ok, res = rt:echo("hello")
//
// A runtime is a Go c-shared library.  Only one Go runtime can live in a
// process (golang/go#18976), so a library built with this package hosts
// any number of handlers, each registered under a name; the cfg of
// ngx.load_nonblocking_ffi chooses one: "name", or "name,<rest>" where the
// handler's Factory receives <rest> (often JSON).  Build every Go handler
// that a worker needs into that one library.
//
//	package main
//
//	import "github.com/lua-resty-nonblocking-ffi/lua-resty-nonblocking-ffi/sdk/go/nffi"
//
//	func init() {
//		nffi.Register("echo", func(cfg string) (nffi.Handler, error) {
//			return nffi.HandlerFunc(func(ctx context.Context, method string, req []byte) ([]byte, error) {
//				return req, nil
//			}), nil
//		})
//	}
//
//	func main() {}
//
// go build -buildmode=c-shared makes the library; this package exports its
// lib_nonblocking_ffi_init.  Calls run concurrently, each on one of a pool
// of poller goroutines (see Serve), and a call that blocks delays no other
// call; an error is answered with a non-zero rc and its message, a panic
// is recovered and answered with RCPanic.
//
// Streams, rt:__stream(method, req) in Lua, go to a StreamHandler (a
// StreamFunc, a Mux): its answer is written chunk by chunk to a *Stream,
// which also reads the chunks Lua writes after req; a plain Handler
// answers a stream in one chunk.
//
// Poll, Task.Request and Task.Respond are the ABI itself, for code that
// polls by itself (RegisterRaw).  Log writes to the nginx error log.
//
// Traps: the Go runtime sees the environment nginx was started with, not
// nginx's "env NAME=value;" (pass settings through cfg); the library is
// never unloaded (runtime:__unload() stops one runtime, its handler may be
// loaded again); do not load a second Go library into the same worker.
package nffi
