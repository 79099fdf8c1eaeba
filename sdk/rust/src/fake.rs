// SPDX-License-Identifier: BSD-2-Clause

//! A fake nginx module for unit tests: the ABI's symbols over a queue in
//! memory, so that `cargo test` runs the crate's real unsafe code without
//! nginx.  Its fd is one end of a socket pair that holds a byte while tasks
//! wait (or for good once closed).
//!
//! Stream tasks behave as the module's: a window of unread bytes bounds
//! what the runtime sends, the test plays Lua (`lua_read`, `lua_write`,
//! `lua_close_write`, `lua_close`), and the stream's fd (made by the first
//! `stream_fd()`, as the module makes it) turns readable when what a `try_`
//! call returned AGAIN for may have come, until the next `try_` call.

use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::Queue;

/// What a task was answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rc: i32,
    pub data: Option<Vec<u8>>,
}

/// rc 0 with data.
pub fn ok(data: &[u8]) -> Answer {
    Answer {
        rc: 0,
        data: Some(data.to_vec()),
    }
}

/// An error answer: rc and its message.
pub fn err(rc: i32, msg: &str) -> Answer {
    Answer {
        rc,
        data: Some(msg.as_bytes().to_vec()),
    }
}

/// One call pushed on a fake queue.
pub struct FakeTask {
    req: Option<Vec<u8>>, // with a NUL after the bytes, as the module keeps it
    method: Vec<u8>,      // with a NUL
    pub cancelled: std::sync::atomic::AtomicBool,
    answers: Mutex<Vec<Answer>>,
    answered: Condvar,
    stream: Option<FakeStream>,
}

/// The shared state of a stream task.
#[derive(Debug, Default)]
pub struct StreamState {
    pub window: usize,
    /// chunks the runtime sent that the test did not read yet
    pub out: VecDeque<Vec<u8>>,
    pub out_unread: usize,
    /// the most bytes ever unread: a window respected keeps it bounded
    pub max_out_unread: usize,
    /// chunks the test wrote that the runtime did not read yet
    pub inbound: VecDeque<Vec<u8>>,
    pub in_ended: bool,
    pub closed: bool,
    pub answered: bool,
    /// runtime threads blocked in a send or a read now
    pub senders_waiting: usize,
    pub readers_waiting: usize,
    /// CLOSED results handed to the runtime
    pub closed_seen: usize,
    wants_room: bool,
    wants_data: bool,
    fd_made: bool,
    /// what the fd says, per direction, as in the module
    room_signalled: bool,
    data_signalled: bool,
    closed_signalled: bool,
    readable: bool,
}

struct FakeStream {
    state: Mutex<StreamState>,
    cond: Condvar,
    rx: UnixStream,
    tx: UnixStream,
}

impl FakeStream {
    /// As the module: threads blocked on the stream re-check; the fd turns
    /// readable when a try_ call waits for what came, or the stream closed.
    /// Without an fd yet the wish stays: the fd starts readable when made.
    /// Every signal is written, for edge-triggered watchers such as tokio's.
    fn wake(&self, state: &mut StreamState, room: bool, data: bool) {
        self.cond.notify_all();
        if !state.fd_made {
            return;
        }
        let mut signal = false;
        if room && state.wants_room {
            state.wants_room = false;
            state.room_signalled = true;
            signal = true;
        }
        if data && state.wants_data {
            state.wants_data = false;
            state.data_signalled = true;
            signal = true;
        }
        if state.closed && !state.closed_signalled {
            state.closed_signalled = true;
            signal = true;
        }
        if signal {
            (&self.tx).write_all(b"x").unwrap();
            state.readable = true;
        }
    }

    /// As the module: a send takes the fd's signal for room, a read its
    /// signal for data; the fd is reset only when neither is left.
    fn drain(&self, state: &mut StreamState, room: bool, data: bool) {
        state.room_signalled &= !room;
        state.data_signalled &= !data;
        if state.readable && !state.room_signalled && !state.data_signalled && !state.closed {
            state.readable = false;
            // every byte the signals wrote, as reading an eventfd resets it
            while matches!((&self.rx).read(&mut [0u8; 64]), Ok(n) if n > 0) {}
        }
    }
}

impl FakeTask {
    /// Waits for the first answer (panics after 10 s).
    pub fn wait(&self) -> Answer {
        let guard = self.answers.lock().unwrap();
        let (guard, timeout) = self
            .answered
            .wait_timeout_while(guard, Duration::from_secs(10), |a| a.is_empty())
            .unwrap();
        assert!(!timeout.timed_out(), "no answer within 10 s");
        guard[0].clone()
    }

