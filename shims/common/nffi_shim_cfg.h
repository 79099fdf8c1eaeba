/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * The cfg of the VM loaders (Python, Java): "target[?],function[,rest]".
 * Only the first two commas split: the rest is often JSON.  "?" after the
 * target (a module or a class) asks for a fresh load of it.
 */

#ifndef NFFI_SHIM_CFG_H_INCLUDED
#define NFFI_SHIM_CFG_H_INCLUDED


#include <stddef.h>


typedef struct {
    const char  *target;        /* not NUL-terminated: target_len bytes */
    size_t       target_len;
    int          fresh;         /* "?" followed the target */
    const char  *function;      /* not NUL-terminated: function_len bytes */
    size_t       function_len;
    const char  *rest;          /* NUL-terminated, or NULL without it */
} nffi_shim_cfg_t;


/* what nffi_shim_cfg_parse() found wrong, for the loader to say in its words */
#define NFFI_SHIM_CFG_OK           0
#define NFFI_SHIM_CFG_NIL          1
#define NFFI_SHIM_CFG_NO_COMMA     2
#define NFFI_SHIM_CFG_NO_TARGET    3
#define NFFI_SHIM_CFG_NO_FUNCTION  4


/* Splits cfg into parsed, whose pointers point into cfg. */
int nffi_shim_cfg_parse(const char *cfg, nffi_shim_cfg_t *parsed);


#endif /* NFFI_SHIM_CFG_H_INCLUDED */
