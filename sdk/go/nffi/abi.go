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

// Serve's pollers cross into C twice per call: once to take a task with
// its method and request, once to answer it.  Each crossing costs; these
// two helpers do in one what would take three.

typedef struct {
    void        *task;
    char        *req;
    const char  *method;
    int          req_len;
    int          method_len;
    int          is_stream;
} nffi_go_taken_t;

// Takes the next task of tq and reads its method, its request and its kind
// into *t.  With armed set: returns 1 with a task, 0 when the caller is
// armed (wait on the queue's wait fd, then call again), -1 once the
// runtime is unloaded and drained.  Without (no wait fd), waits in the
// module: 1 with a task, -1 at the end.
static int
nffi_go_take(void *tq, nffi_go_taken_t *t, int armed)
{
    void  *task;
    int    n;

    if (armed) {
        n = ngx_http_lua_nonblocking_ffi_task_take_or_arm(tq, &task, 1);

    } else {
        n = ngx_http_lua_nonblocking_ffi_task_poll_batch(tq, &task, 1);
        n = n == 1 ? 1 : -1;
    }

    if (n != 1) {
        return n;
    }

    t->task = task;
    t->req = ngx_http_lua_nonblocking_ffi_get_req(task, &t->req_len);
    t->method = ngx_http_lua_nonblocking_ffi_get_method(task,
                                                        &t->method_len);
    t->is_stream = ngx_http_lua_nonblocking_ffi_task_is_stream(task);
    return 1;
}

// Answers task with NULL when is_nil, else with a malloc'ed copy of len
// bytes of data (data may be NULL when len is 0).  An empty answer is an
// empty C string (length 0 means "NUL-terminated").  Without memory, the
// answer is rc err_rc and NULL.
static void
nffi_go_answer(void *task, int rc, const char *data, int len, int is_nil,
    int err_rc)
{
    char  *p;

    if (is_nil) {
        ngx_http_lua_nonblocking_ffi_respond(task, rc, NULL, 0);
        return;
    }

    p = malloc((size_t) len + 1);
    if (p == NULL) {
        ngx_http_lua_nonblocking_ffi_respond(task, err_rc, NULL, 0);
        return;
    }

    if (len > 0) {
        memcpy(p, data, len);
    }
    p[len] = '\0';

    ngx_http_lua_nonblocking_ffi_respond(task, rc, p, len);
}

// Answers task as nffi_go_answer does, then takes the next task as
// nffi_go_take does, in one crossing into C: the poller is back in the
// queue's spin before the caller's next call can come, which then needs
// no wake-up of another poller.
static int
nffi_go_answer_take(void *task, int rc, const char *data, int len,
    int is_nil, int err_rc, void *tq, nffi_go_taken_t *t, int armed)
{
    nffi_go_answer(task, rc, data, len, is_nil, err_rc);

    return nffi_go_take(tq, t, armed);
}

#define NFFI_GO_NO_MEMORY  (-100)

// Sends a malloc'ed copy of len (> 0) bytes of data as a chunk of task's
// answer, waiting while the window is full: the copy is the module's from
// the call on, and data, Go's memory, is not kept.
static int
nffi_go_send(void *task, const char *data, int len)
{
    char  *p;

    p = malloc((size_t) len);
    if (p == NULL) {
        return NFFI_GO_NO_MEMORY;
    }

    memcpy(p, data, len);

    return ngx_http_lua_nonblocking_ffi_stream_send(task, p, len);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
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

// cgoQueue is the queue that Serve uses on the ABI.  Idle pollers wait in
// Go's netpoller on the queue's wait fd (wait is not nil), where they hold
// no thread: pollers that wait in the module hold one each, which Go's
// scheduler monitor keeps taking back, waking up every 20 µs to do so
// (docs/benchmark.md).  A module older than ABI 5, which has no wait fd,
// refuses a library built with this SDK at load.
type cgoQueue struct {
	q    Queue
	wait *queueWaiter
}

func newCgoQueue(q Queue) cgoQueue {
	return cgoQueue{q: q, wait: newQueueWaiter(q)}
}

func (c cgoQueue) taker() taker {
	p := C.malloc(C.size_t(unsafe.Sizeof(C.nffi_go_taken_t{})))
	if p == nil {
		panic("nffi: out of memory")
	}
	return &cgoTaker{q: c.q, wait: c.wait, taken: (*C.nffi_go_taken_t)(p)}
}

func (c cgoQueue) close() {
	if c.wait != nil {
		c.wait.close()
	}
}

// queueWaiter waits on a queue's wait fd in the netpoller, through a
// descriptor of its own (a dup: the module's stays open).
type queueWaiter struct {
	file *os.File
	conn syscall.RawConn
}

// newQueueWaiter returns nil, and says so in the error log, when the fd
// cannot be had (no descriptor left): pollers then wait in the module.
func newQueueWaiter(q Queue) *queueWaiter {
	fd, err := C.ngx_http_lua_nonblocking_ffi_queue_wait_fd(q.p)
	if fd < 0 {
		return noQueueWaiter(err)
	}
	own, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd),
		syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return noQueueWaiter(errno)
	}
	// non-blocking (the flag belongs to the open file, which the dup
	// shares): the netpoller watches it
	f := os.NewFile(own, "nffi-queue-wait")
	conn, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return noQueueWaiter(err)
	}
	return &queueWaiter{file: f, conn: conn}
}

