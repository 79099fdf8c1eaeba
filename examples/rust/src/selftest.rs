// SPDX-License-Identifier: BSD-2-Clause

//! Methods the tests use, async ("selftest") or on threads
//! ("selftest,blocking"): echo, error (rc from the request), panic, log,
//! trace, sleep (ms, async only), wait_cancel (async only: ends when the
//! caller gives up); the factory fails or panics for "selftest,fail" and
//! "selftest,panic".

use std::time::Duration;

use nonblocking_ffi::tokio::Call;
use nonblocking_ffi::{Error, Serve};

fn text(req: Option<&[u8]>) -> String {
    String::from_utf8_lossy(req.unwrap_or_default()).into_owned()
}

/// The methods that need no waiting.
fn sync_method(method: &str, req: Option<&[u8]>) -> Result<Vec<u8>, Error> {
    match method {
        "echo" => Ok(req.unwrap_or_default().to_vec()),
        "error" => {
            let rc: i32 = text(req).parse()?;
            Err(Error::new(rc, format!("error {rc}")))
        }
        "panic" => panic!("{}", text(req)),
        "log" => {
            log::warn!("{}", text(req));
            Ok(Vec::new())
        }
        // tracing events reach nginx too (the SDK's feature "tracing")
        "trace" => {
            tracing::error!(request = %text(req), "a tracing event");
            Ok(Vec::new())
        }
        other => Err(Error::new(404, format!("unknown method {other}"))),
    }
}

async fn async_method(call: Call) -> Result<Vec<u8>, Error> {
    match call.method() {
        "sleep" => {
            let ms: u64 = text(call.request()).parse()?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(format!("slept {ms}").into_bytes())
        }
        "wait_cancel" => {
            call.cancelled().await;
            log::info!("the caller gave up");
            Ok(b"cancelled".to_vec())
        }
        method => sync_method(method, call.request()),
    }
}

pub fn new(cfg: &str) -> Result<Serve, Error> {
    match cfg {
        "" => Ok(Serve::tokio(async_method)),
        "blocking" => Ok(Serve::threads(2, |task| {
            sync_method(task.method(), task.request())
        })),
        "fail" => Err(Error::msg("asked to fail")),
        "panic" => panic!("asked to panic"),
        other => Err(Error::msg(format!("unknown mode {other:?}"))),
    }
}
