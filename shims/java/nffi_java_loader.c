/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * The Java loader: lib_nonblocking_ffi_java.so.
 *
 *   local rt = ngx.load_nonblocking_ffi("/path/lib_nonblocking_ffi_java.so",
 *                                       "com.example.Echo,init,{...}")
 *
 * cfg is "class[?],method[,rest]": only the first two commas split.  The
 * public static method(String rest, long queue) of class is called with
 * rest (null without a second comma) and the runtime's queue; it starts
 * threads that poll the queue (nonblocking.ffi.Server does) and returns
 * (void, or an int: 0 is success).  A trailing "?" loads the class through
 * a fresh class loader, so a changed class file is read again.
 *
 * One JVM per worker process, started by the first load and never
 * destroyed (a process cannot create a second one).  It is created on a
 * thread of its own, never on the worker's main thread (HotSpot puts stack
 * guard pages on the thread that creates it), and that thread runs every
 * load while the main thread waits for it.  The JVM gets -Xrs (it leaves
 * HUP, INT, QUIT and TERM to nginx) and _JAVA_SR_SIGNUM moves its
 * suspend/resume signal from USR2 (nginx's binary upgrade) to a real-time
 * signal.  Its threads inherit the thread's mask: nginx's signals blocked.
 *
 * Environment (nginx.conf passes it to workers with "env NAME;"):
 *   CLASSPATH              the class path, as for java
 *   NFFI_JAVA_CLASSPATH    more class path, before CLASSPATH
 *   NFFI_JAVA_OPTS         JVM options, separated by spaces
 *   JAVA_HOME              the JDK or JRE whose lib/server/libjvm.so runs
 *                          (the one found at build time without it)
 */

#include "nffi_java.h"
#include "nffi_shim_cfg.h"

#include <dirent.h>
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


/* the JDK found by the Makefile */
#ifndef NFFI_JAVA_HOME
#define NFFI_JAVA_HOME  "/usr/lib/jvm/default-java"
#endif

/* SIGRTMIN + 6 on glibc: neither nginx's, nor glibc's own (32, 33) */
#define NFFI_JAVA_SR_SIGNUM   "40"
#define NFFI_JAVA_STACK       (8 * 1024 * 1024)
#define NFFI_JAVA_MAX_OPTS    64
#define NFFI_JAVA_JAR         "java/nonblocking-ffi.jar"


/* nffi_java_create() failed after the JVM started */
#define NFFI_JAVA_NO_API       -2


#define NFFI_JAVA_NOT_STARTED  0
#define NFFI_JAVA_RUNNING      1
#define NFFI_JAVA_FAILED       2




typedef jint (JNICALL *nffi_java_create_pt)(JavaVM **vm, void **env,
    void *args);
typedef jint (JNICALL *nffi_java_created_pt)(JavaVM **vms, jsize n,
    jsize *found);


static int nffi_java_parse_cfg(const char *cfg, nffi_shim_cfg_t *parsed);
static int nffi_java_start(void);
static void *nffi_java_thread(void *arg);
static int nffi_java_create(JNIEnv **envp);
static char *nffi_java_class_path(void);
static int nffi_java_append(char **buf, size_t *len, size_t *size,
    const char *entry, size_t n);
static int nffi_java_append_entry(char **buf, size_t *len, size_t *size,
    const char *entry, size_t n);
static int nffi_java_bootstrap(JNIEnv *env);
static int nffi_java_call_load(JNIEnv *env, nffi_shim_cfg_t *parsed,
    void *tq);
static jbyteArray nffi_java_bytes(JNIEnv *env, const char *p, size_t len);
static void nffi_java_log_exception(JNIEnv *env, const char *what);
static jint JNICALL nffi_java_vfprintf(FILE *fp, const char *fmt,
    va_list args);
static void nffi_java_end_start(const char *what);
static void JNICALL nffi_java_exit(jint code);
static void JNICALL nffi_java_abort(void);


static pthread_mutex_t   nffi_java_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t    nffi_java_cond = PTHREAD_COND_INITIALIZER;
static int               nffi_java_state = NFFI_JAVA_NOT_STARTED;
static pthread_t         nffi_java_tid;
static __thread int      nffi_java_on_thread;    /* the JVM's thread */

/* the load that the JVM thread runs next, under nffi_java_lock */
static nffi_shim_cfg_t  *nffi_java_job;
static void             *nffi_java_job_tq;
static int               nffi_java_job_rc;
static int               nffi_java_job_done;

/* nonblocking.ffi.Loader: owned by the JVM thread */
static jclass            nffi_java_loader;
static jmethodID         nffi_java_load;
static jmethodID         nffi_java_describe;


int
lib_nonblocking_ffi_init(char *cfg, void *tq)
{
    int              rc;
    nffi_shim_cfg_t  parsed;

    if (nffi_java_parse_cfg(cfg, &parsed) != 0) {
        ngx_http_lua_nonblocking_ffi_init_error(tq, "bad cfg: expected "
                                                "\"class[?],method[,rest]\"",
                                                0);
        return NFFI_JAVA_RC_CFG;
    }

    if (nffi_java_start() != 0) {
        ngx_http_lua_nonblocking_ffi_init_error(tq, "the JVM did not start "
                                                "in this worker (see the "
                                                "error log)", 0);
        return NFFI_JAVA_RC_START;
    }

    /* the JVM thread runs the load; the worker waits, as for any init */
    pthread_mutex_lock(&nffi_java_lock);

    nffi_java_job = &parsed;
    nffi_java_job_tq = tq;
    nffi_java_job_done = 0;
    pthread_cond_broadcast(&nffi_java_cond);

    while (!nffi_java_job_done) {
        pthread_cond_wait(&nffi_java_cond, &nffi_java_lock);
    }

    rc = nffi_java_job_rc;
    nffi_java_job = NULL;

    pthread_mutex_unlock(&nffi_java_lock);

    return rc;
}


static int
nffi_java_parse_cfg(const char *cfg, nffi_shim_cfg_t *parsed)
{
    switch (nffi_shim_cfg_parse(cfg, parsed)) {

    case NFFI_SHIM_CFG_OK:
        return 0;

    case NFFI_SHIM_CFG_NIL:
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                      "nonblocking_ffi java: cfg is nil: expected "
                      "\"class[?],method[,rest]\"");
        return -1;

    case NFFI_SHIM_CFG_NO_COMMA:
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                      "nonblocking_ffi java: malformed cfg \"%.512s\": "
                      "expected \"class[?],method[,rest]\"", cfg);
        return -1;

    default:
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                      "nonblocking_ffi java: malformed cfg \"%.512s\": "
                      "the %s is empty, expected "
                      "\"class[?],method[,rest]\"", cfg,
                      parsed->target_len ? "method" : "class");
        return -1;
    }
}


