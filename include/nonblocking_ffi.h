/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * lua-resty-nonblocking-ffi: the runtime-side ABI.
 *
 * A runtime is a shared library that Lua code in nginx loads with
 * ngx.load_nonblocking_ffi(lib, cfg, opts).  It exports one function,
 * lib_nonblocking_ffi_init(), starts its own threads there, and those
 * threads poll the queue they were given, read each request and answer it.
 * The functions below are exported by the nginx module
 * (ngx_http_lua_nonblocking_ffi_module.so), which nginx loads with
 * RTLD_GLOBAL: a runtime links against them without any library, they are
 * resolved when the runtime is loaded.
 *
 * Every function here is thread-safe and may be called from any thread of
 * the runtime, as often as needed, unless stated otherwise.
 *
 * Signals: nginx handles its signals on the worker's main thread.  The init
 * function runs with them blocked, so threads started there inherit that
 * mask; if a runtime unblocks them anyway (Go does), a signal landing on
 * its thread is handed to the main thread.  Once a runtime is loaded,
 * SIGCHLD has its default disposition in the worker: nginx no longer reaps
 * children, so each child must be waited for by the code that started it.
 * A child started from a runtime thread inherits that thread's mask, nginx's
 * signals blocked: unblock them in the child (before exec) if it must react
 * to TERM or HUP, or stop it with SIGKILL.
 *
 * A library, once loaded, is never closed (dlclose), also after unload.
 */

#ifndef NONBLOCKING_FFI_H_INCLUDED
#define NONBLOCKING_FFI_H_INCLUDED


