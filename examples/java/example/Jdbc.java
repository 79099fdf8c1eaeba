// SPDX-License-Identifier: BSD-2-Clause
package example;

import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.logging.Level;
import java.util.logging.Logger;
import nonblocking.ffi.NffiException;
import nonblocking.ffi.Queue;
import nonblocking.ffi.Server;
import nonblocking.ffi.Task;

/**
 * PostgreSQL from Lua through JDBC, with a small connection pool: what Lua
 * lacks (prepared statements, transactions, a real driver), without
 * blocking nginx.
 *
 * <pre>
 * env NFFI_JAVA_CLASSPATH=/path/to/build/java/examples:/usr/share/java/postgresql.jar;
 *
 * local db = assert(ngx.load_nonblocking_ffi(JAVA,
 *     "example.Jdbc,init,4 jdbc:postgresql://127.0.0.1:5432/app?user=app"))
 * db:put("key=value")      --&gt; true, "1"           (bytes after "=" stored as bytea)
 * db:get("key")            --&gt; true, "value"       (nil when absent)
 * db:query("select 1 as n") --&gt; true, "n\n1"       (tab-separated, a header line)
 * db:exec("delete from kv") --&gt; true, "1"          (rows changed)
 * db:query("select nosuch") --&gt; false, 2, "42703: ERROR: column ..."
 * </pre>
 *
 * <p>rest is "POOL_SIZE JDBC_URL": POOL_SIZE connections are opened at
 * init (a database that is down fails the load) and each call borrows one;
 * the handlers run on as many threads, so POOL_SIZE calls run at once and
 * the others wait in the queue. A connection that broke is replaced on its
 * next use.
 */
public final class Jdbc {

    private static final Logger LOG = Logger.getLogger("jdbc");

    /** rc of an SQL error: Lua sees false, 2, "SQLSTATE: message". */
    static final int RC_SQL = 2;

    private final String url;
    private final BlockingQueue<Connection> pool;

    private Jdbc(String url, int size) throws SQLException {
        this.url = url;
        this.pool = new ArrayBlockingQueue<>(size);
        try {
            for (int i = 0; i < size; i++) {
                pool.add(DriverManager.getConnection(url));
            }
        } catch (SQLException e) {
            close();
            throw e;
        }
    }

    /** cfg "example.Jdbc,init,POOL_SIZE JDBC_URL". */
    public static void init(String rest, long queue) throws SQLException {
        String[] parts = rest == null ? new String[0] : rest.trim().split("\\s+", 2);
        if (parts.length != 2) {
            throw new IllegalArgumentException("cfg rest must be \"POOL_SIZE JDBC_URL\"");
        }
        int size = Integer.parseInt(parts[0]);
        Jdbc db = new Jdbc(parts[1], size);
        try (Statement st = db.pool.peek().createStatement()) {
            st.execute("create table if not exists kv (k text primary key, v bytea)");
        }
        Server.builder(Queue.of(queue)).threads(size).onStop(db::close).serve(db::handle);
        LOG.info("serving " + size + " connections to " + redact(parts[1]));
    }

    private byte[] handle(Task task) throws Exception {
        Connection c = pool.poll(30, TimeUnit.SECONDS);
        if (c == null) {
            throw new NffiException(503, "no free connection in 30 s");
        }
        try {
            if (!c.isValid(2)) {
                LOG.warning("a broken connection was replaced");
                c.close();
                c = DriverManager.getConnection(url);
            }
            return run(c, task);
        } catch (SQLException e) {
            throw new NffiException(RC_SQL, e.getSQLState() + ": " + e.getMessage());
        } finally {
            pool.add(c);
        }
    }

    private static byte[] run(Connection c, Task task) throws SQLException {
        String req = task.requestText();
        switch (task.method()) {
            case "put":
                {
                    // the key is text, the value any bytes
                    byte[] r = task.request();
                    int eq = 0;
                    while (r != null && eq < r.length && r[eq] != '=') {
                        eq++;
                    }
                    if (r == null || eq == r.length) {
                        throw new NffiException(400, "put needs key=value");
                    }
                    try (PreparedStatement ps = c.prepareStatement(
                            "insert into kv (k, v) values (?, ?)"
                                    + " on conflict (k) do update set v = excluded.v")) {
                        ps.setString(1, new String(r, 0, eq, StandardCharsets.UTF_8));
                        ps.setBytes(2, Arrays.copyOfRange(r, eq + 1, r.length));
                        return utf8(Integer.toString(ps.executeUpdate()));
                    }
                }
            case "get":
                try (PreparedStatement ps = c.prepareStatement("select v from kv where k = ?")) {
                    ps.setString(1, req);
                    try (ResultSet rs = ps.executeQuery()) {
                        return rs.next() ? rs.getBytes(1) : null;
                    }
                }
            case "query":
                try (Statement st = c.createStatement();
                        ResultSet rs = st.executeQuery(req)) {
                    return utf8(table(rs));
                }
            case "exec":
                try (Statement st = c.createStatement()) {
                    return utf8(Integer.toString(st.executeUpdate(req)));
                }
            default:
                throw new NffiException(404, "no method " + task.method());
        }
    }

    /** A header line and one line per row, tab-separated; NULL is \N. */
    private static String table(ResultSet rs) throws SQLException {
        ResultSetMetaData meta = rs.getMetaData();
        int n = meta.getColumnCount();
        List<String> lines = new ArrayList<>();
        List<String> cells = new ArrayList<>();
        for (int i = 1; i <= n; i++) {
            cells.add(meta.getColumnLabel(i));
        }
        lines.add(String.join("\t", cells));
        while (rs.next()) {
            cells.clear();
            for (int i = 1; i <= n; i++) {
                String v = rs.getString(i);
                cells.add(v == null ? "\\N" : v);
            }
            lines.add(String.join("\t", cells));
        }
        return String.join("\n", lines);
    }

    private void close() {
        Connection c;
        while ((c = pool.poll()) != null) {
            try {
                c.close();
            } catch (SQLException e) {
                LOG.log(Level.WARNING, "closing a connection failed", e);
            }
        }
        LOG.info("connections closed");
    }

    private static String redact(String url) {
        return url.replaceAll("(?i)(password=)[^&]*", "$1***");
    }

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }
}
