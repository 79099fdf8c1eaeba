// SPDX-License-Identifier: BSD-2-Clause

package selftest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lua-resty-nonblocking-ffi/lua-resty-nonblocking-ffi/sdk/go/nffi"
)

// What the streams of this process saw, for the tests to look at through
// stream_stats: the Lua side of a stream is gone before its handler
// notices, and these tell when it did.
var streamStats struct {
	sent    atomic.Int64 // chunks flood sent
	writing atomic.Int64 // flood's Writes in progress
	closed  atomic.Int64 // ErrClosed seen by flood or idle
	gone    atomic.Int64 // handlers whose ctx ended with ErrCallerGone
	running atomic.Int64 // stream handlers running
}

// streams are the selftest's stream methods (rt:__stream in Lua):
//
//	count         "n,size[,ms]": n chunks of size bytes ("a"s, then "b"s,
//	              ...), ms apart
//	stream_echo   writes back every chunk Lua writes, until close_write
//	sink          reads what Lua writes (io.Copy); answers "read N bytes"
//	flood         "size": chunks of size bytes until Lua gives up
//	idle          writes nothing; ends when its ctx does
//	stream_error  a chunk, then nffi.Errorf(7, "failed midway")
//	stream_panic  a chunk, then a panic
func streams() map[string]nffi.StreamMethod {
	return map[string]nffi.StreamMethod{
		"count":       count,
		"stream_echo": echoStream,
		"sink": func(_ context.Context, _ []byte, s *nffi.Stream) error {
			n, err := io.Copy(io.Discard, s)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(s, "read %d bytes", n)
			return err
		},
		"flood": counted(flood),
		"idle": counted(func(ctx context.Context, _ []byte, _ *nffi.Stream) error {
			<-ctx.Done()
			return context.Cause(ctx)
		}),
		"stream_error": func(_ context.Context, _ []byte, s *nffi.Stream) error {
			s.Write([]byte("partial"))
			return nffi.Errorf(7, "failed midway")
		},
		"stream_panic": func(_ context.Context, _ []byte, s *nffi.Stream) error {
			s.Write([]byte("partial"))
			panic("stream boom")
		},
	}
}

// counted counts a stream handler while it runs, and whether its ctx
// ended because Lua gave up.
func counted(f nffi.StreamMethod) nffi.StreamMethod {
	return func(ctx context.Context, req []byte, s *nffi.Stream) error {
		streamStats.running.Add(1)
		defer streamStats.running.Add(-1)
		err := f(ctx, req, s)
		if errors.Is(err, nffi.ErrClosed) {
			streamStats.closed.Add(1)
		}
		if ctx.Err() != nil && context.Cause(ctx) == nffi.ErrCallerGone {
			streamStats.gone.Add(1)
		}
		return err
	}
}

func streamStatsJSON(context.Context, []byte) ([]byte, error) {
	return json.Marshal(map[string]int64{
		"sent": streamStats.sent.Load(), "writing": streamStats.writing.Load(),
		"closed": streamStats.closed.Load(), "gone": streamStats.gone.Load(),
		"running": streamStats.running.Load(),
	})
}

func count(ctx context.Context, req []byte, s *nffi.Stream) error {
	var n, size, ms int
	args := strings.Split(string(req), ",")
	if len(args) < 2 || len(args) > 3 {
		return nffi.Errorf(400, "count wants n,size[,ms]")
	}
	args = append(args, "0")
	for i, p := range []*int{&n, &size, &ms} {
		v, err := strconv.Atoi(args[i])
		if err != nil {
			return nffi.Errorf(400, "count wants n,size[,ms]")
		}
		*p = v
	}

	for i := range n {
		if i > 0 && ms > 0 {
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		chunk := strings.Repeat(string(rune('a'+i%26)), size)
		if _, err := io.WriteString(s, chunk); err != nil {
			return err
		}
	}
	return nil
}

func echoStream(_ context.Context, _ []byte, s *nffi.Stream) error {
	for {
		chunk, err := s.ReadChunk()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := s.Write(chunk); err != nil {
			return err
		}
	}
}

func flood(_ context.Context, req []byte, s *nffi.Stream) error {
	size, err := strconv.Atoi(string(req))
	if err != nil || size < 1 {
		return nffi.Errorf(400, "flood wants a chunk size")
	}
	chunk := make([]byte, size)
	for {
		streamStats.writing.Add(1)
		_, err := s.Write(chunk)
		streamStats.writing.Add(-1)
		if err != nil {
			return err
		}
		streamStats.sent.Add(1)
	}
}
