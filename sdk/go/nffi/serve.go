// SPDX-License-Identifier: BSD-2-Clause

package nffi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// The rc values that Serve answers with when a handler fails.
const (
	// RCError: the handler returned an error that is no *Error.
	RCError = 1
	// RCPanic: the handler panicked (or ended its goroutine).
	RCPanic = 2
	// RCUnknownMethod: Methods has no function for the method called.
	RCUnknownMethod = 404
	// RCStreamOnly: an ordinary call of a method that answers streams
	// only (StreamFunc, Mux).
	RCStreamOnly = 405
)

// Handler serves calls: runtime:method(req) in Lua becomes
// ServeCall(ctx, "method", req).  A nil error answers rsp with rc 0 (Lua:
// true, rsp); an error answers its message with rc RCError, or with its
// own rc when it is an *Error (Lua: false, rc, message).  Calls run
// concurrently (see Serve): ServeCall must be safe for concurrent use, and
// may block without delaying other calls.
//
// ctx is cancelled when the caller gives up (its call timed out or its
// request went away; context.Cause is then ErrCallerGone) and when the
// runtime is unloaded: long calls should watch it.
type Handler interface {
	ServeCall(ctx context.Context, method string, req []byte) ([]byte, error)
}

// HandlerFunc is a function serving every method.
type HandlerFunc func(ctx context.Context, method string, req []byte) ([]byte, error)

func (f HandlerFunc) ServeCall(ctx context.Context, method string, req []byte) ([]byte, error) {
	return f(ctx, method, req)
}

// Method is a function serving one method.
type Method func(ctx context.Context, req []byte) ([]byte, error)

// Methods is a Handler that picks a function by method name; other names
// are answered with RCUnknownMethod.
type Methods map[string]Method

func (m Methods) ServeCall(ctx context.Context, method string, req []byte) ([]byte, error) {
	f := m[method]
	if f == nil {
		return nil, Errorf(RCUnknownMethod, "unknown method %s", method)
	}
	return f(ctx, req)
}

// Error is an error answered with its own rc; Lua sees false, RC, Message.
type Error struct {
	RC      int
	Message string
}

func (e *Error) Error() string {
	return e.Message
}

// Errorf makes an *Error.  An rc of 0 becomes RCError: errors never look
// like success.
func Errorf(rc int, format string, args ...any) error {
	if rc == 0 {
		rc = RCError
	}
	return &Error{RC: rc, Message: fmt.Sprintf(format, args...)}
}

// ErrCallerGone is the cause of a call's context cancellation when nobody
// waits for the answer any more.
var ErrCallerGone = errors.New("nffi: the caller gave up waiting")

// ErrUnloaded is the cause of a call's context cancellation when the
// runtime was unloaded while the call ran.
var ErrUnloaded = errors.New("nffi: the runtime was unloaded")

// Serve keeps this many pollers waiting for tasks: one of them takes the
// next task while another is busy with a call (a call that blocks never
// leaves the queue without a poller), and more would only wait.
const idlePollers = 2

// how often Serve looks whether callers of running calls gave up
const cancelCheckInterval = 20 * time.Millisecond

// Serve answers the tasks of q with h until the runtime is unloaded.  Then
// it cancels the context of calls still running, waits until they are
// answered, closes h if it is an io.Closer, and returns.  A panic in h is
// recovered and answered with RCPanic.  A stream (rt:__stream in Lua) goes
// to ServeStream when h is a StreamHandler, else to ServeCall, whose answer
// is then the stream's one chunk.
//
// Calls run on a pool of poller goroutines, each of which takes a task
// and runs the handler itself, with no hand-off to another goroutine:
// when a poller takes a task and no other poller is left waiting for the
// next one, it starts another poller first, so that a handler that blocks
// delays no other call.  Pollers beyond idlePollers that find themselves
// idle end.
func Serve(q Queue, h Handler) {
	serveQueue(newCgoQueue(q), h)
}

// queue is what Serve needs of a task queue.  cgoQueue (abi.go) is the
// ABI; the unit tests use a queue in memory.  Nothing else in this file
// calls into the module.
type queue interface {
	// taker makes what one poller takes tasks with.
	taker() taker
	// close frees the queue's memory, once every taker was released.
	close()
	// log writes msg to the nginx error log.
	log(level Level, msg string)
}

// answerTaker is a taker that also answers a task and takes the next one
// in one step (cgoTaker: one crossing into C, so that the poller is back
// in the queue's spin before the caller's next call comes, and no other
// poller needs waking for it).
type answerTaker interface {
	answerTake(t task, rc int, rsp []byte) task
}

