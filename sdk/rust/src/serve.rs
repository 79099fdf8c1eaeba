// SPDX-License-Identifier: BSD-2-Clause

//! How a runtime's calls are served: threads that poll, tokio, or raw.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;

use crate::abi::{Queue, Task};
use crate::logger::{self, Level};
use crate::{Error, Stream};

type BlockingFn = dyn Fn(&Task) -> Result<Vec<u8>, Error> + Send + Sync + 'static;
type RawFn = dyn FnOnce(Queue) -> Result<(), Error> + Send + 'static;

/// What a factory returns: how the runtime serves its calls.
pub struct Serve(pub(crate) Kind);

pub(crate) enum Kind {
    Threads(usize, Arc<BlockingFn>),
    Raw(Box<RawFn>),
    #[cfg(feature = "tokio")]
    Tokio(crate::tokio::Server),
}

impl Serve {
    /// `threads` threads (at least 1) poll the queue, a batch at a time,
    /// and call `handler` for each task; it may block.  `Ok(bytes)` is
    /// `true, bytes` in Lua, `Err(e)` is `false, e.rc(), e.message()`, a
    /// panic `false, 2, "panic: <message>"` (and logged at `[error]`).
    pub fn threads<F>(threads: usize, handler: F) -> Serve
    where
        F: Fn(&Task) -> Result<Vec<u8>, Error> + Send + Sync + 'static,
    {
        Serve(Kind::Threads(threads.max(1), Arc::new(handler)))
    }

    /// Like [`Serve::threads`], for streaming handlers: each call of
    /// `runtime:__stream()` gets a [`Stream`] to send chunks on and read
    /// Lua's chunks from; `Ok(bytes)` ends the stream (with `bytes`, unless
    /// empty, as its last chunk), `Err(e)` ends it with Lua's read
    /// returning `nil, e.rc(), e.message()`, a panic with `nil, 2, "panic:
    /// <message>"`.  A stream holds its thread until it ends: `threads` is
    /// how many streams run at once.  An ordinary call
    /// (`runtime:method(req)`) is answered `false, 1, "nffi: method ...
    /// streams its answer: ..."`.
    pub fn stream_threads<F>(threads: usize, handler: F) -> Serve
    where
        F: Fn(&mut Stream<'_>) -> Result<Vec<u8>, Error> + Send + Sync + 'static,
    {
        Serve::threads(threads, move |task: &Task| match Stream::new(task) {
            Ok(mut stream) => handler(&mut stream),
            Err(_) => Err(not_a_stream(task)),
        })
    }

    /// Code of your own polls the queue ([`Queue::poll`], [`Queue::take`]):
    /// `start` runs during init, must return quickly, and leaves threads of
    /// its own to poll.
    pub fn raw<F>(start: F) -> Serve
    where
        F: FnOnce(Queue) -> Result<(), Error> + Send + 'static,
    {
        Serve(Kind::Raw(Box::new(start)))
    }

    pub(crate) fn start(self, queue: Queue, name: &str) -> Result<(), Error> {
        match self.0 {
            Kind::Threads(n, handler) => {
                for i in 0..n {
                    let handler = handler.clone();
                    thread::Builder::new()
                        .name(format!("nffi-{name}-{i}"))
                        .spawn(move || poll_loop(queue, &*handler))
                        .map_err(|e| Error::msg(format!("cannot start a thread: {e}")))?;
                }
                Ok(())
            }
            Kind::Raw(start) => start(queue),
            #[cfg(feature = "tokio")]
            Kind::Tokio(server) => server.start(queue),
        }
    }
}

/// Answers a task with what a handler returned.
pub(crate) fn answer(task: Task, result: Result<Vec<u8>, Error>) {
    match result {
        Ok(data) => task.respond(0, Some(&data)),
        Err(e) => task.respond(e.rc(), Some(e.message().as_bytes())),
    }
}

/// The answer of a streaming handler to an ordinary call.
pub(crate) fn not_a_stream(task: &Task) -> Error {
    let method = task.method();
    Error::msg(format!(
        "nffi: method {method:?} streams its answer: call it with \
         runtime:__stream({method:?}, req)"
    ))
}

/// Logs a caught panic and turns it into the answer's error.
pub(crate) fn panicked(method: &str, payload: &(dyn std::any::Any + Send)) -> Error {
    let e = Error::from_panic(payload);
    logger::log(
        Level::Err,
        &format!("nffi: handler panicked in method {method:?}: {e}"),
    );
    e
}

/// Calls handler for one task, catching a panic.
pub(crate) fn call_blocking(handler: &BlockingFn, task: Task) {
    let result = match catch_unwind(AssertUnwindSafe(|| handler(&task))) {
        Ok(result) => result,
        Err(p) => Err(panicked(task.method(), &*p)),
    };
    answer(task, result);
}

fn poll_loop(queue: Queue, handler: &BlockingFn) {
    let mut tasks = Vec::with_capacity(crate::BATCH);
    while queue.poll_batch(&mut tasks) {
        for task in tasks.drain(..) {
            call_blocking(handler, task);
        }
    }
}
