// SPDX-License-Identifier: BSD-2-Clause
package nonblocking.ffi;

/**
 * The module's runtime ABI (include/nonblocking_ffi.h), registered by the
 * loader (lib_nonblocking_ffi_java.so) when it starts the JVM. Package
 * private: a wrong pointer here crashes the worker, so only Queue and Task
 * call it, with pointers that the module handed out.
 */
final class Native {

    private Native() {}

    /** The next task of the queue, waiting for one; 0 once unloaded. */
    static native long poll(long queue);

    /** Up to tasks.length tasks at once into tasks; 0 once unloaded. */
    static native int pollBatch(long queue, long[] tasks);

    /** The request bytes, or null when Lua passed nil. */
    static native byte[] request(long task);

    /** The method name of the call, as its bytes. */
    static native byte[] method(long task);

    static native boolean cancelled(long task);

    /** Answers the task: data null is nil. */
    static native void respond(long task, int rc, byte[] data);

    /** UTF-8 message into the nginx error log, at an nginx level. */
    static native void log(int level, byte[] message);

    static native int abiVersion();

    /** Gives the Lua caller of a failing load the reason (ABI 2). */
    static native void initError(long queue, byte[] reason);

    /** True for a task of runtime:__stream() (ABI 4). */
    static native boolean isStream(long task);

    /**
     * Sends data[off, off + len) as one chunk of the answer, waiting while
     * the window is full; nothing for len 0.
     */
    static native void streamSend(long task, byte[] data, int off, int len)
            throws StreamClosedException;

    /** The next chunk Lua wrote, waiting for it; null once Lua wrote no more. */
    static native byte[] streamRead(long task) throws StreamClosedException;
}
