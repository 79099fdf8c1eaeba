// SPDX-License-Identifier: BSD-2-Clause

//! The C ABI of `include/nonblocking_ffi.h`, and the only module of the
//! crate with `unsafe` code.  Everything above it is safe Rust.
//!
//! The functions are exported by the nginx module, which nginx loads with
//! `RTLD_GLOBAL`: they stay undefined in a runtime library and the dynamic
//! linker resolves them when Lua loads it.  Unit tests link `fake.rs`
//! instead, a queue in memory with the same symbols.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::io;
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::stream::{StreamError, TrySendError};

/// The ABI version this crate is written for: streams need 4 (queue_fd
/// and task_take came with 3).
pub const ABI_VERSION: i32 = 4;

/// How many tasks one batch poll takes at most.
pub const BATCH: usize = 64;

extern "C" {
    fn ngx_http_lua_nonblocking_ffi_task_poll(tq: *mut c_void) -> *mut c_void;
    fn ngx_http_lua_nonblocking_ffi_get_req(tsk: *mut c_void, len: *mut c_int) -> *mut c_char;
    fn ngx_http_lua_nonblocking_ffi_respond(
        tsk: *mut c_void,
        rc: c_int,
        rsp: *mut c_char,
        rsp_len: c_int,
    );
    fn ngx_http_lua_nonblocking_ffi_abi_version() -> c_int;
    fn ngx_http_lua_nonblocking_ffi_task_poll_batch(
        tq: *mut c_void,
        tasks: *mut *mut c_void,
        max: c_int,
    ) -> c_int;
    fn ngx_http_lua_nonblocking_ffi_get_method(tsk: *mut c_void, len: *mut c_int) -> *const c_char;
    fn ngx_http_lua_nonblocking_ffi_task_cancelled(tsk: *mut c_void) -> c_int;
    fn ngx_http_lua_nonblocking_ffi_log(level: c_int, msg: *const c_char, len: c_int);
    fn ngx_http_lua_nonblocking_ffi_init_error(tq: *mut c_void, msg: *const c_char, len: c_int);
    fn ngx_http_lua_nonblocking_ffi_queue_fd(tq: *mut c_void) -> c_int;
    fn ngx_http_lua_nonblocking_ffi_task_take(
        tq: *mut c_void,
        tasks: *mut *mut c_void,
        max: c_int,
    ) -> c_int;
    fn ngx_http_lua_nonblocking_ffi_task_is_stream(tsk: *mut c_void) -> c_int;
    fn ngx_http_lua_nonblocking_ffi_stream_send(
        tsk: *mut c_void,
        chunk: *mut c_char,
        len: c_int,
    ) -> c_int;
    fn ngx_http_lua_nonblocking_ffi_stream_try_send(
        tsk: *mut c_void,
        chunk: *mut c_char,
        len: c_int,
    ) -> c_int;
    fn ngx_http_lua_nonblocking_ffi_stream_read(
        tsk: *mut c_void,
        chunk: *mut *mut c_char,
        len: *mut c_int,
    ) -> c_int;
    fn ngx_http_lua_nonblocking_ffi_stream_try_read(
        tsk: *mut c_void,
        chunk: *mut *mut c_char,
        len: *mut c_int,
    ) -> c_int;
    fn ngx_http_lua_nonblocking_ffi_stream_fd(tsk: *mut c_void) -> c_int;
}

// results of the stream functions (NONBLOCKING_FFI_STREAM_*)
const STREAM_OK: c_int = 0;
const STREAM_END: c_int = 1;
const STREAM_AGAIN: c_int = -1;
const STREAM_CLOSED: c_int = -2;

/// The ABI version of the loaded nginx module.
pub fn abi_version() -> i32 {
    // SAFETY: takes no argument, reads a constant of the module.
    unsafe { ngx_http_lua_nonblocking_ffi_abi_version() }
}

/// Writes `msg` to the nginx error log at `level` (1 emerg .. 8 debug),
/// from any thread; the module copies it.
pub fn log(level: i32, msg: &str) {
    if msg.is_empty() {
        return; // a length of 0 would mean "up to a NUL"
    }
    let len = msg.len().min(i32::MAX as usize) as c_int;
    // SAFETY: msg points to len readable bytes for the whole call; the
    // module copies them and keeps no pointer.
    unsafe { ngx_http_lua_nonblocking_ffi_log(level, msg.as_ptr().cast(), len) }
}

