// SPDX-License-Identifier: BSD-2-Clause

// Package echo is the smallest handler: it answers each call with its
// request.  cfg "echo" answers the request as it is; "echo,<prefix>"
// answers prefix + request, so one library serves both runtimes.
//
//	local rt = ngx.load_nonblocking_ffi("lib_nonblocking_ffi_go.so", "echo")
//	local ok, res = rt:echo("hello")      -- true, "hello"
//	local ok, res = rt:anything("hello")  -- true, "hello"
//	local ok, res = rt:echo()             -- true, nil
package echo

import (
	"context"

	"github.com/lua-resty-nonblocking-ffi/lua-resty-nonblocking-ffi/sdk/go/nffi"
)

// New is the Factory of the echo handler.
func New(cfg string) (nffi.Handler, error) {
	prefix := []byte(cfg)
	return nffi.HandlerFunc(func(_ context.Context, _ string, req []byte) ([]byte, error) {
		if req == nil || len(prefix) == 0 {
			return req, nil
		}
		return append(append(make([]byte, 0, len(prefix)+len(req)), prefix...), req...), nil
	}), nil
}
