// SPDX-License-Identifier: BSD-2-Clause
package example;

import java.nio.charset.StandardCharsets;
import java.util.Locale;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.logging.Logger;
import nonblocking.ffi.NffiException;
import nonblocking.ffi.Queue;
import nonblocking.ffi.Server;
import nonblocking.ffi.Task;

/**
 * The echo runtime: the smallest Java runtime worth loading.
 *
 * <pre>
 * local rt = assert(ngx.load_nonblocking_ffi(
 *     "/path/to/build/lib_nonblocking_ffi_java.so", "example.Echo,init,4"))
 * local ok, res = rt:echo("hello")        --&gt; true, "hello"
 * local ok, rc, msg = rt:nosuch("x")      --&gt; false, 404, "no method nosuch"
 * </pre>
 *
 * <p>init serves on a pool of threads (the number after the second comma, 8
 * without it; 0 answers on the poll thread); initAsync answers from
 * CompletableFutures, where "sleep" waits without holding a thread. The
 * class path must hold the compiled examples (build/java/examples):
 * nginx.conf has "env NFFI_JAVA_CLASSPATH=/path/to/build/java/examples;".
 */
public final class Echo {

    private static final Logger LOG = Logger.getLogger("echo");

    private Echo() {}

    static byte[] handle(Task task) {
        byte[] req = task.request();
        switch (task.method()) {
            case "echo":
                return req;
            case "upper":
                return text(req).toUpperCase(Locale.ROOT).getBytes(StandardCharsets.UTF_8);
            case "fail":
                throw new IllegalArgumentException("failing as asked");
            case "error":
                throw new NffiException(Integer.parseInt(text(req)), "error " + text(req));
            case "thread":
                return Thread.currentThread().getName().getBytes(StandardCharsets.UTF_8);
            default:
                throw new NffiException(404, "no method " + task.method());
        }
    }

    static CompletableFuture<byte[]> handleAsync(Task task) {
        switch (task.method()) {
            case "sleep":
                // "250" answers the request after 250 ms, holding no thread
                long ms = Long.parseLong(text(task.request()));
                return CompletableFuture.supplyAsync(
                        task::request,
                        CompletableFuture.delayedExecutor(ms, TimeUnit.MILLISECONDS));
            case "failAsync":
                return CompletableFuture.failedFuture(
                        new IllegalStateException("failing later as asked"));
            default:
                return CompletableFuture.completedFuture(handle(task));
        }
    }

    /**
     * cfg "example.Echo,init[,threads]": 0 threads runs the handler on the
     * poll thread itself (the fastest for calls that never block).
     */
    public static void init(String rest, long queue) {
        int threads = rest == null ? 8 : Integer.parseInt(rest);
        Server.Builder server = Server.builder(Queue.of(queue));
        if (threads == 0) {
            server.executor(Runnable::run).serve(Echo::handle);
            LOG.info("serving on the poll thread");
        } else {
            server.threads(threads).serve(Echo::handle);
            LOG.info("serving on " + threads + " threads");
        }
    }

    /** cfg "example.Echo,initAsync". */
    public static void initAsync(String rest, long queue) {
        Server.serveAsync(Queue.of(queue), Echo::handleAsync);
        LOG.info("serving from futures");
    }

    private static String text(byte[] bytes) {
        return bytes == null ? "" : new String(bytes, StandardCharsets.UTF_8);
    }
}
