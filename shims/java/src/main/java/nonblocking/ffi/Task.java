// SPDX-License-Identifier: BSD-2-Clause
package nonblocking.ffi;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.ref.Cleaner;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicLong;

/**
 * One call from Lua: runtime:method(request), or a stream of
 * runtime:__stream(method, request). It must be answered exactly once, by
 * any thread, also when {@link #cancelled} (the answer is then dropped); an
 * unanswered task counts against the runtime's max_queue until the worker
 * exits, and its caller gets "timeout". (A Task that the garbage collector
 * finds unanswered is answered with rc 1 and a warning: a safety net, not a
 * way to answer.)
 *
 * <p>A stream task ({@link #isStream}) may send chunks of its answer before
 * {@link #respond} ends it, and read the chunks Lua writes after the
 * request: {@link #send}, {@link #read}, or the same as {@link
 * #answerStream} and {@link #requestStream}.
 */
public final class Task {

    /** Answers the tasks that were dropped without an answer. */
    private static final Cleaner CLEANER = Cleaner.create();

    // the module's pointer, 0 once the module has the answer
    private final AtomicLong task;
    private final byte[] request;
    private final String method;
    private final boolean stream;
    private final Cleaner.Cleanable cleanable;

    // A native call on the pointer and the answer that frees it must not
    // overlap (the worker would crash), so respond() during a stream call
    // of another thread leaves the answer to that call's end. The lock
    // guards users and the pending answer.
    private final Object lock = new Object();
    private volatile boolean answered;
    private int users;
    private int pendingRc;
    private byte[] pendingData;

    // null for an ordinary call; their monitors let one thread at a time
    // send, and one read, as the module requires
    private final AnswerStream answerStream;
    private final RequestStream requestStream;

    Task(long task) {
        this.task = new AtomicLong(task);
        this.request = Native.request(task);
        this.method = new String(Native.method(task), StandardCharsets.UTF_8);
        this.stream = Native.isStream(task);
        this.answerStream = stream ? new AnswerStream() : null;
        this.requestStream = stream ? new RequestStream() : null;
        this.cleanable = CLEANER.register(this, new Dropped(this.task, method));
    }

    /**
     * Runs once the Task is unreachable: a task that was never answered is
     * answered with rc 1, so that its caller does not wait for its timeout.
     */
    private static final class Dropped implements Runnable {
        private final AtomicLong task;
        private final String method;

        Dropped(AtomicLong task, String method) {
            this.task = task;
            this.method = method;
        }

        @Override
        public void run() {
            long t = task.getAndSet(0);
            if (t != 0) {
                NginxLog.log(NginxLog.WARN, "nonblocking_ffi java: a call of method \""
                        + method + "\" was dropped without an answer: answered with rc 1");
                Native.respond(t, 1, "the Java runtime dropped the call without answering it"
                        .getBytes(StandardCharsets.UTF_8));
            }
        }
    }

    /** {@link Queue#poll} of queue. */
    public static Task poll(Queue queue) {
        return queue.poll();
    }

    /** The request bytes (the caller's array), or null when Lua passed nil. */
    public byte[] request() {
        return request;
    }

    /** The request decoded as UTF-8, or null when Lua passed nil. */
    public String requestText() {
        return request == null ? null : new String(request, StandardCharsets.UTF_8);
    }

    /** The method name of the call: "foo" for runtime:foo(req). */
    public String method() {
        return method;
    }

    /** True once answered. */
    public boolean answered() {
        return answered;
    }

    /**
     * True when nobody waits for the answer any more (the call timed out,
     * or its request went away; for a stream, once Lua gave up): long work
     * may stop early, but the task must still be answered.
     */
    public boolean cancelled() {
        long t = enter();
        if (t == 0) {
            return false;
        }
        try {
            return Native.cancelled(t);
        } finally {
            leave();
        }
    }

    /**
     * Answers the call: rc 0 is success (Lua sees true, data), any other rc
     * an error (Lua sees false, rc, data). data null is nil. A stream ends
     * with it: with rc 0, data (if not null) is its last chunk; with any
     * other, Lua's read returns nil, rc, data. A {@link #send} or {@link
     * #read} of another thread still in progress finishes first.
     *
     * @throws IllegalStateException when the task was answered before
     */
    public void respond(int rc, byte[] data) {
        synchronized (lock) {
            if (answered) {
                throw new IllegalStateException("task already answered");
            }
            answered = true;
            if (users > 0) {
                pendingRc = rc;
                pendingData = data;
                return;
            }
        }
        answerNow(rc, data);
    }

    /** {@link #respond(int, byte[])} with text sent as UTF-8. */
    public void respond(int rc, String text) {
        respond(rc, text == null ? null : text.getBytes(StandardCharsets.UTF_8));
    }

    private void answerNow(int rc, byte[] data) {
        long t = task.getAndSet(0);
        try {
            Native.respond(t, rc, data);
        } finally {
            // answered: nothing left for the cleaner
            cleanable.clean();
        }
    }

    /**
     * The pointer for a native call, 0 once answered; leave() after it
     * (which also keeps the Task reachable, so the cleaner cannot answer
     * the task during the call).
     */
    private long enter() {
        synchronized (lock) {
            if (answered) {
                return 0;
            }
            users++;
            return task.get();
        }
    }

