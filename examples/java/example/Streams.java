// SPDX-License-Identifier: BSD-2-Clause
package example;

import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.logging.Logger;
import nonblocking.ffi.NffiException;
import nonblocking.ffi.Queue;
import nonblocking.ffi.Server;
import nonblocking.ffi.Task;

/**
 * A stream runtime: answers in chunks, and reads the chunks Lua writes.
 *
 * <pre>
 * local rt = assert(ngx.load_nonblocking_ffi(
 *     "/path/to/build/lib_nonblocking_ffi_java.so", "example.Streams,init"))
 * local s = assert(rt:__stream("count", "3"))
 * s:read()    --&gt; "1\n", then "2\n", "3\n", then nil, 0
 *
 * local s = assert(rt:__stream("upper"))
 * s:write("abc") s:write("d\0e") s:close_write()
 * s:read()    --&gt; "ABC", then "D\0E", then "2 chunks", then nil, 0
 * </pre>
 *
 * <p>"count" takes "n" or "n,ms" (a pause between chunks); "upper" sends
 * back each chunk with its ASCII letters in upper case, binary-safe, until
 * Lua's close_write(). An ordinary call (rt:count("3")) is answered with
 * false, 1, and why.
 */
public final class Streams {

    private static final Logger LOG = Logger.getLogger("streams");

    private Streams() {}

    static void handle(Task task, OutputStream out) throws Exception {
        switch (task.method()) {
            case "count":
                String[] a = task.requestText() == null ? new String[] {"0"}
                        : task.requestText().split(",");
                int n = Integer.parseInt(a[0]);
                long pause = a.length > 1 ? Long.parseLong(a[1]) : 0;
                for (int i = 1; i <= n; i++) {
                    // waits while Lua has a window's worth unread; throws
                    // StreamClosedException once Lua gave up, which ends
                    // the handler (the Server answers the task)
                    out.write((i + "\n").getBytes(StandardCharsets.UTF_8));
                    Thread.sleep(pause);
                }
                return;
            case "upper":
                int chunks = 0;
                for (byte[] chunk = task.read(); chunk != null; chunk = task.read()) {
                    for (int i = 0; i < chunk.length; i++) {
                        if (chunk[i] >= 'a' && chunk[i] <= 'z') {
                            chunk[i] -= 'a' - 'A';
                        }
                    }
                    out.write(chunk);
                    chunks++;
                }
                // the answer's data is the stream's last chunk
                task.respond(0, chunks + " chunks");
                return;
            default:
                throw new NffiException(404, "no stream " + task.method());
        }
    }

    /** cfg "example.Streams,init". */
    public static void init(String rest, long queue) {
        Server.serveStreams(Queue.of(queue), Streams::handle);
        LOG.info("serving streams");
    }
}