    /// How many answers came (more than 1 is a bug).
    pub fn answers(&self) -> usize {
        self.answers.lock().unwrap().len()
    }

    fn stream(&self) -> &FakeStream {
        self.stream.as_ref().expect("a stream task")
    }

    /// Waits until cond holds for the stream's state (panics after 10 s).
    pub fn wait_stream(&self, what: &str, cond: impl Fn(&StreamState) -> bool) {
        let s = self.stream();
        let guard = s.state.lock().unwrap();
        let (_guard, timeout) = s
            .cond
            .wait_timeout_while(guard, Duration::from_secs(10), |st| !cond(st))
            .unwrap();
        assert!(!timeout.timed_out(), "waited 10 s for {what}");
    }

    /// Looks at the stream's state.
    pub fn stream_state<T>(&self, f: impl FnOnce(&StreamState) -> T) -> T {
        f(&self.stream().state.lock().unwrap())
    }

    /// Lua's `s:read()`: the next chunk, or `None` once the runtime
    /// answered and every chunk was read (its answer: [`FakeTask::wait`]).
    pub fn lua_read(&self) -> Option<Vec<u8>> {
        self.wait_stream("a chunk or the answer", |st| {
            !st.out.is_empty() || st.answered
        });
        let s = self.stream();
        let mut st = s.state.lock().unwrap();
        let chunk = st.out.pop_front()?;
        st.out_unread -= chunk.len();
        s.wake(&mut st, true, false);
        Some(chunk)
    }

    /// Every chunk until the answer, then the answer.
    pub fn lua_read_all(&self) -> (Vec<Vec<u8>>, Answer) {
        let chunks = std::iter::from_fn(|| self.lua_read()).collect();
        (chunks, self.wait())
    }

    /// Lua's `s:write(chunk)` (no window this way: the tests never need
    /// Lua to wait).
    pub fn lua_write(&self, chunk: &[u8]) {
        let s = self.stream();
        let mut st = s.state.lock().unwrap();
        assert!(!st.in_ended, "write after close_write");
        st.inbound.push_back(chunk.to_vec());
        s.wake(&mut st, false, true);
    }

    /// Lua's `s:close_write()`.
    pub fn lua_close_write(&self) {
        let s = self.stream();
        let mut st = s.state.lock().unwrap();
        st.in_ended = true;
        s.wake(&mut st, false, true);
    }

    /// Lua gives up: `s:close()`, a timeout, a client gone.
    pub fn lua_close(&self) {
        let s = self.stream();
        let mut st = s.state.lock().unwrap();
        st.closed = true;
        s.wake(&mut st, true, true);
    }
}

struct State {
    tasks: VecDeque<Arc<FakeTask>>,
    closed: bool,
    signalled: bool,
}

/// A queue of the fake module.
pub struct FakeQueue {
    state: Mutex<State>,
    cond: Condvar,
    rx: UnixStream,
    tx: UnixStream,
    pub init_error: Mutex<String>,
}

