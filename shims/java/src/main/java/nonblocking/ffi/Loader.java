// SPDX-License-Identifier: BSD-2-Clause
package nonblocking.ffi;

import java.io.File;
import java.io.PrintStream;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.net.MalformedURLException;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogManager;
import java.util.logging.Logger;

/**
 * What lib_nonblocking_ffi_java.so runs in the JVM, on the loader's own
 * thread: bootstrap() once when the JVM has started, load() for each
 * ngx.load_nonblocking_ffi() of the loader, with cfg "class[?],method,rest"
 * split by the C side. The worker waits meanwhile: they must not block.
 */
final class Loader {

    // the rc of a failed load, as in nffi_java.h
    static final int RC_CLASS = 4;
    static final int RC_METHOD = 5;
    static final int RC_RAISED = 6;

    private static final String PREFIX = "nonblocking_ffi java: ";

    private Loader() {}

    /** Sends logging, System.out and System.err to the nginx error log. */
    static void bootstrap() {
        Logger root = LogManager.getLogManager().getLogger("");
        for (Handler h : root.getHandlers()) {
            root.removeHandler(h);
        }
        root.addHandler(new NginxLogHandler());
        root.setLevel(Level.INFO);
        System.setOut(new PrintStream(new LineStream(NginxLog.INFO), true, StandardCharsets.UTF_8));
        System.setErr(new PrintStream(new LineStream(NginxLog.ERR), true, StandardCharsets.UTF_8));
        Thread.setDefaultUncaughtExceptionHandler(
                (thread, e) -> error(
                        "uncaught exception in thread \"" + thread.getName() + "\"", e));
    }

    /** The rc of the load: 0 when the method returned (void or 0). */
    static int load(byte[] classBytes, boolean fresh, byte[] methodBytes, byte[] restBytes,
            long queue) {
        String className = utf8(classBytes);
        String methodName = utf8(methodBytes);
        String rest = restBytes == null ? null : utf8(restBytes);
        String cfg = className + (fresh ? "?" : "") + "," + methodName;

        ClassLoader loader = ClassLoader.getSystemClassLoader();
        Class<?> cls;
        try {
            if (fresh) {
                loader = new FreshClassLoader(classPathUrls(), loader);
            }
            cls = Class.forName(className, true, loader);
        } catch (ClassNotFoundException e) {
            fail(queue, "class " + className + " not found (cfg \"" + cfg + "\"); class path: "
                    + describeClassPath(), null);
            return RC_CLASS;
        } catch (ExceptionInInitializerError e) {
            fail(queue, "the static initializer of " + className + " threw (cfg \"" + cfg + "\")",
                    e.getCause() != null ? e.getCause() : e);
            return RC_RAISED;
        } catch (LinkageError | RuntimeException | MalformedURLException e) {
            fail(queue, "cannot load class " + className + " (cfg \"" + cfg + "\")", e);
            return RC_CLASS;
        }

        Method method = null;
        List<String> others = new ArrayList<>();
        for (Method m : cls.getDeclaredMethods()) {
            if (!m.getName().equals(methodName)) {
                continue;
            }
            Class<?>[] params = m.getParameterTypes();
            if (Modifier.isStatic(m.getModifiers()) && Modifier.isPublic(m.getModifiers())
                    && params.length == 2 && params[0] == String.class
                    && params[1] == long.class
                    && (m.getReturnType() == void.class || m.getReturnType() == int.class)) {
                method = m;
                break;
            }
            others.add(m.toString());
        }
        if (method == null) {
            String expected = "expected public static void " + methodName
                    + "(String rest, long queue) (or returning int)";
            if (others.isEmpty()) {
                fail(queue, "class " + className + " has no method " + methodName + ": " + expected,
                        null);
            } else {
                fail(queue, "method " + className + "." + methodName + " has the wrong signature: "
                        + String.join(", ", others) + "; " + expected, null);
            }
            return RC_METHOD;
        }

        Queue.register(queue);
        Thread current = Thread.currentThread();
        ClassLoader saved = current.getContextClassLoader();
        current.setContextClassLoader(loader);
        Object result;
        try {
            method.setAccessible(true);
            result = method.invoke(null, rest, queue);
        } catch (InvocationTargetException e) {
            fail(queue, className + "." + methodName + "() threw (cfg \"" + cfg + "\")",
                    e.getCause());
            return RC_RAISED;
        } catch (ReflectiveOperationException | RuntimeException e) {
            fail(queue, "cannot call " + className + "." + methodName + "() (cfg \"" + cfg
                    + "\")", e);
            return RC_RAISED;
        } finally {
            current.setContextClassLoader(saved);
        }

        int rc = result instanceof Integer ? (Integer) result : 0;
        if (rc != 0) {
            fail(queue, className + "." + methodName + "() returned " + rc
                    + ": the load failed", null);
        }
        return rc;
    }

