/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * libFuzzer target: the VM loaders' cfg parser, shims/common/nffi_shim_cfg.c
 * (make fuzz; corpus in tests/fuzz/corpus/shim_cfg).  A cfg has no NUL (the
 * module refuses one), so the input is cut at its first NUL.  A parse must
 * never read outside the string, and what it returns must put the string
 * together again: target, "?" if fresh, ",", function, then "," and rest.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nffi_shim_cfg.h"


#define CHECK(cond)  do { if (!(cond)) { abort(); } } while (0)


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int              rc;
    char            *cfg, *again, *p;
    size_t           len;
    nffi_shim_cfg_t  parsed;

    /* an exact-size copy: ASan sees any read past the NUL */
    len = strnlen((const char *) data, size);
    cfg = malloc(len + 1);
    CHECK(cfg != NULL);
    memcpy(cfg, data, len);
    cfg[len] = '\0';

    rc = nffi_shim_cfg_parse(cfg, &parsed);

    if (strchr(cfg, ',') == NULL) {
        CHECK(rc == NFFI_SHIM_CFG_NO_COMMA);
        free(cfg);
        return 0;
    }

    CHECK(rc != NFFI_SHIM_CFG_NIL && rc != NFFI_SHIM_CFG_NO_COMMA);
    CHECK(parsed.target == cfg);
    CHECK(memchr(parsed.target, ',', parsed.target_len) == NULL);
    CHECK(memchr(parsed.function, ',', parsed.function_len) == NULL);
    CHECK(rc != NFFI_SHIM_CFG_NO_TARGET || parsed.target_len == 0);
    CHECK(rc != NFFI_SHIM_CFG_NO_FUNCTION
          || (parsed.target_len > 0 && parsed.function_len == 0));
    CHECK(rc != NFFI_SHIM_CFG_OK
          || (parsed.target_len > 0 && parsed.function_len > 0));

    again = malloc(len + 1);
    CHECK(again != NULL);
    p = again;
    memcpy(p, parsed.target, parsed.target_len);
    p += parsed.target_len;

    if (parsed.fresh) {
        *p++ = '?';
    }

    *p++ = ',';
    memcpy(p, parsed.function, parsed.function_len);
    p += parsed.function_len;

    if (parsed.rest) {
        *p++ = ',';
        len = strlen(parsed.rest);
        memcpy(p, parsed.rest, len);
        p += len;
    }

    CHECK((size_t) (p - again) == strlen(cfg));
    CHECK(memcmp(again, cfg, p - again) == 0);

    free(again);
    free(cfg);

    return 0;
}