impl FakeQueue {
    /// A new queue, leaked as the module's queues live for the process.
    pub fn new() -> &'static FakeQueue {
        let (rx, tx) = UnixStream::pair().unwrap();
        rx.set_nonblocking(true).unwrap();
        Box::leak(Box::new(FakeQueue {
            state: Mutex::new(State {
                tasks: VecDeque::new(),
                closed: false,
                signalled: false,
            }),
            cond: Condvar::new(),
            rx,
            tx,
            init_error: Mutex::new(String::new()),
        }))
    }

    /// The queue as the crate sees it.
    pub fn queue(&'static self) -> Queue {
        let p = self as *const FakeQueue as *mut c_void;
        // SAFETY: p is a FakeQueue that lives for the process, which is
        // what every fake function below takes tq for.
        unsafe { Queue::from_raw(p) }.unwrap()
    }

    fn signal(&self, state: &mut State) {
        if !state.signalled {
            state.signalled = true;
            (&self.tx).write_all(b"x").unwrap();
        }
    }

    fn unsignal(&self, state: &mut State) {
        if state.signalled && state.tasks.is_empty() && !state.closed {
            state.signalled = false;
            let _ = (&self.rx).read(&mut [0u8; 8]);
        }
    }

    /// Queues runtime:method(req).
    pub fn push(&self, method: &str, req: Option<&[u8]>) -> Arc<FakeTask> {
        self.push_task(method, req, None)
    }

    /// Queues runtime:__stream(method, req, { window = window }).
    pub fn push_stream(&self, method: &str, req: Option<&[u8]>, window: usize) -> Arc<FakeTask> {
        let (rx, tx) = UnixStream::pair().unwrap();
        rx.set_nonblocking(true).unwrap();
        let stream = FakeStream {
            state: Mutex::new(StreamState {
                window,
                ..Default::default()
            }),
            cond: Condvar::new(),
            rx,
            tx,
        };
        self.push_task(method, req, Some(stream))
    }

    fn push_task(
        &self,
        method: &str,
        req: Option<&[u8]>,
        stream: Option<FakeStream>,
    ) -> Arc<FakeTask> {
        let task = Arc::new(FakeTask {
            req: req.map(|r| r.iter().copied().chain([0]).collect()),
            method: method.bytes().chain([0]).collect(),
            cancelled: Default::default(),
            answers: Mutex::new(Vec::new()),
            answered: Condvar::new(),
            stream,
        });
        let mut state = self.state.lock().unwrap();
        assert!(!state.closed, "push after close");
        state.tasks.push_back(task.clone());
        self.signal(&mut state);
        self.cond.notify_one();
        task
    }

    /// Unloads: queued tasks are still taken, then pollers see the end.
    pub fn close(&self) {
        let mut state = self.state.lock().unwrap();
        state.closed = true;
        self.signal(&mut state);
        self.cond.notify_all();
    }

    fn take(&self, tasks: *mut *mut c_void, max: c_int, wait: bool) -> c_int {
        let mut state = self.state.lock().unwrap();
        while wait && state.tasks.is_empty() && !state.closed {
            state = self.cond.wait(state).unwrap();
        }
        if state.tasks.is_empty() {
            return if state.closed { -1 } else { 0 };
        }
        let mut n = 0;
        while n < max {
            let Some(task) = state.tasks.pop_front() else {
                break;
            };
            // SAFETY: the caller passes room for max pointers.
            unsafe { *tasks.add(n as usize) = Arc::into_raw(task) as *mut c_void };
            n += 1;
        }
        self.unsignal(&mut state);
        n
    }
}

#[repr(C)]
struct PollFd {
    fd: c_int,
    events: i16,
    revents: i16,
}

extern "C" {
    fn poll(fds: *mut PollFd, n: std::ffi::c_ulong, timeout: c_int) -> c_int;
}

/// Whether fd turns readable within timeout_ms, as an event loop sees it.
pub fn readable(fd: c_int, timeout_ms: c_int) -> bool {
    let mut p = PollFd {
        fd,
        events: 1, // POLLIN
        revents: 0,
    };
    // SAFETY: one pollfd, ours.
    unsafe { poll(&mut p, 1, timeout_ms) == 1 }
}

/// Everything logged through the fake module.
pub static LOG: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());

/// Whether the log has a line containing text.
pub fn logged(text: &str) -> bool {
    LOG.lock().unwrap().iter().any(|(_, m)| m.contains(text))
}

fn fake_queue<'a>(tq: *mut c_void) -> &'a FakeQueue {
    // SAFETY: the crate only passes queues it got from FakeQueue::queue.
    unsafe { &*(tq as *const FakeQueue) }
}

fn fake_task<'a>(tsk: *mut c_void) -> &'a FakeTask {
    // SAFETY: a task pointer comes from take() (Arc::into_raw), and the
    // crate uses it only until its answer, which gives that Arc back.
    unsafe { &*(tsk as *const FakeTask) }
}

#[no_mangle]
extern "C" fn ngx_http_lua_nonblocking_ffi_abi_version() -> c_int {
    4
}

#[no_mangle]
extern "C" fn ngx_http_lua_nonblocking_ffi_task_poll(tq: *mut c_void) -> *mut c_void {
    let mut p = std::ptr::null_mut();
    fake_queue(tq).take(&mut p, 1, true);
    p
}

#[no_mangle]
extern "C" fn ngx_http_lua_nonblocking_ffi_task_poll_batch(
    tq: *mut c_void,
    tasks: *mut *mut c_void,
    max: c_int,
) -> c_int {
    fake_queue(tq).take(tasks, max, true).max(0)
}

#[no_mangle]
extern "C" fn ngx_http_lua_nonblocking_ffi_task_take(
    tq: *mut c_void,
    tasks: *mut *mut c_void,
    max: c_int,
) -> c_int {
    fake_queue(tq).take(tasks, max, false)
}

