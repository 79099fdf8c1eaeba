// SPDX-License-Identifier: BSD-2-Clause
package nonblocking.ffi;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The request queue of one runtime: what Lua's runtime:foo(req) calls post
 * to. The configured static method receives its handle as a long; {@link
 * #of} turns it into a Queue.
 */
public final class Queue {

    /** The most tasks one {@link #pollBatch} takes. */
    public static final int POLL_BATCH_MAX = 1024;

    private static final Set<Long> HANDLES = ConcurrentHashMap.newKeySet();

    private final long handle;

    private Queue(long handle) {
        this.handle = handle;
    }

    /** Called by the loader before it hands a handle out. */
    static void register(long handle) {
        HANDLES.add(handle);
    }

    /**
     * The queue of a handle given to the configured method.
     *
     * @throws IllegalArgumentException when the loader never handed this
     *     handle out in this worker (the module would crash on it)
     */
    public static Queue of(long handle) {
        if (!HANDLES.contains(handle)) {
            throw new IllegalArgumentException(
                    "not a queue of this worker: pass the handle given to the"
                            + " configured method");
        }
        return new Queue(handle);
    }

    public long handle() {
        return handle;
    }

    /**
     * Waits for the next call and returns it, or null once the runtime is
     * unloaded and every call queued before has been taken: stop polling
     * then. Several threads may poll one queue.
     */
    public Task poll() {
        long task = Native.poll(handle);
        if (task == 0) {
            return null;
        }
        try {
            return new Task(task);
        } catch (Throwable e) {
            refuse(task);
            throw e;
        }
    }

    /**
     * Like {@link #poll}, but takes up to max calls at once (at least one);
     * an empty list once the runtime is unloaded and drained.
     */
    public List<Task> pollBatch(int max) {
        if (max < 1 || max > POLL_BATCH_MAX) {
            throw new IllegalArgumentException(
                    "max must be 1 to " + POLL_BATCH_MAX + ", not " + max);
        }
        long[] tasks = new long[max];
        int n = Native.pollBatch(handle, tasks);
        if (n == 0) {
            return Collections.emptyList();
        }
        List<Task> list = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            try {
                list.add(new Task(tasks[i]));
            } catch (Throwable e) {
                // no memory for the request: these calls fail, not wait
                for (int j = i; j < n; j++) {
                    refuse(tasks[j]);
                }
                if (list.isEmpty()) {
                    throw e;
                }
                break;
            }
        }
        return list;
    }

    private static final byte[] NO_MEMORY =
            "nonblocking_ffi java: no memory for the call's Task"
                    .getBytes(java.nio.charset.StandardCharsets.UTF_8);

    /** Answers a task that could not become a Task with rc 1. */
    private static void refuse(long task) {
        Native.respond(task, 1, NO_MEMORY);
    }

    @Override
    public boolean equals(Object other) {
        return other instanceof Queue && ((Queue) other).handle == handle;
    }

    @Override
    public int hashCode() {
        return Long.hashCode(handle);
    }

    @Override
    public String toString() {
        return "Queue[0x" + Long.toHexString(handle) + "]";
    }
}