/* on the worker's main thread: starts the JVM thread once, waits for it */

static int
nffi_java_start(void)
{
    int             err, state;
    pthread_attr_t  attr;

    pthread_mutex_lock(&nffi_java_lock);
    state = nffi_java_state;
    pthread_mutex_unlock(&nffi_java_lock);

    if (state == NFFI_JAVA_RUNNING) {
        return 0;
    }

    if (state == NFFI_JAVA_FAILED) {
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                      "nonblocking_ffi java: the JVM failed to start in "
                      "this worker before (see above); a process cannot "
                      "start another");
        return -1;
    }

    /*
     * The thread inherits the mask of init, nginx's signals blocked, and
     * so do the JVM's threads, which it starts.
     */
    err = pthread_attr_init(&attr);
    if (err == 0) {
        err = pthread_attr_setstacksize(&attr, NFFI_JAVA_STACK);
        if (err == 0) {
            err = pthread_create(&nffi_java_tid, &attr, nffi_java_thread,
                                 NULL);
        }

        pthread_attr_destroy(&attr);
    }

    if (err != 0) {
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                      "nonblocking_ffi java: cannot start the JVM's "
                      "thread: %s", strerror(err));
        nffi_java_state = NFFI_JAVA_FAILED;
        return -1;
    }

    pthread_detach(nffi_java_tid);

    pthread_mutex_lock(&nffi_java_lock);

    while (nffi_java_state == NFFI_JAVA_NOT_STARTED) {
        pthread_cond_wait(&nffi_java_cond, &nffi_java_lock);
    }

    state = nffi_java_state;

    pthread_mutex_unlock(&nffi_java_lock);

    return state == NFFI_JAVA_RUNNING ? 0 : -1;
}


/* the JVM's thread: creates it, then runs the loads one by one */

