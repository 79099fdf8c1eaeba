// SPDX-License-Identifier: BSD-2-Clause

//! Answers each call with its request (nil becomes "").

use nonblocking_ffi::tokio::Call;
use nonblocking_ffi::{Error, Serve, Task};

/// A cfg that is a number of threads, or empty for `default`.
pub fn thread_count(cfg: &str, default: usize) -> Result<usize, Error> {
    match cfg.trim() {
        "" => Ok(default),
        n => n
            .parse()
            .map_err(|e| Error::msg(format!("bad thread count {n:?}: {e}"))),
    }
}

/// cfg: the number of threads that poll (default 1).
pub fn blocking(cfg: &str) -> Result<Serve, Error> {
    let threads = thread_count(cfg, 1)?;
    Ok(Serve::threads(threads, |task: &Task| {
        Ok(task.request().unwrap_or_default().to_vec())
    }))
}

/// The same on tokio: many calls in flight on the library's runtime.
pub fn tokio(_cfg: &str) -> Result<Serve, Error> {
    Ok(Serve::tokio(|call: Call| async move {
        Ok(call.request().unwrap_or_default().to_vec())
    }))
}
