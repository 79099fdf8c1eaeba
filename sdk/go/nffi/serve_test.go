// SPDX-License-Identifier: BSD-2-Clause

package nffi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

// These tests run serveQueue, the code behind Serve, on fakeQueue: the
// pool of pollers, the context of a call and the answers to broken
// handlers.  Each test's cleanup checks that the queue was used by its
// rules: polled until its end, closed once after every taker was
// released, no task used after its answer.

// closingHandler is a Handler that is an io.Closer.
type closingHandler struct {
	Handler
	close func() error
}

func (h closingHandler) Close() error {
	return h.close()
}

// Every task is served and answered exactly once, all at once when they
// all block; the queued tasks are drained after unload, and then Serve
// returns.  Calls that never look at ctx never have their task's
// "cancelled" flag read.
func TestServeAll(t *testing.T) {
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("plainTakers=%v", plain), func(t *testing.T) {
			serveAll(t, plain)
		})
	}
}

// serveAll: with takers that answer and take in one step (as cgoQueue's)
// or that only take.
func serveAll(t *testing.T, plain bool) {
	const n = 200
	q := newFakeQueue()
	q.plainTakers = plain

	// every handler waits until all n run at once: calls served one after
	// the other, or by a fixed number of pollers, never get there
	var running sync.WaitGroup
	running.Add(n)
	h := HandlerFunc(func(_ context.Context, method string, req []byte) ([]byte, error) {
		running.Done()
		running.Wait()
		return append([]byte(method+":"), req...), nil
	})

	tasks := make([]*fakeTask, n)
	for i := range tasks {
		tasks[i] = q.push("echo", []byte(fmt.Sprint(i)))
	}
	q.unload()

	wait(t, q.serve(t, h), "Serve to return")

	q.mu.Lock()
	defer q.mu.Unlock()
	for i, task := range tasks {
		if len(task.answers) != 1 {
			t.Fatalf("task %d has %d answers, want 1", i, len(task.answers))
		}
		a := task.answers[0]
		if a.rc != 0 || string(a.data) != fmt.Sprintf("echo:%d", i) {
			t.Errorf("task %d answered %d %q", i, a.rc, a.data)
		}
		if task.cancelledCalls != 0 {
			t.Errorf("task %d: Cancelled() read %d times by a call that "+
				"never used ctx", i, task.cancelledCalls)
		}
	}
	if q.takers < n {
		t.Errorf("%d pollers served %d calls that all ran at once", q.takers, n)
	}
	if plain != (q.answerTakes == 0) {
		t.Errorf("%d answers sent by answerTake with plainTakers %v",
			q.answerTakes, plain)
	}
}

// A call whose caller gave up gets its ctx cancelled with ErrCallerGone;
// another call watched at the same time is left alone.
func TestServeCallerGone(t *testing.T) {
	q := newFakeQueue()
	started := make(chan string, 2)
	release := make(chan struct{})
	h := Methods{
		"gone": func(ctx context.Context, _ []byte) ([]byte, error) {
			done := ctx.Done()
			started <- "gone"
			<-done
			return nil, context.Cause(ctx)
		},
		"stay": func(ctx context.Context, _ []byte) ([]byte, error) {
			done := ctx.Done()
			started <- "stay"
			select {
			case <-done:
				return nil, fmt.Errorf("cancelled: %w", context.Cause(ctx))
			case <-release:
				return []byte("stayed"), nil
			}
		},
	}
	q.serve(t, h)
	gone := q.push("gone", nil)
	stay := q.push("stay", nil)
	wait(t, started, "a call to start")
	wait(t, started, "a call to start")

	gone.cancel()
	q.waitAnswered(t, gone)
	if a := gone.answer(t); a.rc != RCError ||
		string(a.data) != ErrCallerGone.Error() {
		t.Errorf("gone: answered %d %q, want the cause ErrCallerGone",
			a.rc, a.data)
	}

	// two more reads of stay's flag: the check round that saw gone
	// cancelled has ended, and stay must still be running
	q.mu.Lock()
	reads := stay.cancelledCalls
	q.mu.Unlock()
	q.waitFor(t, "two more checks of stay", func() bool {
		return stay.cancelledCalls >= reads+2 || len(stay.answers) > 0
	})
	if stay.isAnswered() {
		a := stay.answer(t)
		t.Fatalf("stay was cancelled with gone: answered %d %q", a.rc, a.data)
	}

	close(release)
	q.waitAnswered(t, stay)
	if a := stay.answer(t); a.rc != 0 || string(a.data) != "stayed" {
		t.Errorf("stay: answered %d %q", a.rc, a.data)
	}
}

