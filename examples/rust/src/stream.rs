// SPDX-License-Identifier: BSD-2-Clause

//! Streams (`runtime:__stream(method, req, opts)`), on threads ("stream",
//! "stream,<threads>") or on tokio ("stream_async"), with the same methods:
//!
//! | method | what |
//! |---|---|
//! | `count` `"N[,MS]"` | the chunks `"1\n"` to `"N\n"`, MS apart |
//! | `bytes` `"N,SIZE"` | N chunks of SIZE bytes, the i-th all byte i % 256 |
//! | `upper` | Lua's chunks back in upper case; at their end `"<n> bytes"` |
//! | `copy` (threads) | Lua's bytes back through `std::io::copy` |
//! | `fail`, `panic` | a chunk, then the error rc 7, or a panic |
//!
//! "stream_stats" answers what the tests watch: chunks sent, sends waiting
//! for the window, CLOSED results seen, streams running.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nonblocking_ffi::tokio::Call;
use nonblocking_ffi::{Error, Serve, Stream, StreamError};

use crate::echo::thread_count;

static SENT: AtomicUsize = AtomicUsize::new(0);
static WAITING: AtomicUsize = AtomicUsize::new(0);
static CLOSED: AtomicUsize = AtomicUsize::new(0);
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// One more in a counter while it lives (a panic unwinds it too).
struct Counted(&'static AtomicUsize);

impl Counted {
    fn new(counter: &'static AtomicUsize) -> Counted {
        counter.fetch_add(1, Ordering::SeqCst);
        Counted(counter)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts what a send ended with.
fn sent(result: Result<(), StreamError>) -> Result<(), StreamError> {
    match result {
        Ok(()) => SENT.fetch_add(1, Ordering::SeqCst),
        Err(StreamError::Closed) => CLOSED.fetch_add(1, Ordering::SeqCst),
        Err(_) => 0,
    };
    result
}

fn read_seen(result: Result<Option<Vec<u8>>, StreamError>) -> Result<Option<Vec<u8>>, StreamError> {
    if result == Err(StreamError::Closed) {
        CLOSED.fetch_add(1, Ordering::SeqCst);
    }
    result
}

/// What `count` and `bytes` send, and the pause before each chunk.
type Chunks = (Box<dyn Iterator<Item = Vec<u8>> + Send>, Duration);

fn numbers(req: Option<&[u8]>) -> Result<Vec<u64>, Error> {
    String::from_utf8_lossy(req.unwrap_or_default())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .map_err(|e| Error::new(400, format!("bad request {n:?}: {e}")))
        })
        .collect()
}

/// The chunks of the methods that only send; None for the others.
fn produce(method: &str, req: Option<&[u8]>) -> Result<Option<Chunks>, Error> {
    if method != "count" && method != "bytes" {
        return Ok(None);
    }
    let chunks: Chunks = match (method, numbers(req)?.as_slice()) {
        ("count", [n, rest @ ..]) if rest.len() <= 1 => (
            Box::new((1..=*n).map(|i| format!("{i}\n").into_bytes())),
            Duration::from_millis(rest.first().copied().unwrap_or(0)),
        ),
        ("bytes", [n, size]) => {
            let size = *size as usize;
            (
                Box::new((0..*n).map(move |i| vec![i as u8; size])),
                Duration::ZERO,
            )
        }
        _ => return Err(Error::new(400, "bad request: too few or many numbers")),
    };
    Ok(Some(chunks))
}

fn unknown(method: &str) -> Error {
    Error::new(404, format!("unknown method {method}"))
}

fn failed_midway() -> Error {
    Error::new(7, "failed midway")
}

/// The handler on threads: it may block, each stream holds its thread.
fn on_thread(s: &mut Stream<'_>) -> Result<Vec<u8>, Error> {
    let _running = Counted::new(&RUNNING);
    let send = |s: &Stream<'_>, chunk: Vec<u8>| {
        let _waiting = Counted::new(&WAITING);
        sent(s.send(chunk))
    };
    if let Some((chunks, pause)) = produce(s.method(), s.request())? {
        for chunk in chunks {
            std::thread::sleep(pause);
            send(s, chunk)?;
        }
        return Ok(Vec::new());
    }
    match s.method() {
        "upper" => {
            let mut total = 0;
            while let Some(chunk) = read_seen(s.read_chunk())? {
                total += chunk.len();
                send(s, chunk.to_ascii_uppercase())?;
            }
            Ok(format!("{total} bytes").into_bytes())
        }
        // the two directions as std::io::Read and Write
        "copy" => {
            let (reader, mut writer) = s.split();
            let n = std::io::copy(reader, &mut writer)?;
            Ok(format!("{n} bytes").into_bytes())
        }
        "fail" => {
            send(s, b"before\n".to_vec())?;
            Err(failed_midway())
        }
        "panic" => {
            send(s, b"before\n".to_vec())?;
            panic!("mid-stream")
        }
        other => Err(unknown(other)),
    }
}

/// The same on tokio: a full window or no chunk yet waits without holding
/// a thread.
async fn on_tokio(call: Call) -> Result<Vec<u8>, Error> {
    let _running = Counted::new(&RUNNING);
    let send = |chunk: Vec<u8>| {
        let call = &call;
        async move {
            let _waiting = Counted::new(&WAITING);
            sent(call.send(chunk).await)
        }
    };
    if let Some((chunks, pause)) = produce(call.method(), call.request())? {
        for chunk in chunks {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            send(chunk).await?;
        }
        return Ok(Vec::new());
    }
    match call.method() {
        "upper" => {
            let mut total = 0;
            while let Some(chunk) = read_seen(call.read().await)? {
                total += chunk.len();
                send(chunk.to_ascii_uppercase()).await?;
            }
            Ok(format!("{total} bytes").into_bytes())
        }
        "fail" => {
            send(b"before\n".to_vec()).await?;
            Err(failed_midway())
        }
        "panic" => {
            send(b"before\n".to_vec()).await?;
            panic!("mid-stream")
        }
        other => Err(unknown(other)),
    }
}

/// cfg: the number of threads, how many streams run at once (default 4).
pub fn threads(cfg: &str) -> Result<Serve, Error> {
    Ok(Serve::stream_threads(thread_count(cfg, 4)?, on_thread))
}

pub fn tokio(_cfg: &str) -> Result<Serve, Error> {
    Ok(Serve::stream_tokio(on_tokio))
}

pub fn stats(_cfg: &str) -> Result<Serve, Error> {
    Ok(Serve::threads(1, |_task| {
        let text = format!(
            "sent={} waiting={} closed={} running={}",
            SENT.load(Ordering::SeqCst),
            WAITING.load(Ordering::SeqCst),
            CLOSED.load(Ordering::SeqCst),
            RUNNING.load(Ordering::SeqCst)
        );
        Ok(text.into_bytes())
    }))
}
