// SPDX-License-Identifier: BSD-2-Clause

//! Streams on the fake module (abi/fake.rs): the Task's stream calls, the
//! window, END, CLOSED, AGAIN and the fd; blocking and async streaming
//! handlers.

use std::io::{Read, Write};
use std::sync::Arc;

use crate::abi::fake::{err, logged, ok, readable, Answer, FakeQueue, FakeTask};
use crate::registry::start;
use crate::{Error, Handler, Serve, Stream, StreamError, Task, TrySendError};

fn chunks(list: &[&[u8]]) -> Vec<Vec<u8>> {
    list.iter().map(|c| c.to_vec()).collect()
}

const CLOSED: &str = "nffi: the stream was closed by the Lua side";

/// A stream task taken from a new fake queue, and its fake side.
fn stream_task(req: Option<&[u8]>, window: usize) -> (Task, Arc<FakeTask>) {
    let q = FakeQueue::new();
    let fake = q.push_stream("s", req, window);
    (q.queue().poll().unwrap(), fake)
}

#[test]
fn try_calls_give_again_and_the_fd_tells_when_to_go_on() {
    let (task, lua) = stream_task(Some(b"req"), 10);
    assert!(task.is_stream());
    assert_eq!(task.request(), Some(&b"req"[..]));
    let fd = task.stream_fd().unwrap();
    assert!(!readable(fd, 0));

    // the window holds 10 bytes: the chunk comes back with Again
    task.try_send(b"12345678".to_vec()).unwrap();
    assert_eq!(
        task.try_send(vec![9u8; 5]),
        Err(TrySendError::Again(vec![9u8; 5]))
    );
    assert!(!readable(fd, 0));
    assert_eq!(lua.lua_read(), Some(b"12345678".to_vec()));
    assert!(readable(fd, 0), "room came: the fd is readable");
    task.try_send(vec![9u8; 5]).unwrap();
    assert!(!readable(fd, 0), "the next try_ call resets the fd");
    // a chunk larger than the window passes alone
    assert_eq!(lua.lua_read(), Some(vec![9u8; 5]));
    task.send(vec![7u8; 100]).unwrap();
    assert_eq!(lua.lua_read(), Some(vec![7u8; 100]));
    // an empty chunk sends nothing
    task.send(b"").unwrap();

    // Lua's chunks: Again until one comes, then the end
    assert_eq!(task.try_read(), Err(StreamError::Again));
    assert!(!readable(fd, 0));
    lua.lua_write(b"a\0b");
    assert!(readable(fd, 0), "a chunk came: the fd is readable");
    assert_eq!(task.try_read(), Ok(Some(b"a\0b".to_vec())));
    assert!(!readable(fd, 0));
    lua.lua_write(b"c");
    lua.lua_close_write();
    assert_eq!(task.read(), Ok(Some(b"c".to_vec())));
    assert_eq!(task.read(), Ok(None));
    assert_eq!(task.try_read(), Ok(None));

    task.respond(0, Some(b"last"));
    assert_eq!(lua.lua_read_all(), (vec![], ok(b"last")));
    assert_eq!(lua.stream_state(|s| s.max_out_unread), 100);
}

#[test]
fn a_closed_stream_fails_every_call_at_once_and_wakes_the_fd() {
    let (task, lua) = stream_task(None, 4);
    let fd = task.stream_fd().unwrap();
    task.try_send(b"1234").unwrap();
    assert_eq!(task.try_send(b"5"), Err(TrySendError::Again(b"5")));
    lua.lua_close();
    assert!(readable(fd, 0));
    assert_eq!(
        task.try_send(b"5"),
        Err(TrySendError::Failed(StreamError::Closed))
    );
    assert_eq!(task.send(b"6"), Err(StreamError::Closed));
    assert_eq!(task.read(), Err(StreamError::Closed));
    assert_eq!(task.try_read(), Err(StreamError::Closed));
    assert_eq!(lua.stream_state(|s| s.closed_seen), 4);
    task.respond(0, None);
    assert_eq!(lua.wait(), Answer { rc: 0, data: None });

    // closed before the fd was made: readable from the start
    let (task, lua) = stream_task(None, 4);
    lua.lua_close();
    assert!(readable(task.stream_fd().unwrap(), 0));
    assert_eq!(task.try_read(), Err(StreamError::Closed));
}