#[no_mangle]
extern "C" fn ngx_http_lua_nonblocking_ffi_queue_fd(tq: *mut c_void) -> c_int {
    fake_queue(tq).rx.as_raw_fd()
}

#[no_mangle]
extern "C" fn ngx_http_lua_nonblocking_ffi_get_req(
    tsk: *mut c_void,
    len: *mut c_int,
) -> *mut c_char {
    let task = fake_task(tsk);
    let (p, n) = match &task.req {
        Some(r) => (r.as_ptr() as *mut c_char, r.len() as c_int - 1),
        None => (std::ptr::null_mut(), 0),
    };
    if !len.is_null() {
        // SAFETY: len points to an int of the caller.
        unsafe { *len = n };
    }
    p
}

#[no_mangle]
extern "C" fn ngx_http_lua_nonblocking_ffi_get_method(
    tsk: *mut c_void,
    len: *mut c_int,
) -> *const c_char {
    let task = fake_task(tsk);
    if !len.is_null() {
        // SAFETY: len points to an int of the caller.
        unsafe { *len = task.method.len() as c_int - 1 };
    }
    task.method.as_ptr().cast()
}

#[no_mangle]
extern "C" fn ngx_http_lua_nonblocking_ffi_task_cancelled(tsk: *mut c_void) -> c_int {
    fake_task(tsk)
        .cancelled
        .load(std::sync::atomic::Ordering::Relaxed) as c_int
}

extern "C" {
    fn malloc(n: usize) -> *mut c_void;
    fn free(p: *mut c_void);
    fn strlen(p: *const c_char) -> usize;
}

/// The bytes of a chunk or answer the module owns from now on, freed.
///
/// # Safety
///
/// p is NULL or malloc'ed with len bytes (a C string when len is 0).
unsafe fn adopt(p: *mut c_char, len: c_int) -> Option<Vec<u8>> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller's contract.
    unsafe {
        let n = if len == 0 { strlen(p) } else { len as usize };
        let bytes = std::slice::from_raw_parts(p.cast::<u8>(), n).to_vec();
        free(p.cast());
        Some(bytes)
    }
}

fn alert(msg: &str) {
    LOG.lock().unwrap().push((2, msg.to_string()));
}

#[no_mangle]
extern "C" fn ngx_http_lua_nonblocking_ffi_task_is_stream(tsk: *mut c_void) -> c_int {
    fake_task(tsk).stream.is_some() as c_int
}

fn send(tsk: *mut c_void, chunk: *mut c_char, len: c_int, wait: bool) -> c_int {
    let task = fake_task(tsk);
    let (Some(s), true) = (&task.stream, len >= 0) else {
        alert("stream_send on something that is not a stream task, or a negative length");
        // SAFETY: the module owns the chunk, from malloc, in this case too.
        unsafe { free(chunk.cast()) };
        return -3;
    };
    if chunk.is_null() {
        return 0;
    }
    // SAFETY: chunk is a C string when len is 0.
    let n = if len == 0 {
        unsafe { strlen(chunk) }
    } else {
        len as usize
    };
    let mut st = s.state.lock().unwrap();
    assert!(!st.answered, "stream_send after the answer");
    s.drain(&mut st, true, false);
    loop {
        if st.closed {
            st.closed_seen += 1;
            drop(st);
            // SAFETY: the chunk is the module's after CLOSED: freed.
            unsafe { free(chunk.cast()) };
            return -2;
        }
        if st.out_unread == 0 || st.out_unread + n <= st.window {
            // SAFETY: n bytes from malloc, the module's after OK.
            let bytes = unsafe { adopt(chunk, n as c_int) }.unwrap();
            st.out_unread += n;
            st.max_out_unread = st.max_out_unread.max(st.out_unread);
            st.out.push_back(bytes);
            s.cond.notify_all();
            return 0;
        }
        if !wait {
            st.wants_room = true;
            return -1; // the chunk stays the caller's
        }
        st.senders_waiting += 1;
        s.cond.notify_all();
        st = s.cond.wait(st).unwrap();
        st.senders_waiting -= 1;
    }
}

