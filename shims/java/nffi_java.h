/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * lua-resty-nonblocking-ffi: the Java loader, lib_nonblocking_ffi_java.so.
 *
 *   nffi_java_loader.c   lib_nonblocking_ffi_init(): cfg, the JVM and its
 *                        thread, the call of nonblocking.ffi.Loader.load()
 *   nffi_java_natives.c  the native methods of nonblocking.ffi.Native: the
 *                        module's ABI for Java
 *
 * The Java half, nonblocking-ffi.jar, is built by Maven from src/ and
 * installed beside the loader, in java/nonblocking-ffi.jar.
 */

#ifndef NFFI_JAVA_H_INCLUDED
#define NFFI_JAVA_H_INCLUDED


#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* dladdr() */
#endif

#include <jni.h>

#include "nonblocking_ffi.h"
#include "nffi_shim_log.h"


/* the rc of a failed load; nonblocking/ffi/Loader.java uses the same */
#define NFFI_JAVA_RC_CFG     2    /* cfg nil or malformed */
#define NFFI_JAVA_RC_START   3    /* the JVM or the API failed to start */
#define NFFI_JAVA_RC_CLASS   4    /* the class could not be loaded */
#define NFFI_JAVA_RC_METHOD  5    /* no such method, or a wrong signature */
#define NFFI_JAVA_RC_RAISED  6    /* the method threw */


/* nffi_java_natives.c */
int nffi_java_register_natives(JNIEnv *env, jclass native);


#endif /* NFFI_JAVA_H_INCLUDED */
