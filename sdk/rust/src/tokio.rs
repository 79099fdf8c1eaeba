// SPDX-License-Identifier: BSD-2-Clause

//! Async handlers on tokio (feature `tokio`).
//!
//! An acceptor task on the library's tokio runtime watches the queue's fd
//! (`queue_fd()`, ABI 3) with [`AsyncFd`] and takes every waiting task with
//! `task_take()`, which never blocks; each task becomes a tokio task spawned
//! from that worker thread (it runs there next, no thread hop).  There is no
//! poll thread.  Many calls are in flight at once; each is answered when its
//! future completes.
//!
//! One tokio runtime serves every async handler of the library (a process
//! holds one copy of the library): [`runtime`] builds it on first use, with
//! [`set_worker_threads`] threads (2 by default), during an init, so its
//! threads inherit the signal mask nginx needs.  It is never shut down:
//! after `__unload()` the acceptor ends and calls still running finish and
//! are answered; the threads end with the worker process.
//!
//! Streams: [`Call::send`] and [`Call::read`] never block a thread.  They
//! make the non-blocking calls, and while one waits (a full window, no
//! chunk yet) the stream's fd, watched with [`AsyncFd`], wakes it; the fd
//! is unregistered before the answer.

use std::future::{poll_fn, Future};
use std::num::NonZeroUsize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::runtime::Runtime;

use crate::abi::{ModuleFd, Queue, Taken, Task};
use crate::serve::{answer, not_a_stream, panicked, Kind};
use crate::{Error, Serve, StreamError};

type BoxFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, Error>> + Send + 'static>>;
type AsyncFn = dyn Fn(Call) -> BoxFuture + Send + Sync + 'static;

static WORKERS: AtomicUsize = AtomicUsize::new(2);
static SPIN: AtomicUsize = AtomicUsize::new(64);

/// A wait on the fd shorter than this means a spin would have found the call.
const SHORT_SLEEP: Duration = Duration::from_micros(200);
static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Sets the number of worker threads of the runtime, before it is built
/// (in the first factory of a worker that uses tokio).
pub fn set_worker_threads(n: usize) {
    WORKERS.store(n.max(1), Ordering::Relaxed);
}

/// Sets how many rounds (yield to tokio, then take again) an acceptor spins
/// for the next call before it sleeps on the queue's fd (64 by default; 0
/// never spins).  Adaptive, like the module's `spin` option: a spin that
/// finds nothing halves the budget, one that finds a call, or a sleep
/// shorter than 200 µs, doubles it again, up to this value.  Applies to
/// runtimes started afterwards.  An acceptor of a process that may use one
/// CPU only (affinity, cgroup quota) never spins.
pub fn set_spin(rounds: usize) {
    SPIN.store(rounds, Ordering::Relaxed);
}

/// The library's tokio runtime, built on first use.  A factory that makes
/// clients needing a runtime (a tonic `Channel`) enters it:
/// `let _guard = nonblocking_ffi::tokio::runtime().enter();`.
///
/// # Panics
///
/// When the runtime cannot be built (no threads): in a factory, that fails
/// the load.
pub fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS.load(Ordering::Relaxed))
            .thread_name("nffi-tokio")
            .enable_all()
            .build()
            .expect("nffi: cannot build the tokio runtime")
    })
}

impl Serve {
    /// Serves calls with an async handler on the library's tokio runtime:
    /// `Ok(bytes)` is `true, bytes` in Lua, `Err(e)` is `false, e.rc(),
    /// e.message()`, a panic `false, 2, "panic: <message>"`.
    pub fn tokio<F, Fut>(handler: F) -> Serve
    where
        F: Fn(Call) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, Error>> + Send + 'static,
    {
        let handler: Arc<AsyncFn> = Arc::new(move |call| Box::pin(handler(call)) as BoxFuture);
        Serve(Kind::Tokio(Server { handler }))
    }