// Unload: Serve cancels the ctx of the calls still running with
// ErrUnloaded, waits for their answers, then closes the handler, then
// returns.
func TestServeUnload(t *testing.T) {
	q := newFakeQueue()
	started := make(chan struct{})
	h := closingHandler{
		Handler: HandlerFunc(func(ctx context.Context, _ string, _ []byte) ([]byte, error) {
			done := ctx.Done()
			close(started)
			<-done
			return []byte("cause: " + context.Cause(ctx).Error()), nil
		}),
		close: func() error {
			q.mu.Lock()
			defer q.mu.Unlock()
			q.events = append(q.events, "close handler")
			return nil
		},
	}
	done := q.serve(t, h)
	long := q.push("long", nil)
	wait(t, started, "the call to start")

	q.unload()
	wait(t, done, "Serve to return")

	// read when Serve has returned: the answer and the Close are there
	if a := long.answer(t); a.rc != 0 ||
		string(a.data) != "cause: "+ErrUnloaded.Error() {
		t.Errorf("long: answered %d %q, want the cause ErrUnloaded",
			a.rc, a.data)
	}
	q.mu.Lock()
	events := slices.Clone(q.events)
	q.mu.Unlock()
	if want := []string{"answer long", "close handler"}; !slices.Equal(events, want) {
		t.Errorf("events %q, want %q", events, want)
	}
}

// A panic (or runtime.Goexit) in a handler is answered with RCPanic and
// its message; a panic's stack goes to the log at LevelErr.
func TestServePanics(t *testing.T) {
	q := newFakeQueue()
	h := Methods{
		"panic": func(context.Context, []byte) ([]byte, error) {
			panic("boom")
		},
		"panic-error": func(context.Context, []byte) ([]byte, error) {
			panic(errors.New("bad"))
		},
		"goexit": func(context.Context, []byte) ([]byte, error) {
			runtime.Goexit()
			return nil, nil
		},
	}
	q.serve(t, h)
	tasks := []*fakeTask{q.push("panic", nil), q.push("panic-error", nil),
		q.push("goexit", nil)}
	q.waitAnswered(t, tasks...)

	for i, want := range []string{"panic: boom", "panic: bad",
		"handler ended its goroutine"} {
		if a := tasks[i].answer(t); a.rc != RCPanic || string(a.data) != want {
			t.Errorf("%s: answered %d %q, want %d %q", tasks[i].method,
				a.rc, a.data, RCPanic, want)
		}
	}
	if !q.logged(LevelErr, `nffi: handler panicked in method "panic": boom`,
		"goroutine ", "serve_test.go") {
		t.Error("no [error] with the panic's stack")
	}
}

type panickyErrorAnswer struct{}

func (panickyErrorAnswer) Error() string { panic("no message today") }

// A broken error (a typed nil *Error, an Error method that panics) is
// answered with RCPanic.
func TestServeBrokenErrors(t *testing.T) {
	q := newFakeQueue()
	h := Methods{
		"typed-nil": func(context.Context, []byte) ([]byte, error) {
			var e *Error
			return nil, e
		},
		"panicky": func(context.Context, []byte) ([]byte, error) {
			return nil, panickyErrorAnswer{}
		},
	}
	q.serve(t, h)
	typedNil, panicky := q.push("typed-nil", nil), q.push("panicky", nil)
	q.waitAnswered(t, typedNil, panicky)

	if a := typedNil.answer(t); a.rc != RCPanic || !strings.HasPrefix(
		string(a.data), "panic while reading the handler's error: ") ||
		!strings.Contains(string(a.data), "nil pointer") {
		t.Errorf("typed nil *Error: answered %d %q", a.rc, a.data)
	}
	if a := panicky.answer(t); a.rc != RCPanic || string(a.data) !=
		"panic while reading the handler's error: no message today" {
		t.Errorf("panicking Error(): answered %d %q", a.rc, a.data)
	}
}

// Methods answers a method it has no function for with 404.
func TestServeUnknownMethod(t *testing.T) {
	q := newFakeQueue()
	q.serve(t, Methods{"up": func(context.Context, []byte) ([]byte, error) {
		return []byte("up"), nil
	}})
	down, up := q.push("down", []byte("x")), q.push("up", nil)
	q.waitAnswered(t, down, up)

	if a := down.answer(t); a.rc != RCUnknownMethod ||
		string(a.data) != "unknown method down" {
		t.Errorf("down: answered %d %q", a.rc, a.data)
	}
	if a := up.answer(t); a.rc != 0 || string(a.data) != "up" {
		t.Errorf("up: answered %d %q", a.rc, a.data)
	}
}