static void *
nffi_java_thread(void *arg)
{
    int      rc;
    JNIEnv  *env;

    nffi_java_on_thread = 1;

    rc = nffi_java_create(&env);

    pthread_mutex_lock(&nffi_java_lock);
    nffi_java_state = rc == 0 ? NFFI_JAVA_RUNNING : NFFI_JAVA_FAILED;
    pthread_cond_broadcast(&nffi_java_cond);

    if (rc == NFFI_JAVA_NO_API) {
        /*
         * The JVM runs, without the API: this thread stays attached to it
         * and idle (a thread must not end attached), for no more loads.
         */
        for ( ;; ) {
            pthread_cond_wait(&nffi_java_cond, &nffi_java_lock);
        }
    }

    pthread_mutex_unlock(&nffi_java_lock);

    if (rc != 0) {
        return NULL;
    }

    for ( ;; ) {
        pthread_mutex_lock(&nffi_java_lock);

        while (nffi_java_job == NULL || nffi_java_job_done) {
            pthread_cond_wait(&nffi_java_cond, &nffi_java_lock);
        }

        pthread_mutex_unlock(&nffi_java_lock);

        /* the main thread waits and does not touch the job meanwhile */
        rc = nffi_java_call_load(env, nffi_java_job, nffi_java_job_tq);

        pthread_mutex_lock(&nffi_java_lock);
        nffi_java_job_rc = rc;
        nffi_java_job_done = 1;
        pthread_cond_broadcast(&nffi_java_cond);
        pthread_mutex_unlock(&nffi_java_lock);
    }

    return NULL;
}


static int
nffi_java_create(JNIEnv **envp)
{
    int                    n, rc;
    char                  *cp, *opts, *p, *save, lib[PATH_MAX];
    void                  *jvm_lib;
    jsize                  found;
    JavaVM                *vm, *vms[1];
    const char            *home;
    JavaVMOption           options[NFFI_JAVA_MAX_OPTS + 7];
    JavaVMInitArgs         args;
    nffi_java_create_pt    create;
    nffi_java_created_pt   created;

    home = getenv("JAVA_HOME");
    if (home == NULL || *home == '\0') {
        home = NFFI_JAVA_HOME;
    }

    if ((size_t) snprintf(lib, sizeof(lib), "%s/lib/server/libjvm.so", home)
        >= sizeof(lib))
    {
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                      "nonblocking_ffi java: JAVA_HOME is too long");
        return -1;
    }

    jvm_lib = dlopen(lib, RTLD_NOW | RTLD_GLOBAL);
    if (jvm_lib == NULL) {
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                      "nonblocking_ffi java: cannot load the JVM: %s "
                      "(JAVA_HOME names the JDK to use)", dlerror());
        return -1;
    }

    create = (nffi_java_create_pt) dlsym(jvm_lib, "JNI_CreateJavaVM");
    created = (nffi_java_created_pt) dlsym(jvm_lib, "JNI_GetCreatedJavaVMs");

    if (create == NULL || created == NULL) {
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                      "nonblocking_ffi java: %s has no JNI_CreateJavaVM()",
                      lib);
        return -1;
    }

    if (created(vms, 1, &found) == JNI_OK && found > 0) {
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                      "nonblocking_ffi java: another module of this worker "
                      "already started a JVM");
        return -1;
    }

    cp = nffi_java_class_path();
    if (cp == NULL) {
        return -1;
    }

    n = 0;
    options[n++].optionString = "-Xrs";
    /* no /tmp/hsperfdata_<user>/<pid> file per worker */
    options[n++].optionString = "-XX:-UsePerfData";
    /* with -Xrs HotSpot listens on /tmp/.java_pid<pid> from the start */
    options[n++].optionString = "-XX:+DisableAttachMechanism";
    options[n++].optionString = cp;
    options[n].optionString = "vfprintf";
    options[n++].extraInfo = (void *) nffi_java_vfprintf;
    options[n].optionString = "exit";
    options[n++].extraInfo = (void *) nffi_java_exit;
    options[n].optionString = "abort";
    options[n++].extraInfo = (void *) nffi_java_abort;

    opts = NULL;
    p = getenv("NFFI_JAVA_OPTS");

    if (p && *p) {
        opts = strdup(p);
        if (opts == NULL) {
            free(cp);
            nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                          "nonblocking_ffi java: no memory");
            return -1;
        }

        for (p = strtok_r(opts, " \t\n", &save); p;
             p = strtok_r(NULL, " \t\n", &save))
        {
            if (n == NFFI_JAVA_MAX_OPTS + 7) {
                nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                              "nonblocking_ffi java: more than %d options "
                              "in NFFI_JAVA_OPTS", NFFI_JAVA_MAX_OPTS);
                free(opts);
                free(cp);
                return -1;
            }

            options[n].optionString = p;
            options[n++].extraInfo = NULL;
        }
    }

    /* HotSpot suspends threads with SIGUSR2 unless told otherwise */
    setenv("_JAVA_SR_SIGNUM", NFFI_JAVA_SR_SIGNUM, 0);

    args.version = JNI_VERSION_10;
    args.nOptions = n;
    args.options = options;
    args.ignoreUnrecognized = JNI_FALSE;

    rc = create(&vm, (void **) envp, &args);

    free(opts);
    free(cp);

    if (rc != JNI_OK) {
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                      "nonblocking_ffi java: the JVM did not start: "
                      "JNI_CreateJavaVM() failed with %d (see the JVM's "
                      "messages above; NFFI_JAVA_OPTS has the options "
                      "added)", (int) rc);
        return -1;
    }

    if (nffi_java_bootstrap(*envp) != 0) {
        return NFFI_JAVA_NO_API;
    }

    nffi_shim_log(NONBLOCKING_FFI_LOG_INFO,
                  "nonblocking_ffi java: the JVM started (%s)", lib);

    return 0;
}


