// SPDX-License-Identifier: BSD-2-Clause
package jtest;

import java.nio.charset.StandardCharsets;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.logging.Level;
import java.util.logging.Logger;
import nonblocking.ffi.NginxLog;
import nonblocking.ffi.Queue;
import nonblocking.ffi.Server;
import nonblocking.ffi.Task;

/** The Java runtime of tests/test_java.py: cfg "jtest.TestRuntime,init". */
public final class TestRuntime {

    private static final Logger LOG = Logger.getLogger("jtest");

    private TestRuntime() {}

    static byte[] handle(Task task) throws Exception {
        String req = task.requestText();
        switch (task.method()) {
            case "pid":
                return bytes(Long.toString(ProcessHandle.current().pid()));
            case "sleep":
                Thread.sleep(Long.parseLong(req));
                return task.request();
            case "twice":
                task.respond(0, "first");
                try {
                    task.respond(0, "second");
                    LOG.info("second answer: no error");
                } catch (IllegalStateException e) {
                    LOG.info("second answer: " + e);
                }
                return bytes("ignored");
            case "error":
                throw new Error("an Error, not an Exception");
            case "describe":
                return bytes(task.method() + " " + req + " " + task.answered() + " "
                        + task.cancelled() + " " + task);
            case "log":
                LOG.severe("a severe record");
                LOG.warning("a warning record");
                LOG.info("an info record");
                LOG.fine("a fine record");
                LOG.log(Level.WARNING, "a record with an exception",
                        new IllegalStateException("logged exception"));
                System.out.println("a line on System.out");
                System.err.println("a line on System.err");
                System.Logger sys = System.getLogger("jtest.system");
                sys.log(System.Logger.Level.WARNING, "a System.Logger warning");
                NginxLog.log(NginxLog.NOTICE, "a notice\nof two lines");
                Thread t = new Thread(() -> {
                    throw new IllegalStateException("uncaught in a thread");
                }, "jtest-dying");
                t.start();
                t.join();
                return bytes("logged");
            case "exec":
                Process p = new ProcessBuilder("/bin/sh", "-c", "exit " + req).start();
                return bytes(Integer.toString(p.waitFor()));
            case "exit":
                System.exit(Integer.parseInt(req));
                return null;
            case "property":
                return bytes(String.valueOf(System.getProperty(req)));
            case "maxMemoryMb":
                return bytes(Long.toString(Runtime.getRuntime().maxMemory() >> 20));
            case "thread":
                return bytes(Thread.currentThread().toString());
            case "answerStream":
                task.answerStream();
                return bytes("no exception");
            case "maybeStream":
                // a plain Handler may stream too: its result is the last chunk
                if (task.isStream()) {
                    task.send(bytes("a"));
                    task.answerStream().write(bytes("b"));
                    return bytes("c");
                }
                return bytes("plain");
            case "marker":
                return bytes(System.getProperty("jtest.marker", "none"));
            case "cancelled":
                long deadline = System.nanoTime() + 20_000_000_000L;
                while (!task.cancelled() && System.nanoTime() < deadline) {
                    Thread.sleep(5);
                }
                LOG.info("cancelled seen: " + task.cancelled());
                return bytes("late");
            default:
                return bytes("no method " + task.method());
        }
    }

    /** cfg "jtest.TestRuntime,init[,threads]". */
    public static void init(String rest, long queue) {
        int threads = rest == null ? 32 : Integer.parseInt(rest);
        Server.builder(Queue.of(queue))
                .threads(threads)
                .onStop(() -> LOG.info("stopped: " + queue))
                .serve(TestRuntime::handle);
    }

    /** cfg "jtest.TestRuntime,initAsync": "sleep" answers from a future. */
    public static void initAsync(String rest, long queue) {
        Server.builder(Queue.of(queue))
                .onStop(() -> LOG.info("async stopped"))
                .serveAsync(task -> CompletableFuture.supplyAsync(() -> {
                    LOG.info("answering " + task.method());
                    return task.request();
                }, CompletableFuture.delayedExecutor(
                        Long.parseLong(task.requestText()), TimeUnit.MILLISECONDS)));
    }

    /** The low level: one thread polls; "drop" drops its task. */
    public static void initLowLevel(String rest, long queue) {
        Queue q = Queue.of(queue);
        Thread t = new Thread(() -> {
            for (Task task = q.poll(); task != null; task = q.poll()) {
                if (task.method().equals("drop")) {
                    continue;
                }
                if (task.method().equals("gc")) {
                    System.gc();
                }
                task.respond(0, task.method());
            }
        }, "jtest-low-level");
        t.setDaemon(true);
        t.start();
    }

    public static void initThrows(String rest, long queue) {
        throw new IllegalStateException("init failed as asked: " + rest);
    }

    public static int initReturns(String rest, long queue) {
        return Integer.parseInt(rest);
    }

    public static void wrongSignature(String rest) {}

    public void notStatic(String rest, long queue) {}

    public static void badQueue(String rest, long queue) {
        Queue.of(queue + 8);
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }
}