// taker takes tasks for one poller goroutine.
type taker interface {
	// take waits for a task and returns it, or nil once the runtime is
	// unloaded and every queued task was taken, and at once from then on.
	// Several takers of one queue take at the same time.
	take() task
	// release frees the taker; it is not used again.
	release()
}

// task is one call taken from a queue: *takenTask on the ABI.  Send and
// ReadChunk block, and are used on stream tasks only.
type task interface {
	Method() string
	Request() []byte
	Cancelled() bool
	Respond(rc int, data []byte)
	IsStream() bool
	Send(chunk []byte) error
	ReadChunk() ([]byte, error)
}

func serveQueue(q queue, h Handler) {
	s := &server{q: q, handler: h, watched: map[*callContext]struct{}{}}
	s.ctx, s.cancel = context.WithCancelCause(context.Background())

	s.idle.Store(idlePollers)
	s.pollers.Add(idlePollers)
	for range idlePollers {
		go s.poll()
	}
	s.pollers.Wait()
	q.close()

	if c, ok := h.(io.Closer); ok {
		s.closeHandler(c)
	}
}

// poll is a poller: it takes tasks and serves them, one at a time, until
// the queue ends or enough other pollers wait.
func (s *server) poll() {
	tk := s.q.taker()
	// also when a handler ends the goroutine (runtime.Goexit): the pool
	// has one poller less, and was given another when this one took the
	// task if none was left waiting
	defer func() {
		tk.release()
		s.pollers.Done()
	}()

	at, _ := tk.(answerTaker)
	t := tk.take()
	for {
		if t == nil {
			// every task was taken: calls still running end early
			s.cancel(ErrUnloaded)
			return
		}
		if s.idle.Add(-1) == 0 {
			s.startPoller()
		}
		rc, rsp, surplus := s.serve(t)
		if at != nil && !surplus {
			t = at.answerTake(t, rc, rsp)
			continue
		}
		t.Respond(rc, rsp)
		if surplus {
			return
		}
		t = tk.take()
	}
}

// backToIdle counts a poller whose handler returned as idle again, unless
// enough others are: then it tells the poller to end.  It runs before the
// answer is sent, so that the caller's next call finds the poller counted.
func (s *server) backToIdle() (surplus bool) {
	if s.idle.Add(1) > idlePollers {
		s.idle.Add(-1)
		return true
	}
	return false
}

func (s *server) startPoller() {
	s.idle.Add(1)
	s.pollers.Add(1)
	go s.poll()
}

// closeHandler runs the handler's Close; a panic there is logged, never
// allowed to end the worker.
func (s *server) closeHandler(c io.Closer) {
	defer func() {
		if v := recover(); v != nil {
			s.logf(LevelErr, "nffi: closing the handler panicked: %v", v)
		}
	}()
	if err := c.Close(); err != nil {
		s.logf(LevelWarn, "nffi: closing the handler: %v", err)
	}
}

func (s *server) logf(level Level, format string, args ...any) {
	s.q.log(level, fmt.Sprintf(format, args...))
}

type server struct {
	q       queue
	handler Handler
	ctx     context.Context
	cancel  context.CancelCauseFunc

	pollers sync.WaitGroup // running
	idle    atomic.Int32   // waiting for a task, or about to

	// contexts whose Done or Err was asked for, and so whose task's
	// "cancelled" flag is looked at every cancelCheckInterval
	mu       sync.Mutex
	watched  map[*callContext]struct{}
	watching bool
}

// serve runs the call of t and returns its answer, for the caller to
// send; see backToIdle for surplus.
func (s *server) serve(t task) (rc int, rsp []byte, surplus bool) {
	ctx := &callContext{server: s, task: t}
	var st *Stream
	answered := false

	// a handler that ends its goroutine (runtime.Goexit) gets no answer
	// from the code below: answer it here
	defer func() {
		if !answered {
			s.unwatch(ctx)
			if st != nil {
				st.finish()
			}
			t.Respond(RCPanic, []byte("handler ended its goroutine"))
		}
	}()

	method := t.Method()
	if _, ok := s.handler.(StreamHandler); ok && t.IsStream() {
		st = &Stream{t: t, call: ctx}
	}
	rsp, err := s.invoke(ctx, method, t.Request(), st)
	answered = true
	// the context first: goroutines the handler left in a Write or Read
	// may be watching it
	s.unwatch(ctx)
	if st != nil {
		st.finish()
	}

	if err != nil {
		rc, rsp = s.errorAnswer(method, err)
	}
	return rc, rsp, s.backToIdle()
}