    /** The stack trace of an exception the C side caught. */
    static String describe(Throwable e) {
        return NginxLogHandler.stackTrace(e);
    }

    /** Logs what went wrong and gives it, in a line, to the load's caller. */
    private static void fail(long queue, String what, Throwable e) {
        error(what, e);
        String reason = e == null ? what : what + ": " + e;
        Native.initError(queue, reason.getBytes(StandardCharsets.UTF_8));
    }

    private static void error(String what, Throwable e) {
        String text = PREFIX + what;
        if (e != null) {
            text += ":\n" + NginxLogHandler.stackTrace(e);
        }
        NginxLog.log(NginxLog.ERR, text);
    }

    private static String utf8(byte[] bytes) {
        return new String(bytes, StandardCharsets.UTF_8);
    }

    private static List<String> classPath() {
        List<String> entries = new ArrayList<>();
        for (String entry : System.getProperty("java.class.path", "").split(File.pathSeparator)) {
            if (!entry.isEmpty()) {
                entries.add(entry);
            }
        }
        return entries;
    }

    private static URL[] classPathUrls() throws MalformedURLException {
        List<URL> urls = new ArrayList<>();
        for (String entry : classPath()) {
            urls.add(Paths.get(entry).toUri().toURL());
        }
        return urls.toArray(new URL[0]);
    }

    /** The class path, with what is wrong with each entry. */
    private static String describeClassPath() {
        StringBuilder text = new StringBuilder();
        String user = System.getProperty("user.name");
        for (String entry : classPath()) {
            if (text.length() > 0) {
                text.append(File.pathSeparator);
            }
            text.append(entry);
            Path path = Paths.get(entry);
            if (!Files.exists(path)) {
                text.append(" (does not exist");
                Path parent = path.toAbsolutePath().getParent();
                while (parent != null && !Files.exists(parent)) {
                    parent = parent.getParent();
                }
                if (parent != null && !Files.isExecutable(parent)) {
                    text.append(" or ").append(parent).append(" is not searchable by user ")
                            .append(user);
                }
                text.append(")");
            } else if (!Files.isReadable(path)
                    || (Files.isDirectory(path) && !Files.isExecutable(path))) {
                text.append(" (not readable by user ").append(user).append(")");
            }
        }
        return text.length() == 0 ? "(empty)" : text.toString();
    }

    /**
     * For "class?": reads the application's classes afresh from the class
     * path (child first), while the JDK and this API stay shared.
     */
    static final class FreshClassLoader extends URLClassLoader {

        static {
            registerAsParallelCapable();
        }

        FreshClassLoader(URL[] urls, ClassLoader parent) {
            super("nffi-fresh", urls, parent);
        }

        @Override
        protected Class<?> loadClass(String name, boolean resolve) throws ClassNotFoundException {
            synchronized (getClassLoadingLock(name)) {
                Class<?> c = findLoadedClass(name);
                if (c == null && !name.startsWith("java.")
                        && !name.startsWith("nonblocking.ffi.")) {
                    try {
                        c = findClass(name);
                    } catch (ClassNotFoundException e) {
                        // the parent's then
                    }
                }
                if (c == null) {
                    return super.loadClass(name, resolve);
                }
                if (resolve) {
                    resolveClass(c);
                }
                return c;
            }
        }
    }
}