/*
 * "-Djava.class.path=" the API's jar beside the loader, NFFI_JAVA_CLASSPATH
 * and CLASSPATH.  An entry that is a folder and a star (lib/ then *) is
 * every .jar of the folder, as for java.
 */

static char *
nffi_java_class_path(void)
{
    char        *buf, *dir, file[PATH_MAX];
    size_t       len, size;
    Dl_info      info;
    const char  *vars[2], *p, *colon;
    int          i;

    if (dladdr((void *) lib_nonblocking_ffi_init, &info) == 0
        || info.dli_fname == NULL
        || strlen(info.dli_fname) >= sizeof(file))
    {
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                      "nonblocking_ffi java: cannot find the loader's own "
                      "file: %s", dlerror());
        return NULL;
    }

    strcpy(file, info.dli_fname);
    dir = dirname(file);

    buf = NULL;
    len = 0;
    size = 0;

    if (nffi_java_append(&buf, &len, &size, "-Djava.class.path=", 18) != 0
        || nffi_java_append(&buf, &len, &size, dir, strlen(dir)) != 0
        || nffi_java_append(&buf, &len, &size, "/" NFFI_JAVA_JAR,
                            sizeof(NFFI_JAVA_JAR)) != 0)
    {
        goto failed;
    }

    vars[0] = getenv("NFFI_JAVA_CLASSPATH");
    vars[1] = getenv("CLASSPATH");

    for (i = 0; i < 2; i++) {
        for (p = vars[i]; p && *p; p = colon ? colon + 1 : NULL) {
            colon = strchr(p, ':');

            if (nffi_java_append_entry(&buf, &len, &size, p,
                                       colon ? (size_t) (colon - p)
                                             : strlen(p))
                != 0)
            {
                goto failed;
            }
        }
    }

    return buf;

failed:

    free(buf);
    nffi_shim_log(NONBLOCKING_FFI_LOG_ERR, "nonblocking_ffi java: no memory "
                  "for the class path");
    return NULL;
}


static int
nffi_java_append(char **buf, size_t *len, size_t *size, const char *s,
    size_t n)
{
    char    *p;
    size_t   want;

    if (*len + n + 1 > *size) {
        want = (*len + n + 1) * 2;
        p = realloc(*buf, want);
        if (p == NULL) {
            return -1;
        }

        *buf = p;
        *size = want;
    }

    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';

    return 0;
}


