"""`make run`'s demo serves what the README shows."""

import http.client
import os
import signal
import subprocess

import pytest

from harness import MEMCHECK, REPO, free_port, wait_for

ERROR_LOG = os.path.join(REPO, "build", "demo", "logs", "error.log")


@pytest.mark.skipif(MEMCHECK, reason="the demo runs nginx as it is")
def test_demo_answers_like_the_readme_says():
    port = free_port()
    seen = os.path.getsize(ERROR_LOG) if os.path.exists(ERROR_LOG) else 0
    etcd_port = free_port()
    proc = subprocess.Popen([os.path.join(REPO, "scripts", "run-demo.sh")],
                            env=dict(os.environ, PORT=str(port),
                                     ETCD_PORT=str(etcd_port)),
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def get(path):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", path)
            return conn.getresponse().read().decode()
        except OSError:
            return None
        finally:
            conn.close()

    try:
        wait_for(lambda: get("/c/echo?hello"), 10, "the demo")
        assert get("/c/echo?hello") == "true hello\n"
        assert get("/c/error?7") == "false 7 error 7\n"
        assert get("/c/null") == "true nil\n"
        lines = get("/c-concurrent").splitlines()
        assert [line.split(" answered ")[0] for line in lines] == [
            "call 2 (100 ms)", "call 3 (200 ms)", "call 1 (300 ms)"]
        assert get("/go/echo?hello") == "true hello\n"
        assert get("/python/upper?hello") == "true HELLO\n"
        assert get("/python/fail?x") == \
            "false 1 ValueError: failing as asked\n"
        # etcd starts beside nginx: the first put may come before it is up
        wait_for(lambda: (get("/go/etcd/put?key=/demo/a&value=1") or "")
                 .startswith("{"), 30, "etcd through the demo")
        assert '"value":"1"' in get("/go/etcd/get?key=/demo/a")
    finally:
        proc.send_signal(signal.SIGQUIT)
        proc.wait(20)
    with open(ERROR_LOG) as f:
        f.seek(seen)
        log = f.read()
    assert "[alert]" not in log and "[crit]" not in log