#[test]
fn an_ordinary_task_refuses_the_stream_calls() {
    let q = FakeQueue::new();
    let fake = q.push("plain", None);
    let task = q.queue().poll().unwrap();
    assert!(!task.is_stream());
    assert_eq!(task.send(b"x"), Err(StreamError::NotStream));
    assert_eq!(
        task.try_send(b"x"),
        Err(TrySendError::Failed(StreamError::NotStream))
    );
    assert_eq!(task.read(), Err(StreamError::NotStream));
    assert_eq!(task.try_read(), Err(StreamError::NotStream));
    assert_eq!(
        task.stream_fd().unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
    assert_eq!(Stream::new(&task).unwrap_err(), StreamError::NotStream);
    assert!(logged("stream_send on something that is not a stream task"));
    task.respond(0, Some(b"fine"));
    assert_eq!(fake.wait(), ok(b"fine"));
}

#[test]
fn a_blocking_send_waits_for_the_window_and_one_sender_at_a_time() {
    let (task, lua) = stream_task(None, 8);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..20u8 {
                task.send([i; 4]).unwrap();
            }
        });
        lua.wait_stream("the sender to wait for room", |s| s.senders_waiting == 1);
        assert_eq!(lua.stream_state(|s| s.out_unread), 8);
        assert_eq!(
            task.try_send(b"x"),
            Err(TrySendError::Failed(StreamError::Busy))
        );
        for i in 0..20u8 {
            assert_eq!(lua.lua_read(), Some(vec![i; 4]));
        }
    });
    assert!(lua.stream_state(|s| s.max_out_unread) <= 8);

    // one reader at a time too
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| task.read());
        lua.wait_stream("the reader to wait", |s| s.readers_waiting == 1);
        assert_eq!(task.try_read(), Err(StreamError::Busy));
        lua.lua_write(b"z");
        assert_eq!(reader.join().unwrap(), Ok(Some(b"z".to_vec())));
    });
    task.respond(0, None);
}

#[test]
fn a_stream_is_read_and_written_through_std_io() {
    let (task, lua) = stream_task(None, 1 << 20);
    lua.lua_write(b"hello ");
    lua.lua_write(b"world");
    lua.lua_close_write();
    let mut s = Stream::new(&task).unwrap();
    let mut three = [0u8; 3];
    assert_eq!(s.read(&mut three).unwrap(), 3);
    assert_eq!(&three, b"hel");
    // the chunk API gives what Read left of a chunk first
    assert_eq!(s.read_chunk(), Ok(Some(b"lo ".to_vec())));
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "world");
    write!(s, "{}-{}", 4, 2).unwrap();
    let (reader, mut writer) = s.split();
    assert_eq!(reader.read(&mut three).unwrap(), 0);
    writer.write_all(b"!").unwrap();

    lua.lua_close();
    let e = s.write(b"x").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    assert_eq!(Error::from(e).message(), CLOSED);
    task.respond(0, None);
    // each write is a chunk (how many write! makes is up to std)
    assert_eq!(lua.lua_read_all().0.concat(), b"4-2!");
}

// --- serving streams -------------------------------------------------------

fn number(req: Option<&[u8]>) -> usize {
    String::from_utf8_lossy(req.unwrap_or_default())
        .parse()
        .unwrap_or(0)
}

