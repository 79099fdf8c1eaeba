// SPDX-License-Identifier: BSD-2-Clause
package nonblocking.ffi;

import java.io.IOException;

/**
 * The Lua side of a stream gave up (its timeout passed, its client went
 * away, it called stream:close(), or the stream was collected): every later
 * send or read of the task throws it at once, and a thread waiting in one
 * is woken with it. Stop, and still answer the task (the answer is
 * dropped); a {@link StreamHandler} that lets it escape is answered by the
 * {@link Server}.
 *
 * <p>An IOException, as what the task's {@link Task#answerStream()} and
 * {@link Task#requestStream()} throw when their other end is gone.
 */
public class StreamClosedException extends IOException {

    private static final long serialVersionUID = 1L;

    public StreamClosedException(String message) {
        super(message);
    }
}
