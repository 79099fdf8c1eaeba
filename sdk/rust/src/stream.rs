// SPDX-License-Identifier: BSD-2-Clause

//! Streams (ABI 4): the answer of a `runtime:__stream()` call in chunks,
//! and the chunks Lua writes after its request.  The calls themselves are
//! [`Task`]'s; this module has their errors and [`Stream`], the form a
//! blocking streaming handler gets, with `std::io` adapters.

use std::fmt;
use std::io;

use crate::abi::Task;

/// Why a stream call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// Nothing to do now (`try_` calls only): the window is full, or no
    /// chunk came yet; wait until the stream's fd is readable.
    Again,
    /// The Lua side gave up (timeout, client gone, `stream:close()`, the
    /// stream collected): every later call fails the same way at once.
    /// Stop, and still answer the task (the answer is dropped).
    Closed,
    /// The task is an ordinary call (`runtime:method(req)`), not a stream.
    NotStream,
    /// Another thread sends (or reads) on this stream right now: one of
    /// each at a time.
    Busy,
    /// A chunk of 2 GB or more.
    TooLarge,
    /// No memory for the chunk.
    NoMemory,
    /// The module refused the call (its error log says why).
    Failed,
    /// The stream's fd could not be made or watched.
    Fd(String),
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Again => f.write_str("nffi: the stream cannot go on yet"),
            StreamError::Closed => f.write_str("nffi: the stream was closed by the Lua side"),
            StreamError::NotStream => f.write_str("nffi: not a stream call"),
            StreamError::Busy => f.write_str("nffi: another thread sends or reads on this stream"),
            StreamError::TooLarge => f.write_str("nffi: a chunk larger than 2 GB"),
            StreamError::NoMemory => f.write_str("nffi: no memory for a chunk"),
            StreamError::Failed => f.write_str("nffi: the module refused a stream call"),
            StreamError::Fd(e) => write!(f, "nffi: the stream's fd: {e}"),
        }
    }
}

impl std::error::Error for StreamError {}

impl From<StreamError> for io::Error {
    fn from(e: StreamError) -> io::Error {
        let kind = match e {
            StreamError::Again => io::ErrorKind::WouldBlock,
            StreamError::Closed => io::ErrorKind::BrokenPipe,
            StreamError::NotStream | StreamError::TooLarge => io::ErrorKind::InvalidInput,
            StreamError::NoMemory => io::ErrorKind::OutOfMemory,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Why a [`Task::try_send`] did not send.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<B> {
    /// The window is full: here is the chunk back; send it again once the
    /// stream's fd is readable.
    Again(B),
    /// Any other failure (never [`StreamError::Again`]); the chunk is gone.
    Failed(StreamError),
}

impl<B> TrySendError<B> {
    /// The error, without the chunk.
    pub fn error(&self) -> StreamError {
        match self {
            TrySendError::Again(_) => StreamError::Again,
            TrySendError::Failed(e) => e.clone(),
        }
    }
}

impl<B> fmt::Display for TrySendError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error().fmt(f)
    }
}

impl<B: fmt::Debug> std::error::Error for TrySendError<B> {}

/// A stream call as a blocking streaming handler gets it
/// ([`Serve::stream_threads`](crate::Serve::stream_threads)), or
/// [`Stream::new`] makes it of a task: [`Stream::send`] and
/// [`Stream::read_chunk`] by chunks, or `std::io::Write` (each `write` sends one
/// chunk: wrap it in a `BufWriter` for small writes) and `std::io::Read`.
#[derive(Debug)]
pub struct Stream<'t> {
    reader: Reader<'t>,
}

impl<'t> Stream<'t> {
    /// The stream of a task; [`StreamError::NotStream`] for an ordinary
    /// call.
    pub fn new(task: &'t Task) -> Result<Stream<'t>, StreamError> {
        if !task.is_stream() {
            return Err(StreamError::NotStream);
        }
        Ok(Stream {
            reader: Reader {
                task,
                chunk: Vec::new(),
                pos: 0,
            },
        })
    }

    /// The task: its request, method name and the raw stream calls.
    pub fn task(&self) -> &'t Task {
        self.reader.task
    }

    /// The request (the first chunk from Lua), `None` when Lua passed nil.
    pub fn request(&self) -> Option<&'t [u8]> {
        self.reader.task.request()
    }

    /// The method name: `"foo"` for `runtime:__stream("foo", req)`.
    pub fn method(&self) -> &'t str {
        self.reader.task.method()
    }

    /// Sends a chunk, waiting while Lua has a window's worth unread.
    pub fn send<B: AsRef<[u8]>>(&self, chunk: B) -> Result<(), StreamError> {
        self.reader.task.send(chunk)
    }

    /// The next chunk Lua wrote (what `Read` left of one first), waiting
    /// for it; `None` once Lua called `stream:close_write()`.  (Named so
    /// that it does not hide `std::io::Read::read`.)
    pub fn read_chunk(&mut self) -> Result<Option<Vec<u8>>, StreamError> {
        self.reader.read_chunk()
    }

    /// The two directions apart, to read on one thread while another sends
    /// (`std::thread::scope`).
    pub fn split(&mut self) -> (&mut Reader<'t>, Writer<'t>) {
        let writer = Writer(self.reader.task);
        (&mut self.reader, writer)
    }
}

impl io::Read for Stream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl io::Write for Stream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Writer(self.reader.task).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The chunks Lua writes, as `std::io::Read` (0 at their end).
#[derive(Debug)]
pub struct Reader<'t> {
    task: &'t Task,
    chunk: Vec<u8>,
    pos: usize,
}

impl Reader<'_> {
    /// The next chunk (what `Read` left of one first); `None` at the end.
    pub fn read_chunk(&mut self) -> Result<Option<Vec<u8>>, StreamError> {
        if self.pos < self.chunk.len() {
            let rest = self.chunk.split_off(self.pos);
            self.pos = 0;
            self.chunk.clear();
            return Ok(Some(rest));
        }
        self.task.read()
    }
}

impl io::Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.task.read()? {
                Some(chunk) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The answer's chunks, as `std::io::Write`: each `write` sends one chunk
/// (waiting while the window is full).
#[derive(Debug, Clone, Copy)]
pub struct Writer<'t>(&'t Task);

impl io::Write for Writer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
