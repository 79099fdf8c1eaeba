// SPDX-License-Identifier: BSD-2-Clause

package nffi

/*
#cgo CFLAGS: -I${SRCDIR}/../../../include
// The ABI functions live in ngx_http_lua_nonblocking_ffi_module.so, which
// nginx loads with RTLD_GLOBAL before any runtime: they stay undefined in
// the Go library and the dynamic linker resolves them when Lua loads it.
#cgo LDFLAGS: -Wl,--unresolved-symbols=ignore-all

#include <stdlib.h>
#include <string.h>
#include "nonblocking_ffi.h"
*/
import "C"

import (
	"math"
	"sync/atomic"
	"unsafe"
)

// Queue is the task queue of one runtime: the tq argument of
// lib_nonblocking_ffi_init.  Handlers registered with Register never see
// it; RegisterRaw hands it to code that polls by itself.
type Queue struct {
	p unsafe.Pointer
}

// QueueOf wraps the tq pointer that the module passed to an init function.
func QueueOf(tq unsafe.Pointer) Queue {
	return Queue{p: tq}
}

// Pointer is the raw tq pointer.
func (q Queue) Pointer() unsafe.Pointer {
	return q.p
}

// Task is one call, runtime:method(req), taken from a Queue.  It must be
// answered exactly once with Respond; after that it must not be used.
type Task struct {
	p        unsafe.Pointer
	answered atomic.Bool
}

// Poll takes the next task of q, waiting until there is one.  It returns
// nil once the runtime is unloaded and every task queued before that was
// taken: stop polling then.  Several goroutines may poll one queue.
func Poll(q Queue) *Task {
	p := C.ngx_http_lua_nonblocking_ffi_task_poll(q.p)
	if p == nil {
		return nil
	}
	return &Task{p: p}
}

// ABIVersion is the ABI version of the loaded nginx module.
func ABIVersion() int {
	return int(C.ngx_http_lua_nonblocking_ffi_abi_version())
}

// cgoQueue is the queue that Serve uses on the ABI: it takes up to a
// batch of tasks per poll, into C memory since the module writes there.
type cgoQueue struct {
	q     Queue
	buf   *unsafe.Pointer
	size  int
	tasks []task
}

func newCgoQueue(q Queue, size int) *cgoQueue {
	p := C.malloc(C.size_t(size) * C.size_t(unsafe.Sizeof(unsafe.Pointer(nil))))
	if p == nil {
		panic("nffi: out of memory")
	}
	return &cgoQueue{q: q, buf: (*unsafe.Pointer)(p), size: size,
		tasks: make([]task, size)}
}

func (c *cgoQueue) pollBatch() []task {
	n := C.ngx_http_lua_nonblocking_ffi_task_poll_batch(c.q.p, c.buf,
		C.int(c.size))
	if n <= 0 {
		return nil
	}
	tasks := c.tasks[:n]
	for i, p := range unsafe.Slice(c.buf, int(n)) {
		tasks[i] = &Task{p: p}
	}
	return tasks
}

func (c *cgoQueue) close() {
	C.free(unsafe.Pointer(c.buf))
	c.buf = nil
}

func (c *cgoQueue) log(level Level, msg string) {
	Log(level, msg)
}

// Request is a copy of the request bytes, or nil when Lua passed nil (or
// once the task is answered: the module reuses its memory for other calls).
func (t *Task) Request() []byte {
	if t.answered.Load() {
		return nil
	}
	var n C.int
	p := C.ngx_http_lua_nonblocking_ffi_get_req(t.p, &n)
	if p == nil {
		return nil
	}
	return C.GoBytes(unsafe.Pointer(p), n)
}

// Method is the method name of the call: "get" for runtime:get(req), or
// "" once the task is answered.
func (t *Task) Method() string {
	if t.answered.Load() {
		return ""
	}
	var n C.int
	p := C.ngx_http_lua_nonblocking_ffi_get_method(t.p, &n)
	if p == nil {
		return ""
	}
	return C.GoStringN(p, n)
}

// Cancelled tells whether nobody waits for the answer any more (the call
// timed out, or its request went away).  The task must still be answered.
// An answered task counts as cancelled.
func (t *Task) Cancelled() bool {
	if t.answered.Load() {
		return true
	}
	return C.ngx_http_lua_nonblocking_ffi_task_cancelled(t.p) != 0
}

// Respond answers the task: rc 0 is success (Lua sees true, data), any
// other rc an error (Lua sees false, rc, data).  nil data is nil in Lua, an
// empty slice the empty string.  data is copied.  A second Respond on the
// same Task is ignored and logged.
func (t *Task) Respond(rc int, data []byte) {
	if !t.answered.CompareAndSwap(false, true) {
		Log(LevelErr, "nffi: a task was answered twice; the second answer "+
			"is ignored")
		return
	}

	if rc < math.MinInt32 || rc > math.MaxInt32 {
		rc, data = RCError, []byte("nffi: rc out of the C int range")
	}
	if len(data) > math.MaxInt32-1 {
		rc, data = RCError, []byte("nffi: answer larger than 2 GB")
	}

	if data == nil {
		C.ngx_http_lua_nonblocking_ffi_respond(t.p, C.int(rc), nil, 0)
		return
	}

	// the module frees the answer: it must come from malloc; an empty
	// answer is an empty C string (length 0 means "NUL-terminated")
	p := (*C.char)(C.malloc(C.size_t(len(data) + 1)))
	if p == nil {
		C.ngx_http_lua_nonblocking_ffi_respond(t.p, C.int(RCError), nil, 0)
		return
	}
	if len(data) > 0 {
		C.memcpy(unsafe.Pointer(p), unsafe.Pointer(&data[0]),
			C.size_t(len(data)))
	}
	*(*C.char)(unsafe.Add(unsafe.Pointer(p), len(data))) = 0

	C.ngx_http_lua_nonblocking_ffi_respond(t.p, C.int(rc), p, C.int(len(data)))
}
