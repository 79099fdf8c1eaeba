# SPDX-License-Identifier: BSD-2-Clause

"""What lib_nonblocking_ffi_python3.so runs in the embedded interpreter.

bootstrap() once, when the interpreter has started; load() for each
ngx.load_nonblocking_ffi() of the loader, with the cfg
"module[?],function[,rest]" split by the C side.  Both run on the worker's
main thread: they must not block for long.
"""

import importlib
import logging
import os
import sys
import traceback

from _nonblocking_ffi import LOG_ERR, _init_error, log

from . import _logging

# the rc of a failed load, as in nffi_python.h
RC_IMPORT = 4
RC_FUNCTION = 5
RC_RAISED = 6

INT_MIN = -(2**31)
INT_MAX = 2**31 - 1


def bootstrap():
    _logging.install()


def _log_error(what, exc=None):
    """Logs what went wrong (with exc's traceback); returns it in a line."""
    text = "nonblocking_ffi python: " + what
    reason = what
    if exc is not None:
        reason = "%s: %s: %s" % (what, type(exc).__name__, exc)
        # from the first frame that is not the loader's
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        lines = traceback.format_exception(type(exc), exc, tb)
        text += ":\n" + "".join(lines).rstrip("\n")
    log(LOG_ERR, text)
    return reason


def _module_name(module):
    """The name to import; a path's folder goes to the front of sys.path."""
    if "/" not in module:
        return module
    folder, name = os.path.split(os.path.abspath(module))
    if name.endswith(".py"):
        name = name[:-3]
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return name


def _imported_elsewhere(module, mod):
    """For a module given by path: the file imported instead, or None.

    A path's module is imported by its base name, so /srv/a/app.py and
    /srv/b/app.py, or /srv/app/logging.py and the standard library's
    logging, would silently be one module.
    """
    if "/" not in module:
        return None
    path = os.path.realpath(module)
    wanted = [
        path if path.endswith(".py") else path + ".py",
        os.path.join(path, "__init__.py"),
    ]
    found = getattr(mod, "__file__", None)
    if found and os.path.realpath(found) in wanted:
        return None
    return found or "a built-in module"


def _import(name, reload):
    if reload:
        # a fresh import: the module and its submodules, read again
        for loaded in list(sys.modules):
            if loaded == name or loaded.startswith(name + "."):
                del sys.modules[loaded]
        importlib.invalidate_caches()
    return importlib.import_module(name)


def _function(module, func):
    """module.func, where func may be dotted ("App.start")."""
    obj = module
    for attr in func.split("."):
        obj = getattr(obj, attr)
    return obj


def load(module, reload, func, rest, tq):
    """Imports module, calls func(rest, tq) and returns the rc of the load.

    0 when func returned None, 0 or anything but an int; its int otherwise.
    A failing load's reason also goes to its Lua caller.
    """
    rc, reason = _load(module, reload, func, rest, tq)
    if rc != 0 and reason:
        _init_error(tq, reason)
    return rc


def _load(module, reload, func, rest, tq):
    cfg = "%s%s,%s" % (module, "?" if reload else "", func)

    try:
        name = _module_name(module)
        mod = _import(name, reload)
    except BaseException as exc:
        return RC_IMPORT, _log_error(
            'cannot import "%s" (cfg "%s")' % (module, cfg), exc
        )

    elsewhere = _imported_elsewhere(module, mod)
    if elsewhere:
        return RC_IMPORT, _log_error(
            'cannot import "%s": the name "%s" is already %s (rename the '
            "file)" % (module, name, elsewhere)
        )

    try:
        function = _function(mod, func)
    except AttributeError:
        return RC_FUNCTION, _log_error(
            'module "%s" (%s) has no function "%s"'
            % (name, getattr(mod, "__file__", None) or "built-in", func)
        )

    if not callable(function):
        return RC_FUNCTION, _log_error(
            '"%s.%s" is not callable but %s'
            % (name, func, type(function).__name__)
        )

    try:
        result = function(rest, tq)
    except BaseException as exc:
        return RC_RAISED, _log_error(
            '%s.%s() raised (cfg "%s")' % (name, func, cfg), exc
        )

    if not isinstance(result, int) or result == 0:
        logging.getLogger("nonblocking_ffi").debug(
            "loaded %s.%s with queue %#x", name, func, tq
        )
        return 0, None

    if not INT_MIN <= result <= INT_MAX:
        return RC_RAISED, _log_error(
            "%s.%s() returned %d, out of range" % (name, func, result)
        )

    return result, _log_error(
        "%s.%s() returned %d: the load failed" % (name, func, result)
    )