    /// Like [`Serve::tokio`], for streaming handlers: the handler sends
    /// chunks with [`Call::send`] and reads Lua's with [`Call::read`];
    /// `Ok(bytes)` ends the stream (with `bytes`, unless empty, as its
    /// last chunk), `Err(e)` with Lua's read returning `nil, e.rc(),
    /// e.message()`, a panic with `nil, 2, "panic: <message>"`.  An
    /// ordinary call is answered `false, 1, "nffi: method ... streams its
    /// answer: ..."` without calling the handler.
    pub fn stream_tokio<F, Fut>(handler: F) -> Serve
    where
        F: Fn(Call) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, Error>> + Send + 'static,
    {
        Serve::tokio(move |call: Call| {
            let future = if call.is_stream() {
                Ok(handler(call))
            } else {
                Err(not_a_stream(call.shared.task()))
            };
            async move { future?.await }
        })
    }
}

pub(crate) struct Server {
    handler: Arc<AsyncFn>,
}

impl Server {
    pub(crate) fn start(self, queue: Queue) -> Result<(), Error> {
        let rt = runtime();
        let _guard = rt.enter();
        let fd = queue
            .watch()
            .map_err(|e| Error::msg(format!("cannot watch the queue's fd: {e}")))?;
        rt.spawn(accept(queue, fd, self.handler));
        Ok(())
    }
}

/// The acceptor's spin budget.  None on one CPU: yielding to tokio keeps
/// the CPU from the nginx worker that would post the next call (sequential
/// calls twice as slow, docs/rust.md).
pub(crate) fn spin_rounds(configured: usize, cpus: Option<NonZeroUsize>) -> usize {
    match cpus {
        Some(n) if n.get() == 1 => 0,
        _ => configured,
    }
}

async fn accept(queue: Queue, fd: AsyncFd<ModuleFd>, handler: Arc<AsyncFn>) {
    let mut tasks = Vec::with_capacity(crate::BATCH);
    let max = spin_rounds(
        SPIN.load(Ordering::Relaxed),
        std::thread::available_parallelism().ok(),
    );
    let mut budget = max;
    loop {
        // take what waits; then spin (yield to tokio, take again) for up to
        // budget rounds: a call that comes meanwhile needs no wake-up
        let mut found = false;
        let mut rounds = 0;
        loop {
            match queue.take(&mut tasks) {
                Taken::Tasks(_) => {
                    for task in tasks.drain(..) {
                        tokio::spawn(run(handler.clone(), task));
                    }
                    found |= rounds > 0;
                }
                Taken::Empty if rounds < budget => {
                    rounds += 1;
                    tokio::task::yield_now().await;
                }
                Taken::Empty => break,
                Taken::Unloaded => return,
            }
        }
        // adaptive, as the module's own spin: a spin that found a call
        // grows the budget, one that found nothing halves it
        budget = if found {
            (budget * 2 + 1).min(max)
        } else {
            budget / 2
        };

        // sleep until the fd is readable: a call queued from now on makes it
        let slept = Instant::now();
        let mut ready = match fd.readable().await {
            Ok(ready) => ready,
            Err(e) => {
                crate::log(
                    crate::Level::Alert,
                    &format!("nffi: the queue's fd failed: {e}"),
                );
                return;
            }
        };
        if slept.elapsed() < SHORT_SLEEP {
            budget = (budget * 2 + 1).min(max);
        }
        match queue.take(&mut tasks) {
            Taken::Tasks(_) => {
                for task in tasks.drain(..) {
                    tokio::spawn(run(handler.clone(), task));
                }
            }
            // another poller was faster: wait for the next readiness
            Taken::Empty => ready.clear_ready(),
            Taken::Unloaded => return,
        }
    }
}

async fn run(handler: Arc<AsyncFn>, task: Task) {
    let shared = Arc::new(Shared {
        task: Some(task),
        answer: Mutex::new(None),
        waiting: OnceLock::new(),
    });
    let call = Call {
        shared: shared.clone(),
    };
    let result = match catch_unwind(AssertUnwindSafe(|| handler(call))) {
        Ok(future) => match (CatchUnwind { future }).await {
            Ok(result) => result,
            Err(p) => Err(panicked(shared.task().method(), &*p)),
        },
        Err(p) => Err(panicked(shared.task().method(), &*p)),
    };
    *shared.answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
    // answered when the last reference goes: here, or where the handler
    // moved its Call (its request must stay valid until then)
}

