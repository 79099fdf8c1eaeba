// SPDX-License-Identifier: BSD-2-Clause
package nonblocking.ffi;

import java.io.OutputStream;
import java.lang.reflect.Method;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executor;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * Answers the calls of a queue with a handler, on threads of its own.
 *
 * <pre>{@code
 * public static void init(String rest, long queue) {
 *     Server.serve(Queue.of(queue), task -> task.request());
 * }
 * }</pre>
 *
 * <p>Poll threads take calls in batches and hand each to the executor,
 * which runs the handler: by default virtual threads where the JDK has
 * them (21+), else a pool of {@code threads} daemon threads. An async
 * handler runs on the poll thread and answers when its future completes.
 * A handler's exception answers the call with rc != 0; it never ends a
 * poll thread. A stream handler ({@link #serveStreams}) answers
 * runtime:__stream() calls in chunks, by default each on a platform thread.
 * Once the runtime is unloaded and every call taken was answered (futures
 * included), the default executor shuts down and onStop runs.
 */
public final class Server {

    private static final Logger LOG = Logger.getLogger("nonblocking.ffi");
    private static final AtomicInteger SERVERS = new AtomicInteger();

    private final Queue queue;
    private final Handler handler;
    private final StreamHandler streamHandler;
    private final AsyncHandler asyncHandler;
    private final Executor executor;
    private final ExecutorService ownExecutor;
    private final Runnable onStop;
    private final int batch;
    // poll threads running, plus one for each call taken and not answered
    private final AtomicInteger busy = new AtomicInteger();
    private final CountDownLatch stopped = new CountDownLatch(1);

    private Server(Builder b, Handler handler, StreamHandler streamHandler,
            AsyncHandler asyncHandler) {
        this.queue = b.queue;
        this.handler = handler;
        this.streamHandler = streamHandler;
        this.asyncHandler = asyncHandler;
        this.onStop = b.onStop;
        this.batch = b.batch;
        int id = SERVERS.incrementAndGet();
        if (b.executor != null || asyncHandler != null) {
            this.executor = b.executor;
            this.ownExecutor = null;
        } else if (streamHandler != null) {
            this.ownExecutor = streamExecutor("nffi-" + id + "-stream-");
            this.executor = ownExecutor;
        } else {
            this.ownExecutor = defaultExecutor(b.threads, "nffi-" + id + "-worker-");
            this.executor = ownExecutor;
        }
        busy.set(b.pollers);
        for (int i = 0; i < b.pollers; i++) {
            Thread t = new Thread(this::pollLoop, "nffi-" + id + "-poll-" + i);
            t.setDaemon(true);
            t.start();
        }
    }

    /** {@code builder(queue).serve(handler)} with the defaults. */
    public static Server serve(Queue queue, Handler handler) {
        return builder(queue).serve(handler);
    }

    /** {@code builder(queue).executor(executor).serve(handler)}. */
    public static Server serve(Queue queue, Handler handler, Executor executor) {
        return builder(queue).executor(executor).serve(handler);
    }

    /** {@code builder(queue).serveStreams(handler)} with the defaults. */
    public static Server serveStreams(Queue queue, StreamHandler handler) {
        return builder(queue).serveStreams(handler);
    }

    /** {@code builder(queue).serveAsync(handler)} with the defaults. */
    public static Server serveAsync(Queue queue, AsyncHandler handler) {
        return builder(queue).serveAsync(handler);
    }

    public static Builder builder(Queue queue) {
        return new Builder(Objects.requireNonNull(queue, "queue"));
    }

    /** Options of a server; serve() or serveAsync() starts it. */
    public static final class Builder {
        private final Queue queue;
        private Executor executor;
        private int threads = 8;
        private int pollers = 1;
        private int batch = 64;
        private Runnable onStop;

        private Builder(Queue queue) {
            this.queue = queue;
        }

        /**
         * Runs the handlers (sync handlers only): Runnable::run runs them
         * on the poll threads. The caller owns it: it is not shut down.
         */
        public Builder executor(Executor executor) {
            this.executor = Objects.requireNonNull(executor, "executor");
            return this;
        }

        /** Threads of the default pool (JDKs without virtual threads): 8. */
        public Builder threads(int threads) {
            if (threads < 1) {
                throw new IllegalArgumentException("threads must be >= 1, not " + threads);
            }
            this.threads = threads;
            return this;
        }

        /** Poll threads: 1. */
        public Builder pollers(int pollers) {
            if (pollers < 1) {
                throw new IllegalArgumentException("pollers must be >= 1, not " + pollers);
            }
            this.pollers = pollers;
            return this;
        }

        /** The most calls a poll thread takes at once: 64. */
        public Builder batch(int batch) {
            if (batch < 1 || batch > Queue.POLL_BATCH_MAX) {
                throw new IllegalArgumentException(
                        "batch must be 1 to " + Queue.POLL_BATCH_MAX + ", not " + batch);
            }
            this.batch = batch;
            return this;
        }

        /** Runs once the runtime is unloaded and every call answered. */
        public Builder onStop(Runnable onStop) {
            this.onStop = Objects.requireNonNull(onStop, "onStop");
            return this;
        }

        public Server serve(Handler handler) {
            return new Server(this, Objects.requireNonNull(handler, "handler"), null, null);
        }

        /**
         * Serves runtime:__stream() calls; ordinary calls are answered
         * with rc 1 and a message that says so. Without an executor, each
         * stream runs on a platform thread of its own (reused): a stream
         * waits in native calls, which would pin a virtual thread's
         * carrier.
         */
        public Server serveStreams(StreamHandler handler) {
            return new Server(this, null, Objects.requireNonNull(handler, "handler"), null);
        }

        public Server serveAsync(AsyncHandler handler) {
            return new Server(this, null, null, Objects.requireNonNull(handler, "handler"));
        }
    }

    /** Waits until the runtime is unloaded and the server stopped. */
    public boolean awaitStop(long timeout, TimeUnit unit) throws InterruptedException {
        return stopped.await(timeout, unit);
    }

    public boolean isStopped() {
        return stopped.getCount() == 0;
    }

    private void pollLoop() {
        try {
            for (;;) {
                List<Task> tasks;
                try {
                    tasks = queue.pollBatch(batch);
                } catch (Throwable e) {
                    // e.g. no memory for a Task: that call stays unanswered
                    // and times out; this thread keeps serving the others
                    LOG.log(Level.SEVERE, "poll failed", e);
                    continue;
                }
                if (tasks.isEmpty()) {
                    break;
                }
                for (Task task : tasks) {
                    dispatch(task);
                }
            }
        } finally {
            done();
        }
    }

    /** One poll thread ended, or one call was answered. */
    private void done() {
        if (busy.decrementAndGet() == 0) {
            stop();
        }
    }

    private void dispatch(Task task) {
        busy.incrementAndGet();
        if (asyncHandler != null) {
            runAsync(task);
            return;
        }
        try {
            executor.execute(() -> run(task));
        } catch (Throwable e) {
            fail(task, e instanceof RejectedExecutionException
                    ? new RejectedExecutionException("the executor refused the call", e)
                    : e);
            done();
        }
    }

    private void run(Task task) {
        try {
            if (streamHandler != null) {
                stream(task);
            } else {
                answer(task, handler.handle(task));
            }
        } catch (Throwable e) {
            fail(task, e);
        } finally {
            done();
        }
    }

    private void stream(Task task) throws Exception {
        if (!task.isStream()) {
            task.respond(1, "'" + task.method() + "' answers in a stream: call it with"
                    + " runtime:__stream(\"" + task.method() + "\", req)");
            return;
        }
        OutputStream out = task.answerStream();
        streamHandler.handle(task, out);
        answer(task, null);
    }

    private void runAsync(Task task) {
        CompletionStage<byte[]> stage;
        try {
            stage = asyncHandler.handle(task);
            if (stage == null) {
                throw new NullPointerException("the async handler returned null, not a future");
            }
        } catch (Throwable e) {
            fail(task, e);
            done();
            return;
        }
        stage.whenComplete((result, error) -> {
            try {
                if (error != null) {
                    fail(task, error);
                } else {
                    answer(task, result);
                }
            } finally {
                done();
            }
        });
    }

    private static void answer(Task task, byte[] result) {
        if (!task.answered()) {
            try {
                task.respond(0, result);
            } catch (IllegalStateException e) {
                // the handler's own thread answered meanwhile
            }
        }
    }

    private static void fail(Task task, Throwable error) {
        while ((error instanceof CompletionException || error instanceof ExecutionException)
                && error.getCause() != null) {
            error = error.getCause();
        }
        int rc = 1;
        String text = error.toString();
        if (error instanceof NffiException) {
            rc = ((NffiException) error).rc();
            text = error.getMessage();
        } else if (error instanceof StreamClosedException) {
            // no failure of the runtime: nginx logs a client gone at info
            LOG.info("the Lua side of a '" + task.method() + "' stream gave up");
        } else {
            LOG.log(Level.SEVERE, "the handler of a '" + task.method() + "' call failed", error);
        }
        if (task.answered()) {
            return;
        }
        try {
            task.respond(rc, text);
        } catch (IllegalStateException e) {
            // answered meanwhile
        }
    }

    /* the runtime is unloaded and every call taken was answered */
    private void stop() {
        try {
            if (ownExecutor != null) {
                ownExecutor.shutdown();
            }
            if (onStop != null) {
                onStop.run();
            }
        } catch (Throwable e) {
            LOG.log(Level.SEVERE, "onStop failed", e);
        } finally {
            stopped.countDown();
        }
    }

    /** A thread for each stream in progress: max_queue bounds them. */
    private static ExecutorService streamExecutor(String prefix) {
        return Executors.newCachedThreadPool(daemonThreads(prefix));
    }

    private static ExecutorService defaultExecutor(int threads, String prefix) {
        try {
            Method virtual = Executors.class.getMethod("newVirtualThreadPerTaskExecutor");
            return (ExecutorService) virtual.invoke(null);
        } catch (ReflectiveOperationException e) {
            // Java 17 to 20: no virtual threads
        }
        return Executors.newFixedThreadPool(threads, daemonThreads(prefix));
    }

    private static ThreadFactory daemonThreads(String prefix) {
        AtomicInteger n = new AtomicInteger();
        return r -> {
            Thread t = new Thread(r, prefix + n.getAndIncrement());
            t.setDaemon(true);
            return t;
        };
    }
}
