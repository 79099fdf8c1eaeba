// SPDX-License-Identifier: BSD-2-Clause

//! Rust runtimes for lua-resty-nonblocking-ffi: Lua code in nginx calls
//! Rust without blocking the worker.  See `docs/rust.md`.
//!
//! A library registers handlers by name with [`export!`], which exports
//! `lib_nonblocking_ffi_init`; the `cfg` of `ngx.load_nonblocking_ffi(lib,
//! cfg)` picks one (`"name"` or `"name,<its cfg>"`), whose factory returns
//! how its calls are served: threads that poll ([`Serve::threads`]), async
//! handlers on tokio ([`Serve::tokio`], feature `tokio`), or code of your
//! own on the [`Queue`] ([`Serve::raw`]).  Calls of `runtime:__stream()`
//! answer in chunks and read Lua's ([`Serve::stream_threads`] with a
//! [`Stream`], `Serve::stream_tokio`, or the stream calls of [`Task`]).
//!
//! ```ignore
//! use nonblocking_ffi::{Error, Serve};
//!
//! fn echo(_cfg: &str) -> Result<Serve, Error> {
//!     Ok(Serve::threads(2, |task| Ok(task.request().unwrap_or_default().to_vec())))
//! }
//!
//! nonblocking_ffi::export!("echo" => echo);
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod abi;
mod error;
mod logger;
mod registry;
mod serve;
mod stream;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use abi::{abi_version, Queue, Taken, Task, ABI_VERSION, BATCH, RC_ERROR};
pub use error::{Error, RC_PANIC};
pub use logger::{log, Level};
pub use registry::{
    Handler, INIT_FACTORY_FAILED, INIT_NO_HANDLER, INIT_OLD_MODULE, INIT_UNKNOWN_HANDLER,
};
pub use serve::Serve;
pub use stream::{Reader, Stream, StreamError, TrySendError, Writer};

#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;

/// For the expansion of [`export!`] only.
#[doc(hidden)]
pub mod __private {
    pub use crate::abi::init;
}

/// Exports `lib_nonblocking_ffi_init` for the handlers listed, each a name
/// and a factory `fn(&str) -> Result<Serve, Error>` that gets the rest of
/// the cfg (what follows `"name,"`).  Use it once per library.
///
/// ```ignore
/// nonblocking_ffi::export!("echo" => echo::new, "grpc" => grpc::new);
/// ```
#[macro_export]
macro_rules! export {
    ($($name:literal => $factory:expr),+ $(,)?) => {
        /// The ABI version this library was built for: the module refuses
        /// to load a library built for a newer ABI than its own.
        #[no_mangle]
        #[used]
        #[allow(non_upper_case_globals)]
        pub static lib_nonblocking_ffi_abi_built: ::std::ffi::c_int = $crate::ABI_VERSION;

        /// The runtime's entry point, called by the nginx module.
        ///
        /// # Safety
        ///
        /// Called by the module as include/nonblocking_ffi.h says.
        #[no_mangle]
        pub unsafe extern "C" fn lib_nonblocking_ffi_init(
            cfg: *mut ::std::ffi::c_char,
            tq: *mut ::std::ffi::c_void,
        ) -> ::std::ffi::c_int {
            static HANDLERS: &[$crate::Handler] = &[$($crate::Handler::new($name, $factory)),+];
            // SAFETY: the module passes a NUL-terminated cfg valid during
            // this call (or NULL) and the runtime's queue.
            #[allow(unsafe_code)]
            unsafe {
                $crate::__private::init(cfg, tq, HANDLERS)
            }
        }
    };
}
