// SPDX-License-Identifier: BSD-2-Clause

// Package selftest is a handler for the test suite: it shows how the SDK
// answers errors and panics, and checks the traps of running Go inside an
// nginx worker (child processes, environment, never unloading).
//
//	local rt = ngx.load_nonblocking_ffi("lib_nonblocking_ffi_go.so", "selftest")
//
// Methods (requests and answers are text unless said otherwise):
//
//	echo     the request
//	nil      nil
//	error    "" -> plain Go error (rc 1); "N" -> nffi.Errorf(N, "error N")
//	panic    panics with the request
//	goexit   ends the handler's goroutine without answering
//	sleep    waits the request's milliseconds, or until the call's context
//	         ends (timeout, unload): answers "slept N" or the context error
//	exec     runs a JSON argv, e.g. ["sh","-c","exit 3"], with
//	         exec.Command(...).Run(); answers {"exit":3} or fails with the
//	         error (e.g. "no child processes" when nginx reaped the child)
//	getenv   the value of a variable as Go sees it, nil when unset
//	log      writes the request to the nginx error log at [notice]
//	stats    JSON: inits of this handler in this process, pid, Go version
//	remember_NAME  keeps its method name; recall: the names kept, in order
//	stream_stats   JSON: what the streams of this process saw
//
// and stream methods (rt:__stream), listed in streams.go.
package selftest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lua-resty-nonblocking-ffi/lua-resty-nonblocking-ffi/sdk/go/nffi"
)

// runtimes started in this process: it outlives runtime:__unload(), as
// the library is never unloaded
var inits atomic.Int64

// New is the Factory of the selftest handler; cfg "fail" makes it fail.
func New(cfg string) (nffi.Handler, error) {
	if cfg == "fail" {
		return nil, errors.New("asked to fail")
	}
	if cfg == "panic" {
		panic("asked to panic")
	}
	n := inits.Add(1)

	methods := nffi.Methods{
		"echo": func(_ context.Context, req []byte) ([]byte, error) {
			return req, nil
		},
		"nil": func(context.Context, []byte) ([]byte, error) {
			return nil, nil
		},
		"error": func(_ context.Context, req []byte) ([]byte, error) {
			if len(req) == 0 {
				return nil, errors.New("something failed")
			}
			rc, err := strconv.Atoi(string(req))
			if err != nil {
				return nil, err
			}
			return []byte("ignored"), nffi.Errorf(rc, "error %d", rc)
		},
		"panic": func(_ context.Context, req []byte) ([]byte, error) {
			panic(string(req))
		},
		"goexit": func(context.Context, []byte) ([]byte, error) {
			runtime.Goexit()
			return nil, nil
		},
		"sleep":  sleep,
		"exec":   run,
		"getenv": getenv,
		"log": func(_ context.Context, req []byte) ([]byte, error) {
			nffi.Log(nffi.LevelNotice, "selftest: "+string(req))
			return nil, nil
		},
		"stats": func(context.Context, []byte) ([]byte, error) {
			return json.Marshal(map[string]any{
				"inits": inits.Load(), "this": n, "pid": os.Getpid(),
				"go": runtime.Version(),
			})
		},
		"stream_stats": streamStatsJSON,
	}
	return &handler{Mux: nffi.Mux{Calls: methods, Streams: streams()}}, nil
}

// handler is a Mux, and keeps the names of remember_* calls, as recall
// lists them (a name must stay intact after its call was answered).
type handler struct {
	nffi.Mux
	mu   sync.Mutex
	kept []string
}

func (h *handler) ServeCall(ctx context.Context, method string, req []byte) ([]byte, error) {
	switch {
	case strings.HasPrefix(method, "remember_"):
		h.mu.Lock()
		h.kept = append(h.kept, method)
		h.mu.Unlock()
		return nil, nil
	case method == "recall":
		h.mu.Lock()
		defer h.mu.Unlock()
		return []byte(strings.Join(h.kept, " ")), nil
	}
	return h.Mux.ServeCall(ctx, method, req)
}

func sleep(ctx context.Context, req []byte) ([]byte, error) {
	ms, err := strconv.Atoi(string(req))
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer timer.Stop()

	select {
	case <-timer.C:
		return []byte(fmt.Sprintf("slept %d", ms)), nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func run(ctx context.Context, req []byte) ([]byte, error) {
	var argv []string
	if err := json.Unmarshal(req, &argv); err != nil || len(argv) == 0 {
		return nil, nffi.Errorf(400, "exec wants a JSON argv")
	}

	err := exec.CommandContext(ctx, argv[0], argv[1:]...).Run()

	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		return nil, err
	}
	code := 0
	if exit != nil {
		code = exit.ExitCode()
	}
	return json.Marshal(map[string]int{"exit": code})
}

func getenv(_ context.Context, req []byte) ([]byte, error) {
	v, ok := os.LookupEnv(string(req))
	if !ok {
		return nil, nil
	}
	return []byte(v), nil
}