func noQueueWaiter(err error) *queueWaiter {
	Log(LevelWarn, fmt.Sprintf("nffi: no wait fd for the queue (%v): idle "+
		"pollers wait in the module", err))
	return nil
}

// wait returns after taking one wake-up, or once the waiter is closed.
// Pollers that wait at once queue up in the file's read lock; a wake-up
// given while one waits in the lock is read by it without waiting.
func (w *queueWaiter) wait() {
	var count [8]byte
	w.conn.Read(func(fd uintptr) bool {
		_, err := syscall.Read(int(fd), count[:])
		return err != syscall.EAGAIN
	})
}

func (w *queueWaiter) close() {
	w.file.Close()
}

func (c cgoQueue) log(level Level, msg string) {
	Log(level, msg)
}

// cgoTaker is one poller's way to take tasks: C memory for nffi_go_take
// to write into (Go memory handed to C would escape to the heap on every
// call), and the method name of its last task, which the next one most
// often repeats.
type cgoTaker struct {
	q      Queue
	wait   *queueWaiter
	taken  *C.nffi_go_taken_t
	method string
}

func (c *cgoTaker) take() task {
	return c.takeAfter(C.nffi_go_take(c.q.p, c.taken, c.armed()))
}

// answerTake answers t and takes the next task (see answerTaker).
func (c *cgoTaker) answerTake(t task, rc int, data []byte) task {
	tt, ok := t.(*takenTask)
	if !ok {
		t.Respond(rc, data)
		return c.take()
	}
	a, ok := tt.answer(rc, data)
	if !ok {
		return c.take()
	}
	return c.takeAfter(C.nffi_go_answer_take(tt.p, a.rc, a.data, a.len,
		a.isNil, C.int(RCError), c.q.p, c.taken, c.armed()))
}

func (c *cgoTaker) armed() C.int {
	if c.wait != nil {
		return 1
	}
	return 0
}

// takeAfter finishes a take that returned n: waits on the queue's wait fd
// and takes again while armed, then reads the task taken.
func (c *cgoTaker) takeAfter(n C.int) task {
	for n == 0 {
		c.wait.wait()
		n = C.nffi_go_take(c.q.p, c.taken, c.armed())
	}
	if n < 0 {
		return nil
	}
	t := &takenTask{Task: Task{p: c.taken.task}}

	if m := c.taken.method; m != nil {
		name := unsafe.String((*byte)(unsafe.Pointer(m)), int(c.taken.method_len))
		if name != c.method {
			// a copy (string(name) would not be one): the C memory goes
			// with the task
			c.method = strings.Clone(name)
		}
		t.method = c.method
	}

	if r := c.taken.req; r != nil {
		t.req = C.GoBytes(unsafe.Pointer(r), c.taken.req_len)
	}
	t.isStream = c.taken.is_stream != 0
	return t
}

func (c *cgoTaker) release() {
	C.free(unsafe.Pointer(c.taken))
	c.taken = nil
}

// takenTask is a Task whose method, request and kind were read when it
// was taken, in the same crossing into C.
type takenTask struct {
	Task
	method   string
	req      []byte
	isStream bool
}

func (t *takenTask) IsStream() bool {
	return t.isStream
}

func (t *takenTask) Method() string {
	return t.method
}