fn stream_blocking(s: &mut Stream<'_>) -> Result<Vec<u8>, Error> {
    match s.method() {
        "count" => {
            for i in 1..=number(s.request()) {
                s.send(i.to_string())?;
            }
            Ok(b"done".to_vec())
        }
        "upper" => {
            let mut total = 0;
            while let Some(chunk) = s.read_chunk()? {
                total += chunk.len();
                s.send(chunk.to_ascii_uppercase())?;
            }
            Ok(format!("{total} bytes").into_bytes())
        }
        "panic" => {
            s.send("before")?;
            panic!("mid-stream")
        }
        "forever" => loop {
            s.send([b'x'; 1000])?;
        },
        other => Err(Error::new(404, format!("unknown method {other}"))),
    }
}

fn blocking_streams(_cfg: &str) -> Result<Serve, Error> {
    Ok(Serve::stream_threads(4, stream_blocking))
}

fn ordinary(_cfg: &str) -> Result<Serve, Error> {
    Ok(Serve::threads(1, |task: &Task| {
        Ok(task.request().unwrap_or_default().to_vec())
    }))
}

static HANDLERS: &[Handler] = &[
    Handler::new("streams", blocking_streams),
    Handler::new("ordinary", ordinary),
];

/// What count, upper, panic and forever answer on any streaming runtime.
fn check_streaming_methods(q: &FakeQueue) {
    let count = q.push_stream("count", Some(b"3"), 1 << 20);
    assert_eq!(
        count.lua_read_all(),
        (chunks(&[b"1", b"2", b"3"]), ok(b"done"))
    );

    let upper = q.push_stream("upper", None, 1 << 20);
    upper.lua_write(b"ab\0c");
    assert_eq!(upper.lua_read(), Some(b"AB\0C".to_vec()));
    upper.lua_write(b"de");
    upper.lua_close_write();
    assert_eq!(upper.lua_read_all(), (chunks(&[b"DE"]), ok(b"6 bytes")));

    let panic = q.push_stream("panic", None, 1 << 20);
    assert_eq!(
        panic.lua_read_all(),
        (chunks(&[b"before"]), err(2, "panic: mid-stream"))
    );

    // Lua gives up while the handler waits for room: it sees CLOSED, stops
    let forever = q.push_stream("forever", None, 4000);
    for _ in 0..10 {
        assert_eq!(forever.lua_read(), Some(vec![b'x'; 1000]));
    }
    forever.wait_stream("a full window", |s| s.out_unread == 4000);
    forever.lua_close();
    assert_eq!(forever.wait(), err(1, CLOSED));
    assert!(forever.stream_state(|s| s.max_out_unread) <= 4000);
    assert_eq!(forever.stream_state(|s| s.closed_seen), 1);

    // a streaming handler refuses an ordinary call
    assert_eq!(
        q.push("count", Some(b"3")).wait(),
        err(
            1,
            "nffi: method \"count\" streams its answer: call it with \
             runtime:__stream(\"count\", req)"
        )
    );
}

#[test]
fn blocking_streaming_handlers() {
    let q = FakeQueue::new();
    assert_eq!(start(Some("streams".into()), Some(q.queue()), HANDLERS), 0);
    check_streaming_methods(q);
    assert!(logged(
        r#"nffi: handler panicked in method "panic": panic: mid-stream"#
    ));
    q.close();
}

#[test]
fn an_ordinary_handler_answers_a_stream_in_one_chunk() {
    let q = FakeQueue::new();
    assert_eq!(start(Some("ordinary".into()), Some(q.queue()), HANDLERS), 0);
    let s = q.push_stream("echo", Some(b"one\0chunk"), 1 << 20);
    assert_eq!(s.lua_read_all(), (vec![], ok(b"one\0chunk")));
    q.close();
}

#[cfg(feature = "tokio")]
mod tokio_streams {
    use super::*;
    use crate::tokio::Call;