static int
nffi_java_append_entry(char **buf, size_t *len, size_t *size,
    const char *entry, size_t n)
{
    DIR            *d;
    char            dir[PATH_MAX];
    size_t          dlen, flen;
    struct dirent  *de;

    if (n == 0) {
        return 0;
    }

    if (n < 2 || entry[n - 1] != '*' || entry[n - 2] != '/'
        || n - 1 >= sizeof(dir))
    {
        return nffi_java_append(buf, len, size, ":", 1)
               || nffi_java_append(buf, len, size, entry, n);
    }

    /* a folder and a star: its jars, in the order readdir() gives */
    dlen = n - 1;
    memcpy(dir, entry, dlen);
    dir[dlen] = '\0';

    d = opendir(dir);
    if (d == NULL) {
        /* left as it is: the load that misses a class tells why */
        return nffi_java_append(buf, len, size, ":", 1)
               || nffi_java_append(buf, len, size, entry, n);
    }

    while ((de = readdir(d)) != NULL) {
        flen = strlen(de->d_name);

        if (flen < 5 || (strcmp(de->d_name + flen - 4, ".jar") != 0
                         && strcmp(de->d_name + flen - 4, ".JAR") != 0))
        {
            continue;
        }

        if (nffi_java_append(buf, len, size, ":", 1)
            || nffi_java_append(buf, len, size, dir, dlen)
            || nffi_java_append(buf, len, size, de->d_name, flen))
        {
            closedir(d);
            return -1;
        }
    }

    closedir(d);

    return 0;
}


/* the API's classes, its natives, and logging into nginx's error log */

static int
nffi_java_bootstrap(JNIEnv *env)
{
    jclass     native, loader;
    jmethodID  bootstrap;

    native = (*env)->FindClass(env, "nonblocking/ffi/Native");
    if (native == NULL) {
        nffi_java_log_exception(env, "cannot find the Java API "
                                "(is " NFFI_JAVA_JAR " beside the "
                                "loader?)");
        return -1;
    }

    if (nffi_java_register_natives(env, native) != 0) {
        nffi_java_log_exception(env, "cannot register the natives of "
                                "nonblocking.ffi.Native");
        return -1;
    }

    loader = (*env)->FindClass(env, "nonblocking/ffi/Loader");
    if (loader == NULL) {
        nffi_java_log_exception(env, "cannot find nonblocking.ffi.Loader");
        return -1;
    }

    nffi_java_loader = (*env)->NewGlobalRef(env, loader);
    bootstrap = (*env)->GetStaticMethodID(env, loader, "bootstrap", "()V");
    nffi_java_load = (*env)->GetStaticMethodID(env, loader, "load",
                                               "([BZ[B[BJ)I");
    nffi_java_describe = (*env)->GetStaticMethodID(env, loader, "describe",
                                          "(Ljava/lang/Throwable;)"
                                          "Ljava/lang/String;");

    if (nffi_java_loader == NULL || bootstrap == NULL
        || nffi_java_load == NULL || nffi_java_describe == NULL)
    {
        nffi_java_log_exception(env, "nonblocking.ffi.Loader does not "
                                "match the loader (rebuild both)");
        return -1;
    }

    (*env)->CallStaticVoidMethod(env, loader, bootstrap);

    if ((*env)->ExceptionCheck(env)) {
        nffi_java_log_exception(env, "nonblocking.ffi.Loader.bootstrap() "
                                "failed");
        return -1;
    }

    return 0;
}


/* on the JVM thread: Loader.load() logs what goes wrong */

static int
nffi_java_call_load(JNIEnv *env, nffi_shim_cfg_t *parsed, void *tq)
{
    jint        rc;
    jbyteArray  cls, method, rest;

    if ((*env)->PushLocalFrame(env, 8) != 0) {
        nffi_java_log_exception(env, "no memory for the load");
        return NFFI_JAVA_RC_START;
    }

    cls = nffi_java_bytes(env, parsed->target, parsed->target_len);
    method = nffi_java_bytes(env, parsed->function, parsed->function_len);
    rest = parsed->rest ? nffi_java_bytes(env, parsed->rest,
                                          strlen(parsed->rest))
                        : NULL;

    if (cls == NULL || method == NULL || (parsed->rest && rest == NULL)) {
        nffi_java_log_exception(env, "no memory for the load");
        (*env)->PopLocalFrame(env, NULL);
        return NFFI_JAVA_RC_START;
    }

    rc = (*env)->CallStaticIntMethod(env, nffi_java_loader, nffi_java_load,
                                     cls, parsed->fresh ? JNI_TRUE
                                                        : JNI_FALSE,
                                     method, rest, (jlong) (intptr_t) tq);

    if ((*env)->ExceptionCheck(env)) {
        nffi_java_log_exception(env, "nonblocking.ffi.Loader.load() "
                                "failed");
        rc = NFFI_JAVA_RC_RAISED;
    }

    (*env)->PopLocalFrame(env, NULL);

    return rc;
}


