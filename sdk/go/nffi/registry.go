// SPDX-License-Identifier: BSD-2-Clause

package nffi

/*
#include <stdlib.h>
#include "nonblocking_ffi.h"
*/
import "C"

import (
	"fmt"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"unsafe"
)

// Factory makes the handler of one runtime from the rest of its cfg (what
// follows "name," — "" when cfg is just the name).  It runs on the nginx
// worker's main thread while the worker serves nobody: it must not block
// for long (connect lazily).  An error makes the load fail.
type Factory func(cfg string) (Handler, error)

// RawFactory starts a runtime that polls q by itself (Poll, Task.Respond),
// for code that wants full control.  It must return quickly, leaving its
// own goroutines to poll.  An error makes the load fail.
type RawFactory func(cfg string, q Queue) error

// The rc values of lib_nonblocking_ffi_init when a load fails; the reason
// is written to the nginx error log.
const (
	InitNoHandler      = 1 // cfg is nil or does not start with a name
	InitUnknownHandler = 2 // no handler is registered under that name
	InitFactoryFailed  = 3 // the handler's Factory failed (or panicked)
	InitOldModule      = 4 // the nginx module is older than this package
)

var registry = struct {
	sync.Mutex
	factories map[string]RawFactory
}{factories: map[string]RawFactory{}}

// Register makes a handler available under name: the runtime loaded with
// ngx.load_nonblocking_ffi(lib, "name") or (lib, "name,<cfg>") gets the
// Handler that f returns for "<cfg>", served by Serve.  Call it from an
// init function of the library's packages.  It panics when name is empty,
// contains a comma or is taken.
func Register(name string, f Factory) {
	RegisterRaw(name, func(cfg string, q Queue) error {
		h, err := f(cfg)
		if err != nil {
			return err
		}
		if h == nil {
			return fmt.Errorf("the factory returned no handler")
		}
		go Serve(q, h)
		return nil
	})
}

// RegisterRaw is Register for a RawFactory.
func RegisterRaw(name string, f RawFactory) {
	if name == "" || strings.ContainsAny(name, ", \t") {
		panic(fmt.Sprintf("nffi: bad handler name %q", name))
	}
	registry.Lock()
	defer registry.Unlock()
	if _, taken := registry.factories[name]; taken {
		panic(fmt.Sprintf("nffi: handler %q registered twice", name))
	}
	registry.factories[name] = f
}

// Handlers lists the registered handler names, sorted.
func Handlers() []string {
	registry.Lock()
	defer registry.Unlock()
	names := make([]string, 0, len(registry.factories))
	for name := range registry.factories {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// SplitCfg splits "name,rest" into name and rest (only the first comma
// splits: rest is often JSON); "name" alone has an empty rest.
func SplitCfg(cfg string) (name, rest string) {
	name, rest, _ = strings.Cut(cfg, ",")
	return strings.TrimSpace(name), rest
}

// Every Go library built with this package exports this function: a Go
// c-shared library needs no C and no export of its own.

//export lib_nonblocking_ffi_init
func lib_nonblocking_ffi_init(cfg *C.char, tq unsafe.Pointer) C.int {
	if cfg == nil {
		return C.int(start(nil, QueueOf(tq)))
	}
	s := C.GoString(cfg)
	return C.int(start(&s, QueueOf(tq)))
}

func start(cfg *string, q Queue) int {
	if v := ABIVersion(); v < C.NONBLOCKING_FFI_ABI_VERSION {
		Logf(LevelErr, "nffi: the nginx module has ABI version %d, this Go "+
			"library needs %d", v, C.NONBLOCKING_FFI_ABI_VERSION)
		return InitOldModule
	}

	if cfg == nil {
		return failInit(q, InitNoHandler, "cfg is nil: name a handler (%s), "+
			"e.g. \"name\" or \"name,<its cfg>\"", strings.Join(Handlers(), ", "))
	}

	name, rest := SplitCfg(*cfg)
	if name == "" {
		return failInit(q, InitNoHandler, "cfg %q names no handler (%s)", *cfg,
			strings.Join(Handlers(), ", "))
	}

	registry.Lock()
	f := registry.factories[name]
	registry.Unlock()

	if f == nil {
		return failInit(q, InitUnknownHandler, "no handler %q in this "+
			"library (it has: %s)", name, strings.Join(Handlers(), ", "))
	}

	if err := runFactory(f, rest, q); err != nil {
		return failInit(q, InitFactoryFailed, "handler %q: %v", name, err)
	}

	Logf(LevelInfo, "nffi: handler %q started", name)
	return 0
}

// failInit logs why the load fails and gives the first line of it to the
// Lua caller of the load; it returns rc.
func failInit(q Queue, rc int, format string, args ...any) int {
	msg := fmt.Sprintf(format, args...)
	Log(LevelErr, "nffi: "+msg)
	reason, _, _ := strings.Cut(msg, "\n")
	p := C.CString(reason)
	C.ngx_http_lua_nonblocking_ffi_init_error(q.p, p, C.int(len(reason)))
	C.free(unsafe.Pointer(p))
	return rc
}

func runFactory(f RawFactory, cfg string, q Queue) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("panic: %v\n%s", v, debug.Stack())
		}
	}()
	return f(cfg, q)
}
