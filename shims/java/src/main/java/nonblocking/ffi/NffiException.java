// SPDX-License-Identifier: BSD-2-Clause
package nonblocking.ffi;

/**
 * Thrown by a handler (or completing its future) to answer with this rc
 * and the message: Lua sees false, rc, message. No stack trace is logged
 * for it: it is an answer, not a failure of the runtime.
 */
public class NffiException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    private final int rc;

    /** @throws IllegalArgumentException for rc 0 (which is success) */
    public NffiException(int rc, String message) {
        super(message);
        if (rc == 0) {
            throw new IllegalArgumentException("NffiException needs an rc other than 0");
        }
        this.rc = rc;
    }

    public int rc() {
        return rc;
    }
}