static jbyteArray
nffi_java_bytes(JNIEnv *env, const char *p, size_t len)
{
    jbyteArray  bytes;

    if (len > INT32_MAX) {
        return NULL;
    }

    bytes = (*env)->NewByteArray(env, (jsize) len);

    if (bytes != NULL && len > 0) {
        (*env)->SetByteArrayRegion(env, bytes, 0, (jsize) len,
                                   (const jbyte *) p);
    }

    return bytes;
}


/* the pending exception (if any) and its stack trace, into the log */

static void
nffi_java_log_exception(JNIEnv *env, const char *what)
{
    jstring      text;
    jthrowable   e;
    const char  *chars;

    e = (*env)->ExceptionOccurred(env);

    if (e == NULL) {
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR, "nonblocking_ffi java: %s",
                      what);
        return;
    }

    (*env)->ExceptionClear(env);

    text = NULL;

    if (nffi_java_loader && nffi_java_describe) {
        text = (*env)->CallStaticObjectMethod(env, nffi_java_loader,
                                              nffi_java_describe, e);
        if ((*env)->ExceptionCheck(env)) {
            (*env)->ExceptionClear(env);
            text = NULL;
        }
    }

    chars = text ? (*env)->GetStringUTFChars(env, text, NULL) : NULL;

    if (chars) {
        /* the message may be long: the module cuts it into entries */
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR, "nonblocking_ffi java: %s:",
                      what);
        ngx_http_lua_nonblocking_ffi_log(NONBLOCKING_FFI_LOG_ERR, chars, 0);
        (*env)->ReleaseStringUTFChars(env, text, chars);

    } else {
        nffi_shim_log(NONBLOCKING_FFI_LOG_ERR, "nonblocking_ffi java: %s "
                      "(the exception could not be described)", what);
    }

    (*env)->DeleteLocalRef(env, e);

    if (text) {
        (*env)->DeleteLocalRef(env, text);
    }
}


/* the JVM's own messages ("Unrecognized option: ...") */

static jint JNICALL
nffi_java_vfprintf(FILE *fp, const char *fmt, va_list args)
{
    int   n;
    char  msg[2048];

    n = vsnprintf(msg, sizeof(msg), fmt, args);

    if (n < 0) {
        return n;
    }

    if (n >= (int) sizeof(msg)) {
        n = sizeof(msg) - 1;
    }

    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) {
        n--;
    }

    if (n > 0) {
        ngx_http_lua_nonblocking_ffi_log(strstr(msg, "warning")
                                         ? NONBLOCKING_FFI_LOG_WARN
                                         : NONBLOCKING_FFI_LOG_ERR,
                                         msg, n);
    }

    return n;
}


/*
 * The JVM ends the process: System.exit(), a fatal error, or a failure
 * while it starts (HotSpot calls the abort hook, then exit(1)).  While it
 * starts, on our own thread, only that thread ends: the load fails and the
 * worker lives on.
 */

static void
nffi_java_end_start(const char *what)
{
    int  starting;

    pthread_mutex_lock(&nffi_java_lock);
    starting = nffi_java_state == NFFI_JAVA_NOT_STARTED
               && nffi_java_on_thread;
    pthread_mutex_unlock(&nffi_java_lock);

    if (!starting) {
        return;
    }

    /* logged before the failed load returns: the lines stay in order */
    nffi_shim_log(NONBLOCKING_FFI_LOG_ERR,
                  "nonblocking_ffi java: the JVM did not start: it %s "
                  "(see its messages above)", what);

    pthread_mutex_lock(&nffi_java_lock);
    nffi_java_state = NFFI_JAVA_FAILED;
    pthread_cond_broadcast(&nffi_java_cond);
    pthread_mutex_unlock(&nffi_java_lock);

    pthread_exit(NULL);
}


static void JNICALL
nffi_java_exit(jint code)
{
    char  what[64];

    snprintf(what, sizeof(what), "exited with code %d", (int) code);
    nffi_java_end_start(what);

    /*
     * The process ends before the main thread could write a log message:
     * straight to stderr, which nginx points at its error log.
     */
    fprintf(stderr, "nonblocking_ffi java: the JVM exits with code %d "
            "(System.exit()?): the worker process %d exits\n", (int) code,
            (int) getpid());
    fflush(stderr);
}


static void JNICALL
nffi_java_abort(void)
{
    nffi_java_end_start("failed");

    nffi_shim_log(NONBLOCKING_FFI_LOG_ALERT,
                  "nonblocking_ffi java: the JVM aborts the worker process");
}
