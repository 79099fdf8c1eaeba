// SPDX-License-Identifier: BSD-2-Clause

package nffi

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// These tests cover what runs without nginx; the ABI calls themselves are
// tested end to end by tests/test_go.py against a real nginx.

func TestSplitCfg(t *testing.T) {
	for _, c := range []struct{ cfg, name, rest string }{
		{"echo", "echo", ""},
		{"echo,", "echo", ""},
		{" etcd ,{\"a\":1,\"b\":2}", "etcd", "{\"a\":1,\"b\":2}"},
		{"x,a,b,c", "x", "a,b,c"},
		{"", "", ""},
		{",rest", "", "rest"},
	} {
		name, rest := SplitCfg(c.cfg)
		if name != c.name || rest != c.rest {
			t.Errorf("SplitCfg(%q) = %q, %q; want %q, %q", c.cfg, name, rest,
				c.name, c.rest)
		}
	}
}

func TestErrorf(t *testing.T) {
	err := Errorf(7, "error %d", 7)
	var e *Error
	if !errors.As(fmt.Errorf("wrapped: %w", err), &e) || e.RC != 7 ||
		e.Message != "error 7" || err.Error() != "error 7" {
		t.Errorf("Errorf(7) = %#v", err)
	}
	if Errorf(0, "x").(*Error).RC != RCError {
		t.Error("Errorf(0) must not look like success")
	}
}

func TestMethods(t *testing.T) {
	m := Methods{"up": func(_ context.Context, req []byte) ([]byte, error) {
		return append([]byte("up:"), req...), nil
	}}
	rsp, err := m.ServeCall(context.Background(), "up", []byte("x"))
	if string(rsp) != "up:x" || err != nil {
		t.Errorf("up: %q %v", rsp, err)
	}
	_, err = m.ServeCall(context.Background(), "down", nil)
	var e *Error
	if !errors.As(err, &e) || e.RC != RCUnknownMethod ||
		e.Message != "unknown method down" {
		t.Errorf("down: %v", err)
	}
}

func TestInvokeRecoversPanics(t *testing.T) {
	s := &server{handler: HandlerFunc(func(context.Context, string, []byte) ([]byte, error) {
		panic("boom")
	})}
	rsp, err := s.invoke(context.Background(), "m", nil, nil)
	var p *panicError
	if rsp != nil || !errors.As(err, &p) || err.Error() != "panic: boom" ||
		len(p.stack) == 0 {
		t.Errorf("invoke = %q, %v", rsp, err)
	}
}

func TestRegisterRejectsBadNames(t *testing.T) {
	f := func(string) (Handler, error) { return nil, nil }
	for _, name := range []string{"", "a,b", "a b"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q) did not panic", name)
				}
			}()
			Register(name, f)
		}()
	}
	Register("test-twice", f)
	defer func() {
		if recover() == nil {
			t.Error("registering a name twice did not panic")
		}
	}()
	Register("test-twice", f)
}

type panickyError struct{}

func (panickyError) Error() string { panic("no message today") }

func TestErrorAnswerSurvivesBrokenErrors(t *testing.T) {
	s := &server{q: newFakeQueue()}
	var typedNil *Error
	rc, msg := s.errorAnswer("m", typedNil)
	if rc != RCPanic || string(msg) == "" {
		t.Errorf("typed nil *Error: rc %d, %q", rc, msg)
	}

	rc, msg = s.errorAnswer("m", panickyError{})
	if rc != RCPanic ||
		string(msg) != "panic while reading the handler's error: no message today" {
		t.Errorf("panicking Error(): rc %d, %q", rc, msg)
	}

	rc, msg = s.errorAnswer("m", &Error{RC: 7, Message: "seven"})
	if rc != 7 || string(msg) != "seven" {
		t.Errorf("*Error: rc %d, %q", rc, msg)
	}

	rc, msg = s.errorAnswer("m", errors.New("plain"))
	if rc != RCError || string(msg) != "plain" {
		t.Errorf("plain error: rc %d, %q", rc, msg)
	}
}