fn read(tsk: *mut c_void, chunk: *mut *mut c_char, len: *mut c_int, wait: bool) -> c_int {
    let task = fake_task(tsk);
    let Some(s) = &task.stream else {
        alert("stream_read on something that is not a stream task");
        return -3;
    };
    assert!(!chunk.is_null() && !len.is_null());
    let mut st = s.state.lock().unwrap();
    assert!(!st.answered, "stream_read after the answer");
    s.drain(&mut st, false, true);
    let (rc, bytes) = loop {
        if st.closed {
            st.closed_seen += 1;
            break (-2, None);
        }
        if let Some(bytes) = st.inbound.pop_front() {
            break (0, Some(bytes));
        }
        if st.in_ended {
            break (1, None);
        }
        if !wait {
            st.wants_data = true;
            break (-1, None);
        }
        st.readers_waiting += 1;
        s.cond.notify_all();
        st = s.cond.wait(st).unwrap();
        st.readers_waiting -= 1;
    };
    drop(st);
    let (p, n) = match bytes {
        Some(b) => {
            // SAFETY: malloc of len + 1 bytes, filled below, the caller's.
            let p = unsafe { malloc(b.len() + 1) }.cast::<u8>();
            assert!(!p.is_null());
            // SAFETY: p has b.len() + 1 bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(b.as_ptr(), p, b.len());
                *p.add(b.len()) = 0;
            }
            (p.cast::<c_char>(), b.len() as c_int)
        }
        None => (std::ptr::null_mut(), 0),
    };
    // SAFETY: both point to the caller's variables (checked above).
    unsafe {
        *chunk = p;
        *len = n;
    }
    rc
}

#[no_mangle]
extern "C" fn ngx_http_lua_nonblocking_ffi_stream_send(
    tsk: *mut c_void,
    chunk: *mut c_char,
    len: c_int,
) -> c_int {
    send(tsk, chunk, len, true)
}

#[no_mangle]
extern "C" fn ngx_http_lua_nonblocking_ffi_stream_try_send(
    tsk: *mut c_void,
    chunk: *mut c_char,
    len: c_int,
) -> c_int {
    send(tsk, chunk, len, false)
}

#[no_mangle]
extern "C" fn ngx_http_lua_nonblocking_ffi_stream_read(
    tsk: *mut c_void,
    chunk: *mut *mut c_char,
    len: *mut c_int,
) -> c_int {
    read(tsk, chunk, len, true)
}

#[no_mangle]
extern "C" fn ngx_http_lua_nonblocking_ffi_stream_try_read(
    tsk: *mut c_void,
    chunk: *mut *mut c_char,
    len: *mut c_int,
) -> c_int {
    read(tsk, chunk, len, false)
}

#[no_mangle]
extern "C" fn ngx_http_lua_nonblocking_ffi_stream_fd(tsk: *mut c_void) -> c_int {
    let Some(s) = &fake_task(tsk).stream else {
        alert("stream_fd on something that is not a stream task");
        return -1;
    };
    let mut st = s.state.lock().unwrap();
    if !st.fd_made {
        st.fd_made = true;
        // as the module: what came before the fd existed is not lost
        s.wake(&mut st, true, true);
    }
    s.rx.as_raw_fd()
}

#[no_mangle]
extern "C" fn ngx_http_lua_nonblocking_ffi_respond(
    tsk: *mut c_void,
    rc: c_int,
    rsp: *mut c_char,
    len: c_int,
) {
    // SAFETY: the pointer take() made with Arc::into_raw, given back once
    // (a second answer would be a double free: the count below shows it
    // only if the crate answered twice, which is what the tests check).
    let task = unsafe { Arc::from_raw(tsk as *const FakeTask) };
    // SAFETY: rsp is NULL or malloc'ed with len bytes (or a C string when
    // 0), owned by the module from now on.
    let data = unsafe { adopt(rsp, len) };
    task.answers.lock().unwrap().push(Answer { rc, data });
    task.answered.notify_all();
    if let Some(s) = &task.stream {
        let mut st = s.state.lock().unwrap();
        st.answered = true;
        s.cond.notify_all();
    }
}

#[no_mangle]
extern "C" fn ngx_http_lua_nonblocking_ffi_log(level: c_int, msg: *const c_char, len: c_int) {
    // SAFETY: msg points to len bytes (the crate never passes 0).
    let bytes = unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), len as usize) };
    LOG.lock()
        .unwrap()
        .push((level, String::from_utf8_lossy(bytes).into_owned()));
}

#[no_mangle]
extern "C" fn ngx_http_lua_nonblocking_ffi_init_error(
    tq: *mut c_void,
    msg: *const c_char,
    len: c_int,
) {
    // SAFETY: msg points to len bytes.
    let bytes = unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), len as usize) };
    *fake_queue(tq).init_error.lock().unwrap() = String::from_utf8_lossy(bytes).into_owned();
}
