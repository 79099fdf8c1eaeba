// SPDX-License-Identifier: BSD-2-Clause

//! lib_nonblocking_ffi_rust.so: one library hosting every Rust handler of
//! the examples (docs/rust.md); `cfg` picks one.
//!
//! | cfg | what |
//! |---|---|
//! | `"echo"`, `"echo,<threads>"` | answers each request, on threads that poll |
//! | `"echo_async"` | the same, as an async handler on tokio |
//! | `"grpc,http://host:port"` | a tonic client of `proto/demo.proto` |
//! | `"raw"` | polls the queue itself, with the Task API |
//! | `"selftest"`, `"selftest,blocking"` | used by the tests |
//! | `"stream"`, `"stream,<threads>"` | streams on threads: count, bytes, upper, copy |
//! | `"stream_async"` | the same streams on tokio |
//! | `"stream_stats"` | the counters of the stream methods, for the tests |

mod echo;
mod grpc;
mod raw;
mod selftest;
mod stream;

nonblocking_ffi::export!(
    "echo" => echo::blocking,
    "echo_async" => echo::tokio,
    "grpc" => grpc::new,
    "raw" => raw::new,
    "selftest" => selftest::new,
    "stream" => stream::threads,
    "stream_async" => stream::tokio,
    "stream_stats" => stream::stats,
);
