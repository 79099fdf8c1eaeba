// SPDX-License-Identifier: BSD-2-Clause
package nonblocking.ffi;

import java.lang.ref.Cleaner;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.atomic.AtomicLong;

/**
 * One call from Lua: runtime:method(request). It must be answered exactly
 * once, by any thread, also when {@link #cancelled} (the answer is then
 * dropped); an unanswered task counts against the runtime's max_queue
 * until the worker exits, and its caller gets "timeout". (A Task that the
 * garbage collector finds unanswered is answered with rc 1 and a warning:
 * a safety net, not a way to answer.)
 */
public final class Task {

    /** Answers the tasks that were dropped without an answer. */
    private static final Cleaner CLEANER = Cleaner.create();

    private final AtomicLong task;
    private final byte[] request;
    private final String method;
    private final Cleaner.Cleanable cleanable;

    Task(long task) {
        this.task = new AtomicLong(task);
        this.request = Native.request(task);
        this.method = new String(Native.method(task), StandardCharsets.UTF_8);
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
        return task.get() == 0;
    }

    /**
     * True when nobody waits for the answer any more (the call timed out,
     * or its request went away): long work may stop early, but the task
     * must still be answered.
     */
    public boolean cancelled() {
        long t = task.get();
        return t != 0 && Native.cancelled(t);
    }

    /**
     * Answers the call: rc 0 is success (Lua sees true, data), any other rc
     * an error (Lua sees false, rc, data). data null is nil.
     *
     * @throws IllegalStateException when the task was answered before
     */
    public void respond(int rc, byte[] data) {
        long t = task.getAndSet(0);
        if (t == 0) {
            throw new IllegalStateException("task already answered");
        }
        try {
            Native.respond(t, rc, data);
        } finally {
            // answered: nothing left for the cleaner
            cleanable.clean();
        }
    }

    /** {@link #respond(int, byte[])} with text sent as UTF-8. */
    public void respond(int rc, String text) {
        respond(rc, text == null ? null : text.getBytes(StandardCharsets.UTF_8));
    }

    @Override
    public String toString() {
        return "Task[method=" + method + ", answered=" + answered() + "]";
    }
}