// The answers of docs/go.md's table: nil and empty stay apart, an *Error
// (also wrapped) gives its rc, other errors RCError.
func TestServeAnswers(t *testing.T) {
	q := newFakeQueue()
	q.serve(t, Methods{
		"echo":  func(_ context.Context, req []byte) ([]byte, error) { return req, nil },
		"nil":   func(context.Context, []byte) ([]byte, error) { return nil, nil },
		"empty": func(context.Context, []byte) ([]byte, error) { return []byte{}, nil },
		"plain": func(context.Context, []byte) ([]byte, error) {
			return []byte("ignored"), errors.New("plain")
		},
		"rc7": func(context.Context, []byte) ([]byte, error) {
			return nil, fmt.Errorf("wrapped: %w", Errorf(7, "seven"))
		},
		"rc0": func(context.Context, []byte) ([]byte, error) {
			return nil, &Error{Message: "zero"}
		},
	})
	cases := []struct {
		method string
		req    []byte
		rc     int
		data   []byte
	}{
		{"echo", []byte("x\x00y"), 0, []byte("x\x00y")},
		{"echo", nil, 0, nil},
		{"nil", nil, 0, nil},
		{"empty", nil, 0, []byte{}},
		{"plain", nil, RCError, []byte("plain")},
		{"rc7", nil, 7, []byte("seven")},
		{"rc0", nil, RCError, []byte("zero")},
	}
	tasks := make([]*fakeTask, len(cases))
	for i, c := range cases {
		tasks[i] = q.push(c.method, c.req)
	}
	q.waitAnswered(t, tasks...)

	for i, c := range cases {
		a := tasks[i].answer(t)
		if a.rc != c.rc || !bytes.Equal(a.data, c.data) ||
			(a.data == nil) != (c.data == nil) {
			t.Errorf("%s(%q): answered %d %q (nil %v), want %d %q (nil %v)",
				c.method, c.req, a.rc, a.data, a.data == nil, c.rc, c.data,
				c.data == nil)
		}
	}
}

// A call that blocks delays no other call: not one queued with it, not
// one queued later.
func TestServeSlowCallDoesNotDelayOthers(t *testing.T) {
	q := newFakeQueue()
	started := make(chan struct{})
	release := make(chan struct{})
	h := Methods{
		"slow": func(context.Context, []byte) ([]byte, error) {
			close(started)
			<-release
			return []byte("slow"), nil
		},
		"fast": func(context.Context, []byte) ([]byte, error) {
			return []byte("fast"), nil
		},
	}
	slow, fast1 := q.push("slow", nil), q.push("fast", nil)
	q.serve(t, h)
	wait(t, started, "the slow call to start")
	q.waitAnswered(t, fast1)
	fast2 := q.push("fast", nil)
	q.waitAnswered(t, fast2)

	if slow.isAnswered() {
		t.Fatal("the slow call was answered before it was released")
	}

	close(release)
	q.waitAnswered(t, slow)
	for _, task := range []*fakeTask{slow, fast1, fast2} {
		if a := task.answer(t); a.rc != 0 || string(a.data) != task.method {
			t.Errorf("%s: answered %d %q", task.method, a.rc, a.data)
		}
	}
}

// A goroutine that the handler left behind may use ctx after the answer:
// it is cancelled already, and the task is not looked at again.
func TestServeContextAfterAnswer(t *testing.T) {
	q := newFakeQueue()
	later := make(chan struct{})
	result := make(chan error, 1)
	q.serve(t, HandlerFunc(func(ctx context.Context, _ string, _ []byte) ([]byte, error) {
		go func() {
			<-later
			select {
			case <-ctx.Done():
				result <- context.Cause(ctx)
			default:
				result <- errors.New("ctx not cancelled after the answer")
			}
		}()
		return []byte("ok"), nil
	}))
	task := q.push("m", nil)
	q.waitAnswered(t, task)
	close(later)

	if err := wait(t, result, "the left goroutine"); err != context.Canceled {
		t.Errorf("ctx after the answer: cause %v, want context.Canceled", err)
	}
	if a := task.answer(t); a.rc != 0 || string(a.data) != "ok" {
		t.Errorf("answered %d %q", a.rc, a.data)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if task.cancelledCalls != 0 {
		t.Errorf("Cancelled() read %d times", task.cancelledCalls)
	}
}

// A Close that fails is logged at LevelWarn, one that panics at LevelErr;
// Serve returns either way.
func TestServeCloseFails(t *testing.T) {
	for _, c := range []struct {
		name  string
		close func() error
		level Level
		msg   string
	}{
		{"error", func() error { return errors.New("still open") },
			LevelWarn, "nffi: closing the handler: still open"},
		{"panic", func() error { panic("close boom") },
			LevelErr, "nffi: closing the handler panicked: close boom"},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := newFakeQueue()
			done := q.serve(t, closingHandler{
				Handler: HandlerFunc(func(context.Context, string, []byte) ([]byte, error) {
					return nil, nil
				}),
				close: c.close,
			})
			q.unload()
			wait(t, done, "Serve to return")
			if !q.logged(c.level, c.msg) {
				t.Errorf("not logged at level %d: %q", c.level, c.msg)
			}
		})
	}
}

