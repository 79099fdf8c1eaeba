// SPDX-License-Identifier: BSD-2-Clause
package nonblocking.ffi;

import java.io.ByteArrayOutputStream;
import java.io.OutputStream;

/**
 * System.out and System.err in a worker: each line (UTF-8) becomes an
 * nginx error log entry. Each thread has its own unfinished line, so lines
 * of two threads never mix; an unfinished line is written at its newline.
 */
final class LineStream extends OutputStream {

    private final int level;
    private final ThreadLocal<ByteArrayOutputStream> pending =
            ThreadLocal.withInitial(ByteArrayOutputStream::new);

    LineStream(int level) {
        this.level = level;
    }

    @Override
    public void write(int b) {
        ByteArrayOutputStream line = pending.get();
        if (b == '\n') {
            emit(line);
        } else {
            line.write(b);
        }
    }

    @Override
    public void write(byte[] b, int off, int len) {
        ByteArrayOutputStream line = pending.get();
        int start = off;
        for (int i = off; i < off + len; i++) {
            if (b[i] == '\n') {
                line.write(b, start, i - start);
                emit(line);
                start = i + 1;
            }
        }
        line.write(b, start, off + len - start);
    }

    private void emit(ByteArrayOutputStream line) {
        byte[] bytes = line.toByteArray();
        line.reset();
        int len = bytes.length;
        if (len > 0 && bytes[len - 1] == '\r') {
            len--;
        }
        byte[] text = len == bytes.length ? bytes : java.util.Arrays.copyOf(bytes, len);
        Native.log(level, text);
    }
}
