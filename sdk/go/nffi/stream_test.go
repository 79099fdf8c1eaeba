// SPDX-License-Identifier: BSD-2-Clause

package nffi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"testing"
)

// These tests run streams through serveQueue on fakeQueue, whose stream
// tasks do what the module does: a window of unread bytes that a Send
// waits on, ErrClosed at once once Lua gave up, io.EOF after
// close_write.  The queue's rules add: no Send or ReadChunk on an
// ordinary task, never two of a kind at once, none after the answer or
// during it.

const window = 1 << 20

func chunkStrings(chunks [][]byte) []string {
	out := make([]string, len(chunks))
	for i, c := range chunks {
		out[i] = string(c)
	}
	return out
}

// Each Write is a chunk, in order, an empty one none; a nil error ends
// the stream with rc 0 and no last chunk.
func TestStreamChunksInOrder(t *testing.T) {
	q := newFakeQueue()
	q.serve(t, StreamFunc(func(_ context.Context, method string, req []byte, s *Stream) error {
		for i := range 3 {
			if _, err := fmt.Fprintf(s, "%s %s %d", method, req, i); err != nil {
				return err
			}
		}
		if n, err := s.Write(nil); n != 0 || err != nil {
			return fmt.Errorf("empty write: %d %v", n, err)
		}
		_, err := s.Write([]byte("a\x00b"))
		return err
	}))
	task := q.pushStream("count", []byte("req"), window)

	got := chunkStrings(task.luaReadAll(t))
	want := []string{"count req 0", "count req 1", "count req 2", "a\x00b"}
	if !slices.Equal(got, want) {
		t.Errorf("chunks %q, want %q", got, want)
	}
	if a := task.answer(t); a.rc != 0 || a.data != nil {
		t.Errorf("answered %d %q, want 0 nil", a.rc, a.data)
	}
}

// A producer faster than Lua waits on the window: the bytes sent and not
// read never pass it, and everything arrives once Lua reads.
func TestStreamWindowBoundsAFastProducer(t *testing.T) {
	const chunk, n, small = 1000, 50, 4500
	q := newFakeQueue()
	q.serve(t, StreamFunc(func(_ context.Context, _ string, _ []byte, s *Stream) error {
		for i := range n {
			if _, err := s.Write(bytes.Repeat([]byte{byte('a' + i%26)}, chunk)); err != nil {
				return err
			}
		}
		return nil
	}))
	task := q.pushStream("flood", nil, small)

	q.waitFor(t, "the producer to wait for room", func() bool {
		return task.sendsWaiting == 1
	})
	q.mu.Lock()
	unread, sent := task.unread, len(task.sent)
	q.mu.Unlock()
	if unread > small || sent != small/chunk {
		t.Errorf("%d chunks, %d bytes unread in a window of %d", sent,
			unread, small)
	}

	var total int
	for i, c := range task.luaReadAll(t) {
		if len(c) != chunk || c[0] != byte('a'+i%26) {
			t.Fatalf("chunk %d: %d bytes of %q", i, len(c), c[:1])
		}
		total += len(c)
	}
	if total != n*chunk {
		t.Errorf("%d bytes arrived, want %d", total, n*chunk)
	}
	if a := task.answer(t); a.rc != 0 {
		t.Errorf("answered %d %q", a.rc, a.data)
	}
}