func (t *takenTask) Request() []byte {
	return t.req
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
	if a, ok := t.answer(rc, data); ok {
		C.nffi_go_answer(t.p, a.rc, a.data, a.len, a.isNil, C.int(RCError))
	}
}

// cAnswer is an answer as nffi_go_answer takes it.
type cAnswer struct {
	rc    C.int
	data  *C.char
	len   C.int
	isNil C.int
}

// answer marks t answered and returns its answer for C, or false when t
// was answered before (logged).
func (t *Task) answer(rc int, data []byte) (cAnswer, bool) {
	if !t.answered.CompareAndSwap(false, true) {
		Log(LevelErr, "nffi: a task was answered twice; the second answer "+
			"is ignored")
		return cAnswer{}, false
	}

	if rc < math.MinInt32 || rc > math.MaxInt32 {
		rc, data = RCError, []byte("nffi: rc out of the C int range")
	}
	if len(data) > math.MaxInt32-1 {
		rc, data = RCError, []byte("nffi: answer larger than 2 GB")
	}

	// data goes to C only when it has bytes: the pointer of an empty slice
	// may lie past the end of its memory
	a := cAnswer{rc: C.int(rc), len: C.int(len(data))}
	if len(data) > 0 {
		a.data = (*C.char)(unsafe.Pointer(&data[0]))
	}
	if data == nil {
		a.isNil = 1
	}
	return a, true
}

// ErrClosed is what a stream's Send, Write and Read return once the Lua
// side gave up on it (timeout, client gone, stream:close(), the stream
// collected), and once its task is answered.
var ErrClosed = errors.New("nffi: the stream is closed")

// errNotStream: a stream call on a task that is no stream, or misused (the
// module logs an [alert] with the details).
var errNotStream = errors.New("nffi: not a stream task waiting for its " +
	"answer (see the [alert] in the nginx error log)")

// IsStream tells whether the task came from runtime:__stream() in Lua:
// its answer may come in chunks (Send) and Lua may write chunks after the
// request (ReadChunk).  An answered task is no stream.
func (t *Task) IsStream() bool {
	if t.answered.Load() {
		return false
	}
	return C.ngx_http_lua_nonblocking_ffi_task_is_stream(t.p) != 0
}

// Send sends chunk, copied, as the next chunk of the answer of a stream
// task, waiting while Lua holds a window of unread bytes.  An empty chunk
// sends nothing.  The final Respond (with rc 0, its data is the last chunk)
// still follows.  It returns ErrClosed once Lua gave up: stop, and Respond
// anyway.  One goroutine at a time may Send on a task, before its Respond.
func (t *Task) Send(chunk []byte) error {
	if t.answered.Load() {
		return ErrClosed
	}
	if len(chunk) == 0 {
		return nil
	}
	if len(chunk) > math.MaxInt32 {
		return errors.New("nffi: chunk larger than 2 GB")
	}
	rc := C.nffi_go_send(t.p, (*C.char)(unsafe.Pointer(&chunk[0])),
		C.int(len(chunk)))
	return streamError(rc)
}

// ReadChunk reads the next chunk Lua wrote with stream:write() on a stream
// task, waiting until there is one.  It returns io.EOF once Lua called
// stream:close_write() and every chunk was read, ErrClosed once Lua gave
// up.  One goroutine at a time may read a task, before its Respond.
func (t *Task) ReadChunk() ([]byte, error) {
	if t.answered.Load() {
		return nil, ErrClosed
	}
	var p *C.char
	var n C.int
	rc := C.ngx_http_lua_nonblocking_ffi_stream_read(t.p, &p, &n)
	if rc != C.NONBLOCKING_FFI_STREAM_OK {
		return nil, streamError(rc)
	}
	chunk := C.GoBytes(unsafe.Pointer(p), n)
	C.free(unsafe.Pointer(p))
	return chunk, nil
}

func streamError(rc C.int) error {
	switch rc {
	case C.NONBLOCKING_FFI_STREAM_OK:
		return nil
	case C.NONBLOCKING_FFI_STREAM_END:
		return io.EOF
	case C.NONBLOCKING_FFI_STREAM_CLOSED:
		return ErrClosed
	case C.NONBLOCKING_FFI_STREAM_ERROR:
		return errNotStream
	case C.NFFI_GO_NO_MEMORY:
		return errors.New("nffi: out of memory for a chunk")
	}
	return fmt.Errorf("nffi: the stream call returned %d", int(rc))
}
