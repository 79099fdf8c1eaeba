// SPDX-License-Identifier: BSD-2-Clause
package jtest;

/** Its static initializer throws: cfg "jtest.BadStatic,init". */
public final class BadStatic {

    static {
        if (Boolean.parseBoolean("true")) {
            throw new IllegalStateException("static initializer failed as asked");
        }
    }

    private BadStatic() {}

    public static void init(String rest, long queue) {}
}
