// SPDX-License-Identifier: BSD-2-Clause
package nonblocking.ffi;

/** Answers one call: see {@link Server#serve(Queue, Handler)}. */
@FunctionalInterface
public interface Handler {

    /**
     * Returns the answer (null is nil). An exception answers rc 1 with its
     * toString() ("java.lang.X: message"), an {@link NffiException} its rc
     * and message. A handler may answer with task.respond() itself; what
     * it returns is then ignored.
     */
    byte[] handle(Task task) throws Exception;
}
