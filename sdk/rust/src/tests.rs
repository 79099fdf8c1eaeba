// SPDX-License-Identifier: BSD-2-Clause

//! The crate on the fake module (abi/fake.rs): serving, answers, panics,
//! dropped tasks, init errors, async calls and unload.

use crate::abi::fake::{err, logged, ok, Answer, FakeQueue};
use crate::registry::start;
use crate::{Error, Handler, Serve, Task};

fn blocking(_cfg: &str) -> Result<Serve, Error> {
    Ok(Serve::threads(2, |task: &Task| match task.method() {
        "echo" => Ok(task.request().unwrap_or_default().to_vec()),
        "fail" => Err(Error::new(7, "failed")),
        "panic" => panic!("boom"),
        other => Err(Error::new(404, format!("unknown method {other}"))),
    }))
}

fn failing(cfg: &str) -> Result<Serve, Error> {
    match cfg {
        "panic" => panic!("factory panic"),
        _ => Err(Error::msg("asked to fail")),
    }
}

fn raw(_cfg: &str) -> Result<Serve, Error> {
    Ok(Serve::raw(|queue| {
        std::thread::spawn(move || {
            while let Some(task) = queue.poll() {
                match task.method() {
                    "nil" => task.respond(0, None),
                    _ => drop(task), // forgotten: Drop answers
                }
            }
        });
        Ok(())
    }))
}

static HANDLERS: &[Handler] = &[
    Handler::new("blocking", blocking),
    Handler::new("failing", failing),
    Handler::new("raw", raw),
];

#[test]
fn blocking_handlers_answer_binary_large_and_failing_calls() {
    let q = FakeQueue::new();
    assert_eq!(start(Some("blocking".into()), Some(q.queue()), HANDLERS), 0);
    let big: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let calls = [
        q.push("echo", Some(b"a\0b")),
        q.push("echo", Some(&big)),
        q.push("echo", Some(b"")),
        q.push("echo", None),
        q.push("fail", None),
        q.push("panic", None),
        q.push("nope", None),
    ];
    let answers: Vec<Answer> = calls.iter().map(|t| t.wait()).collect();
    assert_eq!(answers[0], ok(b"a\0b"));
    assert_eq!(answers[1], ok(&big));
    assert_eq!(answers[2], ok(b""));
    assert_eq!(answers[3], ok(b""));
    assert_eq!(answers[4], err(7, "failed"));
    assert_eq!(answers[5], err(2, "panic: boom"));
    assert_eq!(answers[6], err(404, "unknown method nope"));
    assert!(logged(
        r#"nffi: handler panicked in method "panic": panic: boom"#
    ));
    q.close();
    assert!(calls.iter().all(|t| t.answers() == 1));
}

#[test]
fn a_dropped_task_answers_an_error_and_nil_stays_nil() {
    let q = FakeQueue::new();
    assert_eq!(start(Some("raw".into()), Some(q.queue()), HANDLERS), 0);
    let dropped = q.push("forget", Some(b"x"));
    let nil = q.push("nil", None);
    assert_eq!(
        dropped.wait(),
        err(1, "nffi: the task was dropped without an answer")
    );
    assert_eq!(nil.wait(), Answer { rc: 0, data: None });
    q.close();
    assert_eq!((dropped.answers(), nil.answers()), (1, 1));
}

#[test]
fn bad_cfg_fails_the_init_with_a_reason() {
    let cases: [(Option<&str>, i32, &str); 6] = [
        (
            None,
            1,
            "cfg is nil: name a handler (blocking, failing, raw)",
        ),
        (
            Some(""),
            1,
            "cfg \"\" names no handler (blocking, failing, raw)",
        ),
        (Some(",x"), 1, "cfg \",x\" names no handler"),
        (
            Some("nope,{}"),
            2,
            "no handler \"nope\" in this library (it has: blocking, failing, raw)",
        ),
        (Some("failing"), 3, "handler \"failing\": asked to fail"),
        (
            Some("failing,panic"),
            3,
            "handler \"failing\": panic: factory panic",
        ),
    ];
    for (cfg, rc, reason) in cases {
        let q = FakeQueue::new();
        assert_eq!(
            start(cfg.map(String::from), Some(q.queue()), HANDLERS),
            rc,
            "{cfg:?}"
        );
        let got = q.init_error.lock().unwrap().clone();
        assert!(got.starts_with(reason), "{cfg:?}: {got}");
        assert!(logged(&format!("nffi: {reason}")));
    }
    assert_eq!(start(Some("raw".into()), None, HANDLERS), 1);
}

#[cfg(feature = "tokio")]
mod tokio_tests {
    use std::time::Duration;

    use super::*;
    use crate::tokio::Call;

    async fn handler(call: Call) -> Result<Vec<u8>, Error> {
        match call.method() {
            "sleep" => {
                let ms: u64 =
                    String::from_utf8_lossy(call.request().unwrap_or_default()).parse()?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(format!("slept {ms}").into_bytes())
            }
            "panic" => panic!("async boom"),
            "detach" => {
                // the Call outlives the handler's future: answered when it goes
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    drop(call);
                });
                Ok(b"late".to_vec())
            }
            "wait_cancel" => {
                call.cancelled().await;
                Ok(b"cancelled".to_vec())
            }
            _ => Ok(call.request().unwrap_or_default().to_vec()),
        }
    }

    fn async_factory(_cfg: &str) -> Result<Serve, Error> {
        Ok(Serve::tokio(handler))
    }

    static ASYNC: &[Handler] = &[Handler::new("async", async_factory)];

    #[test]
    fn acceptors_spin_unless_the_process_has_one_cpu() {
        use crate::tokio::spin_rounds;
        use std::num::NonZeroUsize;
        assert_eq!(spin_rounds(64, NonZeroUsize::new(1)), 0);
        assert_eq!(spin_rounds(64, NonZeroUsize::new(2)), 64);
        assert_eq!(spin_rounds(5, NonZeroUsize::new(16)), 5);
        // parallelism unknown: as configured
        assert_eq!(spin_rounds(64, None), 64);
    }

    #[test]
    fn many_async_calls_in_flight_panics_and_unload() {
        let q = FakeQueue::new();
        assert_eq!(start(Some("async".into()), Some(q.queue()), ASYNC), 0);
        // 100 calls at once, later ones sleep less: answered out of order
        let calls: Vec<_> = (0..100)
            .map(|i| q.push("sleep", Some(format!("{}", (100 - i) % 40).as_bytes())))
            .collect();
        for (i, t) in calls.iter().enumerate() {
            assert_eq!(t.wait(), ok(format!("slept {}", (100 - i) % 40).as_bytes()));
        }
        assert_eq!(q.push("panic", None).wait(), err(2, "panic: async boom"));
        assert_eq!(q.push("echo", Some(b"\0x\0")).wait(), ok(b"\0x\0"));
        assert_eq!(q.push("detach", None).wait(), ok(b"late"));

        let waiting = q.push("wait_cancel", None);
        waiting
            .cancelled
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(waiting.wait(), ok(b"cancelled"));

        // unload with calls running and queued: every one is answered
        let running: Vec<_> = (0..20).map(|_| q.push("sleep", Some(b"100"))).collect();
        q.close();
        for t in &running {
            assert_eq!(t.wait(), ok(b"slept 100"));
            assert_eq!(t.answers(), 1);
        }
    }
}
