// SPDX-License-Identifier: BSD-2-Clause

//! `log` records (and, with the `tracing` feature, tracing events) into the
//! nginx error log, through the module's logging ABI.

use crate::abi;

/// An nginx error log level.  Alert, crit and emerg are for failures of
/// the whole process: a handler's failure is `Err`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
#[allow(missing_docs)]
pub enum Level {
    Emerg = 1,
    Alert = 2,
    Crit = 3,
    Err = 4,
    Warn = 5,
    Notice = 6,
    Info = 7,
    Debug = 8,
}

/// Writes msg to the error log of the nginx worker, from any thread; the
/// worker's main thread writes it if the `error_log` level lets it through.
pub fn log(level: Level, msg: &str) {
    abi::log(level as i32, msg.trim_end_matches('\n'));
}

/// The level of a `log` record in nginx's terms.
pub(crate) fn nginx_level(level: log::Level) -> Level {
    match level {
        log::Level::Error => Level::Err,
        log::Level::Warn => Level::Warn,
        log::Level::Info => Level::Info,
        log::Level::Debug | log::Level::Trace => Level::Debug,
    }
}

struct NginxLogger;

impl log::Log for NginxLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let msg = format!("{}: {}", record.target(), record.args());
            log(nginx_level(record.level()), &msg);
        }
    }

    fn flush(&self) {}
}

static LOGGER: NginxLogger = NginxLogger;

/// Installs the nginx logger as the `log` logger, at level Info, unless the
/// library set another logger already.  Raise it with
/// `log::set_max_level(log::LevelFilter::Debug)` in a factory.
pub(crate) fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_nginx() {
        assert_eq!(nginx_level(log::Level::Error) as i32, 4);
        assert_eq!(nginx_level(log::Level::Warn) as i32, 5);
        assert_eq!(nginx_level(log::Level::Info) as i32, 7);
        assert_eq!(nginx_level(log::Level::Trace) as i32, 8);
    }
}