/// The queue of one runtime: the `tq` of `lib_nonblocking_ffi_init`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queue(NonNull<c_void>);

// SAFETY: every queue function of the ABI is thread-safe, and the queue
// lives until the worker exits (after unload it only answers "unloaded").
unsafe impl Send for Queue {}
// SAFETY: as above, the functions take the queue from any thread at once.
unsafe impl Sync for Queue {}

/// What one non-blocking take found.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// this many tasks were appended
    Tasks(usize),
    /// none waits now
    Empty,
    /// the runtime is unloaded and drained: stop using the queue
    Unloaded,
}

impl Queue {
    /// Wraps the `tq` pointer the module hands to `lib_nonblocking_ffi_init`.
    ///
    /// # Safety
    ///
    /// `tq` must be that pointer (or NULL, which gives `None`).
    pub unsafe fn from_raw(tq: *mut c_void) -> Option<Queue> {
        NonNull::new(tq).map(Queue)
    }

    /// The raw `tq` pointer.
    pub fn as_ptr(self) -> *mut c_void {
        self.0.as_ptr()
    }

    /// Takes the next task, waiting until there is one; `None` once the
    /// runtime is unloaded and drained.
    pub fn poll(self) -> Option<Task> {
        // SAFETY: self is a queue of the module (from_raw's contract).
        let p = unsafe { ngx_http_lua_nonblocking_ffi_task_poll(self.as_ptr()) };
        NonNull::new(p).map(Task::new)
    }

    /// Waits for tasks and appends up to `BATCH` of them to `tasks`;
    /// `false` once the runtime is unloaded and drained.
    pub fn poll_batch(self, tasks: &mut Vec<Task>) -> bool {
        let mut raw = [ptr::null_mut::<c_void>(); BATCH];
        // SAFETY: raw has room for BATCH pointers, the most the module
        // writes for that max; self is a queue of the module.
        let n = unsafe {
            ngx_http_lua_nonblocking_ffi_task_poll_batch(
                self.as_ptr(),
                raw.as_mut_ptr(),
                BATCH as c_int,
            )
        };
        adopt(&raw, n, tasks) > 0
    }

    /// Takes up to `BATCH` tasks that wait now, never waits (ABI 3).
    pub fn take(self, tasks: &mut Vec<Task>) -> Taken {
        let mut raw = [ptr::null_mut::<c_void>(); BATCH];
        // SAFETY: as in poll_batch.
        let n = unsafe {
            ngx_http_lua_nonblocking_ffi_task_take(self.as_ptr(), raw.as_mut_ptr(), BATCH as c_int)
        };
        match n {
            n if n < 0 => Taken::Unloaded,
            0 => Taken::Empty,
            n => Taken::Tasks(adopt(&raw, n, tasks)),
        }
    }

    /// The fd that is readable while tasks wait (ABI 3).  Never read,
    /// write or close it: the module owns it.
    pub fn fd(self) -> io::Result<RawFd> {
        // SAFETY: self is a queue of the module.
        let fd = unsafe { ngx_http_lua_nonblocking_ffi_queue_fd(self.as_ptr()) };
        if fd < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(fd)
        }
    }

    /// Hands the reason of a failing init to the Lua caller of the load.
    pub fn init_error(self, msg: &str) {
        if msg.is_empty() {
            return;
        }
        let len = msg.len().min(i32::MAX as usize) as c_int;
        // SAFETY: msg points to len readable bytes; the module copies them.
        unsafe { ngx_http_lua_nonblocking_ffi_init_error(self.as_ptr(), msg.as_ptr().cast(), len) }
    }
}

/// A queue's or a stream's fd, owned by the module (never read, written or
/// closed here).
#[cfg(feature = "tokio")]
pub struct ModuleFd(RawFd);

#[cfg(feature = "tokio")]
impl std::os::fd::AsRawFd for ModuleFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

