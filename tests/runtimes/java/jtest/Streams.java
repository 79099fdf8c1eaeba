// SPDX-License-Identifier: BSD-2-Clause
package jtest;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Logger;
import nonblocking.ffi.NffiException;
import nonblocking.ffi.Queue;
import nonblocking.ffi.Server;
import nonblocking.ffi.StreamClosedException;
import nonblocking.ffi.Task;

/**
 * The stream runtime of tests/test_java.py: cfg "jtest.Streams,init"
 * serves streams; "jtest.Streams,initStats" answers "stats" with the
 * counters below (one JVM: both runtimes see them).
 */
public final class Streams {

    private static final Logger LOG = Logger.getLogger("jtest.streams");

    // chunks whose send returned, sends in progress, StreamClosedExceptions
    private static final AtomicLong SENT = new AtomicLong();
    private static final AtomicLong SENDING = new AtomicLong();
    private static final AtomicLong CLOSED = new AtomicLong();

    private Streams() {}

    static void handle(Task task, OutputStream out) throws Exception {
        String req = task.requestText();
        try {
            switch (task.method()) {
                case "produce":
                    produce(task, req);
                    return;
                case "echo":
                    // chunk by chunk, as Lua wrote them; the count is the end
                    int chunks = 0;
                    for (byte[] c = task.read(); c != null; c = task.read()) {
                        out.write(c);
                        chunks++;
                    }
                    task.respond(0, "chunks=" + chunks);
                    return;
                case "copy":
                    // the InputStream to its -1, then a read after the end
                    InputStream in = task.requestStream();
                    long n = in.transferTo(out);
                    out.write(("copied=" + n + " again=" + in.read() + " "
                            + (task.read() == null)).getBytes(StandardCharsets.UTF_8));
                    return;
                case "mixed":
                    // the first byte through the InputStream, its chunk's rest
                    InputStream mixed = task.requestStream();
                    int first = mixed.read();
                    int available = mixed.available();
                    byte[] rest = task.read();
                    out.write(("first=" + (char) first + " available=" + available + " rest="
                            + new String(rest, StandardCharsets.UTF_8))
                            .getBytes(StandardCharsets.UTF_8));
                    return;
                case "sink":
                    // reads until Lua gives up
                    while (task.read() != null) {
                        continue;
                    }
                    return;
                case "fail":
                    out.write(bytes("before"));
                    throw new IllegalStateException("failed midway");
                case "failRc":
                    out.write(bytes("before"));
                    throw new NffiException(7, "stopped at " + req);
                case "respondThenSend":
                    task.respond(0, "last");
                    try {
                        task.send(bytes("late"));
                    } catch (IllegalStateException e) {
                        LOG.info("send after respond: " + e);
                    }
                    return;
                case "closedOut":
                    out.close();
                    try {
                        out.write(bytes("x"));
                    } catch (IOException e) {
                        LOG.info("write after close: " + e);
                    }
                    task.send(bytes("task.send still works"));
                    return;
                case "thread":
                    out.write(bytes(Thread.currentThread().toString()));
                    return;
                case "detached":
                    detached(task, req);
                    return;
                default:
                    throw new NffiException(404, "no stream " + task.method());
            }
        } catch (StreamClosedException e) {
            CLOSED.incrementAndGet();
            LOG.info("closed seen in " + task.method() + ": " + e.getMessage());
            throw e;
        }
    }

    /** "n,size": n chunks of size bytes, chunk i filled with byte i. */
    private static void produce(Task task, String req) throws StreamClosedException {
        String[] a = req.split(",");
        int n = Integer.parseInt(a[0]);
        byte[] chunk = new byte[Integer.parseInt(a[1])];
        for (int i = 0; i < n; i++) {
            Arrays.fill(chunk, (byte) i);
            SENDING.incrementAndGet();
            try {
                task.send(chunk);
            } finally {
                SENDING.decrementAndGet();
            }
            SENT.incrementAndGet();
        }
    }

    /**
     * "n,size,full" from a thread of its own: the handler returns once
     * `full` chunks fill the window, while that thread waits in its next
     * send. The Server's answer then has to wait for that send to return
     * (the module frees the task with the answer); the sends after it
     * throw.
     */
    private static void detached(Task task, String req) throws InterruptedException {
        String[] a = req.split(",");
        int n = Integer.parseInt(a[0]);
        int size = Integer.parseInt(a[1]);
        int full = Integer.parseInt(a[2]);
        AtomicInteger sent = new AtomicInteger();
        Thread t = new Thread(() -> {
            try {
                for (int i = 0; i < n; i++) {
                    task.send(new byte[size]);
                    sent.incrementAndGet();
                }
                LOG.info("detached: all sent");
            } catch (IllegalStateException | StreamClosedException e) {
                LOG.info("detached: " + e + " after " + sent.get());
            }
        }, "jtest-detached");
        t.start();
        long deadline = System.nanoTime() + 20_000_000_000L;
        while (sent.get() < full && System.nanoTime() < deadline) {
            Thread.sleep(1);
        }
        LOG.info("detached: the handler returns after " + sent.get());
    }

    /** cfg "jtest.Streams,init". */
    public static void init(String rest, long queue) {
        Server.builder(Queue.of(queue))
                .onStop(() -> LOG.info("stopped"))
                .serveStreams(Streams::handle);
    }

    /** cfg "jtest.Streams,initStats": the counters, whatever the method. */
    public static void initStats(String rest, long queue) {
        Server.serve(Queue.of(queue), task -> bytes(
                "sent=" + SENT.get() + " sending=" + SENDING.get() + " closed=" + CLOSED.get()),
                Runnable::run);
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }
}
