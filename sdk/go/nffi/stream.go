// SPDX-License-Identifier: BSD-2-Clause

package nffi

import (
	"context"
	"errors"
	"io"
	"sync"
)

// StreamHandler is a Handler that serves streams too:
// rt:__stream(method, req) in Lua becomes ServeStream(ctx, method, req, s).
// The handler writes the answer to s, chunk by chunk, and reads from s
// what Lua writes after req.  A nil error ends the stream with success
// (Lua's read returns nil, 0); an error ends it as ServeCall's errors end
// a call (Lua's read returns nil, rc, message), a panic too.
//
// ServeCall still serves the ordinary calls, runtime:method(req), of the
// same runtime.  A plain Handler given a stream answers it in one chunk.
type StreamHandler interface {
	Handler
	ServeStream(ctx context.Context, method string, req []byte, s *Stream) error
}

// StreamFunc is a function serving the streams of every method.  It
// refuses ordinary calls: Lua sees false, RCStreamOnly, a message naming
// rt:__stream.
type StreamFunc func(ctx context.Context, method string, req []byte, s *Stream) error

func (f StreamFunc) ServeStream(ctx context.Context, method string, req []byte, s *Stream) error {
	return f(ctx, method, req, s)
}

func (f StreamFunc) ServeCall(_ context.Context, method string, _ []byte) ([]byte, error) {
	return nil, streamOnly(method)
}

func streamOnly(method string) error {
	return Errorf(RCStreamOnly, "method %s answers streams only: call it "+
		"with rt:__stream(%q, req)", method, method)
}

// StreamMethod is a function serving the streams of one method.
type StreamMethod func(ctx context.Context, req []byte, s *Stream) error

// Mux is a StreamHandler with a function per method: Calls serves
// ordinary calls, Streams serves streams.  A stream of a method that only
// Calls has is answered in one chunk; an ordinary call of a method that
// only Streams has is answered with RCStreamOnly; other names with
// RCUnknownMethod.
type Mux struct {
	Calls   Methods
	Streams map[string]StreamMethod
}

func (m Mux) ServeCall(ctx context.Context, method string, req []byte) ([]byte, error) {
	if m.Calls[method] == nil && m.Streams[method] != nil {
		return nil, streamOnly(method)
	}
	return m.Calls.ServeCall(ctx, method, req)
}

func (m Mux) ServeStream(ctx context.Context, method string, req []byte, s *Stream) error {
	if f := m.Streams[method]; f != nil {
		return f(ctx, req, s)
	}
	rsp, err := m.Calls.ServeCall(ctx, method, req)
	if err != nil {
		return err
	}
	_, err = s.Write(rsp)
	return err
}

// Stream is a stream call's two directions: Write sends the answer in
// chunks, Read reads what Lua writes.  It is safe for concurrent use: one
// goroutine may read while another writes, and concurrent Writes (or
// Reads) take turns.  It serves until its handler returns: then the
// stream is answered, and from then on Write and Read return ErrClosed.
//
// Write and Read block in the module (each on an OS thread of its own
// while it waits): a slow stream delays no other call.
type Stream struct {
	t    task
	call *callContext // cancelled at once when Lua gave up

	wmu  sync.Mutex
	werr error // under wmu: the first error, returned from then on

	rmu  sync.Mutex
	rest []byte // under rmu: what Read has not returned of the last chunk
	rerr error  // under rmu
}

// Write sends p, copied, as one chunk of the answer, waiting while Lua
// holds a window of unread bytes (the stream's window, 1 MB by default).
// An empty p sends nothing.  It returns ErrClosed once Lua gave up (a
// timeout, the client went away, stream:close()): the handler's ctx is
// cancelled then, with the cause ErrCallerGone.  After an error every
// Write returns it.
func (s *Stream) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()

	if s.werr != nil {
		return 0, s.werr
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err := s.t.Send(p); err != nil {
		s.werr = err
		if errors.Is(err, ErrClosed) {
			s.call.server.callerGone(s.call)
		}
		return 0, err
	}
	return len(p), nil
}

// Read reads what Lua wrote after the request (stream:write()), waiting
// until some came.  It returns io.EOF once Lua called
// stream:close_write() and everything was read, and ErrClosed once Lua
// gave up (the handler's ctx is cancelled then).  The bytes of one chunk
// may take several Reads; ReadChunk keeps Lua's chunks whole.
func (s *Stream) Read(p []byte) (int, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()

	if len(p) == 0 {
		return 0, nil
	}
	if len(s.rest) == 0 {
		chunk, err := s.next()
		if err != nil {
			return 0, err
		}
		s.rest = chunk
	}
	n := copy(p, s.rest)
	s.rest = s.rest[n:]
	return n, nil
}

// ReadChunk reads the next chunk as Lua wrote it with one stream:write()
// (or what a Read left of it), with the errors of Read.
func (s *Stream) ReadChunk() ([]byte, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()

	if len(s.rest) > 0 {
		chunk := s.rest
		s.rest = nil
		return chunk, nil
	}
	return s.next()
}

// next reads a chunk; s.rmu is held.
func (s *Stream) next() ([]byte, error) {
	if s.rerr != nil {
		return nil, s.rerr
	}
	chunk, err := s.t.ReadChunk()
	if err != nil {
		s.rerr = err
		if errors.Is(err, ErrClosed) {
			s.call.server.callerGone(s.call)
		}
		return nil, err
	}
	return chunk, nil
}

// finish ends the use of the task, before its answer: it waits for a Write
// or Read in progress (a goroutine the handler left behind may still be in
// one, and the task must not be used after its answer), and makes every
// later one return ErrClosed.
func (s *Stream) finish() {
	s.wmu.Lock()
	s.werr = ErrClosed
	s.wmu.Unlock()

	s.rmu.Lock()
	s.rest, s.rerr = nil, ErrClosed
	s.rmu.Unlock()
}

var _ io.ReadWriter = (*Stream)(nil)
