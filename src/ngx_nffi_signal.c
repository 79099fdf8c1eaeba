/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Signals and runtime threads.
 *
 * nginx handles its signals on the worker's main thread and expects no
 * other thread to take them.  Runtimes are therefore loaded and initialised
 * with nginx's signals blocked, so the threads they start inherit that mask.
 * Some runtimes unblock signals on their own threads anyway (Go does), so
 * after each load nginx's handlers are put back behind a trampoline that
 * hands a signal landing on another thread to the main thread.
 *
 * SIGCHLD is the exception: in a worker, nginx's handler reaps every child
 * with waitpid(-1), stealing the exit status from whoever spawned it (a
 * runtime thread, or Lua's os.execute).  Workers have no children of their
 * own to reap, so once a runtime is loaded SIGCHLD gets its default
 * disposition and each child is reaped by the code that started it.
 *
 * A handler that a runtime installed for one of these signals (the JVM
 * uses SIGUSR2) is left in place: only nginx's own handlers are taken back.
 */

#include "ngx_nffi.h"


static void ngx_nffi_signal_trampoline(int signo, siginfo_t *info,
    void *ucontext);


static int  ngx_nffi_nginx_signals[] = {
    ngx_signal_value(NGX_RECONFIGURE_SIGNAL),
    ngx_signal_value(NGX_REOPEN_SIGNAL),
    ngx_signal_value(NGX_NOACCEPT_SIGNAL),
    ngx_signal_value(NGX_TERMINATE_SIGNAL),
    ngx_signal_value(NGX_SHUTDOWN_SIGNAL),
    ngx_signal_value(NGX_CHANGEBIN_SIGNAL),
    SIGALRM,
    SIGINT,
    SIGIO,
    SIGCHLD,
    0
};


static pthread_t         ngx_nffi_main_thread;
static struct sigaction  ngx_nffi_nginx_actions[NSIG];


/* at worker start, before any runtime: remember what nginx installed */

void
ngx_nffi_signal_init(void)
{
    int  *signo;

    ngx_nffi_main_thread = pthread_self();

    for (signo = ngx_nffi_nginx_signals; *signo; signo++) {
        if (sigaction(*signo, NULL, &ngx_nffi_nginx_actions[*signo]) == -1) {
            ngx_log_error(NGX_LOG_ALERT, ngx_nffi_worker.log, ngx_errno,
                          "nonblocking_ffi: sigaction(%d) failed", *signo);
        }
    }
}


void
ngx_nffi_signal_block(sigset_t *saved)
{
    int       *signo, err;
    sigset_t   set;

    sigemptyset(&set);

    for (signo = ngx_nffi_nginx_signals; *signo; signo++) {
        sigaddset(&set, *signo);
    }

    err = pthread_sigmask(SIG_BLOCK, &set, saved);

    if (err != 0) {
        ngx_log_error(NGX_LOG_ALERT, ngx_nffi_worker.log, err,
                      "nonblocking_ffi: pthread_sigmask(SIG_BLOCK) failed");
    }
}


void
ngx_nffi_signal_restore(sigset_t *saved)
{
    int  err;

    err = pthread_sigmask(SIG_SETMASK, saved, NULL);

    if (err != 0) {
        ngx_log_error(NGX_LOG_ALERT, ngx_nffi_worker.log, err,
                      "nonblocking_ffi: pthread_sigmask(SIG_SETMASK) failed");
    }
}


void
ngx_nffi_signal_take_back(void)
{
    int               *signo;
    struct sigaction   sa, current, *nginx;

    for (signo = ngx_nffi_nginx_signals; *signo; signo++) {
        nginx = &ngx_nffi_nginx_actions[*signo];

        if (sigaction(*signo, NULL, &current) == -1) {
            ngx_log_error(NGX_LOG_ALERT, ngx_nffi_worker.log, ngx_errno,
                          "nonblocking_ffi: sigaction(%d) failed", *signo);
            continue;
        }

        if (current.sa_handler != nginx->sa_handler
            && current.sa_sigaction != ngx_nffi_signal_trampoline)
        {
            continue;
        }

        ngx_memzero(&sa, sizeof(struct sigaction));

        if (*signo == SIGCHLD) {
            sa.sa_handler = SIG_DFL;

        } else if (!(nginx->sa_flags & SA_SIGINFO)
                   && (nginx->sa_handler == SIG_DFL
                       || nginx->sa_handler == SIG_IGN))
        {
            sa.sa_handler = nginx->sa_handler;

        } else {
            sa.sa_sigaction = ngx_nffi_signal_trampoline;
            sa.sa_mask = nginx->sa_mask;
            /* Go runs handlers on its threads' alternate signal stacks */
            sa.sa_flags = nginx->sa_flags | SA_SIGINFO | SA_ONSTACK;
        }

        if (sigaction(*signo, &sa, NULL) == -1) {
            ngx_log_error(NGX_LOG_ALERT, ngx_nffi_worker.log, ngx_errno,
                          "nonblocking_ffi: sigaction(%d) failed", *signo);
        }
    }
}


static void
ngx_nffi_signal_trampoline(int signo, siginfo_t *info, void *ucontext)
{
    struct sigaction  *nginx;

    if (!pthread_equal(pthread_self(), ngx_nffi_main_thread)) {
        pthread_kill(ngx_nffi_main_thread, signo);
        return;
    }

    nginx = &ngx_nffi_nginx_actions[signo];

    if (nginx->sa_flags & SA_SIGINFO) {
        nginx->sa_sigaction(signo, info, ucontext);

    } else {
        nginx->sa_handler(signo);
    }
}