#[cfg(feature = "tokio")]
impl Queue {
    /// Registers the queue's fd for reading with the current tokio runtime
    /// (call inside it).
    pub(crate) fn watch(self) -> io::Result<tokio::io::unix::AsyncFd<ModuleFd>> {
        let fd = ModuleFd(self.fd()?);
        // SAFETY: the module keeps the queue's fd open, unchanged, until
        // the worker process exits (nffi header: its number is never reused
        // under a loop that still watches it); ModuleFd returns that fd.
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)
    }
}

/// Wraps the first `n` pointers of `raw` as tasks.
fn adopt(raw: &[*mut c_void], n: c_int, tasks: &mut Vec<Task>) -> usize {
    let n = usize::try_from(n).unwrap_or(0).min(raw.len());
    tasks.extend(
        raw[..n]
            .iter()
            .filter_map(|p| NonNull::new(*p).map(Task::new)),
    );
    n
}

/// One call, `runtime:method(req)` or `runtime:__stream(method, req)`,
/// taken from a queue.
///
/// It is answered exactly once: [`Task::respond`] consumes it, and a task
/// dropped without an answer answers an error, so that its Lua caller never
/// waits for a forgotten task.  The request and method name borrow the
/// module's memory, which stays valid until the answer.
///
/// A stream task ([`Task::is_stream`]) may send chunks of its answer before
/// it and read the chunks Lua writes: one thread at a time may send, and
/// one may read (the ABI's rule; a second one at once gets
/// [`StreamError::Busy`]).
pub struct Task {
    ptr: NonNull<c_void>,
    sending: AtomicBool,
    reading: AtomicBool,
    /// the stream's fd as the tokio runtime watches it, from the first async
    /// stream call on; dropped (unregistered) before the answer
    #[cfg(feature = "tokio")]
    watch: std::sync::Mutex<Option<Box<tokio::io::unix::AsyncFd<ModuleFd>>>>,
}

// SAFETY: the ABI's task functions may be called from any thread; the
// module keeps the task (and its request) alive until it is answered, which
// only this owner does.
unsafe impl Send for Task {}
// SAFETY: get_req, get_method, task_cancelled and task_is_stream only read
// and are thread-safe; the stream functions are thread-safe with one sender
// and one reader at a time, which the sending and reading flags ensure;
// respond needs the Task by value.
unsafe impl Sync for Task {}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task").field("ptr", &self.ptr).finish()
    }
}

/// One sender or one reader of a task's stream: a flag held while its call
/// runs.
struct Turn<'a>(&'a AtomicBool);

