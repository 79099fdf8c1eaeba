// SPDX-License-Identifier: BSD-2-Clause
package nonblocking.ffi;

import java.nio.charset.StandardCharsets;
import java.util.logging.Level;

/**
 * The nginx error log of this worker. Any thread may write to it: the
 * message is copied and written by the worker's main thread, filtered by
 * the error_log level as nginx filters its own messages.
 *
 * <p>java.util.logging (and System.Logger, which uses it), System.out and
 * System.err are sent here by the loader; this class is for code that wants
 * an nginx level directly.
 */
public final class NginxLog {

    public static final int EMERG = 1;
    public static final int ALERT = 2;
    public static final int CRIT = 3;
    public static final int ERR = 4;
    public static final int WARN = 5;
    public static final int NOTICE = 6;
    public static final int INFO = 7;
    public static final int DEBUG = 8;

    private NginxLog() {}

    /**
     * Writes message at level (EMERG to DEBUG). nginx cuts an entry at
     * about 2 KB: a longer message is written as several entries.
     *
     * @throws IllegalArgumentException for a level out of range
     */
    public static void log(int level, String message) {
        if (level < EMERG || level > DEBUG) {
            throw new IllegalArgumentException(
                    "level must be EMERG (1) to DEBUG (8), not " + level);
        }
        Native.log(level, String.valueOf(message).getBytes(StandardCharsets.UTF_8));
    }

    /**
     * The nginx level of a java.util.logging level: SEVERE is [error],
     * WARNING [warn], INFO [info], CONFIG and below [debug].
     */
    public static int levelOf(Level level) {
        int value = level.intValue();
        if (value >= Level.SEVERE.intValue()) {
            return ERR;
        }
        if (value >= Level.WARNING.intValue()) {
            return WARN;
        }
        if (value >= Level.INFO.intValue()) {
            return INFO;
        }
        return DEBUG;
    }
}
