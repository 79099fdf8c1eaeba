// SPDX-License-Identifier: BSD-2-Clause
package nonblocking.ffi;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.logging.Handler;
import java.util.logging.LogRecord;

/**
 * A java.util.logging handler writing "logger: message" (and the stack
 * trace of a record's exception) to the nginx error log at the level of
 * {@link NginxLog#levelOf}. The loader puts one on the root logger.
 */
public final class NginxLogHandler extends Handler {

    @Override
    public void publish(LogRecord record) {
        if (record == null || !isLoggable(record)) {
            return;
        }
        try {
            StringBuilder text = new StringBuilder();
            String name = record.getLoggerName();
            if (name != null && !name.isEmpty()) {
                text.append(name).append(": ");
            }
            String message = record.getMessage();
            try {
                message = new java.util.logging.SimpleFormatter().formatMessage(record);
            } catch (RuntimeException e) {
                // the raw message then
            }
            text.append(message);
            if (record.getThrown() != null) {
                text.append('\n').append(stackTrace(record.getThrown()));
            }
            NginxLog.log(NginxLog.levelOf(record.getLevel()), strip(text));
        } catch (RuntimeException e) {
            reportError(null, e, java.util.logging.ErrorManager.WRITE_FAILURE);
        }
    }

    @Override
    public void flush() {}

    @Override
    public void close() {}

    static String stackTrace(Throwable thrown) {
        StringWriter out = new StringWriter();
        thrown.printStackTrace(new PrintWriter(out));
        return strip(out.toString());
    }

    private static String strip(CharSequence text) {
        int end = text.length();
        while (end > 0 && (text.charAt(end - 1) == '\n' || text.charAt(end - 1) == '\r')) {
            end--;
        }
        return text.subSequence(0, end).toString();
    }
}
