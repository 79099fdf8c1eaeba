// SPDX-License-Identifier: BSD-2-Clause
package nonblocking.ffi;

import java.nio.charset.StandardCharsets;
import java.util.concurrent.atomic.AtomicLong;

/**
 * One call from Lua: runtime:method(request). It must be answered exactly
 * once, by any thread, also when {@link #cancelled} (the answer is then
 * dropped); an unanswered task counts against the runtime's max_queue
 * until the worker exits, and its caller gets "timeout".
 */
public final class Task {

    private final AtomicLong task;
    private final byte[] request;
    private final String method;

    Task(long task) {
        this.task = new AtomicLong(task);
        this.request = Native.request(task);
        this.method = new String(Native.method(task), StandardCharsets.UTF_8);
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
        Native.respond(t, rc, data);
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
