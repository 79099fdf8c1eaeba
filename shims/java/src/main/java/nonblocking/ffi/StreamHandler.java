// SPDX-License-Identifier: BSD-2-Clause
package nonblocking.ffi;

import java.io.OutputStream;

/**
 * Answers one runtime:__stream(method, request) call in chunks: see {@link
 * Server#serveStreams(Queue, StreamHandler)}.
 */
@FunctionalInterface
public interface StreamHandler {

    /**
     * Writes the answer to out ({@link Task#answerStream()}: each write is a
     * chunk) and may read Lua's chunks from {@link Task#requestStream()} or
     * {@link Task#read()}. Returning ends the stream (Lua's read returns
     * nil, 0). An exception ends it with rc 1 and its toString() (Lua's
     * read returns nil, 1, "java.lang.X: message"), an {@link NffiException}
     * with its rc and message. A handler may end it itself with
     * task.respond(), and must stop when a write or read throws {@link
     * StreamClosedException} (Lua gave up; letting it escape is fine).
     */
    void handle(Task task, OutputStream out) throws Exception;
}
