// SPDX-License-Identifier: BSD-2-Clause

package nffi

import (
	"fmt"
	"io"
	"slices"
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

	// takers without answerTake, as a queue other than cgoQueue may have
	plainTakers bool
	answerTakes int // answers sent by answerTake
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

	// a stream (pushStream), under q.mu: the module's side of it
	stream       bool
	window       int      // bytes the runtime may send ahead of Lua
	sent         [][]byte // chunks sent, not yet read by Lua
	unread       int      // their bytes
	input        [][]byte // chunks Lua wrote, not yet read by the runtime
	inputEnd     bool     // Lua closed its writing
	gone         bool     // Lua gave up
	sending      int      // Sends in progress
	reading      int      // ReadChunks in progress
	sendsWaiting int      // Sends waiting for room in the window
	closedSeen   int      // ErrClosed returned
}

func newFakeQueue() *fakeQueue {
	q := &fakeQueue{}
	q.cond.L = &q.mu
	return q
}

// push queues a call of method with req.
func (q *fakeQueue) push(method string, req []byte) *fakeTask {
	t := &fakeTask{q: q, method: method, req: req}
	q.add(t)
	return t
}

func (q *fakeQueue) add(t *fakeTask) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.unloaded {
		panic("push after unload")
	}
	q.pending = append(q.pending, t)
	q.cond.Broadcast()
}

// pushStream queues a stream (rt:__stream in Lua) of method with req, whose
// answer holds at most window unread bytes.
func (q *fakeQueue) pushStream(method string, req []byte, window int) *fakeTask {
	t := &fakeTask{q: q, method: method, req: req, stream: true, window: window}
	q.add(t)
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
	if q.plainTakers {
		return plainTaker{&fakeTaker{q: q}}
	}
	return &fakeTaker{q: q}
}

// plainTaker hides fakeTaker's answerTake.
type plainTaker struct {
	taker
}

// answerTake answers t and takes the next task, as cgoTaker does in one
// call into C.
func (tk *fakeTaker) answerTake(t task, rc int, rsp []byte) task {
	t.Respond(rc, rsp)
	tk.q.mu.Lock()
	tk.q.answerTakes++
	tk.q.mu.Unlock()
	return tk.take()
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
	if t.sending > 0 || t.reading > 0 {
		t.q.misuse = append(t.q.misuse, fmt.Sprintf("task %q answered "+
			"during a Send or ReadChunk", t.method))
	}
	if data != nil {
		data = append([]byte{}, data...)
	}
	t.answers = append(t.answers, answer{rc, data})
	t.q.events = append(t.q.events, "answer "+t.method)
	t.q.cond.Broadcast()
}

func (t *fakeTask) IsStream() bool {
	t.q.mu.Lock()
	defer t.q.mu.Unlock()
	t.used("IsStream")
	return t.stream
}

// streamCall checks a Send or ReadChunk and counts it in *busy, which
// must be 0 (one goroutine at a time per direction); the function
// returned ends it.  q.mu is held, and is when end is called.
func (t *fakeTask) streamCall(what string, busy *int) (end func()) {
	t.used(what)
	if !t.stream {
		t.q.misuse = append(t.q.misuse, what+" on an ordinary task")
	}
	if *busy > 0 {
		t.q.misuse = append(t.q.misuse, "two "+what+"s at once")
	}
	*busy++
	return func() {
		*busy--
		t.q.cond.Broadcast()
	}
}

// Send is the blocking stream_send: it waits while the window is full.
func (t *fakeTask) Send(chunk []byte) error {
	q := t.q
	q.mu.Lock()
	defer q.mu.Unlock()
	defer t.streamCall("Send", &t.sending)()
	if len(chunk) == 0 {
		// the ABI reads a length of 0 as "NUL-terminated"
		q.misuse = append(q.misuse, "an empty chunk sent")
	}

	waiting := false
	for !t.gone && t.unread > 0 && t.unread+len(chunk) > t.window {
		if !waiting {
			waiting = true
			t.sendsWaiting++
			q.cond.Broadcast()
		}
		q.cond.Wait()
	}
	if waiting {
		t.sendsWaiting--
	}
	if t.gone {
		t.closedSeen++
		return ErrClosed
	}
	t.sent = append(t.sent, slices.Clone(chunk))
	t.unread += len(chunk)
	return nil
}

// ReadChunk is the blocking stream_read.
func (t *fakeTask) ReadChunk() ([]byte, error) {
	q := t.q
	q.mu.Lock()
	defer q.mu.Unlock()
	defer t.streamCall("ReadChunk", &t.reading)()

	for !t.gone && len(t.input) == 0 && !t.inputEnd {
		q.cond.Wait()
	}
	switch {
	case t.gone:
		t.closedSeen++
		return nil, ErrClosed
	case len(t.input) > 0:
		chunk := t.input[0]
		t.input = t.input[1:]
		return chunk, nil
	}
	return nil, io.EOF
}

// luaRead is Lua's s:read(): the next chunk, or false once the stream is
// answered and every chunk was read.
func (t *fakeTask) luaRead(tb testing.TB) ([]byte, bool) {
	tb.Helper()
	var chunk []byte
	t.q.waitFor(tb, "a chunk of "+t.method, func() bool {
		return len(t.sent) > 0 || len(t.answers) > 0
	})
	t.q.mu.Lock()
	defer t.q.mu.Unlock()
	if len(t.sent) == 0 {
		return nil, false
	}
	chunk, t.sent = t.sent[0], t.sent[1:]
	t.unread -= len(chunk)
	t.q.cond.Broadcast()
	return chunk, true
}

// luaReadAll reads every chunk until the answer.
func (t *fakeTask) luaReadAll(tb testing.TB) [][]byte {
	tb.Helper()
	var chunks [][]byte
	for {
		chunk, ok := t.luaRead(tb)
		if !ok {
			return chunks
		}
		chunks = append(chunks, chunk)
	}
}

// luaWrite is Lua's s:write(chunk); the fake has no window this way.
func (t *fakeTask) luaWrite(chunk string) {
	t.q.mu.Lock()
	defer t.q.mu.Unlock()
	t.input = append(t.input, []byte(chunk))
	t.q.cond.Broadcast()
}

// luaCloseWrite is Lua's s:close_write().
func (t *fakeTask) luaCloseWrite() {
	t.q.mu.Lock()
	defer t.q.mu.Unlock()
	t.inputEnd = true
	t.q.cond.Broadcast()
}

// luaGiveUp is Lua giving up on a stream (timeout, client gone, close):
// Sends and ReadChunks fail from now on, waiting ones are woken.
func (t *fakeTask) luaGiveUp() {
	t.q.mu.Lock()
	defer t.q.mu.Unlock()
	t.gone, t.cancelled = true, true
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
