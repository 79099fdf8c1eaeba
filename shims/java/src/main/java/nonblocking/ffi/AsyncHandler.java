// SPDX-License-Identifier: BSD-2-Clause
package nonblocking.ffi;

import java.util.concurrent.CompletionStage;

/**
 * Starts one call and returns its answer to come: see {@link
 * Server#serveAsync}. Called on a poll thread: it must not block.
 */
@FunctionalInterface
public interface AsyncHandler {

    /**
     * A CompletableFuture (or any CompletionStage) of the answer. Completed
     * with an exception, or throwing one, it answers as {@link Handler}
     * does.
     */
    CompletionStage<byte[]> handle(Task task) throws Exception;
}
