// SPDX-License-Identifier: BSD-2-Clause

//! Handlers registered by name: `cfg` `"name"` or `"name,<rest>"` picks one
//! (only the first comma splits: the rest is often JSON).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use crate::abi::{self, Queue};
use crate::logger::{self, Level};
use crate::{Error, Serve};

/// The rc of `lib_nonblocking_ffi_init` when cfg is nil or names no handler.
pub const INIT_NO_HANDLER: i32 = 1;
/// The rc when no handler is registered under the name cfg gives.
pub const INIT_UNKNOWN_HANDLER: i32 = 2;
/// The rc when the handler's factory failed, panicked, or could not start.
pub const INIT_FACTORY_FAILED: i32 = 3;
/// The rc when the nginx module is older than this crate's ABI (4: streams).
pub const INIT_OLD_MODULE: i32 = 4;

/// A factory: gets the rest of the cfg, returns how calls are served.  It
/// runs on the nginx worker's main thread while the worker serves nobody:
/// return quickly (connect lazily).
pub type Factory = fn(&str) -> Result<Serve, Error>;

/// A handler name and its factory, as [`export!`](crate::export) lists them.
#[derive(Clone, Copy)]
pub struct Handler {
    name: &'static str,
    factory: Factory,
}

impl Handler {
    /// A handler; the name must not be empty nor contain a comma.
    pub const fn new(name: &'static str, factory: Factory) -> Handler {
        Handler { name, factory }
    }
}

/// Splits `"name,rest"`; `"name"` alone has an empty rest.
pub(crate) fn split_cfg(cfg: &str) -> (&str, &str) {
    let (name, rest) = cfg.split_once(',').unwrap_or((cfg, ""));
    (name.trim(), rest)
}

fn names(handlers: &[Handler]) -> String {
    let mut names: Vec<&str> = handlers.iter().map(|h| h.name).collect();
    names.sort_unstable();
    names.join(", ")
}

/// Logs why the load fails and hands the first line to the Lua caller.
fn fail(queue: Queue, rc: i32, msg: String) -> i32 {
    logger::log(Level::Err, &format!("nffi: {msg}"));
    queue.init_error(msg.lines().next().unwrap_or(""));
    rc
}

/// Starts the handler that cfg names on queue; 0 or an `INIT_*` rc.  Never
/// unwinds.
pub(crate) fn start(cfg: Option<String>, queue: Option<Queue>, handlers: &[Handler]) -> i32 {
    let Some(queue) = queue else {
        return INIT_NO_HANDLER; // no queue to report on; the module never does this
    };
    match catch_unwind(AssertUnwindSafe(|| start_on(cfg, queue, handlers))) {
        Ok(rc) => rc,
        Err(p) => fail(
            queue,
            INIT_FACTORY_FAILED,
            Error::from_panic(&*p).message().to_string(),
        ),
    }
}

/// Why a module of ABI `version` cannot run this library, if it cannot.
fn old_module(version: i32) -> Option<String> {
    (version < abi::ABI_VERSION).then(|| {
        format!(
            "the nginx module has ABI version {version}, this Rust library needs {} \
             (streams): upgrade the module",
            abi::ABI_VERSION
        )
    })
}

fn start_on(cfg: Option<String>, queue: Queue, handlers: &[Handler]) -> i32 {
    static LOGGER: Once = Once::new();
    LOGGER.call_once(logger::install);

    if let Some(msg) = old_module(abi::abi_version()) {
        return fail(queue, INIT_OLD_MODULE, msg);
    }

    let Some(cfg) = cfg else {
        return fail(
            queue,
            INIT_NO_HANDLER,
            format!(
                "cfg is nil: name a handler ({}), e.g. \"name\" or \"name,<its cfg>\"",
                names(handlers)
            ),
        );
    };
    let (name, rest) = split_cfg(&cfg);
    if name.is_empty() {
        return fail(
            queue,
            INIT_NO_HANDLER,
            format!("cfg {cfg:?} names no handler ({})", names(handlers)),
        );
    }
    if let Some(dup) = handlers
        .iter()
        .enumerate()
        .find(|(i, h)| handlers[..*i].iter().any(|o| o.name == h.name))
    {
        return fail(
            queue,
            INIT_UNKNOWN_HANDLER,
            format!("handler {:?} is exported twice", dup.1.name),
        );
    }
    let Some(handler) = handlers.iter().find(|h| h.name == name) else {
        return fail(
            queue,
            INIT_UNKNOWN_HANDLER,
            format!(
                "no handler {name:?} in this library (it has: {})",
                names(handlers)
            ),
        );
    };

    let serve = match catch_unwind(|| (handler.factory)(rest)) {
        Ok(Ok(serve)) => serve,
        Ok(Err(e)) => return fail(queue, INIT_FACTORY_FAILED, format!("handler {name:?}: {e}")),
        Err(p) => {
            return fail(
                queue,
                INIT_FACTORY_FAILED,
                format!("handler {name:?}: {}", Error::from_panic(&*p)),
            )
        }
    };
    if let Err(e) = serve.start(queue, name) {
        return fail(queue, INIT_FACTORY_FAILED, format!("handler {name:?}: {e}"));
    }
    logger::log(Level::Info, &format!("nffi: handler {name:?} started"));
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_older_than_abi_4_is_refused() {
        assert_eq!(
            old_module(3).as_deref(),
            Some(
                "the nginx module has ABI version 3, this Rust library needs 4 (streams): \
                 upgrade the module"
            )
        );
        assert_eq!(old_module(4), None);
        assert_eq!(old_module(5), None);
    }

    #[test]
    fn only_the_first_comma_splits() {
        assert_eq!(split_cfg("echo"), ("echo", ""));
        assert_eq!(split_cfg(" echo ,a,b"), ("echo", "a,b"));
        assert_eq!(split_cfg(",x"), ("", "x"));
        assert_eq!(
            split_cfg(r#"grpc,{"a":1,"b":2}"#),
            ("grpc", r#"{"a":1,"b":2}"#)
        );
    }
}
