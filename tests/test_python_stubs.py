# SPDX-License-Identifier: BSD-2-Clause
"""The Python package's type stubs: they list every public name of the
package and of its C half, and mypy checks handlers against them."""

import ast
import os
import re
import subprocess
import textwrap

import pytest

from harness import BUILD, MEMCHECK, NOT_HERE, REPO

pytestmark = pytest.mark.skipif(MEMCHECK, reason="nothing in it runs under "
                                "valgrind: memcheck would only repeat it")

SHIM = os.path.join(REPO, "shims", "python")
STUB = os.path.join(SHIM, "nonblocking_ffi", "__init__.pyi")
C_STUB = os.path.join(SHIM, "_nonblocking_ffi.pyi")
PYTHON_BUILD = os.path.join(BUILD, "python")


def parse(path):
    with open(path) as f:
        return ast.parse(f.read(), path)


def top_level_names(tree):
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.ImportFrom):
            names |= {a.asname for a in node.names if a.asname}
    return names


def dunder_all(tree):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                getattr(t, "id", None) == "__all__" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("no __all__")


def test_the_package_stub_lists_every_public_name():
    package = dunder_all(parse(os.path.join(SHIM, "nonblocking_ffi",
                                            "__init__.py")))
    stub = parse(STUB)
    assert dunder_all(stub) == package
    assert set(package) <= top_level_names(stub)


def c_table(c, array):
    """The names of the entries of the C array `array` (PyMethodDef...)."""
    body = re.search(r"\b%s\[\] = \{(.*?)\n\};" % array, c, re.S).group(1)
    return set(re.findall(r'^    \{ "(\w+)",', body, re.M))


def test_the_c_stub_lists_every_name_of_the_c_half():
    with open(os.path.join(SHIM, "nffi_python_module.c")) as f:
        c = f.read()
    functions = c_table(c, "nffi_py_methods")
    constants = set(re.findall(r'PyModule_AddIntConstant\(m, "(\w+)"', c))
    task = c_table(c, "nffi_py_task_methods") \
        | c_table(c, "nffi_py_task_getset")
    # the protocols: iterating reads the stream, async for too
    if ".tp_iternext" in c:
        task |= {"__iter__", "__next__"}
    if ".am_anext" in c:
        task |= {"__aiter__", "__anext__"}
    assert "take" in functions and "queue_fd" in functions
    assert {"respond", "send", "aread", "stream"} <= task
    assert "StreamClosed" in c
    stub = parse(C_STUB)
    names = top_level_names(stub)
    assert functions | constants | {"Task", "StreamClosed"} <= names
    (task_class,) = [n for n in stub.body
                     if isinstance(n, ast.ClassDef) and n.name == "Task"]
    members = {n.name for n in task_class.body
               if isinstance(n, ast.FunctionDef)}
    assert task == members


def mypy(tmp_path, *args):
    if subprocess.run(["/usr/bin/python3", "-c", "import mypy"],
                      capture_output=True).returncode != 0:
        pytest.skip(NOT_HERE + "mypy (Debian package mypy)")
    if not os.path.exists(os.path.join(PYTHON_BUILD, "nonblocking_ffi",
                                       "__init__.pyi")):
        pytest.skip(NOT_HERE + "build/python (make python)")
    return subprocess.run(
        ["/usr/bin/python3", "-m", "mypy",
         "--cache-dir", str(tmp_path / "cache"), *args],
        env=dict(os.environ, MYPYPATH=PYTHON_BUILD), capture_output=True,
        text=True)


def test_mypy_checks_handlers_against_the_stubs(tmp_path):
    good = tmp_path / "good.py"
    good.write_text(textwrap.dedent("""
        import asyncio
        from typing import AsyncIterator, Iterator, Optional

        import nonblocking_ffi
        from nonblocking_ffi import Error, Task


        async def handle(task: Task) -> Optional[bytes]:
            if task.method == "sleep":
                await asyncio.sleep(0.01)
            if task.cancelled:
                raise Error(408, "gave up")
            return task.request


        def words(task: Task) -> Iterator[str]:
            for chunk in task:
                yield chunk.decode()
            last = task.read()
            if last is not None and task.stream:
                task.send(last)


        async def tokens(task: Task) -> AsyncIterator[bytes]:
            async for chunk in task:
                yield chunk
            first = await task.aread()
            if first is not None:
                await task.asend(first)


        def init_streams(rest: str, tq: int) -> None:
            nonblocking_ffi.serve(tq, words, threads=2)
            nonblocking_ffi.serve(tq, tokens)
            try:
                nonblocking_ffi.poll(tq)
            except nonblocking_ffi.StreamClosed as e:
                print(e.errno)


        def init(rest: str, tq: int) -> None:
            server = nonblocking_ffi.serve(tq, handle, spin=0)
            server.stopped.wait(0)
            nonblocking_ffi.log(nonblocking_ffi.LOG_INFO, "serving")
            tasks = nonblocking_ffi.take(tq, 16)
            if tasks is not None:
                for task in tasks:
                    task.respond(0, "now")
    """))
    bad = tmp_path / "bad.py"
    bad.write_text(textwrap.dedent("""
        import nonblocking_ffi


        def handle(task: nonblocking_ffi.Task) -> bytes:
            return task.request


        def init(rest: str, tq: int) -> None:
            nonblocking_ffi.serve(tq, handle, threads="2")
            nonblocking_ffi.log(nonblocking_ffi.LOG_ERR, b"x")
            nonblocking_ffi.queue_fd(tq).close()


        def stream(task: nonblocking_ffi.Task) -> None:
            task.send(None)
            task.read().decode()
    """))
    # one run (mypy takes seconds to start): the example unannotated, as
    # an editor checks it, and both files above
    echo = os.path.join(REPO, "examples", "python", "echo.py")
    done = mypy(tmp_path, "--check-untyped-defs", "--warn-unused-ignores",
                "--warn-return-any", str(good), str(bad), echo)
    errors = re.findall(r"^(\S+):(\d+): error", done.stdout, re.M)
    assert errors == [(str(bad), "6"), (str(bad), "10"), (str(bad), "11"),
                      (str(bad), "12"), (str(bad), "16"), (str(bad), "17")
                      ], done.stdout
