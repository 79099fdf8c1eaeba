// SPDX-License-Identifier: BSD-2-Clause

package nffi

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeQueue is a queue in memory for serveQueue: what the module does on
// the ABI, without cgo.  It records every answer, every log line and every
// use of the queue that breaks its contract, so that tests can check them.
type fakeQueue struct {
	mu       sync.Mutex
	cond     sync.Cond // broadcast on every change
	pending  []*fakeTask
	unloaded bool
	ended    bool // take returned nil
	closed   int  // close calls
	takers   int  // made
	released int  // released
	waiting  int  // takes waiting for a task
	logs     []logLine
	events   []string // "answer <method>", "close handler", in order
	misuse   []string // contract violations seen
}

type logLine struct {
	level Level
	msg   string
}

type answer struct {
	rc   int
	data []byte
}

type fakeTask struct {
	q      *fakeQueue
	method string
	req    []byte

	// under q.mu
	cancelled      bool
	cancelledCalls int
	answers        []answer
}

func newFakeQueue() *fakeQueue {
	q := &fakeQueue{}
	q.cond.L = &q.mu
	return q
}

// push queues a call of method with req.
func (q *fakeQueue) push(method string, req []byte) *fakeTask {
	t := &fakeTask{q: q, method: method, req: req}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.unloaded {
		panic("push after unload")
	}
	q.pending = append(q.pending, t)
	q.cond.Broadcast()
	return t
}

// unload ends the queue: take hands out what is pending, then nil.
func (q *fakeQueue) unload() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.unloaded = true
	q.cond.Broadcast()
}

// fakeTaker is one poller's taker.
type fakeTaker struct {
	q        *fakeQueue
	released bool
}

func (q *fakeQueue) taker() taker {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed > 0 {
		q.misuse = append(q.misuse, "taker after close")
	}
	q.takers++
	q.cond.Broadcast()
	return &fakeTaker{q: q}
}

func (tk *fakeTaker) take() task {
	q := tk.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if tk.released || q.closed > 0 {
		q.misuse = append(q.misuse, "take after release or close")
		return nil
	}
	q.waiting++
	q.cond.Broadcast()
	for len(q.pending) == 0 && !q.unloaded {
		q.cond.Wait()
	}
	q.waiting--
	q.cond.Broadcast()
	if len(q.pending) == 0 {
		// as on the ABI: nil to every take from now on
		q.ended = true
		return nil
	}
	t := q.pending[0]
	q.pending = q.pending[1:]
	return t
}

func (tk *fakeTaker) release() {
	q := tk.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if tk.released {
		q.misuse = append(q.misuse, "taker released twice")
	}
	tk.released = true
	q.released++
	q.cond.Broadcast()
}

func (q *fakeQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.ended {
		q.misuse = append(q.misuse, "close before take returned nil")
	}
	if q.released != q.takers {
		q.misuse = append(q.misuse, fmt.Sprintf("close with %d of %d "+
			"takers not released", q.takers-q.released, q.takers))
	}
	q.closed++
}

func (q *fakeQueue) log(level Level, msg string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.logs = append(q.logs, logLine{level, msg})
	q.cond.Broadcast()
}

// used checks that t is not used after its answer, as the module would
// have freed or reused it; q.mu is held.
func (t *fakeTask) used(what string) {
	if len(t.answers) > 0 {
		t.q.misuse = append(t.q.misuse, fmt.Sprintf("%s of task %q after "+
			"its answer", what, t.method))
	}
}

func (t *fakeTask) Method() string {
	t.q.mu.Lock()
	defer t.q.mu.Unlock()
	t.used("Method")
	return t.method
}

func (t *fakeTask) Request() []byte {
	t.q.mu.Lock()
	defer t.q.mu.Unlock()
	t.used("Request")
	if t.req == nil {
		return nil
	}
	return append([]byte{}, t.req...)
}

func (t *fakeTask) Cancelled() bool {
	t.q.mu.Lock()
	defer t.q.mu.Unlock()
	t.used("Cancelled")
	t.cancelledCalls++
	t.q.cond.Broadcast()
	return t.cancelled
}

func (t *fakeTask) Respond(rc int, data []byte) {
	t.q.mu.Lock()
	defer t.q.mu.Unlock()
	if data != nil {
		data = append([]byte{}, data...)
	}
	t.answers = append(t.answers, answer{rc, data})
	t.q.events = append(t.q.events, "answer "+t.method)
	t.q.cond.Broadcast()
}

// cancel makes the task look like its caller gave up.
func (t *fakeTask) cancel() {
	t.q.mu.Lock()
	defer t.q.mu.Unlock()
	t.cancelled = true
}

// answer is the task's only answer; the test fails unless there is
// exactly one.
func (t *fakeTask) answer(tb testing.TB) answer {
	tb.Helper()
	t.q.mu.Lock()
	defer t.q.mu.Unlock()
	if len(t.answers) != 1 {
		tb.Fatalf("task %q has %d answers, want 1: %+v", t.method,
			len(t.answers), t.answers)
	}
	return t.answers[0]
}

// isAnswered tells whether the task has an answer yet.
func (t *fakeTask) isAnswered() bool {
	t.q.mu.Lock()
	defer t.q.mu.Unlock()
	return len(t.answers) > 0
}

// waitTimeout bounds every wait of the tests: they wait for events, never
// for a fixed time, and fail if the event does not come.
const waitTimeout = 10 * time.Second

// wait waits until ch is closed or gives a value.
func wait[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		tb.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// waitFor waits until cond, which runs with q.mu held, is true: it is
// looked at again after every change to q.
func (q *fakeQueue) waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	expired := false
	timer := time.AfterFunc(waitTimeout, func() {
		q.mu.Lock()
		expired = true
		q.cond.Broadcast()
		q.mu.Unlock()
	})
	defer timer.Stop()

	q.mu.Lock()
	defer q.mu.Unlock()
	for !cond() {
		if expired {
			tb.Fatalf("timed out waiting for %s", what)
		}
		q.cond.Wait()
	}
}

// waitAnswered waits until every task has an answer.
func (q *fakeQueue) waitAnswered(tb testing.TB, tasks ...*fakeTask) {
	tb.Helper()
	q.waitFor(tb, "answers", func() bool {
		for _, t := range tasks {
			if len(t.answers) == 0 {
				return false
			}
		}
		return true
	})
}

// serve runs serveQueue(q, h) in a goroutine; the channel is closed when
// it returns.  The test's cleanup unloads q, waits for serveQueue and
// checks that q was used by the rules.
func (q *fakeQueue) serve(tb testing.TB, h Handler) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		serveQueue(q, h)
	}()
	tb.Cleanup(func() {
		q.unload()
		select {
		case <-done:
		case <-time.After(waitTimeout):
			tb.Errorf("serveQueue did not return after unload")
			return
		}
		q.checkRules(tb)
	})
	return done
}

// checkRules fails the test for every contract violation seen, and unless
// the queue was closed exactly once, after every taker was released.
func (q *fakeQueue) checkRules(tb testing.TB) {
	tb.Helper()
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, m := range q.misuse {
		tb.Errorf("queue misused: %s", m)
	}
	if q.closed != 1 {
		tb.Errorf("queue closed %d times, want 1", q.closed)
	}
}

// logged tells whether a line at level containing every part was logged.
func (q *fakeQueue) logged(level Level, parts ...string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
next:
	for _, l := range q.logs {
		if l.level != level {
			continue
		}
		for _, p := range parts {
			if !strings.Contains(l.msg, p) {
				continue next
			}
		}
		return true
	}
	return false
}