// errorAnswer turns a handler's error into an answer.  The error is the
// handler's own code (a typed nil *Error, an Error method that panics):
// nothing here may take the worker down.
func (s *server) errorAnswer(method string, err error) (rc int, msg []byte) {
	defer func() {
		if v := recover(); v != nil {
			rc, msg = RCPanic, []byte(fmt.Sprintf(
				"panic while reading the handler's error: %v", v))
		}
	}()

	var e *Error
	if errors.As(err, &e) && e != nil {
		rc = e.RC
		if rc == 0 {
			rc = RCError
		}
		return rc, []byte(e.Message)
	}

	var p *panicError
	if errors.As(err, &p) && p != nil {
		s.logf(LevelErr, "nffi: handler panicked in method %q: %v\n%s",
			method, p.value, p.stack)
		return RCPanic, []byte(p.Error())
	}

	return RCError, []byte(err.Error())
}

type panicError struct {
	value any
	stack []byte
}

func (p *panicError) Error() string {
	return fmt.Sprintf("panic: %v", p.value)
}

// invoke runs the handler: its ServeStream when st is not nil, else its
// ServeCall.  A panic becomes a *panicError.
func (s *server) invoke(ctx context.Context, method string, req []byte, st *Stream) (rsp []byte, err error) {
	defer func() {
		if v := recover(); v != nil {
			rsp, err = nil, &panicError{value: v, stack: debug.Stack()}
		}
	}()
	if st != nil {
		return nil, s.handler.(StreamHandler).ServeStream(ctx, method, req, st)
	}
	return s.handler.ServeCall(ctx, method, req)
}

// callContext is the context of one call.  Most calls never look at it:
// only when Done or Err is first asked for does it get a cancel function
// and join the set of contexts whose task's flag the server checks.
type callContext struct {
	server *server
	task   task
	state  atomic.Pointer[ctxState] // nil until asked for
	ended  bool                     // under server.mu: the call was answered
	gone   bool                     // under server.mu: a stream call saw CLOSED
}

type ctxState struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func (c *callContext) current() context.Context {
	if st := c.state.Load(); st != nil {
		return st.ctx
	}
	return c.server.watch(c)
}

func (c *callContext) Deadline() (time.Time, bool) {
	return c.server.ctx.Deadline()
}

func (c *callContext) Done() <-chan struct{} {
	return c.current().Done()
}

func (c *callContext) Err() error {
	return c.current().Err()
}

// Value is asked for by the context package too (context.Cause, and to
// link a child context to its parent): it answers from the call's own
// context.
func (c *callContext) Value(key any) any {
	return c.current().Value(key)
}

func (c *callContext) String() string {
	return "nffi call context"
}

// watch and unwatch run under s.mu, and so does looking at a task's flag:
// a task is never looked at after unwatch, which comes before its answer.

func (s *server) watch(c *callContext) context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()

	if st := c.state.Load(); st != nil {
		return st.ctx
	}

	ctx, cancel := context.WithCancelCause(s.ctx)
	c.state.Store(&ctxState{ctx: ctx, cancel: cancel})

	if c.ended {
		// asked for after the answer, by a goroutine the handler left
		cancel(context.Canceled)
		return ctx
	}
	if c.gone {
		cancel(ErrCallerGone)
		return ctx
	}

	s.watched[c] = struct{}{}
	if !s.watching {
		s.watching = true
		go s.checkCancelled()
	}
	return ctx
}

func (s *server) unwatch(c *callContext) {
	s.stopWatching(c, &c.ended, context.Canceled)
}

// callerGone cancels the context of a stream call whose Write or Read saw
// that Lua gave up, at once: the task's flag, checked every
// cancelCheckInterval, would tell later.
func (s *server) callerGone(c *callContext) {
	s.stopWatching(c, &c.gone, ErrCallerGone)
}

// stopWatching sets *flag, a field of c under s.mu that tells watch how to
// make a context asked for later, and cancels the context made earlier.
func (s *server) stopWatching(c *callContext, flag *bool, cause error) {
	s.mu.Lock()
	*flag = true
	delete(s.watched, c)
	st := c.state.Load()
	s.mu.Unlock()

	if st != nil {
		st.cancel(cause)
	}
}

// runs while some context is watched
func (s *server) checkCancelled() {
	ticker := time.NewTicker(cancelCheckInterval)
	defer ticker.Stop()

	for range ticker.C {
		s.mu.Lock()
		for c := range s.watched {
			if c.task.Cancelled() {
				delete(s.watched, c)
				c.state.Load().cancel(ErrCallerGone)
			}
		}
		if len(s.watched) == 0 {
			s.watching = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
}
