// SPDX-License-Identifier: BSD-2-Clause

//! A fake nginx module for unit tests: the ABI's symbols over a queue in
//! memory, so that `cargo test` runs the crate's real unsafe code without
//! nginx.  Its fd is one end of a socket pair that holds a byte while tasks
//! wait (or for good once closed).

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

/// One call pushed on a fake queue.
pub struct FakeTask {
    req: Option<Vec<u8>>, // with a NUL after the bytes, as the module keeps it
    method: Vec<u8>,      // with a NUL
    pub cancelled: std::sync::atomic::AtomicBool,
    answers: Mutex<Vec<Answer>>,
    answered: Condvar,
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
        let task = Arc::new(FakeTask {
            req: req.map(|r| r.iter().copied().chain([0]).collect()),
            method: method.bytes().chain([0]).collect(),
            cancelled: Default::default(),
            answers: Mutex::new(Vec::new()),
            answered: Condvar::new(),
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
    3
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
    fn free(p: *mut c_void);
    fn strlen(p: *const c_char) -> usize;
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
    let data = if rsp.is_null() {
        None
    } else {
        // SAFETY: rsp is malloc'ed with len bytes (or a C string when 0),
        // owned by the module from now on.
        unsafe {
            let n = if len == 0 { strlen(rsp) } else { len as usize };
            let bytes = std::slice::from_raw_parts(rsp.cast::<u8>(), n).to_vec();
            free(rsp.cast());
            Some(bytes)
        }
    };
    task.answers.lock().unwrap().push(Answer { rc, data });
    task.answered.notify_all();
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