// live is the number of pollers running: takers made and not released.
// q.mu is held.
func (q *fakeQueue) live() int {
	return q.takers - q.released
}

// Calls one after the other are served by the pollers that Serve starts
// with: none is started per call, and idlePollers wait between calls.
func TestServeSequentialCallsStartNoPoller(t *testing.T) {
	q := newFakeQueue()
	q.serve(t, Methods{"echo": func(_ context.Context, req []byte) ([]byte, error) {
		return req, nil
	}})
	for i := range 100 {
		task := q.push("echo", []byte(fmt.Sprint(i)))
		q.waitAnswered(t, task)
		if a := task.answer(t); a.rc != 0 || string(a.data) != fmt.Sprint(i) {
			t.Fatalf("call %d answered %d %q", i, a.rc, a.data)
		}
	}
	q.waitFor(t, "the pollers to wait", func() bool {
		return q.waiting == idlePollers
	})
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.takers != idlePollers {
		t.Errorf("100 sequential calls made %d pollers, want %d", q.takers,
			idlePollers)
	}
}

// However many calls block, a poller waits for the next task, and a fast
// call is answered at once; once they end, the surplus pollers end too.
func TestServeBlockedCallsLeaveAPollerWaiting(t *testing.T) {
	const blocked = 5
	q := newFakeQueue()
	started := make(chan struct{}, blocked)
	release := make(chan struct{})
	q.serve(t, Methods{
		"block": func(context.Context, []byte) ([]byte, error) {
			started <- struct{}{}
			<-release
			return []byte("block"), nil
		},
		"fast": func(context.Context, []byte) ([]byte, error) {
			return []byte("fast"), nil
		},
	})

	var slow []*fakeTask
	for i := range blocked {
		slow = append(slow, q.push("block", nil))
		wait(t, started, "a blocking call to start")
		q.waitFor(t, "a poller to wait", func() bool { return q.waiting > 0 })

		fast := q.push("fast", nil)
		q.waitAnswered(t, fast)
		if a := fast.answer(t); a.rc != 0 || string(a.data) != "fast" {
			t.Fatalf("fast call with %d blocked answered %d %q", i+1, a.rc,
				a.data)
		}
	}
	for _, task := range slow {
		if task.isAnswered() {
			t.Fatal("a blocked call was answered before it was released")
		}
	}

	close(release)
	q.waitAnswered(t, slow...)
	q.waitFor(t, "the pool to shrink", func() bool {
		return q.live() == idlePollers && q.waiting == idlePollers
	})
}

// A handler that ends its goroutine takes a poller with it, and the pool
// still serves a call that blocks and a fast one at the same time.
func TestServeGoexitLeavesThePoolServing(t *testing.T) {
	q := newFakeQueue()
	started := make(chan struct{})
	release := make(chan struct{})
	q.serve(t, Methods{
		"goexit": func(context.Context, []byte) ([]byte, error) {
			runtime.Goexit()
			return nil, nil
		},
		"block": func(context.Context, []byte) ([]byte, error) {
			close(started)
			<-release
			return []byte("block"), nil
		},
		"fast": func(context.Context, []byte) ([]byte, error) {
			return []byte("fast"), nil
		},
	})
	for range idlePollers + 1 {
		task := q.push("goexit", nil)
		q.waitAnswered(t, task)
		if a := task.answer(t); a.rc != RCPanic {
			t.Fatalf("goexit answered %d %q", a.rc, a.data)
		}
	}

	slow := q.push("block", nil)
	wait(t, started, "the blocking call to start")
	fast := q.push("fast", nil)
	q.waitAnswered(t, fast)
	if slow.isAnswered() {
		t.Fatal("the blocked call was answered before it was released")
	}
	close(release)
	q.waitAnswered(t, slow)
}
