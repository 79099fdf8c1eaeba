// SPDX-License-Identifier: BSD-2-Clause

package nffi

/*
#include <stdlib.h>
#include "nonblocking_ffi.h"
*/
import "C"

import (
	"fmt"
	"log"
	"strings"
	"unsafe"
)

// Level is an nginx error log level.
type Level int

// The levels of the nginx error log.  Alert, crit and emerg are for
// failures of the process as a whole: a handler's failure is LevelErr.
const (
	LevelEmerg  Level = C.NONBLOCKING_FFI_LOG_EMERG
	LevelAlert  Level = C.NONBLOCKING_FFI_LOG_ALERT
	LevelCrit   Level = C.NONBLOCKING_FFI_LOG_CRIT
	LevelErr    Level = C.NONBLOCKING_FFI_LOG_ERR
	LevelWarn   Level = C.NONBLOCKING_FFI_LOG_WARN
	LevelNotice Level = C.NONBLOCKING_FFI_LOG_NOTICE
	LevelInfo   Level = C.NONBLOCKING_FFI_LOG_INFO
	LevelDebug  Level = C.NONBLOCKING_FFI_LOG_DEBUG
)

// Log writes msg to the error log of the nginx worker, from any goroutine.
// The module hands the message to the worker's main thread, which writes
// it if the error_log level lets it through.
func Log(level Level, msg string) {
	msg = strings.TrimRight(msg, "\n")
	if msg == "" {
		return
	}
	p := C.CString(msg)
	C.ngx_http_lua_nonblocking_ffi_log(C.int(level), p, C.int(len(msg)))
	C.free(unsafe.Pointer(p))
}

// Logf formats like fmt.Sprintf and logs the result.
func Logf(level Level, format string, args ...any) {
	Log(level, fmt.Sprintf(format, args...))
}

// LogWriter is an io.Writer that logs each Write at its level: hand it to
// libraries that log to a writer (log.New, zapcore.AddSync, slog).
type LogWriter Level

func (w LogWriter) Write(p []byte) (int, error) {
	Log(Level(w), string(p))
	return len(p), nil
}

// Logger is a *log.Logger writing to the nginx error log at level, each
// line starting with prefix.
func Logger(level Level, prefix string) *log.Logger {
	return log.New(LogWriter(level), prefix, 0)
}