#ifdef __cplusplus
extern "C" {
#endif


/* the ABI described by this header; see ..._abi_version() */
#define NONBLOCKING_FFI_ABI_VERSION  5


/*
 * The ABI version this runtime was built for, read by the module at load:
 * a runtime built for a newer ABI than the loaded module's is refused
 * ("built for ABI version N, the module has M").  A runtime without the
 * symbol (built with an older header, or written for lua-resty-ffi) is
 * loaded.  The definition is weak, so every file of a runtime may include
 * this header; a file that defines NONBLOCKING_FFI_NO_ABI_BUILT before
 * including it (the module itself does) gets the declaration only.
 * Since ABI version 3.
 */
#define NONBLOCKING_FFI_ABI_BUILT_SYMBOL  "lib_nonblocking_ffi_abi_built"

extern const int  lib_nonblocking_ffi_abi_built;

#ifndef NONBLOCKING_FFI_NO_ABI_BUILT
__attribute__((weak, visibility("default")))
const int  lib_nonblocking_ffi_abi_built = NONBLOCKING_FFI_ABI_VERSION;
#endif


/* the most tasks one ..._task_poll_batch() or ..._task_take() call takes */
#define NONBLOCKING_FFI_POLL_BATCH_MAX  1024


/* levels of ngx_http_lua_nonblocking_ffi_log(), the same as nginx's */
#define NONBLOCKING_FFI_LOG_EMERG    1
#define NONBLOCKING_FFI_LOG_ALERT    2
#define NONBLOCKING_FFI_LOG_CRIT     3
#define NONBLOCKING_FFI_LOG_ERR      4
#define NONBLOCKING_FFI_LOG_WARN     5
#define NONBLOCKING_FFI_LOG_NOTICE   6
#define NONBLOCKING_FFI_LOG_INFO     7
#define NONBLOCKING_FFI_LOG_DEBUG    8


/*
 * Exported by the runtime.  Called on the worker's main thread, with
 * nginx's signals blocked (threads started here inherit that mask, which is
 * what nginx needs), by the first ngx.load_nonblocking_ffi(lib, cfg) of each
 * worker process for that library file and cfg ("demo" and "libdemo.so"
 * name the same file; an absolute path is another name).  Later loads of
 * the same pair return the loaded runtime without calling it again, until
 * runtime:__unload(): a load after that calls it again, with a new tq.
 *
 * cfg  the cfg string given to ngx.load_nonblocking_ffi(), NUL-terminated,
 *      or NULL when it was nil.  Valid only during this call: copy it.
 * tq   the queue of this runtime: hand it to the poll functions.
 *
 * Return 0 when the runtime is ready; any other value makes the load fail
 * with that value in the error message.  After a non-zero return the
 * runtime must not use tq (no thread of it may poll it): a load retried
 * with the same lib and cfg hands the same tq to init again.  Must not
 * block for long: the worker serves nobody while it runs.
 *
 * Libraries written for lua-resty-ffi may export libffi_init instead, with
 * the same signature; it is used when lib_nonblocking_ffi_init is absent.
 */
int lib_nonblocking_ffi_init(char *cfg, void *tq);


/*
 * Takes the next task of queue tq, waiting (spinning briefly, then sleeping)
 * until there is one.  Several threads may poll one queue.
 *
 * Returns NULL once the runtime is unloaded (runtime:__unload() or worker
 * exit) and every task queued before that has been taken: from then on each
 * call returns NULL at once, to every poller.  A runtime stops using tq when
 * it sees NULL; tasks it already took may still be answered.
 */
void *ngx_http_lua_nonblocking_ffi_task_poll(void *tq);


/*
 * The request of a task: a pointer to len bytes (binary-safe, followed by a
 * NUL that len does not count), or NULL with *len 0 when Lua passed nil.
 * The memory belongs to the task and stays valid until the task is
 * answered.  len may be NULL.
 */
char *ngx_http_lua_nonblocking_ffi_get_req(void *tsk, int *len);


/*
 * Answers a task, exactly once.  After the call the task must not be used.
 *
 * rc       0 for success: Lua sees "true, rsp".  Any other value is a
 *          runtime error: Lua sees "false, rc, rsp".
 * rsp      NULL (Lua sees nil) or memory from malloc(), which the module
 *          owns and frees from now on, also when the call has no one
 *          waiting any more.
 * rsp_len  the number of bytes of rsp (binary-safe); 0 with a non-NULL rsp
 *          means rsp is a NUL-terminated string; a negative value is a
 *          runtime bug: rsp is freed and Lua sees
 *          "false, 'runtime answered with a negative length'" (and
 *          "false, 'runtime answered with more than 2 GB'" for a string
 *          longer than INT_MAX).
 *
 * A second answer to the same task, or an answer to something that is not
 * a task waiting for its answer, is not delivered: it is logged as [alert]
 * in the nginx error log and rsp is freed.  (Tasks are pooled and reused
 * oldest first: a second answer sent long after the first, once the task
 * serves a new call, would answer that call.  Answer once.)
 */
void ngx_http_lua_nonblocking_ffi_respond(void *tsk, int rc, char *rsp,
    int rsp_len);


/* --- extensions (additive; the three calls above are all a runtime needs) */


/* NONBLOCKING_FFI_ABI_VERSION of the loaded module. */
int ngx_http_lua_nonblocking_ffi_abi_version(void);


/*
 * Like ..._task_poll(), but takes up to max tasks at once into tasks[]
 * (at most NONBLOCKING_FFI_POLL_BATCH_MAX per call).  Returns how many it
 * took (at least 1), or 0 once the runtime is unloaded and drained (the
 * equivalent of NULL from ..._task_poll()), or 0 when max < 1.
 */
int ngx_http_lua_nonblocking_ffi_task_poll_batch(void *tq, void **tasks,
    int max);


/*
 * The method name of the call that made this task ("foo" for
 * runtime:foo(req)), NUL-terminated; *len (if len is not NULL) gets its
 * length.  Valid until the task is answered.
 */
const char *ngx_http_lua_nonblocking_ffi_get_method(void *tsk, int *len);


/*
 * 1 when nobody waits for this task's answer any more (the call timed out,
 * or its coroutine or request went away), else 0.  The task must still be
 * answered (the answer is then dropped): a runtime may use this to stop
 * long work early.
 */
int ngx_http_lua_nonblocking_ffi_task_cancelled(void *tsk);


/*
 * Writes msg (len bytes, or NUL-terminated when len is 0) to the error log
 * of the nginx worker at the given level (NONBLOCKING_FFI_LOG_*; any other
 * value logs at ERR), as nginx filters levels.  The message is copied and
 * handed to the worker's main thread, which writes it: no nginx structure
 * is touched from the calling thread.  nginx cuts a log entry at about
 * 2 KB, so a longer message is written as several entries, cut after a
 * line end where there is one.  When more than 10000 messages are waiting,
 * new ones are dropped and the number dropped is logged.
 */
void ngx_http_lua_nonblocking_ffi_log(int level, const char *msg, int len);


/*
 * Why the init of queue tq is failing, for the Lua caller: called (from any
 * thread) before lib_nonblocking_ffi_init() returns a non-zero value, msg
 * (len bytes, or NUL-terminated when len is 0; copied) is added to the
 * load's error: "<lib>: lib_nonblocking_ffi_init() failed with rc N: msg".
 * The last call wins; a call for an init that succeeds, or after it
 * returned, is ignored.  Since ABI version 2.
 */
void ngx_http_lua_nonblocking_ffi_init_error(void *tq, const char *msg,
    int len);


/*
 * For runtimes with an event loop of their own (asyncio, tokio, libuv,
 * epoll): a file descriptor that is readable while tasks wait in queue tq,
 * and stays readable for good once the runtime is unloaded.  Register it
 * for reading in the loop; when it is readable, call ..._task_take() until
 * it returns 0.  Never read, write or close it: the module does, it is
 * level-triggered (readable until every waiting task has been taken,
 * whoever took them), and it stays open until the worker exits, so its
 * number is never reused under a loop that still watches it.
 *
 * Event-loop and blocking pollers may share one queue.  No wake-up is
 * lost: a task queued after ..._task_take() returned 0 makes the fd
 * readable.  A wake-up may find nothing (another poller was faster):
 * ..._task_take() then returns 0 and the fd is no longer readable.
 *
 * Every call for one tq returns the same fd; -1 (with errno) when tq is
 * not a queue or no eventfd can be created.  Since ABI version 3.
 */
int ngx_http_lua_nonblocking_ffi_queue_fd(void *tq);


/*
 * Takes up to max tasks (at most NONBLOCKING_FFI_POLL_BATCH_MAX) into
 * tasks[] that are waiting now, never waits.  Returns how many it took,
 * 0 when none waits, or -1 once the runtime is unloaded and every task
 * queued before that has been taken (the equivalent of NULL from
 * ..._task_poll(): stop using tq, unregister its fd).  -1 also when tq is
 * not a queue, or tasks is NULL or max < 1 (logged as [alert]).  Since ABI
 * version 3.
 */
int ngx_http_lua_nonblocking_ffi_task_take(void *tq, void **tasks, int max);


/*
 * Streams (since ABI version 4).  Lua opens a stream with
 * runtime:__stream(method, req, opts): the runtime takes its task as any
 * other, reads req with ..._get_req(), then may send the answer in chunks
 * before its final ..._respond(), and read the chunks Lua writes after req.
 * ..._task_is_stream() tells the two kinds of task apart; a stream task
 * answered with ..._respond() alone is a stream of one chunk.
 *
 * Flow control: each direction holds at most a window of bytes (opts.window
 * in Lua, 1 MB by default) sent and not yet read by the other side.  A
 * chunk that would pass it waits (blocking forms) or is refused with
 * NONBLOCKING_FFI_STREAM_AGAIN (non-blocking forms); a chunk larger than
 * the window passes alone, when nothing else is unread.
 *
 * When the Lua side gives up (timeout, client gone, stream:close(), the
 * stream collected), every later send or read fails at once with
 * NONBLOCKING_FFI_STREAM_CLOSED, and a thread waiting in one is woken.  The
 * task must still be answered with ..._respond() (the answer is dropped).
 *
 * All the stream functions may be called from any thread, as long as the
 * calls on one task happen before its ..._respond() (after it, the task
 * must not be used).  One thread at a time may read a task's stream and
 * one at a time may send on it.
 */

/* results of the stream functions */
#define NONBLOCKING_FFI_STREAM_OK          0
#define NONBLOCKING_FFI_STREAM_END         1   /* read: Lua wrote no more */
#define NONBLOCKING_FFI_STREAM_AGAIN     (-1)  /* non-blocking: wait on fd */
#define NONBLOCKING_FFI_STREAM_CLOSED    (-2)  /* the Lua side gave up */
#define NONBLOCKING_FFI_STREAM_ERROR     (-3)  /* misuse, logged as [alert] */


/* 1 when the task came from runtime:__stream(), else 0.  Since ABI 4. */
int ngx_http_lua_nonblocking_ffi_task_is_stream(void *tsk);


/*
 * Sends a chunk of the answer, before the final ..._respond() (whose rsp,
 * if any, is the last chunk when rc is 0).  chunk is NULL (nothing is sent)
 * or memory from malloc(), which the module owns from this call on, also
 * when it fails; len counts its bytes (binary-safe), 0 with a non-NULL
 * chunk means a NUL-terminated string.  Waits while the window is full.
 *
 * Returns NONBLOCKING_FFI_STREAM_OK, ..._CLOSED when the Lua side gave up,
 * or ..._ERROR when tsk is no stream task waiting for its answer or len is
 * negative.  Since ABI version 4.
 */
int ngx_http_lua_nonblocking_ffi_stream_send(void *tsk, char *chunk,
    int len);


/*
 * ..._stream_send() that never waits: NONBLOCKING_FFI_STREAM_AGAIN when the
 * window is full, and then chunk is still the caller's: wait until
 * ..._stream_fd() is readable, and send it again.  Since ABI version 4.
 */
int ngx_http_lua_nonblocking_ffi_stream_try_send(void *tsk, char *chunk,
    int len);


/*
 * Reads the next chunk Lua wrote with stream:write(), waiting until there
 * is one: *chunk gets memory from malloc() that the caller owns (free()
 * it), *len its length (at least 1; a NUL follows it, not counted).
 *
 * Returns NONBLOCKING_FFI_STREAM_OK with a chunk, ..._END (with *chunk
 * NULL) once Lua called stream:close_write() and every chunk was read,
 * ..._CLOSED when the Lua side gave up, or ..._ERROR on misuse.  Since ABI
 * version 4.
 */
int ngx_http_lua_nonblocking_ffi_stream_read(void *tsk, char **chunk,
    int *len);


/*
 * ..._stream_read() that never waits: NONBLOCKING_FFI_STREAM_AGAIN when no
 * chunk is there yet: wait until ..._stream_fd() is readable, and read
 * again.  Since ABI version 4.
 */
int ngx_http_lua_nonblocking_ffi_stream_try_read(void *tsk, char **chunk,
    int *len);


/*
 * For event-loop runtimes: a file descriptor that becomes readable once
 * what a ..._try_send() or ..._try_read() of this task returned
 * NONBLOCKING_FFI_STREAM_AGAIN for may have happened (the window has room,
 * a chunk or the end came; also when that came before the fd was first
 * asked for), or the Lua side gave up.  It stays readable until the call
 * of that direction is made again (a try_send after room, a try_read after
 * a chunk), and for good once the Lua side gave up, so a reader and a
 * sender of one task may wait on it at once.  Each of those events writes
 * it anew, so edge-triggered watchers (EPOLLET, tokio's AsyncFd) see them
 * all.
 * Never read, write or close it; unregister it from the loop before
 * answering the task: the module closes it when the task is done.  The
 * same fd for every call on one task; -1 (with errno) on misuse or when
 * no eventfd can be created.  Since ABI version 4.
 */
int ngx_http_lua_nonblocking_ffi_stream_fd(void *tsk);


/*
 * For runtimes whose idle threads should wait somewhere of their own, not
 * in the module: Go's netpoller, where a waiting goroutine holds no thread
 * (a poller blocked in ..._task_poll() holds one, and Go's scheduler
 * keeps taking it back), or any loop that would rather not be woken for
 * every call.
 *
 * ..._task_take_or_arm() takes up to max tasks (at most
 * NONBLOCKING_FFI_POLL_BATCH_MAX) into tasks[] that are waiting now.
 * When none is, and no other consumer of tq spins, it first spins as
 * ..._task_poll() does (opts.spin, adapted); a consumer that finds
 * another one spinning does not spin, unless calls came in bursts in
 * the last millisecond (a take left some behind).  When none is queued
 * then, the caller is armed: it must wait until ..._queue_wait_fd(tq) is
 * readable, read 8 bytes from it (one wake-up), and call
 * ..._task_take_or_arm() again.  Returns how many tasks it took, 0 when
 * it armed the caller, -1 once the runtime is unloaded and every task
 * queued before that has been taken (stop), or on misuse (tq not a queue,
 * tasks NULL, max < 1: logged as [alert]), or when the wait fd cannot be
 * created.
 *
 * Armed callers are woken one per task that comes while no consumer
 * spins, one per task a taker leaves behind, and all when the runtime is
 * unloaded; a wake-up may find the task taken by a spinner (the call then
 * arms again).  No wake-up is lost: a task queued after the call returned
 * 0 wakes the caller (or a spinner takes it).  While a consumer spins, or
 * none is armed, calls cost the module no write.
 *
 * ..._queue_wait_fd(tq) is that fd: an eventfd in semaphore mode, readable
 * while wake-ups wait, each 8-byte read takes one.  Never write or close
 * it; it stays open until the worker exits.  The same fd for every call on
 * one tq; -1 (with errno) when tq is not a queue or no eventfd can be
 * created.  Both since ABI version 5.  Blocking pollers and these may
 * share one queue; ..._queue_fd() consumers are not affected.
 */
int ngx_http_lua_nonblocking_ffi_task_take_or_arm(void *tq, void **tasks,
    int max);
int ngx_http_lua_nonblocking_ffi_queue_wait_fd(void *tq);


/* --- lua-resty-ffi compatibility: the same functions under its names */

void *ngx_http_lua_ffi_task_poll(void *tq);
char *ngx_http_lua_ffi_get_req(void *tsk, int *len);
void ngx_http_lua_ffi_respond(void *tsk, int rc, char *rsp, int rsp_len);


#ifdef __cplusplus
}
#endif


#endif /* NONBLOCKING_FFI_H_INCLUDED */
