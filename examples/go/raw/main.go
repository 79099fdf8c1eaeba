// SPDX-License-Identifier: BSD-2-Clause

// Command raw is a Go runtime written the way the seed's code sample
// writes one: cgo and the three ABI calls, no SDK.  It is an in-memory
// key-value store:
//
//	local rt = ngx.load_nonblocking_ffi("lib_nonblocking_ffi_go_raw.so",
//	    '{"greeting":"hello"}')            -- the initial keys, as JSON
//	rt:call('{"cmd":"put","key":"k","value":"v"}')   -- true, '{"ok":true}'
//	rt:call('{"cmd":"get","key":"k"}')               -- true, '{"value":"v"}'
//	rt:call('{"cmd":"get","key":"none"}')            -- false, 1, '{"error":"not found"}'
//
// It is a library of its own, with its own Go runtime: never load it into a
// worker that also loads another Go library (one Go runtime per process).
package main

/*
#cgo CFLAGS: -I${SRCDIR}/../../../include
#cgo LDFLAGS: -Wl,--unresolved-symbols=ignore-all
#include <stdlib.h>
#include "nonblocking_ffi.h"
*/
import "C"

import (
	"encoding/json"
	"log"
	"unsafe"
)

type request struct {
	Cmd   string `json:"cmd"`
	Key   string `json:"key"`
	Value string `json:"value"`
}

// State is what the poll goroutine keeps between calls.
type State struct {
	kv map[string]string
}

func (s *State) handle(req *request) (int, map[string]any) {
	switch req.Cmd {
	case "put":
		s.kv[req.Key] = req.Value
		return 0, map[string]any{"ok": true}
	case "get":
		v, ok := s.kv[req.Key]
		if !ok {
			return 1, map[string]any{"error": "not found"}
		}
		return 0, map[string]any{"value": v}
	case "count":
		return 0, map[string]any{"count": len(s.kv)}
	}
	return 2, map[string]any{"error": "unknown cmd " + req.Cmd}
}

//export lib_nonblocking_ffi_init
func lib_nonblocking_ffi_init(cfg *C.char, tq unsafe.Pointer) C.int {
	var initial map[string]string
	data := C.GoString(cfg)
	err := json.Unmarshal([]byte(data), &initial)
	if err != nil {
		log.Println("invalid cfg:", err)
		return -1
	}
	if initial == nil {
		initial = map[string]string{}
	}

	go func() {
		state := &State{kv: initial}
		for {
			task := C.ngx_http_lua_nonblocking_ffi_task_poll(tq)
			if task == nil {
				// unloaded: the queue is done with
				break
			}

			var rlen C.int
			r := C.ngx_http_lua_nonblocking_ffi_get_req(task, &rlen)

			var req request
			rc := 0
			var rsp map[string]any
			if err := json.Unmarshal(C.GoBytes(unsafe.Pointer(r), rlen), &req); err != nil {
				rc, rsp = 3, map[string]any{"error": err.Error()}
			} else {
				rc, rsp = state.handle(&req)
			}

			out, _ := json.Marshal(rsp)
			// C.CString mallocs a NUL-terminated copy: rsp_len 0 says so
			C.ngx_http_lua_nonblocking_ffi_respond(task, C.int(rc), C.CString(string(out)), 0)
		}
	}()

	return 0
}

func main() {}