impl<'a> Turn<'a> {
    fn take(flag: &'a AtomicBool) -> Result<Turn<'a>, StreamError> {
        if flag.swap(true, Ordering::Acquire) {
            Err(StreamError::Busy)
        } else {
            Ok(Turn(flag))
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The rc of an answer that failed inside this crate (a dropped task, an
/// answer too large for the ABI).
pub const RC_ERROR: i32 = 1;

impl Task {
    fn new(ptr: NonNull<c_void>) -> Task {
        Task {
            ptr,
            sending: AtomicBool::new(false),
            reading: AtomicBool::new(false),
            #[cfg(feature = "tokio")]
            watch: std::sync::Mutex::new(None),
        }
    }

    /// The request bytes, `None` when Lua passed nil.  Borrowed from the
    /// module: no copy.
    pub fn request(&self) -> Option<&[u8]> {
        let mut len: c_int = 0;
        // SAFETY: the task is not answered yet (respond consumes self).
        let p = unsafe { ngx_http_lua_nonblocking_ffi_get_req(self.ptr.as_ptr(), &mut len) };
        if p.is_null() {
            return None;
        }
        let len = usize::try_from(len).unwrap_or(0);
        // SAFETY: the module keeps len bytes at p, unchanged, until the task
        // is answered; the answer needs self by value, so not while this
        // borrow of self lives.
        Some(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
    }

    /// The method name as bytes: `b"foo"` for `runtime:foo(req)`.
    pub fn method_bytes(&self) -> &[u8] {
        let mut len: c_int = 0;
        // SAFETY: the task is not answered yet.
        let p = unsafe { ngx_http_lua_nonblocking_ffi_get_method(self.ptr.as_ptr(), &mut len) };
        if p.is_null() {
            return b"";
        }
        let len = usize::try_from(len).unwrap_or(0);
        // SAFETY: as for the request: valid until the answer.
        unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
    }

    /// The method name (`""` if it is not UTF-8: see `method_bytes`).
    pub fn method(&self) -> &str {
        std::str::from_utf8(self.method_bytes()).unwrap_or("")
    }

    /// Whether nobody waits for the answer any more (timeout, the request
    /// or coroutine went away).  The task must still be answered.
    pub fn is_cancelled(&self) -> bool {
        // SAFETY: the task is not answered yet.
        unsafe { ngx_http_lua_nonblocking_ffi_task_cancelled(self.ptr.as_ptr()) != 0 }
    }

    /// Answers the task: rc 0 is success (Lua: `true, data`), any other rc
    /// an error (Lua: `false, rc, data`); `None` is nil in Lua.  The data is
    /// copied into memory the module owns.
    ///
    /// For a stream task this ends the stream: with rc 0 the data, unless
    /// empty, is its last chunk; with another rc Lua's read returns `nil,
    /// rc, data` after the chunks sent before.
    pub fn respond(mut self, rc: i32, data: Option<&[u8]>) {
        self.unwatch();
        let ptr = self.ptr;
        // answered here, not by Drop; what it would drop holds nothing now
        std::mem::forget(self);
        respond_raw(ptr, rc, data);
    }

    /// Unregisters the stream's fd from tokio: the module closes it with
    /// the answer.
    fn unwatch(&mut self) {
        #[cfg(feature = "tokio")]
        drop(
            self.watch
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
    }

    /// Whether the call came from `runtime:__stream()`: its answer may come
    /// in chunks, and Lua may write chunks after the request.
    pub fn is_stream(&self) -> bool {
        // SAFETY: the task is not answered yet.
        unsafe { ngx_http_lua_nonblocking_ffi_task_is_stream(self.ptr.as_ptr()) != 0 }
    }

    /// Sends a chunk of the answer (copied), waiting while Lua has a
    /// window's worth unread.  An empty chunk sends nothing.  After
    /// [`StreamError::Closed`] (Lua gave up) stop, and still answer.
    pub fn send<B: AsRef<[u8]>>(&self, chunk: B) -> Result<(), StreamError> {
        let _turn = Turn::take(&self.sending)?;
        self.send_raw(chunk.as_ref(), true)
    }

    /// [`Task::send`] that never waits: [`TrySendError::Again`] gives the
    /// chunk back when the window is full; send it again once
    /// [`Task::stream_fd`] is readable.
    pub fn try_send<B: AsRef<[u8]>>(&self, chunk: B) -> Result<(), TrySendError<B>> {
        let result =
            Turn::take(&self.sending).and_then(|_turn| self.send_raw(chunk.as_ref(), false));
        match result {
            Ok(()) => Ok(()),
            Err(StreamError::Again) => Err(TrySendError::Again(chunk)),
            Err(e) => Err(TrySendError::Failed(e)),
        }
    }

    fn send_raw(&self, chunk: &[u8], wait: bool) -> Result<(), StreamError> {
        if chunk.len() > MAX_LEN {
            return Err(StreamError::TooLarge);
        }
        // NULL sends nothing, but the call still refuses an ordinary task
        let p = if chunk.is_empty() {
            ptr::null_mut()
        } else {
            malloc_copy(chunk).ok_or(StreamError::NoMemory)?
        };
        let len = chunk.len() as c_int;
        // SAFETY: the task is not answered yet (respond consumes self); p is
        // NULL or len bytes from malloc, which the module owns from the call
        // on, except after AGAIN.
        let rc = unsafe {
            if wait {
                ngx_http_lua_nonblocking_ffi_stream_send(self.ptr.as_ptr(), p, len)
            } else {
                ngx_http_lua_nonblocking_ffi_stream_try_send(self.ptr.as_ptr(), p, len)
            }
        };
        if rc == STREAM_AGAIN {
            // SAFETY: after AGAIN the chunk is still ours, from malloc (or NULL).
            unsafe { libc_free(p.cast()) };
        }
        self.stream_result(rc)
    }

    /// The next chunk Lua wrote (`stream:write()`), waiting for it; `None`
    /// once Lua called `stream:close_write()` and every chunk was read.
    pub fn read(&self) -> Result<Option<Vec<u8>>, StreamError> {
        let _turn = Turn::take(&self.reading)?;
        self.read_raw(true)
    }

    /// [`Task::read`] that never waits: [`StreamError::Again`] when no
    /// chunk is there yet; read again once [`Task::stream_fd`] is readable.
    pub fn try_read(&self) -> Result<Option<Vec<u8>>, StreamError> {
        let _turn = Turn::take(&self.reading)?;
        self.read_raw(false)
    }

    fn read_raw(&self, wait: bool) -> Result<Option<Vec<u8>>, StreamError> {
        let mut p: *mut c_char = ptr::null_mut();
        let mut len: c_int = 0;
        // SAFETY: the task is not answered yet; p and len are writable.
        let rc = unsafe {
            if wait {
                ngx_http_lua_nonblocking_ffi_stream_read(self.ptr.as_ptr(), &mut p, &mut len)
            } else {
                ngx_http_lua_nonblocking_ffi_stream_try_read(self.ptr.as_ptr(), &mut p, &mut len)
            }
        };
        match rc {
            STREAM_OK if !p.is_null() => {
                let len = usize::try_from(len).unwrap_or(0);
                // SAFETY: OK gives len bytes from malloc at p, now ours:
                // copied, then freed once.
                let chunk = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }.to_vec();
                // SAFETY: as above.
                unsafe { libc_free(p.cast()) };
                Ok(Some(chunk))
            }
            STREAM_OK | STREAM_END => Ok(None),
            other => self.stream_result(other).map(|()| None),
        }
    }

    /// For an event loop: the fd that turns readable once what a `try_`
    /// call returned "again" for may have come (room, a chunk, the end) or
    /// Lua gave up, until the next `try_` call.  Never read, write or close
    /// it, and unregister it before answering.  Get it before the first
    /// `try_` call: what that call waits for may come at once.
    pub fn stream_fd(&self) -> io::Result<RawFd> {
        if !self.is_stream() {
            // the module would log an alert for an ordinary task
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: the task is not answered yet.
        let fd = unsafe { ngx_http_lua_nonblocking_ffi_stream_fd(self.ptr.as_ptr()) };
        if fd < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(fd)
        }
    }

    fn stream_result(&self, rc: c_int) -> Result<(), StreamError> {
        match rc {
            STREAM_OK => Ok(()),
            STREAM_AGAIN => Err(StreamError::Again),
            STREAM_CLOSED => Err(StreamError::Closed),
            // ERROR: an ordinary task, or the module had no memory (its
            // error log says)
            _ if !self.is_stream() => Err(StreamError::NotStream),
            _ => Err(StreamError::Failed),
        }
    }
}

#[cfg(feature = "tokio")]
impl Task {
    /// Polls `attempt` (a `try_` call) until it is done or waits: on
    /// [`StreamError::Again`] the stream's fd, watched by the library's
    /// tokio runtime, wakes `waker` once the call may succeed.  The fd is
    /// shared by both directions and every `try_` call resets it: the
    /// caller wakes every pending stream call of the task on `waker`, and
    /// the lock keeps one attempt at a time between its reset and the check
    /// of the readiness.
    pub(crate) fn poll_stream<T>(
        &self,
        waker: &std::task::Waker,
        mut attempt: impl FnMut(&Task) -> Result<T, StreamError>,
    ) -> std::task::Poll<Result<T, StreamError>> {
        use std::task::{Context, Poll};

        let mut watch = self
            .watch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if watch.is_none() {
            // before the first try_ call, so that the fd exists when that
            // call arms it
            match self.watch_stream_fd() {
                Ok(fd) => *watch = Some(Box::new(fd)),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let fd = watch.as_deref().expect("watched above");
        let mut cx = Context::from_waker(waker);
        loop {
            match attempt(self) {
                Err(StreamError::Again) => {}
                done => return Poll::Ready(done),
            }
            match fd.poll_read_ready(&mut cx) {
                // readiness from before the attempt's reset, or new: the
                // next attempt tells
                Poll::Ready(Ok(mut ready)) => ready.clear_ready(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(StreamError::Fd(e.to_string()))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn watch_stream_fd(&self) -> Result<tokio::io::unix::AsyncFd<ModuleFd>, StreamError> {
        if !self.is_stream() {
            return Err(StreamError::NotStream);
        }
        let fd = self
            .stream_fd()
            .map_err(|e| StreamError::Fd(e.to_string()))?;
        // the library's runtime runs the reactor, whichever runtime polls
        let _guard = crate::tokio::runtime().enter();
        // SAFETY: the module keeps a stream's fd open and unchanged until
        // the task is answered; this AsyncFd lives in the Task, and respond
        // and Drop take it out (unregister it) before they answer.
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                ModuleFd(fd),
                tokio::io::Interest::READABLE,
            )
        }
        .map_err(|e| StreamError::Fd(e.into_parts().1.to_string()))
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.unwatch();
        respond_raw(
            self.ptr,
            RC_ERROR,
            Some(b"nffi: the task was dropped without an answer"),
        );
    }
}

/// The most bytes one answer or chunk may have (an int in the ABI).
const MAX_LEN: usize = i32::MAX as usize - 1;

fn respond_raw(ptr: NonNull<c_void>, rc: i32, data: Option<&[u8]>) {
    let (rc, data) = match data {
        Some(d) if d.len() > MAX_LEN => (RC_ERROR, Some(&b"nffi: answer larger than 2 GB"[..])),
        other => (rc, other),
    };
    let (rsp, len) = match data {
        None => (ptr::null_mut(), 0),
        Some(d) => match malloc_copy(d) {
            Some(p) => (p, d.len() as c_int),
            None => (ptr::null_mut(), 0),
        },
    };
    // SAFETY: ptr is a task taken from the module and not answered yet
    // (Task owns it, respond consumes it, Drop runs otherwise); rsp is NULL
    // or len bytes from malloc (plus a NUL), which the module frees.
    unsafe { ngx_http_lua_nonblocking_ffi_respond(ptr.as_ptr(), rc, rsp, len) }
}

/// A malloc'ed copy of d followed by a NUL (an empty answer is then the
/// empty C string, as length 0 means "NUL-terminated").
fn malloc_copy(d: &[u8]) -> Option<*mut c_char> {
    // SAFETY: malloc of a non-zero size; NULL is handled.
    let p = unsafe { libc_malloc(d.len() + 1) }.cast::<u8>();
    if p.is_null() {
        return None;
    }
    // SAFETY: p has d.len() + 1 writable bytes that do not overlap d.
    unsafe {
        ptr::copy_nonoverlapping(d.as_ptr(), p, d.len());
        *p.add(d.len()) = 0;
    }
    Some(p.cast())
}

extern "C" {
    #[link_name = "malloc"]
    fn libc_malloc(size: usize) -> *mut c_void;
    #[link_name = "free"]
    fn libc_free(p: *mut c_void);
}

/// The cfg string handed to `lib_nonblocking_ffi_init`, copied (it is valid
/// only during the call); `None` for NULL.  Not UTF-8 is replaced lossily.
///
/// # Safety
///
/// `cfg` is NULL or points to a NUL-terminated string valid for the call.
pub unsafe fn cfg_from_raw(cfg: *const c_char) -> Option<String> {
    if cfg.is_null() {
        return None;
    }
    // SAFETY: the caller's contract: a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(cfg) }.to_bytes();
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// `lib_nonblocking_ffi_init` of the `export!` macro: copies cfg, wraps
/// tq, and starts the handler that cfg names.
///
/// # Safety
///
/// `cfg` is NULL or a NUL-terminated string valid for the call, `tq` the
/// queue the module passed.
pub unsafe fn init(cfg: *const c_char, tq: *mut c_void, handlers: &[crate::Handler]) -> c_int {
    // SAFETY: the caller's contract, passed on.
    let cfg = unsafe { cfg_from_raw(cfg) };
    // SAFETY: the caller's contract, passed on.
    let queue = unsafe { Queue::from_raw(tq) };
    crate::registry::start(cfg, queue, handlers)
}

#[cfg(test)]
#[path = "fake.rs"]
pub mod fake;