/// The task of one call, shared by the acceptor's future and the [`Call`];
/// the last one to let go answers it.
struct Shared {
    task: Option<Task>,
    answer: Mutex<Option<Result<Vec<u8>, Error>>>,
    /// the stream calls of this task that wait (made by the first one)
    waiting: OnceLock<Arc<Waiting>>,
}

impl Shared {
    fn task(&self) -> &Task {
        self.task
            .as_ref()
            .expect("the task lives until Shared is dropped")
    }

    /// One poll of a stream call: `attempt` is its `try_` form.
    fn poll_stream<T>(
        &self,
        cx: &mut Context<'_>,
        attempt: impl FnMut(&Task) -> Result<T, StreamError>,
    ) -> Poll<Result<T, StreamError>> {
        let waiting = self.waiting.get_or_init(Default::default);
        // in the list before the fd may fire, so that no wake-up is lost;
        // a call that then finishes at once leaves a harmless extra wake
        waiting.add(cx.waker());
        let wake_all = Waker::from(waiting.clone());
        self.task().poll_stream(&wake_all, attempt)
    }
}

/// The wakers of the stream calls of one task that wait.  Both directions
/// share the stream's one fd (one `AsyncFd`, which keeps one reader
/// waker): whatever the module signals on it wakes every one of them, and
/// each tries again.
#[derive(Default)]
struct Waiting(Mutex<Vec<Waker>>);

impl Waiting {
    fn add(&self, waker: &Waker) {
        let mut wakers = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }
}

impl Wake for Waiting {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let wakers = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        for waker in wakers {
            waker.wake();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            let result = self
                .answer
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            match result {
                Some(result) => answer(task, result),
                None => drop(task), // answers "dropped without an answer"
            }
        }
    }
}

/// One call to an async handler: its request, method name and whether the
/// caller still waits.  The request is borrowed from the module (no copy);
/// the answer is what the handler's future returns.
pub struct Call {
    shared: Arc<Shared>,
}

impl Call {
    /// The request bytes, `None` when Lua passed nil.
    pub fn request(&self) -> Option<&[u8]> {
        self.shared.task().request()
    }

    /// The method name: `"foo"` for `runtime:foo(req)`.
    pub fn method(&self) -> &str {
        self.shared.task().method()
    }

    /// Whether nobody waits for the answer any more.
    pub fn is_cancelled(&self) -> bool {
        self.shared.task().is_cancelled()
    }

    /// Completes once the caller gave up (checked every 20 ms): race it
    /// against long work with `tokio::select!`.
    pub async fn cancelled(&self) {
        while !self.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the call came from `runtime:__stream()`.
    pub fn is_stream(&self) -> bool {
        self.shared.task().is_stream()
    }

    /// Sends a chunk of the answer (copied); while Lua has a window's worth
    /// unread it waits without blocking a thread.  An empty chunk sends
    /// nothing.  [`StreamError::Closed`] once Lua gave up: stop.
    pub async fn send<B: AsRef<[u8]>>(&self, chunk: B) -> Result<(), StreamError> {
        let chunk = chunk.as_ref();
        poll_fn(|cx| {
            self.shared
                .poll_stream(cx, |task| task.try_send(chunk).map_err(|e| e.error()))
        })
        .await
    }

    /// The next chunk Lua wrote, waiting without blocking a thread; `None`
    /// once Lua called `stream:close_write()` and every chunk was read.
    pub async fn read(&self) -> Result<Option<Vec<u8>>, StreamError> {
        poll_fn(|cx| self.shared.poll_stream(cx, Task::try_read)).await
    }
}

/// A future that turns a panic of the inner future into an error.
struct CatchUnwind {
    future: BoxFuture,
}

impl Future for CatchUnwind {
    type Output = Result<Result<Vec<u8>, Error>, Box<dyn std::any::Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = &mut self.future;
        match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(p) => Poll::Ready(Err(p)),
        }
    }
}
