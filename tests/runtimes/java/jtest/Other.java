// SPDX-License-Identifier: BSD-2-Clause
package jtest;

import java.nio.charset.StandardCharsets;
import nonblocking.ffi.Queue;
import nonblocking.ffi.Server;

/** A second runtime in the same JVM: cfg "jtest.Other,init,marker". */
public final class Other {

    private Other() {}

    public static void init(String rest, long queue) {
        System.setProperty("jtest.marker", rest);
        Server.serve(Queue.of(queue),
                task -> ("other " + task.method()).getBytes(StandardCharsets.UTF_8),
                Runnable::run);
    }
}