    async fn stream_async(call: Call) -> Result<Vec<u8>, Error> {
        match call.method() {
            "count" => {
                for i in 1..=number(call.request()) {
                    call.send(i.to_string()).await?;
                }
                Ok(b"done".to_vec())
            }
            "upper" => {
                let mut total = 0;
                while let Some(chunk) = call.read().await? {
                    total += chunk.len();
                    call.send(chunk.to_ascii_uppercase()).await?;
                }
                Ok(format!("{total} bytes").into_bytes())
            }
            "panic" => {
                call.send("before").await?;
                panic!("mid-stream")
            }
            "forever" => loop {
                call.send([b'x'; 1000]).await?;
            },
            // both ways at once, from two tokio tasks, each waiting on the
            // stream's one fd
            "duplex" => {
                let call = Arc::new(call);
                let reader = tokio::spawn({
                    let call = call.clone();
                    async move {
                        let mut total = 0;
                        while let Some(chunk) = call.read().await? {
                            total += chunk.len();
                        }
                        Ok::<_, StreamError>(total)
                    }
                });
                for i in 0..number(call.request()) {
                    call.send([i as u8; 500]).await?;
                }
                let total = reader.await.expect("the reader ends")?;
                Ok(format!("read {total}").into_bytes())
            }
            other => Err(Error::new(404, format!("unknown method {other}"))),
        }
    }

    fn async_streams(_cfg: &str) -> Result<Serve, Error> {
        Ok(Serve::stream_tokio(stream_async))
    }

    fn async_ordinary(_cfg: &str) -> Result<Serve, Error> {
        Ok(Serve::tokio(|call: Call| async move {
            Ok(call.request().unwrap_or_default().to_vec())
        }))
    }

    static ASYNC: &[Handler] = &[
        Handler::new("streams", async_streams),
        Handler::new("ordinary", async_ordinary),
    ];

    #[test]
    fn async_streaming_handlers() {
        let q = FakeQueue::new();
        assert_eq!(start(Some("streams".into()), Some(q.queue()), ASYNC), 0);
        check_streaming_methods(q);
        q.close();

        let q = FakeQueue::new();
        assert_eq!(start(Some("ordinary".into()), Some(q.queue()), ASYNC), 0);
        let s = q.push_stream("echo", Some(b"one\0chunk"), 1 << 20);
        assert_eq!(s.lua_read_all(), (vec![], ok(b"one\0chunk")));
        q.close();
    }

    #[test]
    fn many_streams_wait_on_their_fds_without_blocking_the_runtime() {
        let q = FakeQueue::new();
        assert_eq!(start(Some("streams".into()), Some(q.queue()), ASYNC), 0);
        // far more streams than tokio threads, each with a full window; and
        // each reading and sending at once on its one fd
        let counts: Vec<_> = (0..50)
            .map(|_| q.push_stream("count", Some(b"100"), 3))
            .collect();
        let duplex: Vec<_> = (0..20)
            .map(|_| q.push_stream("duplex", Some(b"40"), 1000))
            .collect();
        for c in &counts {
            c.wait_stream("a full window", |s| s.out_unread >= 2);
        }
        for round in 0..40 {
            for d in &duplex {
                if round < 20 {
                    d.lua_write(&[b'w'; 100]);
                } else if round == 20 {
                    d.lua_close_write();
                }
                assert_eq!(d.lua_read(), Some(vec![round as u8; 500]));
            }
            // an ordinary call is answered meanwhile (refused, at once)
            assert_eq!(q.push("count", None).wait().rc, 1);
        }
        for d in &duplex {
            assert_eq!(d.lua_read_all(), (vec![], ok(b"read 2000")));
            assert!(d.stream_state(|s| s.max_out_unread) <= 1000);
        }
        let want: Vec<Vec<u8>> = (1..=100).map(|i: i32| i.to_string().into_bytes()).collect();
        for c in &counts {
            assert_eq!(c.lua_read_all(), (want.clone(), ok(b"done")));
            assert!(c.stream_state(|s| s.max_out_unread) <= 3);
        }
        q.close();
    }
}
