// SPDX-License-Identifier: BSD-2-Clause

//! The error a handler answers with: an rc and a message.

use std::fmt;

use crate::abi::RC_ERROR;

/// The rc of the answer to a call whose handler panicked.
pub const RC_PANIC: i32 = 2;

/// A handler's failure: Lua sees `false, rc, message`.
///
/// Any `std::error::Error` converts into it with rc 1, so `?` works on
/// I/O, parse and client errors; [`Error::new`] picks the rc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    rc: i32,
    message: String,
}

impl Error {
    /// An error with rc (0 becomes 1: rc 0 would be a success) and message.
    pub fn new(rc: i32, message: impl Into<String>) -> Error {
        Error {
            rc: if rc == 0 { RC_ERROR } else { rc },
            message: message.into(),
        }
    }

    /// An error with rc 1.
    pub fn msg(message: impl Into<String>) -> Error {
        Error::new(RC_ERROR, message)
    }

    /// The rc Lua sees.
    pub fn rc(&self) -> i32 {
        self.rc
    }

    /// The message Lua sees.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error of a caught panic: rc 2, "panic: <its message>".
    pub(crate) fn from_panic(payload: &(dyn std::any::Any + Send)) -> Error {
        let text = if let Some(s) = payload.downcast_ref::<&str>() {
            s
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.as_str()
        } else {
            "(not a string)"
        };
        Error::new(RC_PANIC, format!("panic: {text}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Error {
        Error::msg(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rc_zero_is_not_a_success() {
        assert_eq!(Error::new(0, "x").rc(), 1);
        assert_eq!(Error::new(7, "x").rc(), 7);
    }

    #[test]
    fn std_errors_convert_with_rc_1() {
        let e: Error = "x".parse::<i32>().unwrap_err().into();
        assert_eq!((e.rc(), e.message()), (1, "invalid digit found in string"));
    }

    #[test]
    fn panic_payloads_become_messages() {
        let p = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(Error::from_panic(&*p).message(), "panic: boom 1");
        let p = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(Error::from_panic(&*p), Error::new(2, "panic: plain"));
    }
}
