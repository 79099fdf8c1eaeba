# SPDX-License-Identifier: BSD-2-Clause

"""Python's logging, print() and uncaught exceptions, into the nginx error log.

The loader installs all of this when the interpreter starts: the root logger
gets an NginxHandler (level INFO, unless logging was configured before),
sys.stdout and sys.stderr write lines at info and error level, and
exceptions that end a thread are logged with their traceback.  Messages are
handed to the worker's main thread, which writes them: any thread may log.
"""

import logging
import sys
import threading

from _nonblocking_ffi import (
    LOG_CRIT,
    LOG_DEBUG,
    LOG_ERR,
    LOG_INFO,
    LOG_WARN,
    log,
)

__all__ = ["NginxHandler", "nginx_level"]


def nginx_level(levelno):
    """The nginx level (LOG_CRIT ... LOG_DEBUG) of a Python logging level."""
    if levelno >= logging.CRITICAL:
        return LOG_CRIT
    if levelno >= logging.ERROR:
        return LOG_ERR
    if levelno >= logging.WARNING:
        return LOG_WARN
    if levelno >= logging.INFO:
        return LOG_INFO
    return LOG_DEBUG


class NginxHandler(logging.Handler):
    """A logging handler that writes records to the nginx error log.

    CRITICAL is written as [crit], ERROR as [error], WARNING as [warn],
    INFO as [info] and DEBUG as [debug]; nginx's error_log level filters
    them as it filters its own messages.
    """

    def __init__(self, level=logging.NOTSET):
        super().__init__(level)
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record):
        try:
            msg = self.format(record)
            log(nginx_level(record.levelno), msg.rstrip("\n"))
        except Exception:
            self.handleError(record)


class _LineWriter:
    """A text stream (sys.stdout, sys.stderr) that logs each line."""

    encoding = "utf-8"
    errors = "backslashreplace"

    def __init__(self, name, level):
        self.name = name
        self._level = level
        self._local = threading.local()

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(
                "write() argument must be str, not %s" % type(text).__name__
            )
        pending = getattr(self._local, "pending", "") + text
        *lines, self._local.pending = pending.split("\n")
        for line in lines:
            log(self._level, line)
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pending = getattr(self._local, "pending", "")
        if pending:
            self._local.pending = ""
            log(self._level, pending)

    def isatty(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False

    def fileno(self):
        raise OSError("%s is the nginx error log, it has no file" % self.name)


def _log_thread_exception(args):
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("nonblocking_ffi").error(
        "exception in thread %s",
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def install():
    """Sends logging, sys.stdout and sys.stderr to the nginx error log."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(NginxHandler())
        root.setLevel(logging.INFO)
    logging.captureWarnings(True)

    sys.stdout = _LineWriter("<stdout>", LOG_INFO)
    sys.stderr = _LineWriter("<stderr>", LOG_ERR)
    threading.excepthook = _log_thread_exception