// Lua gives up while the handler waits in a Write: the Write returns
// ErrClosed, and from then on the handler's ctx is cancelled with the
// cause ErrCallerGone; the stream is still answered, once.
func TestStreamWriteAfterLuaGaveUp(t *testing.T) {
	q := newFakeQueue()
	result := make(chan string, 1)
	q.serve(t, StreamFunc(func(ctx context.Context, _ string, _ []byte, s *Stream) error {
		// ctx asked for before: its check is running
		done := ctx.Done()
		var err error
		for err == nil {
			_, err = s.Write([]byte("0123456789"))
		}
		select {
		case <-done:
		default:
			result <- "ctx not cancelled when Write returned " + err.Error()
			return err
		}
		_, again := s.Write([]byte("x"))
		result <- fmt.Sprintf("%v|%v|%v", errors.Is(err, ErrClosed),
			context.Cause(ctx), again)
		return err
	}))
	task := q.pushStream("flood", nil, 25)
	q.waitFor(t, "the handler to wait for room", func() bool {
		return task.sendsWaiting == 1
	})
	task.luaGiveUp()

	want := fmt.Sprintf("true|%v|%v", ErrCallerGone, ErrClosed)
	if got := wait(t, result, "the handler"); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	q.waitAnswered(t, task)
	if a := task.answer(t); a.rc != RCError || string(a.data) != ErrClosed.Error() {
		t.Errorf("answered %d %q", a.rc, a.data)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if task.closedSeen != 1 {
		t.Errorf("ErrClosed seen %d times by the fake, want 1: Write "+
			"must not call Send again", task.closedSeen)
	}
}

// A ctx first asked for after Lua gave up is cancelled already.
func TestStreamContextAskedForAfterClosed(t *testing.T) {
	q := newFakeQueue()
	result := make(chan error, 1)
	q.serve(t, StreamFunc(func(ctx context.Context, _ string, _ []byte, s *Stream) error {
		_, err := s.ReadChunk()
		select {
		case <-ctx.Done():
			result <- context.Cause(ctx)
		default:
			result <- fmt.Errorf("ctx not cancelled after %v", err)
		}
		return nil
	}))
	task := q.pushStream("read", nil, window)
	q.waitFor(t, "the handler to read", func() bool { return task.reading == 1 })
	task.luaGiveUp()

	if err := wait(t, result, "the handler"); err != ErrCallerGone {
		t.Errorf("cause %v, want ErrCallerGone", err)
	}
	q.waitAnswered(t, task)
}

// The request stream: Read gets the bytes Lua wrote, io.EOF after
// close_write; ReadChunk keeps Lua's chunks whole, also what a Read left
// of one.
func TestStreamReadsWhatLuaWrites(t *testing.T) {
	q := newFakeQueue()
	q.serve(t, Mux{Streams: map[string]StreamMethod{
		"all": func(_ context.Context, _ []byte, s *Stream) error {
			b, err := io.ReadAll(s)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(s, "%q", b)
			return err
		},
		"chunks": func(_ context.Context, _ []byte, s *Stream) error {
			two := make([]byte, 2)
			if n, err := s.Read(two); n != 2 || err != nil {
				return fmt.Errorf("read %d %v", n, err)
			}
			if n, err := s.Read(nil); n != 0 || err != nil {
				return fmt.Errorf("empty read %d %v", n, err)
			}
			fmt.Fprintf(s, "%s", two)
			for {
				chunk, err := s.ReadChunk()
				if err != nil {
					fmt.Fprintf(s, "%v", err)
					_, again := s.Read(two)
					fmt.Fprintf(s, "%v", again)
					return nil
				}
				s.Write(chunk)
			}
		},
	}})
	all := q.pushStream("all", nil, window)
	chunks := q.pushStream("chunks", nil, window)
	for _, task := range []*fakeTask{all, chunks} {
		task.luaWrite("first")
		task.luaWrite("\x00")
		task.luaWrite("last")
		task.luaCloseWrite()
	}

	if got := chunkStrings(all.luaReadAll(t)); !slices.Equal(got,
		[]string{`"first\x00last"`}) {
		t.Errorf("all: %q", got)
	}
	if got := chunkStrings(chunks.luaReadAll(t)); !slices.Equal(got,
		[]string{"fi", "rst", "\x00", "last", "EOF", "EOF"}) {
		t.Errorf("chunks: %q", got)
	}
	for _, task := range []*fakeTask{all, chunks} {
		if a := task.answer(t); a.rc != 0 {
			t.Errorf("%s answered %d %q", task.method, a.rc, a.data)
		}
	}
}

// A Read waiting for Lua's next chunk returns ErrClosed once Lua gives up.
func TestStreamReadAfterLuaGaveUp(t *testing.T) {
	q := newFakeQueue()
	q.serve(t, StreamFunc(func(ctx context.Context, _ string, _ []byte, s *Stream) error {
		_, err := s.Read(make([]byte, 10))
		return fmt.Errorf("read: %w, ctx: %w", err, context.Cause(ctx))
	}))
	task := q.pushStream("read", nil, window)
	q.waitFor(t, "the handler to read", func() bool { return task.reading == 1 })
	task.luaGiveUp()

	q.waitAnswered(t, task)
	want := fmt.Sprintf("read: %v, ctx: %v", ErrClosed, ErrCallerGone)
	if a := task.answer(t); a.rc != RCError || string(a.data) != want {
		t.Errorf("answered %d %q, want %q", a.rc, a.data, want)
	}
}

// Errors and panics mid-stream end it with their rc and message, after
// the chunks sent before them, as they end calls; a panic's stack is
// logged.
func TestStreamErrorsAndPanics(t *testing.T) {
	q := newFakeQueue()
	q.serve(t, Mux{Streams: map[string]StreamMethod{
		"error": func(_ context.Context, _ []byte, s *Stream) error {
			s.Write([]byte("partial"))
			return Errorf(7, "failed midway")
		},
		"panic": func(_ context.Context, _ []byte, s *Stream) error {
			s.Write([]byte("partial"))
			panic("boom mid-stream")
		},
		"goexit": func(_ context.Context, _ []byte, s *Stream) error {
			s.Write([]byte("partial"))
			runtime.Goexit()
			return nil
		},
		"typed-nil": func(_ context.Context, _ []byte, s *Stream) error {
			s.Write([]byte("partial"))
			var e *Error
			return e
		},
	}})
	cases := []struct {
		method string
		rc     int
		msg    string
	}{
		{"error", 7, "failed midway"},
		{"panic", RCPanic, "panic: boom mid-stream"},
		{"goexit", RCPanic, "handler ended its goroutine"},
		{"typed-nil", RCPanic, "panic while reading the handler's error: " +
			"runtime error: invalid memory address or nil pointer dereference"},
	}
	for _, c := range cases {
		task := q.pushStream(c.method, nil, window)
		got := chunkStrings(task.luaReadAll(t))
		if a := task.answer(t); !slices.Equal(got, []string{"partial"}) ||
			a.rc != c.rc || string(a.data) != c.msg {
			t.Errorf("%s: chunks %q, answered %d %q; want %d %q", c.method,
				got, a.rc, a.data, c.rc, c.msg)
		}
	}
	if !q.logged(LevelErr, `nffi: handler panicked in method "panic": `+
		"boom mid-stream", "stream_test.go") {
		t.Error("no [error] with the panic's stack")
	}
}

// A stream handler refuses ordinary calls with a message naming
// rt:__stream; an ordinary handler answers a stream in one chunk.
func TestStreamAndCallKindsMixed(t *testing.T) {
	q := newFakeQueue()
	var h Handler = StreamFunc(func(context.Context, string, []byte, *Stream) error {
		return errors.New("never called")
	})
	q.serve(t, h)
	call := q.push("tokens", nil)
	q.waitAnswered(t, call)
	if a := call.answer(t); a.rc != RCStreamOnly || string(a.data) !=
		`method tokens answers streams only: call it with `+
			`rt:__stream("tokens", req)` {
		t.Errorf("ordinary call of a StreamFunc: answered %d %q", a.rc, a.data)
	}

	q2 := newFakeQueue()
	q2.serve(t, Methods{"echo": func(_ context.Context, req []byte) ([]byte, error) {
		return req, nil
	}})
	stream := q2.pushStream("echo", []byte("whole"), window)
	if chunks := stream.luaReadAll(t); len(chunks) != 0 {
		t.Errorf("chunks %q sent by an ordinary handler", chunks)
	}
	if a := stream.answer(t); a.rc != 0 || string(a.data) != "whole" {
		t.Errorf("stream of an ordinary handler: answered %d %q", a.rc, a.data)
	}
}

// Mux: each kind of method by its map, a call-only method streamed in
// one chunk, unknown names 404.
func TestMux(t *testing.T) {
	q := newFakeQueue()
	q.serve(t, Mux{
		Calls: Methods{
			"get": func(_ context.Context, req []byte) ([]byte, error) {
				return append([]byte("got "), req...), nil
			},
			"fail": func(context.Context, []byte) ([]byte, error) {
				return nil, Errorf(9, "nine")
			},
		},
		Streams: map[string]StreamMethod{
			"watch": func(_ context.Context, req []byte, s *Stream) error {
				s.Write([]byte("event 1"))
				s.Write([]byte("event 2"))
				return nil
			},
		},
	})
	get, watchCall := q.push("get", []byte("k")), q.push("watch", nil)
	nope := q.push("nope", nil)
	watch := q.pushStream("watch", nil, window)
	getStream := q.pushStream("get", []byte("k"), window)
	failStream := q.pushStream("fail", nil, window)
	nopeStream := q.pushStream("nope", nil, window)
	q.waitAnswered(t, get, watchCall, nope)

	if a := get.answer(t); a.rc != 0 || string(a.data) != "got k" {
		t.Errorf("get: %d %q", a.rc, a.data)
	}
	if a := watchCall.answer(t); a.rc != RCStreamOnly {
		t.Errorf("watch called: %d %q", a.rc, a.data)
	}
	if a := nope.answer(t); a.rc != RCUnknownMethod {
		t.Errorf("nope: %d %q", a.rc, a.data)
	}
	for _, c := range []struct {
		task   *fakeTask
		chunks []string
		rc     int
		data   string
	}{
		{watch, []string{"event 1", "event 2"}, 0, ""},
		{getStream, []string{"got k"}, 0, ""},
		{failStream, nil, 9, "nine"},
		{nopeStream, nil, RCUnknownMethod, "unknown method nope"},
	} {
		got := chunkStrings(c.task.luaReadAll(t))
		if a := c.task.answer(t); !slices.Equal(got, c.chunks) ||
			a.rc != c.rc || string(a.data) != c.data {
			t.Errorf("stream %s: %q, %d %q", c.task.method, got, a.rc, a.data)
		}
	}
}

// A stream waiting on a full window delays no ordinary call, queued
// with it or after it.
func TestStreamSlowStreamDoesNotDelayCalls(t *testing.T) {
	q := newFakeQueue()
	q.serve(t, Mux{
		Calls: Methods{"fast": func(context.Context, []byte) ([]byte, error) {
			return []byte("fast"), nil
		}},
		Streams: map[string]StreamMethod{
			"slow": func(_ context.Context, _ []byte, s *Stream) error {
				for range 100 {
					if _, err := s.Write(make([]byte, 100)); err != nil {
						return err
					}
				}
				return nil
			},
		},
	})
	slow := q.pushStream("slow", nil, 100)
	fast1 := q.push("fast", nil)
	q.waitFor(t, "the stream to wait for room", func() bool {
		return slow.sendsWaiting == 1
	})
	q.waitAnswered(t, fast1)
	var fast []*fakeTask
	for range 10 {
		fast = append(fast, q.push("fast", nil))
	}
	q.waitAnswered(t, fast...)
	if slow.isAnswered() {
		t.Fatal("the stream was answered while it waited")
	}
	for _, task := range append(fast, fast1) {
		if a := task.answer(t); a.rc != 0 || string(a.data) != "fast" {
			t.Errorf("fast: %d %q", a.rc, a.data)
		}
	}
	if n := len(slow.luaReadAll(t)); n != 100 {
		t.Errorf("%d chunks of 100", n)
	}
}

// Concurrent Writes take turns, and a Read runs beside them.
func TestStreamConcurrentWrites(t *testing.T) {
	const writers, each = 8, 50
	q := newFakeQueue()
	q.serve(t, StreamFunc(func(_ context.Context, _ string, _ []byte, s *Stream) error {
		var wg sync.WaitGroup
		wg.Add(writers)
		for w := range writers {
			go func() {
				defer wg.Done()
				for i := range each {
					fmt.Fprintf(s, "%d.%d", w, i)
				}
			}()
		}
		chunk, err := s.ReadChunk()
		wg.Wait()
		fmt.Fprintf(s, "read %s %v", chunk, err)
		return nil
	}))
	task := q.pushStream("many", nil, 64)
	task.luaWrite("in")

	chunks := chunkStrings(task.luaReadAll(t))
	if len(chunks) != writers*each+1 || chunks[len(chunks)-1] != "read in <nil>" {
		t.Fatalf("%d chunks, the last %q", len(chunks), chunks[len(chunks)-1])
	}
	// each writer's chunks in its order
	next := make([]int, writers)
	for _, c := range chunks[:writers*each] {
		var w, i int
		if _, err := fmt.Sscanf(c, "%d.%d", &w, &i); err != nil || i != next[w] {
			t.Fatalf("chunk %q out of order", c)
		}
		next[w]++
	}
}

// A goroutine left by the handler: its Write in progress when the handler
// returns delays the answer until it is done (the fake records an answer
// during a Send as misuse), and its later Writes and Reads return
// ErrClosed.
func TestStreamWriteLeftBehind(t *testing.T) {
	q := newFakeQueue()
	tasks := make(chan *fakeTask, 1)
	returned := make(chan struct{})
	later := make(chan struct{})
	results := make(chan string, 2)
	q.serve(t, StreamFunc(func(_ context.Context, _ string, _ []byte, s *Stream) error {
		task := <-tasks
		defer close(returned)
		s.Write([]byte("fills the window"))
		go func() {
			_, err := s.Write([]byte("waits"))
			results <- fmt.Sprint(err)
			<-later
			_, werr := s.Write([]byte("late"))
			_, rerr := s.Read(make([]byte, 1))
			results <- fmt.Sprint(werr, " ", rerr)
		}()
		// return only once the goroutine waits in its Write (the test
		// fails on its own deadline if it never does)
		q.mu.Lock()
		defer q.mu.Unlock()
		for task.sendsWaiting == 0 {
			q.cond.Wait()
		}
		return nil
	}))
	task := q.pushStream("left", nil, 16)
	tasks <- task
	// Lua reads once the handler returned with its goroutine in a Write:
	// an answer before that Write ends would be misuse
	wait(t, returned, "the handler to return")

	got := chunkStrings(task.luaReadAll(t))
	if !slices.Equal(got, []string{"fills the window", "waits"}) {
		t.Errorf("chunks %q", got)
	}
	if r := wait(t, results, "the goroutine's Write"); r != "<nil>" {
		t.Errorf("the Write in progress: %s", r)
	}
	close(later)
	if r, want := wait(t, results, "the goroutine's late calls"),
		fmt.Sprint(ErrClosed, " ", ErrClosed); r != want {
		t.Errorf("after the answer: %s, want %s", r, want)
	}
	if a := task.answer(t); a.rc != 0 {
		t.Errorf("answered %d %q", a.rc, a.data)
	}
}