    private void leave() {
        int rc;
        byte[] data;
        synchronized (lock) {
            if (--users > 0 || !answered) {
                return;
            }
            rc = pendingRc;
            data = pendingData;
            pendingData = null;
        }
        answerNow(rc, data);
    }

    /** True for a call of runtime:__stream(method, request). */
    public boolean isStream() {
        return stream;
    }

    /**
     * Sends chunk as one chunk of the answer (Lua's stream:read() returns
     * it whole); an empty one sends nothing. Waits while Lua has a window's
     * worth of chunks unread. The bytes are copied: the array is the
     * caller's again on return.
     *
     * @throws StreamClosedException once Lua gave up: stop, and answer
     * @throws IllegalStateException for an ordinary call, or once answered
     */
    public void send(byte[] chunk) throws StreamClosedException {
        send(chunk, 0, chunk.length);
    }

    /** {@link #send(byte[])} of chunk[off, off + len). */
    public void send(byte[] chunk, int off, int len) throws StreamClosedException {
        Objects.checkFromIndexSize(off, len, chunk.length);
        synchronized (out()) {
            long t = enterStream();
            try {
                Native.streamSend(t, chunk, off, len);
            } finally {
                leave();
            }
        }
    }

    /** {@link #send(byte[])} of text as UTF-8. */
    public void send(String text) throws StreamClosedException {
        send(text.getBytes(StandardCharsets.UTF_8));
    }

    /**
     * The next chunk Lua wrote with stream:write() after the request, as
     * it was written, waiting for it; null once Lua called
     * stream:close_write() and every chunk was read. Bytes of a chunk that
     * {@link #requestStream} read in part come first.
     *
     * @throws StreamClosedException once Lua gave up: stop, and answer
     * @throws IllegalStateException for an ordinary call, or once answered
     */
    public byte[] read() throws StreamClosedException {
        return in().readChunk();
    }

    /**
     * The answer as an OutputStream: each write() sends its bytes as one
     * chunk (wrap it in a BufferedOutputStream to send fewer, larger
     * ones: its flush() sends what it holds), flush() does nothing more,
     * and close() only ends writing: the answer ends with {@link #respond}
     * (which a {@link Server} calls when the handler returns), so that an
     * exception through a try-with-resources still answers an error.
     * Writes throw {@link StreamClosedException} once Lua gave up.
     *
     * @throws IllegalStateException for an ordinary call
     */
    public OutputStream answerStream() {
        return out();
    }

    /**
     * The chunks Lua writes after the request, as one InputStream: read()
     * returns -1 once Lua called stream:close_write(), and throws {@link
     * StreamClosedException} once Lua gave up. The request itself is
     * {@link #request()}, not part of it.
     *
     * @throws IllegalStateException for an ordinary call
     */
    public InputStream requestStream() {
        return in();
    }

    private AnswerStream out() {
        needStream();
        return answerStream;
    }

    private RequestStream in() {
        needStream();
        return requestStream;
    }

    private void needStream() {
        if (!stream) {
            throw new IllegalStateException("'" + method + "' was called with runtime:"
                    + method + "(), not runtime:__stream(): it has no stream");
        }
    }

    private long enterStream() {
        long t = enter();
        if (t == 0) {
            throw new IllegalStateException("task already answered");
        }
        return t;
    }

    @Override
    public String toString() {
        return "Task[method=" + method + ", answered=" + answered() + "]";
    }

    /** See {@link #answerStream()}. */
    private final class AnswerStream extends OutputStream {
        private boolean closed;

        @Override
        public synchronized void write(int b) throws IOException {
            write(new byte[] {(byte) b}, 0, 1);
        }

        @Override
        public synchronized void write(byte[] b, int off, int len) throws IOException {
            if (closed) {
                throw new IOException("the answer stream of '" + method + "' was closed");
            }
            send(b, off, len);
        }

        @Override
        public synchronized void close() {
            closed = true;
        }
    }

    /** See {@link #requestStream()}. */
    private final class RequestStream extends InputStream {
        // the chunk being read, from pos; null when none is
        private byte[] chunk;
        private int pos;
        private boolean ended;

        /** The rest of the chunk being read, or the next chunk. */
        synchronized byte[] readChunk() throws StreamClosedException {
            if (chunk != null) {
                byte[] rest = pos == 0 ? chunk : Arrays.copyOfRange(chunk, pos, chunk.length);
                chunk = null;
                return rest;
            }
            if (ended) {
                return null;
            }
            long t = enterStream();
            byte[] next;
            try {
                next = Native.streamRead(t);
            } finally {
                leave();
            }
            ended = next == null;
            return next;
        }

        @Override
        public synchronized int read() throws IOException {
            byte[] one = new byte[1];
            return read(one, 0, 1) < 0 ? -1 : one[0] & 0xff;
        }

        @Override
        public synchronized int read(byte[] b, int off, int len) throws IOException {
            Objects.checkFromIndexSize(off, len, b.length);
            if (len == 0) {
                return 0;
            }
            if (chunk == null) {
                chunk = readChunk();
                pos = 0;
                if (chunk == null) {
                    return -1;
                }
            }
            int n = Math.min(len, chunk.length - pos);
            System.arraycopy(chunk, pos, b, off, n);
            pos += n;
            if (pos == chunk.length) {
                chunk = null;
            }
            return n;
        }

        @Override
        public synchronized int available() {
            return chunk == null ? 0 : chunk.length - pos;
        }
    }
}
